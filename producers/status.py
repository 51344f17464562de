"""The one status model every provider's codes are mapped onto.

These names are part of the public read model: they appear in ``smsq status``,
in the Redis records services may read, and (later) in the events stream.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """State of one recipient of one job."""

    QUEUED = "queued"  # accepted by smsq, not yet handed to a provider
    SUBMITTED = "submitted"  # the provider accepted it and gave it an id
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"  # the network could not deliver it
    EXPIRED = "expired"  # validity ran out before delivery
    REJECTED = "rejected"  # refused at submit: bad number, stop list, forbidden text
    FAILED = "failed"  # smsq gave up: retries exhausted, account error
    UNKNOWN = "unknown"  # ambiguous submit; reconciliation settles it
    CANCELLED = "cancelled"  # the producer cancelled the job before it was dispatched

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        Status.DELIVERED,
        Status.UNDELIVERABLE,
        Status.EXPIRED,
        Status.REJECTED,
        Status.FAILED,
        Status.CANCELLED,
    }
)


class JobState(StrEnum):
    """State of a whole job record."""

    PENDING = "pending"  # enqueued by a producer, not yet taken by a worker (no record yet)
    ACCEPTED = "accepted"  # validated, split into chunks, being dispatched
    DONE = "done"  # every chunk dispatched (recipients may still await delivery reports)
    DEAD_LETTERED = "dead_lettered"  # rejected as a whole; reasons recorded
    CANCELLED = "cancelled"  # cancelled by the producer before any chunk was dispatched
