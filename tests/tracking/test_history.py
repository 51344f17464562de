"""The sent-history sweep settles ``unknown`` recipients by the id the adapter sent, after a
worker died before recording its chunk (real SMSC sandbox, time moved by a clock)."""

from __future__ import annotations

import asyncio
import time

import redis

from tests.support.sandboxes import SandboxFactory
from tests.support.tracking import KEYS, PHONES, at, make_settings, records, runtime
from worker.pipeline import dispatch
from worker.providers.base import SendRequest
from worker.providers.sandbox_kit import OutcomeMix
from worker.tracking import history, runs, status_polls


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
