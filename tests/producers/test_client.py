"""The producer clients (sync and asyncio) against real Redis, the real worker and the
Intis sandbox: pending vs. no such job, batch enqueue in one transaction, wait, events over
consumer groups with acknowledgement, cancel (race-safe against dispatch), and the HTTP
status endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from producers.client import AsyncSmsqClient, SmsqClient, send_payload
from producers.contract import JobRejected
from producers.status import FINAL_STATUSES, JobState, Status
from tests.support.sandboxes import SandboxFactory, sandbox_settings, sent_numbers
from tests.support.web import TOKENS, LoopThread, http, post_json, served
from worker.core.config import WebSettings
from worker.tracking.scheduler import Scheduler

QUICK = {
    "first_check": 0.3,
    "max_check_interval": 0.5,
    "reconcile_interval": 0.25,
    "tick_seconds": 0.05,
    "lease_seconds": 1.0,
}


def _numbers(n: int, start: int = 0) -> list[str]:
    return [f"+7916{start + i:07d}" for i in range(n)]


def _exec_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


def test_cancelled_is_a_final_status_and_pending_a_job_state() -> None:
    assert Status.CANCELLED in FINAL_STATUSES and Status.CANCELLED.is_final
    assert JobState.PENDING.value == "pending" and JobState.CANCELLED.value == "cancelled"


def test_pending_until_a_worker_takes_the_job_then_wait_settles(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    start_scheduler: Callable[..., Scheduler],
    run_sandboxes: SandboxFactory,
) -> None:
    sandboxes = run_sandboxes(["intis"])
    with SmsqClient(redis_url) as client:
        assert client.status("no-such-job") is None
        job_id = client.enqueue_send(
            provider="intis", sender="smstest", text="hi", recipients=_numbers(3)
        )
        pending = client.status(job_id)
        assert pending is not None and pending.state == "pending"
        assert pending.record["kind"] == "send" and float(pending.record["enqueued_at"]) > 0
        with pytest.raises(TimeoutError):
            client.wait(job_id, timeout=0.3)
        with pytest.raises(KeyError):
            client.wait("no-such-job", timeout=0.3)
        settings = sandbox_settings(redis_url, sandboxes, scheduler=QUICK)
        make_worker(settings)
        start_scheduler(settings)
        settled = client.wait(job_id, timeout=30)
    assert settled.state == "done"
    assert sum(settled.counts.values()) == 3
    assert all(Status(s).is_final for s in settled.counts)
    # The marker went with the record; nothing is left pending.
    assert not redis_client.exists(f"smsq:pending:{job_id}")


def test_enqueue_many_is_one_transaction_and_all_or_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    payloads = [
        send_payload(provider="intis", sender="smstest", text=f"n{i}", recipients=_numbers(2, i))
        for i in range(50)
    ]
    with SmsqClient(redis_url) as client:
        before = _exec_calls(redis_client)
        ids = client.enqueue_many(payloads)
        assert _exec_calls(redis_client) - before == 1  # one MULTI/EXEC: one round trip
        assert len(set(ids)) == 50
        assert redis_client.llen("dramatiq:smsq-intake") == 50
        assert all(client.status(i).state == "pending" for i in ids)  # type: ignore[union-attr]
        bad = [*payloads[:3], {"kind": "send", "provider": "intis"}]
        with pytest.raises(JobRejected):
            client.enqueue_many(bad)
        assert redis_client.llen("dramatiq:smsq-intake") == 50  # nothing of the bad batch


def test_cancel_a_scheduled_job_before_dispatch(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    stream_start = "0"
    with SmsqClient(redis_url) as client:
        assert client.cancel("nothing-here").result == "not_found"
        at = datetime.now(UTC) + timedelta(seconds=3)
        job_id = client.enqueue_send(
            provider="intis",
            sender="smstest",
            text="later",
            recipients=[*_numbers(120), "12"],  # 3 chunks of 50; one number rejected
            scheduled_at=at,
        )
        deadline = time.monotonic() + 10
        while client.status(job_id).state != "accepted":  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        result = client.cancel(job_id)
        assert result.cancelled and result.recipients == 120
        again = client.cancel(job_id)
        assert again.result == "cancelled" and not again.recipients
        # The delayed chunks come due; the worker must not send them.
        worker.join(timeout=30)
        status = client.wait(job_id, timeout=5)
        assert status.state == "cancelled"
        assert status.counts == {"cancelled": 120, "rejected": 1}
        rows = client.status(job_id, recipients=True)
        assert rows is not None
        cancelled = [r for r in rows.recipients if r.status == "cancelled"]
        assert len(cancelled) == 120 and all(r.reason for r in cancelled)
    assert sent_numbers(sandboxes) == []
    assert not [e for e in sandboxes.log("intis") if e.path.endswith("/send.php")]
    events = redis_client.xrange("smsq:events", stream_start, "+")
    statuses = [f[b"status"] for _, f in events if f.get(b"job_id") == job_id.encode()]
    assert statuses == [b"cancelled"] * 120


def test_cancel_refused_once_a_chunk_is_dispatching(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    with SmsqClient(redis_url) as client:
        job_id = client.enqueue_send(
            provider="intis", sender="smstest", text="now", recipients=_numbers(5)
        )
        worker.join(timeout=30)
        result = client.cancel(job_id)
        assert result.result == "done" and not result.cancelled
        status = client.status(job_id)
        assert status is not None and "cancelled" not in status.counts


def test_cancel_racing_dispatch_never_sends_a_cancelled_recipient(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    start_scheduler: Callable[..., Scheduler],
    run_sandboxes: SandboxFactory,
) -> None:
    """Cancel fired while the worker takes the job's chunks: every recipient ends either
    cancelled (never sent) or sent exactly once, never both; a cancel that wins cancels all."""
    sandboxes = run_sandboxes(["intis"])
    settings = sandbox_settings(redis_url, sandboxes, scheduler=QUICK)
    make_worker(settings, threads=4)
    start_scheduler(settings)
    outcomes: dict[str, int] = {}
    all_numbers: dict[str, list[str]] = {}
    with SmsqClient(redis_url) as client:
        for round_ in range(12):
            numbers = _numbers(200, round_ * 1000)  # 4 chunks
            job_id = client.enqueue_send(
                provider="intis", sender="smstest", text="race", recipients=numbers
            )
            all_numbers[job_id] = [n.lstrip("+") for n in numbers]
            deadline = time.monotonic() + 10
            while True:
                status = client.status(job_id)
                assert status is not None
                if status.state != "pending":
                    break
                assert time.monotonic() < deadline
                time.sleep(0.001)
            time.sleep(round_ * 0.004)  # from "just accepted" to "chunks being taken"
            result = client.cancel(job_id)
            outcomes[result.result] = outcomes.get(result.result, 0) + 1
        for job_id in all_numbers:
            client.wait(job_id, timeout=30)
    sent = sent_numbers(sandboxes)
    assert len(sent) == len(set(sent))
    for job_id, numbers in all_numbers.items():
        status = SmsqClient(redis_url).status(job_id, recipients=True)
        assert status is not None
        by_status = {r.phone: r.status for r in status.recipients}
        cancelled = {p for p, s in by_status.items() if s == "cancelled"}
        assert not cancelled & set(sent)
        if status.state == "cancelled":
            assert cancelled == set(numbers)
        else:
            assert not cancelled and set(numbers) <= set(sent)
    assert sum(outcomes.values()) == 12
    print(f"\ncancel racing dispatch, 12 jobs of 4 chunks: {outcomes}")


def test_events_reader_redelivers_unacknowledged_events(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    start_scheduler: Callable[..., Scheduler],
    run_sandboxes: SandboxFactory,
) -> None:
    sandboxes = run_sandboxes(["intis"])
    with SmsqClient(redis_url) as client:
        client.read_events("billing", "b-1", block=None)  # the group starts here
        settings = sandbox_settings(redis_url, sandboxes, scheduler=QUICK)
        make_worker(settings)
        start_scheduler(settings)
        job_id = client.enqueue_send(
            provider="intis", sender="smstest", text="ev", recipients=_numbers(4)
        )
        client.wait(job_id, timeout=30)
        first = client.read_events("billing", "b-1", count=1000, block=0.5)
        mine = [e for e in first if e.job_id == job_id]
        assert len(mine) >= 8  # submitted then a final status, per recipient
        assert {e.type for e in mine} == {"status"}
    # The consumer "crashes" before acknowledging: a new client gets the same events.
    with SmsqClient(redis_url) as again:
        replayed = again.read_events("billing", "b-1", count=1000, block=0.5)
        assert [e.id for e in replayed] == [e.id for e in first]
        assert again.ack("billing", *(e.id for e in replayed)) == len(replayed)
    with SmsqClient(redis_url) as third:
        assert third.read_events("billing", "b-1", count=1000, block=0.2) == []
    # Another group reads the same stream independently.
    pending = redis_client.xpending("smsq:events", "billing")
    assert pending["pending"] == 0


async def test_async_client_has_the_same_api(
    redis_url: str,
    make_worker: Any,
    start_scheduler: Callable[..., Scheduler],
    run_sandboxes: SandboxFactory,
) -> None:
    sandboxes = run_sandboxes(["intis"])
    async with AsyncSmsqClient(redis_url) as client:
        assert await client.status("none") is None
        await client.read_events("async-group", "a-1", block=None)
        ids = await client.enqueue_many(
            [
                send_payload(provider="intis", sender="smstest", text="a", recipients=_numbers(3)),
                send_payload(
                    provider="intis",
                    sender="smstest",
                    text="b",
                    recipients=_numbers(2, 50),
                    scheduled_at=datetime.now(UTC) + timedelta(seconds=30),
                ),
            ]
        )
        assert [(await client.status(i)).state for i in ids] == ["pending"] * 2  # type: ignore[union-attr]
        hlr_id = await client.enqueue_hlr(provider="intis", recipients=_numbers(1, 90))
        settings = sandbox_settings(redis_url, sandboxes, scheduler=QUICK)
        await asyncio.to_thread(make_worker, settings)
        start_scheduler(settings)
        done = await client.wait(ids[0], timeout=30)
        assert done.state == "done" and sum(done.counts.values()) == 3
        hlr = await client.wait(hlr_id, timeout=30)
        assert hlr.state == "done"
        while (await client.status(ids[1])).state == "pending":  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        cancelled = await client.cancel(ids[1])
        assert cancelled.cancelled and cancelled.recipients == 2
        rows = await client.status(ids[1], recipients=True)
        assert rows is not None and {r.status for r in rows.recipients} == {"cancelled"}
        events = await client.read_events("async-group", "a-1", count=1000, block=0.5)
        by_job = {e.job_id for e in events}
        assert {ids[0], ids[1], hlr_id} <= by_job
        assert await client.ack("async-group", *(e.id for e in events)) == len(events)
        depths = await client.queue_depths()
        assert "smsq-intake" in depths


def test_http_status_endpoint(
    loop_thread: LoopThread,
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    start_scheduler: Callable[..., Scheduler],
    run_sandboxes: SandboxFactory,
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = replace(
        sandbox_settings(redis_url, sandboxes, scheduler=QUICK),
        web=WebSettings(intake_tokens=TOKENS),
    )
    auth = {"Authorization": f"Bearer {TOKENS[1]}"}
    with served(loop_thread, settings) as server:
        payload = {
            "kind": "send",
            "job_id": "web-status-1",
            "provider": "intis",
            "sender": "smstest",
            "text": "hello",
            "recipients": ["+447911123456", "+447400123456"],
        }
        assert post_json(server.url + "/v1/jobs", payload)[0] == 202
        status, body = http("GET", server.url + "/v1/jobs/web-status-1", headers=auth)
        assert status == 200 and json.loads(body)["state"] == "pending"
        assert http("GET", server.url + "/v1/jobs/web-status-1")[0] == 401
        bad = {"Authorization": "Bearer nope"}
        assert http("GET", server.url + "/v1/jobs/web-status-1", headers=bad)[0] == 401
        status, body = http("GET", server.url + "/v1/jobs/nothing", headers=auth)
        assert status == 404 and json.loads(body)["errors"]
        make_worker(settings)
        start_scheduler(settings)
        SmsqClient(redis_url).wait("web-status-1", timeout=30)
        status, body = http("GET", server.url + "/v1/jobs/web-status-1?recipients=10", headers=auth)
        data = json.loads(body)
        assert status == 200 and data["state"] == "done"
        assert sum(data["counts"].values()) == 2 and data["record"]["valid"] == "2"
        phones = [r["phone"] for r in data["recipients"]]
        assert len(phones) == 2 and not any("123456" in p for p in phones)  # masked
        status, body = http(
            "GET",
            server.url + "/v1/jobs/web-status-1?recipients=10&show_numbers=1",
            headers=auth,
        )
        assert {r["phone"] for r in json.loads(body)["recipients"]} == {
            "447911123456",
            "447400123456",
        }


def test_take_over_does_not_overwrite_a_cancel(redis_url: str) -> None:
    """A redelivery that read ``claimed`` must not take the chunk over after it was
    released and cancelled in between."""
    import redis.asyncio as aredis

    from worker.pipeline.chunk_state import ChunkOwner

    async def scenario() -> tuple[bool, bytes | None]:
        client = aredis.Redis.from_url(redis_url)
        try:
            key = "smsq:chunk:j:0"
            await client.set(key, "claimed:acc:tok1")
            owner = ChunkOwner(client, key)
            await client.set(key, "cancelled")  # released, then cancelled
            took = await owner.take_over("acc")
            return took, await client.get(key)
        finally:
            await client.aclose()

    took, value = asyncio.run(scenario())
    assert not took and value == b"cancelled"


def test_cli_cancel(redis_url: str, redis_client: redis.Redis) -> None:
    """``smsq cancel`` on a job taken by no worker yet, then on an accepted one (its chunks
    not claimed: cancel succeeds) as a producer would run it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("SMSQ_CONFIG", None)
    cmd = [sys.executable, "-m", "worker.entry.cli", "cancel"]
    with SmsqClient(redis_url) as client:
        job_id = client.enqueue_send(
            provider="intis", sender="smstest", text="x", recipients=_numbers(2)
        )
    out = subprocess.run([*cmd, job_id], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "no worker has taken it yet" in out.stderr
    out = subprocess.run([*cmd, "nope"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "no such job" in out.stderr
    # Record it as a worker would (accepted, one chunk not yet claimed), then cancel it.
    redis_client.delete(f"smsq:pending:{job_id}")
    redis_client.hset(f"smsq:job:{job_id}", mapping={"state": "accepted", "chunks": 1})
    queued = json.dumps({"status": "queued", "at": 1.0})
    redis_client.hset(
        f"smsq:job:{job_id}:rcpt", mapping={"79160000000": queued, "79160000001": queued}
    )
    redis_client.hset(f"smsq:job:{job_id}:counts", mapping={"queued": 2})
    out = subprocess.run([*cmd, job_id], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "cancelled (2 recipients)" in out.stdout
    assert redis_client.get(f"smsq:chunk:{job_id}:0") == b"cancelled"


def _accepted_job(client: redis.Redis, job_id: str, phones: list[str], chunks: int) -> None:
    """An accepted job of ``chunks`` chunks none of which a worker has taken."""
    client.hset(f"smsq:job:{job_id}", mapping={"state": "accepted", "chunks": chunks})
    client.hset(
        f"smsq:job:{job_id}:rcpt",
        mapping={p: json.dumps({"status": "queued", "at": 1.0}) for p in phones},
    )
    client.hset(f"smsq:job:{job_id}:counts", "queued", len(phones))


def test_cancel_rereads_a_chunk_count_that_changed_after_it_was_read(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The cancel script gets the chunks' keys through KEYS, so the client reads the job's
    number of chunks first; when the record says otherwise by the time the script runs, the
    script changes nothing and the client reads again: every chunk ends cancelled, once."""
    phones = ["79161234567", "79161234568"]

    def rewritten_between(job_id: str, calls: list[int]) -> Any:
        def rewrite(original: Any) -> Any:
            def call(job: str, chunks: Any) -> Any:
                calls.append(int(chunks))
                if len(calls) == 1:  # the job's record is written again, now with 2 chunks
                    redis_client.hset(f"smsq:job:{job_id}", "chunks", 2)
                return original(job, chunks)

            return call

        return rewrite

    with SmsqClient(redis_url) as client:
        _accepted_job(redis_client, "jc-sync", phones, chunks=1)
        calls: list[int] = []
        client._cancel_call = rewritten_between("jc-sync", calls)(client._cancel_call)  # type: ignore[method-assign]
        result = client.cancel("jc-sync")
    assert result.cancelled and result.recipients == 2 and calls == [1, 2]
    assert redis_client.mget("smsq:chunk:jc-sync:0", "smsq:chunk:jc-sync:1") == [b"cancelled"] * 2

    async def run_async() -> Any:
        async with AsyncSmsqClient(redis_url) as client:
            client._cancel_call = rewritten_between("jc-async", async_calls)(client._cancel_call)  # type: ignore[method-assign]
            return await client.cancel("jc-async")

    _accepted_job(redis_client, "jc-async", phones, chunks=1)
    async_calls: list[int] = []
    result = asyncio.run(run_async())
    assert result.cancelled and result.recipients == 2 and async_calls == [1, 2]
    assert redis_client.mget("smsq:chunk:jc-async:0", "smsq:chunk:jc-async:1") == [b"cancelled"] * 2
    statuses = [f[b"status"] for _, f in redis_client.xrange("smsq:events")]
    assert statuses == [b"cancelled"] * 4  # one event per recipient of the two jobs


def test_cancel_whose_chunk_count_keeps_changing_changes_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    _accepted_job(redis_client, "jc-moving", ["79161234567"], chunks=1)
    with SmsqClient(redis_url) as client:
        original = client._cancel_call

        def call(job: str, chunks: Any) -> Any:
            redis_client.hincrby(f"smsq:job:{job}", "chunks", 1)
            return original(job, chunks)

        client._cancel_call = call  # type: ignore[method-assign]
        result = client.cancel("jc-moving")
    assert result.result == "pending" and not result.cancelled  # "try again in a moment"
    assert redis_client.hget("smsq:job:jc-moving", "state") == b"accepted"
    assert not redis_client.keys("smsq:chunk:jc-moving:*")
    assert redis_client.xlen("smsq:events") == 0
