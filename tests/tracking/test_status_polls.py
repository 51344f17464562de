"""Reconciliation, history sweeps, incoming and balance polling, retention.

Real Redis, real sandboxes over HTTP, the real adapters; time is moved by handing the
runs a clock, so backoff and deadlines are checked without waiting for them.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from producers.status import Status
from tests.support.sandboxes import SandboxFactory, SandboxThread
from tests.support.tracking import KEYS, at, make_settings, runtime, seed_job
from worker.core.runtime import Runtime
from worker.entry.exposition import cluster_collector
from worker.pipeline import dispatch
from worker.providers.base import RecipientOutcome, SendRequest, StatusReport
from worker.providers.intis.sandbox import INTIS_KEY
from worker.providers.sandbox_kit import OutcomeMix
from worker.providers.smsc.sandbox import sandbox_of
from worker.state.status_apply import StatusApplier, canonical_id
from worker.tracking import balance, history, incoming, retention, runs, status_polls

PHONES = ["447400123101", "447400123102", "447400123103"]


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


def records(client: redis.Redis, job_id: str) -> dict[str, dict[str, Any]]:
    return {k.decode(): json.loads(v) for k, v in client.hgetall(KEYS.recipients(job_id)).items()}


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


async def test_history_sweep_settles_unknown_recipients_after_a_crash(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc"], mix=OutcomeMix(final_after=0.2, seed=11))
    async with runtime(make_settings(redis_url, sandboxes)) as rt:
        account = "smsc-sandbox"
        r = rt.async_redis()
        t0 = time.time()
        for job in ("crash", "never"):
            await r.hset(KEYS.job(job), mapping={"kind": "send", "state": "accepted"})
            await r.hset(KEYS.job(job), mapping={"created_at": t0, "chunks": 1})
            await r.hset(KEYS.counts(job), mapping={"queued": 2})
            await r.zadd(KEYS.jobs, {job: t0})
        sent = PHONES[:2]
        # The worker sent chunk 0 and died before recording its outcome ...
        await rt.adapter(account).send(
            SendRequest("crash:0", "SMSC.ru", "hi", sent, client_id=4242)
        )
        # ... and another died while sending, before its request reached SMSC.
        for job, client_id, phones in (("crash", 4242, sent), ("never", 4243, PHONES[1:])):
            await r.set(KEYS.chunk(job, 0), f"sending:{account}:dead-worker")
            outcome = await dispatch.dispatch_chunk(
                rt, job, 0, account, "SMSC.ru", "hi", phones, None, None, "bulk", client_id
            )
            assert outcome == "interrupted"
        rows = records(redis_client, "crash")
        assert {r["status"] for r in rows.values()} == {"unknown"}
        assert rows[sent[0]]["provider_message_id"] == f"4242:{sent[0]}"  # the expected id

        # Reconciliation files them for the history sweep (its status poll is held back).
        assert rt.limiter is not None
        await rt.limiter.pause(account, "status", 30)
        await status_polls.reconcile_account(rt, account, clock=at(t0, 31))
        tk = runs.TrackingKeys("smsq")
        assert redis_client.zcard(tk.unknown(account)) == 4
        await asyncio.sleep(0.3)

        run = await history.sweep_history(rt, account, clock=at(t0, 700))
        assert run["requests"] == 1 and run["applied"] == 2 and run["not_sent"] == 2
        rows = records(redis_client, "crash")
        assert {r["status"] for r in rows.values()} <= {"delivered", "undeliverable", "expired"}
        assert {r["source"] for r in rows.values()} == {"history"}
        never = records(redis_client, "never")
        assert {r["status"] for r in never.values()} == {"unknown"}
        assert all("not in the provider's sent history" in r["reason"] for r in never.values())
        assert redis_client.zcard(tk.unknown(account)) == 0

        again = await history.sweep_history(rt, account)
        assert again.get("requests", 0) == 0  # nothing left to look for: no request
        history_pages = [e for e in sandboxes.log("smsc") if e.params.get("get_messages") == "1"]
        assert len(history_pages) == 1 and '"error_code"' not in history_pages[0].body


async def test_incoming_polling_stores_each_message_once(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc", "intis"])
    smsc = sandbox_of(sandboxes.running["smsc"].app)
    intis = sandboxes.running["intis"].app[INTIS_KEY]

    async def add(n: int) -> None:
        for i in range(n):
            smsc.add_incoming(f"7916000000{len(smsc.incoming)}", f"hello {i}")
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            intis.incoming.append(
                {
                    "id": f"55{len(intis.incoming)}",
                    "date": stamp,
                    "sender": "447400123555",
                    "prefix": "",
                    "text": f"hi {i}",
                }
            )

    sandboxes.call(add(2))
    async with runtime(make_settings(redis_url, sandboxes)) as rt:
        got = [await incoming.poll_incoming(rt, a) for a in ("smsc-sandbox", "intis-sandbox")]
        assert got == [2, 2]
        again = [await incoming.poll_incoming(rt, a) for a in ("smsc-sandbox", "intis-sandbox")]
        assert again == [0, 0]
        sandboxes.call(add(1))
        more = [await incoming.poll_incoming(rt, a) for a in ("smsc-sandbox", "intis-sandbox")]
        assert more == [1, 1]
    for account in ("smsc-sandbox", "intis-sandbox"):
        assert redis_client.hlen(f"smsq:mo:{account}") == 3
    events = [e for _, e in redis_client.xrange("smsq:events") if e[b"type"] == b"incoming"]
    assert len(events) == 6
    answers = [e for e in sandboxes.log("smsc") if e.params.get("get_answers") == "1"]
    assert [e.params.get("after_id") for e in answers] == [None, "5000002", "5000002"]
    tk = runs.TrackingKeys("smsq")
    assert redis_client.hget(tk.incoming("smsc-sandbox"), "cursor") == b"5000003"


async def test_balance_is_stored_and_exported(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc"], smsc={"balance": "321.50"})
    async with runtime(make_settings(redis_url, sandboxes)) as rt:
        assert await balance.poll_balance(rt, "smsc-sandbox") == "321.50"
    stored = redis_client.hgetall("smsq:account:smsc-sandbox")
    assert stored[b"balance"] == b"321.50" and stored[b"currency"] == b"RUB"
    exported = {
        (s.labels["account"], s.labels["currency"]): s.value
        for family in cluster_collector(rt.settings, redis_client).collect()
        if family.name == "smsq_account_balance"
        for s in family.samples
    }
    assert exported == {("smsc-sandbox", "RUB"): 321.5}


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
