"""Status polls (the ``reconcile_account`` run): backoff, validity and horizon, messages
settled by a push left alone, push-only providers, HLR results through polls.

Real Redis, real sandboxes over HTTP, the real adapters; time is moved by handing the
runs a clock, so backoff and deadlines are checked without waiting for them.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis

from producers.status import Status
from tests.support.sandboxes import SandboxFactory, SandboxThread
from tests.support.tracking import KEYS, PHONES, at, make_settings, records, runtime
from worker.core.runtime import Runtime
from worker.pipeline import dispatch
from worker.providers.base import RecipientOutcome, SendRequest, StatusReport
from worker.providers.sandbox_kit import OutcomeMix
from worker.state.status_apply import StatusApplier, canonical_id
from worker.tracking import runs, status_polls


@pytest.fixture
def slow_sandboxes(run_sandboxes: SandboxFactory) -> SandboxThread:
    """Messages that stay pending (final after a day): only smsq's own rules settle them."""
    return run_sandboxes(["intis"], mix=OutcomeMix(final_after=86400, seed=3))


async def submit(
    rt: Runtime,
    account: str,
    job_id: str,
    phones: list[str],
    *,
    created_at: float,
    sent_at: float | None = None,
    validity: int | None = None,
    client_id: int | None = None,
) -> list[RecipientOutcome]:
    """A job sent for real through the adapter, its outcome written as dispatch writes it."""
    r = rt.async_redis()
    await r.hset(
        KEYS.job(job_id),
        mapping={
            "kind": "send",
            "state": "done",
            "created_at": created_at,
            "validity": validity or "",
            "scheduled_at": "",
            "chunks": 1,
            "chunks_done": 0,
        },
    )
    await r.zadd(KEYS.jobs, {job_id: created_at})
    await r.hset(KEYS.counts(job_id), mapping={"queued": len(phones)})
    request = SendRequest(f"{job_id}:0", "smstest", "hello", phones, client_id=client_id)
    outcomes = await rt.adapter(account).send(request)
    await record(rt, job_id, account, outcomes, now=sent_at or created_at)
    return outcomes


async def record(
    rt: Runtime,
    job_id: str,
    account: str,
    outcomes: list[RecipientOutcome],
    *,
    now: float,
    chunk: int = 0,
) -> None:
    """Outcomes written as dispatch writes them."""
    chunk_key = KEYS.chunk(job_id, chunk)
    await rt.chunk_recorder().record(job_id, chunk_key, account, outcomes, now=now)


def status_requests(sandboxes: SandboxThread, kind: str) -> list[Any]:
    return [e for e in sandboxes.log(kind) if e.path.endswith("/status.php")]


def awaiting(client: redis.Redis, account: str) -> dict[str, float]:
    return {k.decode(): s for k, s in client.zrange(KEYS.awaiting(account), 0, -1, withscores=True)}


def assert_next_checks(client: redis.Redis, account: str, when: float) -> None:
    """Every message awaiting on ``account`` is next checked at ``when``."""
    scores = list(awaiting(client, account).values())
    assert scores and scores == pytest.approx([when] * len(scores), abs=1e-3)


