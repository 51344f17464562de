"""Dispatch messages: one frozen dataclass each, one versioned dict on the wire, decoded and
validated in one place; messages in the earlier positional form are still accepted."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
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


def _chunk(index: int, job_id: str = "job-m", phone: str = "447400123201") -> SendChunk:
    return SendChunk(**{**CHUNK.__dict__, "index": index, "job_id": job_id, "recipients": (phone,)})


def test_a_batch_of_chunks_is_version_2_and_each_chunk_validated() -> None:
    batch = messages.batch([_chunk(0), _chunk(1), _chunk(2)])
    assert isinstance(batch, messages.SendBatch)
    (wire,) = messages.message_args(batch)
    assert wire["v"] == messages.BATCH_VERSION == 2
    assert [c["index"] for c in wire["chunks"]] == [0, 1, 2]
    assert messages.decode(SEND_ACTOR, [json.loads(json.dumps(wire))]) == batch
    assert messages.chunks_of(batch) == batch.chunks
    assert messages.batch([_chunk(0)]) == _chunk(0)  # one chunk: the version 1 form
    assert messages.chunks_of(CHUNK) == (CHUNK,)
    with pytest.raises(ValueError, match="one job"):
        messages.batch([_chunk(0), _chunk(1, job_id="job-n")])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"v": 2, "chunks": [wire["chunks"][0]]}, "list of 2 to"),
        ({"v": 2, "chunks": wire["chunks"], "extra": 1}, "holds exactly: chunks"),
        ({"v": 2, "chunks": [wire["chunks"][0], wire["chunks"][0]]}, "holds a chunk twice"),
        ({"v": 2, "chunks": [wire["chunks"][0], {**wire["chunks"][1], "job_id": "j2"}]}, "one job"),
        ({"v": 2, "chunks": [wire["chunks"][0], {**wire["chunks"][1], "text": 5}]}, "chunk 1: "),
        ({"v": 2, "chunks": [wire["chunks"][0], 7]}, "chunk 1 is not an object"),
    ]
    for arg, reason in cases:
        with pytest.raises(MessageInvalid, match=reason):
            messages.decode(SEND_ACTOR, [arg])
    with pytest.raises(MessageInvalid, match="version 2 is not 1"):
        messages.decode(HLR_ACTOR, [{"v": 2, "chunks": wire["chunks"]}])


def test_intake_writes_several_chunks_a_message_or_one_when_configured(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    numbers = [f"+79{i:09d}" for i in range(50 * 19)]  # 19 chunks of the Intis 50

    async def accept(job_id: str, per_message: int) -> str:
        settings = sandbox_settings(redis_url, sandboxes)
        dispatch = replace(settings.dispatch, chunks_per_message=per_message)
        payload = {
            "kind": "send",
            "job_id": job_id,
            "provider": "intis-sandbox",
            "sender": "smstest",
            "text": "hi",
            "recipients": numbers,
        }
        async with runtime(replace(settings, dispatch=dispatch)) as rt:
            return intake.accept_job(rt, [payload], {})

    def written(job_id: str) -> list[Any]:
        found = []
        for body in redis_client.hvals("dramatiq:smsq-dispatch.msgs"):
            (arg,) = json.loads(body)["args"]
            decoded = messages.decode(SEND_ACTOR, [arg])
            if decoded.job_id == job_id:
                found.append(decoded)
        return found

    assert asyncio.run(accept("job-b8", 8)) == "accepted"
    batches = written("job-b8")
    assert sorted(len(messages.chunks_of(m)) for m in batches) == [3, 8, 8]
    indexes = sorted(c.index for m in batches for c in messages.chunks_of(m))
    assert indexes == list(range(19))
    assert asyncio.run(accept("job-b1", 1)) == "accepted"
    singles = written("job-b1")
    assert len(singles) == 19 and all(isinstance(m, SendChunk) for m in singles)
