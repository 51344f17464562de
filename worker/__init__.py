"""smsq's worker, in rooms named for what they do (docs/design.md has the map):

core, entry, pipeline, state, tracking, pushes, recovery, providers, devtools.
"""