async def test_backoff_doubles_and_the_validity_settles_as_expired(
    redis_url: str, redis_client: redis.Redis, slow_sandboxes: SandboxThread
) -> None:
    cfg = {"first_check": 10, "max_check_interval": 40, "horizon": 1000}
    async with runtime(make_settings(redis_url, slow_sandboxes, scheduler=cfg)) as rt:
        t0 = time.time()
        account = "intis-sandbox"
        await submit(rt, account, "j1", PHONES, created_at=t0, validity=100)
        polls = lambda: len(status_requests(slow_sandboxes, "intis"))  # noqa: E731

        run = await status_polls.reconcile_account(rt, account, clock=at(t0, 5))
        assert run.get("checked", 0) == 0 and polls() == 0  # not due before first_check
        expected_next = {10: 30, 30: 70, 70: 100}  # +20, +40, then capped by the validity
        for now, following in expected_next.items():
            run = await status_polls.reconcile_account(rt, account, clock=at(t0, now))
            assert run["checked"] == 3 and run["requests"] == 1
            assert_next_checks(redis_client, account, t0 + following)
            run = await status_polls.reconcile_account(rt, account, clock=at(t0, following - 1))
            assert run.get("checked", 0) == 0
        assert polls() == 3
        assert all(
            len(e.params["state"].split(",")) == 3 for e in status_requests(slow_sandboxes, "intis")
        )

        run = await status_polls.reconcile_account(rt, account, clock=at(t0, 100))
        assert run["expired"] == 3
        assert awaiting(redis_client, account) == {}
        for record in records(redis_client, "j1").values():
            assert record["status"] == "expired"
            assert record["raw_status"].startswith(
                "smsq: no final status within the message's validity"
            )
        counts = redis_client.hgetall(KEYS.counts("j1"))
        assert int(counts[b"expired"]) == 3 and int(counts[b"submitted"]) == 0
        polls_made = redis_client.hgetall(runs.TrackingKeys("smsq").polls("j1"))
        assert {int(v) for v in polls_made.values()} == {3}  # the validity check itself: 4th
        summary = redis_client.hgetall(runs.TrackingKeys("smsq").last_run(account))
        assert summary[b"awaiting"] == b"0"


async def test_validity_runs_from_when_the_message_was_sent(
    redis_url: str, redis_client: redis.Redis, slow_sandboxes: SandboxThread
) -> None:
    cfg = {"first_check": 10, "max_check_interval": 40, "horizon": 1000}
    async with runtime(make_settings(redis_url, slow_sandboxes, scheduler=cfg)) as rt:
        t0 = time.time()
        account = "intis-sandbox"
        # Created 50 s before its chunk could be sent (rate limits): validity 100 s ends at
        # t0 + 100, not at t0 + 50.
        await submit(rt, account, "late", PHONES[:1], created_at=t0 - 50, sent_at=t0, validity=100)
        await status_polls.reconcile_account(rt, account, clock=at(t0, 10))
        run = await status_polls.reconcile_account(rt, account, clock=at(t0, 60))
        assert run["requests"] == 1 and not run.get("expired")
        assert_next_checks(redis_client, account, t0 + 100)
        run = await status_polls.reconcile_account(rt, account, clock=at(t0, 100))
        assert run["expired"] == 1


async def test_horizon_expires_submitted_and_gives_up_on_unknown(
    redis_url: str, redis_client: redis.Redis, slow_sandboxes: SandboxThread
) -> None:
    cfg = {"first_check": 10, "max_check_interval": 1000, "horizon": 50}
    async with runtime(make_settings(redis_url, slow_sandboxes, scheduler=cfg)) as rt:
        t0 = time.time()
        account = "intis-sandbox"
        await submit(rt, account, "j2", PHONES[:1], created_at=t0)
        # An ambiguous send whose id is known (SMSC-style): unknown, awaiting reconciliation.
        unknown = RecipientOutcome(PHONES[1], Status.UNKNOWN, provider_message_id="777000")
        await rt.async_redis().hincrby(KEYS.counts("j2"), "queued", 1)
        await record(rt, "j2", account, [unknown], now=t0, chunk=1)

        await status_polls.reconcile_account(rt, account, clock=at(t0, 10))
        assert_next_checks(redis_client, account, t0 + 30)
        await status_polls.reconcile_account(rt, account, clock=at(t0, 30))
        assert_next_checks(redis_client, account, t0 + 50)  # 30 + 40, capped by the horizon
        run = await status_polls.reconcile_account(rt, account, clock=at(t0, 50))
        assert run["expired"] == 1 and run["gave_up"] == 1
        rows = records(redis_client, "j2")
        assert rows[PHONES[0]]["status"] == "expired"
        assert "horizon" in rows[PHONES[0]]["raw_status"]
        assert rows[PHONES[1]]["status"] == "unknown"
        assert rows[PHONES[1]]["reason"].startswith("reconciliation gave up")
        assert awaiting(redis_client, account) == {}


