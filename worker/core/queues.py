"""Queue and actor names of the worker (the intake names are in producers.wire)."""

from __future__ import annotations

DISPATCH_QUEUE = "smsq-dispatch"
DISPATCH_OTP_QUEUE = "smsq-dispatch-otp"
SEND_ACTOR = "dispatch_chunk"
HLR_ACTOR = "dispatch_hlr"
# Chunk indexes from here on are second-chance resends of one recipient each (worker/pipeline/resend.py),
# not among a job's counted chunks.
RESEND_INDEX_BASE = 1_000_000_000


def dispatch_queue(priority: str) -> str:
    """otp traffic has queues of its own, so it never waits behind bulk."""
    return DISPATCH_OTP_QUEUE if priority == "otp" else DISPATCH_QUEUE
