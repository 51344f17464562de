"""The Redis key layout smsq writes and producers may read.

Every key starts with a configurable prefix (``smsq`` by default). The layout
is part of the public read model documented in docs/wire-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "smsq"

# Every append to the events stream trims it to about this many entries (XADD MAXLEN ~):
# one bound for every writer, as docs/wire-format.md promises; a consumer group lagging
# further behind loses the oldest events.
EVENTS_MAXLEN = 1_000_000


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def job(self, job_id: str) -> str:
        """Hash: the job record (state, provider, counts of recipients, reasons, ...)."""
        return f"{self.prefix}:job:{job_id}"

    def recipients(self, job_id: str) -> str:
        """Hash: phone -> JSON record of that recipient's outcome."""
        return f"{self.prefix}:job:{job_id}:rcpt"

    def counts(self, job_id: str) -> str:
        """Hash: status -> number of the job's recipients in it."""
        return f"{self.prefix}:job:{job_id}:counts"

    def hlr(self, job_id: str) -> str:
        """Hash: phone -> JSON HLR result (HLR jobs)."""
        return f"{self.prefix}:job:{job_id}:hlr"

    def cost(self, job_id: str) -> str:
        """Hash: "<account>|<currency>" -> what the job's sent messages cost there."""
        return f"{self.prefix}:job:{job_id}:cost"

    def operator(self, phone: str) -> str:
        """String (with a TTL): the operator (MCC+MNC) a number belongs to, when looked up."""
        return f"{self.prefix}:op:{phone}"

    @property
    def operators_wanted(self) -> str:
        """Sorted set: numbers waiting for an operator lookup, by the time they were seen."""
        return f"{self.prefix}:op:wanted"

    def prices(self, account: str) -> str:
        """Hash: an account's price list: "op:<mccmnc>" / "cc:<region>" -> price, currency, at."""
        return f"{self.prefix}:prices:{account}"

    def pending(self, job_id: str) -> str:
        """String: a job enqueued by a producer and not yet taken by a worker (JSON, expires)."""
        return f"{self.prefix}:pending:{job_id}"

    def chunk(self, job_id: str, index: int) -> str:
        """String: state of one chunk (claimed / sending / done / cancelled)."""
        return f"{self.prefix}:chunk:{job_id}:{index}"

    @property
    def inflight(self) -> str:
        """Hash: chunk key -> JSON of the dispatch holding it (actor, queue, args, message id,
        time), from its claim until its outcome is recorded; the stranded-work sweep reads it."""
        return f"{self.prefix}:inflight"

    @property
    def jobs(self) -> str:
        """Sorted set: job ids by creation time."""
        return f"{self.prefix}:jobs"

    def message_index(self, account: str) -> str:
        """Hash: provider message id -> "job_id|phone", per provider account."""
        return f"{self.prefix}:msgid:{account}"

    def awaiting(self, account: str) -> str:
        """Sorted set: provider message ids awaiting a final status, by next check time."""
        return f"{self.prefix}:awaiting:{account}"

    @property
    def retention(self) -> str:
        """Sorted set: finished job ids by the time their records are purged."""
        return f"{self.prefix}:retention"

    def purged(self, job_id: str) -> str:
        """String: a job id whose records were purged (so it is not accepted again)."""
        return f"{self.prefix}:purged:{job_id}"

    @property
    def events(self) -> str:
        """Stream: one entry per status change, HLR result, incoming message, account event."""
        return f"{self.prefix}:events"

    @property
    def dead_letters(self) -> str:
        """Hash: dead-letter id -> JSON record (reason, source, payload)."""
        return f"{self.prefix}:dlq"

    @property
    def dead_letter_index(self) -> str:
        """Sorted set: dead-letter ids by time."""
        return f"{self.prefix}:dlq:index"