async def test_a_message_settled_by_a_webhook_is_not_polled_again(
    redis_url: str, redis_client: redis.Redis, slow_sandboxes: SandboxThread
) -> None:
    cfg = {"first_check": 10}
    async with runtime(make_settings(redis_url, slow_sandboxes, scheduler=cfg)) as rt:
        t0 = time.time()
        account = "intis-sandbox"
        outcomes = await submit(rt, account, "j3", PHONES[:2], created_at=t0)
        pushed, polled = (o.provider_message_id or "" for o in outcomes)
        applier = StatusApplier(rt.async_redis(), "smsq")
        await applier.apply(account, [StatusReport(pushed, Status.DELIVERED, "deliver")], "webhook")
        assert set(awaiting(redis_client, account)) == {canonical_id(polled)}

        await status_polls.reconcile_account(rt, account, clock=at(t0, 10))
        [request] = status_requests(slow_sandboxes, "intis")
        assert request.params["state"] == polled
        assert set(awaiting(redis_client, account)) == {canonical_id(polled)}
        assert records(redis_client, "j3")[PHONES[0]]["source"] == "webhook"


async def test_a_push_only_provider_is_not_polled_and_settles_at_the_horizon(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intellisoftware"], mix=OutcomeMix(final_after=86400))
    cfg = {"first_check": 10, "horizon": 60}
    async with runtime(make_settings(redis_url, sandboxes, scheduler=cfg)) as rt:
        t0 = time.time()
        account = "intellisoftware-sandbox"
        assert not runs.polls_status(rt.adapter(account))
        await submit(rt, account, "j4", PHONES[:2], created_at=t0)
        requests_after_send = len(sandboxes.log("intellisoftware"))
        await status_polls.reconcile_account(rt, account, clock=at(t0, 10))
        assert_next_checks(redis_client, account, t0 + 60)
        run = await status_polls.reconcile_account(rt, account, clock=at(t0, 60))
        assert run["expired"] == 2 and run.get("requests", 0) == 0
        assert len(sandboxes.log("intellisoftware")) == requests_after_send
        assert {r["status"] for r in records(redis_client, "j4").values()} == {"expired"}


async def test_smsc_hlr_results_arrive_through_status_polls(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc"], mix=OutcomeMix(final_after=0.3, seed=5))
    cfg = {"first_check": 1}
    async with runtime(make_settings(redis_url, sandboxes, scheduler=cfg)) as rt:
        t0 = time.time()
        account = "smsc-sandbox"
        phones = ["79161234567", "79031234567", "79261234567"]
        await rt.async_redis().hset(
            KEYS.job("h1"), mapping={"kind": "hlr", "state": "accepted", "created_at": t0}
        )
        await rt.async_redis().hset(KEYS.counts("h1"), mapping={"queued": 3})
        await rt.async_redis().hset(KEYS.job("h1"), "chunks", 1)
        assert await dispatch.dispatch_hlr(rt, "h1", 0, account, phones) == "sent"
        assert redis_client.hgetall(KEYS.counts("h1"))[b"submitted"] == b"3"
        await asyncio.sleep(0.4)
        run = await status_polls.reconcile_account(rt, account, clock=at(t0, 31))
        assert run["requests"] == 1
        hlr = {k.decode(): json.loads(v) for k, v in redis_client.hgetall(KEYS.hlr("h1")).items()}
        assert set(hlr) == set(phones) and not any(h["pending"] for h in hlr.values())
        assert any(h["ok"] and h["imsi"] for h in hlr.values())
        statuses = {r["status"] for r in records(redis_client, "h1").values()}
        assert statuses <= {"delivered", "undeliverable"}
        assert awaiting(redis_client, account) == {}
