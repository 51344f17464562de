"""RecipientOutcome.submitted(): the bulk path's constructor is the dataclass's own."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from producers.status import Status
from worker.providers.base import RecipientOutcome


def test_submitted_equals_the_dataclass_constructor() -> None:
    fast = RecipientOutcome.submitted("79161234567", "41", parts=2, cost="1.0", raw_code="0")
    slow = RecipientOutcome(
        phone="79161234567",
        status=Status.SUBMITTED,
        provider_message_id="41",
        parts=2,
        cost="1.0",
        raw_code="0",
    )
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert dataclasses.asdict(fast) == dataclasses.asdict(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert dataclasses.replace(fast, cost="2.0").cost == "2.0"
    bare = RecipientOutcome.submitted("79161234567", "41")
    assert bare == RecipientOutcome("79161234567", Status.SUBMITTED, "41")
    # Every field is set, and the instance stays frozen.
    assert {f.name for f in dataclasses.fields(bare)} <= set(vars(bare))
    with pytest.raises(dataclasses.FrozenInstanceError):
        bare.cost = "1"  # type: ignore[misc]
