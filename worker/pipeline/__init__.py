"""A job's way out: intake (validate, record, split, enqueue: ``intake``), routing
per recipient (``routing``), the chunk state machine (``chunk_state``), the limited and
retried provider call with its outcome written once (``dispatch``), account pauses
(``accounts``) and second-chance resends (``resend``).
"""
