"""Dispatch messages: one frozen dataclass each, one versioned dict on the wire, decoded and
validated in one place; messages in the earlier positional form are still accepted."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from tests.support.sandboxes import SandboxFactory, sandbox_settings
from tests.support.tracking import runtime
from worker.core import messages
from worker.core.messages import HlrChunk, MessageInvalid, SendChunk
from worker.core.queues import HLR_ACTOR, SEND_ACTOR
from worker.pipeline import intake

CHUNK = SendChunk(
    job_id="job-m",
    index=0,
    route=("intis-sandbox",),
    sender="smstest",
    text="hi",
    recipients=("447400123201",),
    scheduled_at=None,
    validity=None,
    priority="bulk",
    client_id=7,
    created_at=1764000000.0,
)


def test_round_trip_and_version() -> None:
    (wire,) = messages.message_args(CHUNK)
    assert wire["v"] == messages.VERSION and wire["route"] == ["intis-sandbox"]
    assert messages.decode(SEND_ACTOR, [json.loads(json.dumps(wire))]) == CHUNK
    hlr = HlrChunk("job-h", 2, ("a", "b"), ("447400123201",), "otp")
    assert messages.decode(HLR_ACTOR, messages.message_args(hlr)) == hlr


def test_the_earlier_positional_form_is_accepted() -> None:
    legacy = ["job-m", 0, "intis-sandbox", "smstest", "hi", ["447400123201"], None, None, "bulk", 7]
    decoded = messages.decode(SEND_ACTOR, legacy)
    assert decoded == SendChunk(**{**CHUNK.__dict__, "created_at": None})
    assert messages.decode(HLR_ACTOR, ["job-h", 1, ["a"], ["447400123201"]]).priority == "bulk"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ([{**messages.encode(CHUNK), "v": 99}], "version 99"),
        ([{**messages.encode(CHUNK), "colour": "red"}], "unknown fields: colour"),
        ([{k: v for k, v in messages.encode(CHUNK).items() if k != "text"}], "lacks fields: text"),
        ([{**messages.encode(CHUNK), "recipients": ["+44 7400"]}], "recipients must be"),
    ],
)
def test_invalid_messages_say_why(args: list[Any], reason: str) -> None:
    with pytest.raises(MessageInvalid, match=reason):
        messages.decode(SEND_ACTOR, args)


def test_intake_writes_versioned_messages(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    payload = {
        "kind": "send",
        "job_id": "job-w",
        "provider": "intis-sandbox",
        "sender": "smstest",
        "text": "hi",
        "recipients": ["+447400123201"],
    }

    async def accept() -> str:
        async with runtime(sandbox_settings(redis_url, sandboxes)) as rt:
            return intake.accept_job(rt, [payload], {})

    assert asyncio.run(accept()) == "accepted"
    (body,) = redis_client.hvals("dramatiq:smsq-dispatch.msgs")
    (arg,) = json.loads(body)["args"]
    assert arg["v"] == messages.VERSION and arg["job_id"] == "job-w"
    assert messages.decode(SEND_ACTOR, [arg]).recipients == ("447400123201",)


def test_positional_messages_queued_before_an_upgrade_are_sent(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    redis_client.hset("smsq:job:job-m", mapping={"chunks": 2, "state": "accepted"})
    redis_client.hset("smsq:job:job-m:counts", mapping={"queued": 2})
    worker.app.dispatch_chunk.send(*CHUNK.positional())  # the earlier form
    worker.app.dispatch_chunk.send(
        *messages.message_args(
            SendChunk(**{**CHUNK.__dict__, "index": 1, "recipients": ("447400123202",)})
        )
    )
    worker.join()
    counts = {k.decode(): int(v) for k, v in redis_client.hgetall("smsq:job:job-m:counts").items()}
    assert counts.get("submitted") == 2
    bad = {**messages.encode(CHUNK), "v": 0, "index": 5}
    worker.app.dispatch_chunk.send(bad)
    worker.join()
    letters = [json.loads(v) for v in redis_client.hvals("smsq:dlq")]
    assert any("version 0" in " ".join(d["reasons"]) for d in letters)


def test_periodic_runs_and_pushes_are_versioned_with_the_earlier_forms_accepted() -> None:
    run = messages.PeriodicRun("smsc-main", 42)
    (wire,) = messages.run_args(run)
    assert wire == {"v": messages.VERSION, "account": "smsc-main", "slot": 42}
    assert messages.decode_run([wire], per_account=True) == run
    assert messages.decode_run(["smsc-main", 42], per_account=True) == run  # earlier form
    assert messages.decode_run(["smsc-main"], per_account=True).slot is None
    assert messages.decode_run([7], per_account=False) == messages.PeriodicRun(None, 7)
    assert messages.decode_run([], per_account=False) == messages.PeriodicRun(None, None)
    with pytest.raises(MessageInvalid, match="names the account"):
        messages.decode_run([{"v": messages.VERSION, "slot": 1}], per_account=True)
    with pytest.raises(MessageInvalid, match="slot must be"):
        messages.decode_run(["a", "soon"], per_account=True)
    push = messages.PushApply("abc123")
    assert messages.decode_push(messages.push_args(push)) == push
    assert messages.decode_push(["abc123"]) == push  # earlier form
    with pytest.raises(MessageInvalid, match="version"):
        messages.decode_push([{"v": 2, "push_id": "abc123"}])
