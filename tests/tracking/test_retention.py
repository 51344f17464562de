"""Retention never purges a live job, never lets a purged id in again, and late reports find nothing."""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio as aredis

from producers.status import Status
from tests.support.messages import message, push_raw
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from tests.support.tracking import KEYS, at, make_settings, runtime, seed_job
from worker.providers.base import StatusReport
from worker.state.status_apply import StatusApplier
from worker.tracking import retention, runs


async def test_a_job_that_reopened_is_not_purged(redis_url: str, redis_client: redis.Redis) -> None:
    settings = make_settings(redis_url, None, scheduler={"retention": 100, "horizon": 1000})
    now = time.time()
    seed_job(redis_client, "reused", state="dead_lettered", counts={}, created_at=now - 5)
    async with runtime(settings) as rt:
        assert (await retention.sweep_retention(rt, clock=at(now, 0)))["finished"] == 1
        # The id is taken again by a live job before its purge time (what intake does).
        seed_job(redis_client, "reused", state="done", counts={"submitted": 1}, created_at=now)
        redis_client.persist(KEYS.job("reused"))
        result = await retention.sweep_retention(rt, clock=at(now, 150))
    assert result["purged"] == 0
    assert redis_client.hget(KEYS.job("reused"), "state") == b"done"
    assert redis_client.hlen(KEYS.recipients("reused")) == 1
    assert redis_client.zscore(KEYS.retention, "reused") is None
    assert redis_client.ttl(KEYS.job("reused")) == -1


async def test_every_due_job_is_purged_and_late_reports_leave_no_orphans(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_url, None, scheduler={"retention": 100, "horizon": 1000})
    now = time.time()
    for i in range(1200):  # more than one page
        seed_job(redis_client, f"old{i}", state="done", counts={"delivered": 1}, created_at=now - 5)
    async with runtime(settings) as rt:
        assert (await retention.sweep_retention(rt, clock=at(now, 0)))["finished"] == 1200
        assert (await retention.sweep_retention(rt, clock=at(now, 150)))["purged"] == 1200
    assert (
        redis_client.zcard(KEYS.jobs) == 0
        and redis_client.hlen(KEYS.message_index("intis-sandbox")) == 0
    )
    assert redis_client.exists(KEYS.purged("old7"))
    # A provider's late retry of a report for a purged job changes nothing.
    redis_client.hset(KEYS.message_index("intis-sandbox"), "old70001", "old7|447400123001")
    client = aredis.Redis.from_url(redis_url)
    late = StatusReport(
        provider_message_id="old70001", status=Status.DELIVERED, raw_status="deliver"
    )
    result = await StatusApplier(client, "smsq").apply("intis-sandbox", [late], "webhook")
    await client.aclose()
    assert (result.applied, result.unmatched) == (0, 1)
    assert not redis_client.exists(KEYS.recipients("old7"), KEYS.counts("old7"))
    assert redis_client.xlen("smsq:events") == 0


def test_a_purged_job_id_is_not_accepted_again(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    redis_client.set(KEYS.purged("done-long-ago"), "1", ex=3600)
    job = {"job_id": "done-long-ago", "provider": "intis", "sender": "smstest", "text": "x"}
    push_raw(redis_client, message([{**job, "recipients": ["+447400123401"]}]))
    worker.join()
    assert not redis_client.exists(KEYS.job("done-long-ago"))
    assert [e for e in sandboxes.log("intis") if e.path.endswith("/send.php")] == []


async def test_old_incoming_messages_and_dead_letters_are_trimmed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    from datetime import UTC, datetime

    from worker.providers.base import IncomingMessage
    from worker.tracking.inbound import Inbound

    settings = make_settings(redis_url, None, scheduler={"retention": 100, "horizon": 1000})
    now = time.time()
    client = aredis.Redis.from_url(redis_url)
    inbound = Inbound(client, KEYS)
    old = IncomingMessage(
        "1", "447400123501", "old", received_at=datetime.fromtimestamp(now - 500, UTC)
    )
    new = IncomingMessage(
        "2", "447400123502", "new", received_at=datetime.fromtimestamp(now - 5, UTC)
    )
    await inbound.store_incoming("intis-sandbox", [old, new], "poll")
    await client.aclose()
    redis_client.hset(KEYS.dead_letters, mapping={"a": "{}", "b": "{}"})
    redis_client.zadd(KEYS.dead_letter_index, {"a": now - 500, "b": now - 5})
    async with runtime(settings) as rt:
        result = await retention.sweep_retention(rt, clock=at(now, 0))
    assert (result["incoming"], result["dead_letters"]) == (1, 1)
    assert redis_client.hkeys("smsq:mo:intis-sandbox") == [b"2"]
    assert redis_client.hkeys(KEYS.dead_letters) == [b"b"]


async def test_retention_expires_finished_jobs_only(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_url, None, scheduler={"retention": 100, "horizon": 1000})
    now = time.time()
    seed_job(
        redis_client,
        "finished",
        state="done",
        counts={"delivered": 2, "expired": 1},
        created_at=now - 5,
    )
    seed_job(
        redis_client,
        "open",
        state="done",
        counts={"delivered": 1, "submitted": 1},
        created_at=now - 4,
    )
    seed_job(redis_client, "unknown-young", state="done", counts={"unknown": 1}, created_at=now - 3)
    seed_job(
        redis_client, "unknown-old", state="done", counts={"unknown": 1}, created_at=now - 2000
    )
    seed_job(
        redis_client, "dispatching", state="accepted", counts={"queued": 1}, created_at=now - 2
    )
    seed_job(redis_client, "dead", state="dead_lettered", counts={}, created_at=now - 1)
    finished = {"finished", "unknown-old", "dead"}
    unfinished = {"open", "unknown-young", "dispatching"}
    async with runtime(settings) as rt:
        first = await retention.sweep_retention(rt, clock=at(now, 0))
        assert (first["finished"], first["purged"]) == (3, 0)
        for job in finished:
            assert 100 < redis_client.ttl(KEYS.job(job)) <= 100 + 60
        for job in unfinished:
            assert (
                redis_client.ttl(KEYS.job(job)) == -1
                and redis_client.ttl(KEYS.recipients(job)) == -1
            )

        # A job that finishes later is found by a later sweep.
        redis_client.hset(KEYS.counts("open"), mapping={"submitted": 0, "delivered": 2})
        second = await retention.sweep_retention(rt, clock=at(now, 50))
        assert (second["finished"], second["purged"]) == (1, 0)

        third = await retention.sweep_retention(rt, clock=at(now, 101))
        assert third["purged"] == 3
    for job in finished:
        assert not any(redis_client.exists(k) for k in runs.job_keys(KEYS, job))
        assert redis_client.zscore(KEYS.jobs, job) is None
    assert not any(
        k.decode().startswith("finished")
        for k in redis_client.hkeys(KEYS.message_index("intis-sandbox"))
    )
    for job in unfinished | {"open"}:
        assert redis_client.exists(KEYS.job(job)) and redis_client.exists(KEYS.recipients(job))
    assert redis_client.ttl(KEYS.job("unknown-young")) == -1
    assert redis_client.ttl(KEYS.job("dispatching")) == -1
