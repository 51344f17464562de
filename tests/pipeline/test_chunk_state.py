"""A chunk's state decides what a redelivery does: resend, give up to reconciliation, or nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import redis.asyncio as aredis

from producers.keys import Keys
from producers.status import Status
from tests.support.sandboxes import SandboxFactory, sandbox_settings, sent_numbers
from worker.providers.base import RecipientOutcome
from worker.state.store import ChunkRecorder

ARGS = ["job-c", 0, ["intis-sandbox"], "smstest", "hi", ["447400123201"], None, None, "bulk", 1]


def seed_job(client: redis.Redis, job: str = "job-c", chunks: int = 1, queued: int = 1) -> None:
    client.hset(f"smsq:job:{job}", mapping={"chunks": chunks, "state": "accepted"})
    client.hset(f"smsq:job:{job}:counts", mapping={"queued": queued})


def counts(client: redis.Redis, job: str = "job-c") -> dict[str, int]:
    return {
        k.decode(): int(v) for k, v in client.hgetall(f"smsq:job:{job}:counts").items() if int(v)
    }


def test_a_claimed_but_unsent_chunk_is_taken_over_and_sent(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    seed_job(redis_client)
    redis_client.set("smsq:chunk:job-c:0", "claimed:intis-sandbox:deadbeef")  # its worker died
    worker.app.dispatch_chunk.send(*ARGS)
    worker.join()
    assert sent_numbers(sandboxes) == ["447400123201"]
    assert counts(redis_client) == {"submitted": 1}
    assert redis_client.get("smsq:chunk:job-c:0") == b"done"


def test_a_chunk_caught_sending_becomes_unknown_and_is_not_resent(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    seed_job(redis_client)
    redis_client.set("smsq:chunk:job-c:0", "sending:intis-sandbox:deadbeef")
    worker.app.dispatch_chunk.send(*ARGS)
    worker.join()
    assert sent_numbers(sandboxes) == []
    assert counts(redis_client) == {"unknown": 1}


async def test_a_second_recording_of_a_chunk_changes_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seed_job(redis_client, queued=2)
    client = aredis.Redis.from_url(redis_url)
    recorder = ChunkRecorder(client, Keys(), first_check=30.0)
    first = [
        RecipientOutcome("111", Status.SUBMITTED, "p1"),
        RecipientOutcome("222", Status.REJECTED, reason="r"),
    ]
    assert sum((await recorder.record("job-c", "smsq:chunk:job-c:0", "a", first)).values()) == 2
    again = [RecipientOutcome("111", Status.UNKNOWN), RecipientOutcome("222", Status.UNKNOWN)]
    assert sum((await recorder.record("job-c", "smsq:chunk:job-c:0", "a", again)).values()) == 0
    assert counts(redis_client) == {"submitted": 1, "rejected": 1}
    assert redis_client.hget("smsq:job:job-c", "chunks_done") == b"1"
    assert redis_client.xlen("smsq:events") == 2
    # Counts move from each recipient's recorded status, whatever a caller believes it was.
    redis_client.delete("smsq:chunk:job-c:1")
    redis_client.hset("smsq:job:job-c", "chunks", 2)
    await recorder.record(
        "job-c", "smsq:chunk:job-c:1", "a", [RecipientOutcome("111", Status.UNKNOWN)]
    )
    assert counts(redis_client) == {"unknown": 1, "rejected": 1}
    await client.aclose()


def test_an_otp_past_its_max_age_is_failed_not_sent(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes, otp_max_age=60))
    seed_job(redis_client)
    otp = [*ARGS[:8], "otp", 1, time.time() - 120]
    worker.app.dispatch_chunk.send(*otp)
    worker.join()
    assert sent_numbers(sandboxes) == []
    record = json.loads(redis_client.hget("smsq:job:job-c:rcpt", "447400123201") or b"{}")
    assert record["status"] == "failed" and "otp_max_age" in record["reason"]


def test_a_provider_pause_holds_sends_even_without_rate_rules(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    assert not worker.app.settings.limits_for("intis-sandbox").for_endpoint("send")
    seed_job(redis_client)
    redis_client.set("smsq:rl:intis-sandbox:send:pause", "1", px=1500)
    paused_until = time.time() + 1.5
    worker.app.dispatch_chunk.send(*ARGS)
    worker.join()
    sends = [e for e in sandboxes.log("intis") if e.path.endswith("/send.php")]
    assert len(sends) == 1 and sends[0].at >= paused_until - 0.05


def test_a_dispatch_failing_on_every_try_ends_failed_with_a_reason(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    seed_job(redis_client)
    # A route naming an account this worker does not have: every try raises.
    args = [*ARGS[:2], ["gone-account"], *ARGS[3:]]
    worker.app.dispatch_chunk.send_with_options(args=args, retries=5)  # its last try
    worker.join()
    record = json.loads(redis_client.hget("smsq:job:job-c:rcpt", "447400123201") or b"{}")
    assert record["status"] == "failed" and "every try" in record["reason"]
    assert counts(redis_client) == {"failed": 1}
    letters = [json.loads(v) for v in redis_client.hvals("smsq:dlq")]
    assert [d["source"] for d in letters] == ["dispatch:dispatch_chunk"]
    assert "KeyError" in letters[0]["reasons"][0] and letters[0]["job_id"] == "job-c"
    # Dramatiq failed the message (its own .XQ) and its on_retry_exhausted hook did the rest.
    assert redis_client.zcard("dramatiq:smsq-dispatch.XQ") == 1
    assert sent_numbers(sandboxes) == []
