"""Keeping work whole when Redis or a process dies: riding out a Redis outage in the
process (``outage``), dead workers' messages requeued within seconds (``dead_workers``) and
the sweep of chunks whose message ended without a recording (``stranded``).
"""
