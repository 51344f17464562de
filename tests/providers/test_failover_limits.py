"""Limits hold through a backup-host failover and a balance probe.

- every request of a failover takes its own rate permit;
- the in-flight lease covers the whole failover (renewed before each further host);
- the balance probe of a paused account keeps the account's rate rules and in-flight cap.

Real Redis, real sandboxes over HTTP (the slow failing hosts are sandboxes with faults).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from producers.keys import Keys
from tests.support.tracking import runtime
from worker.core.config import Settings, parse_settings
from worker.core.runtime import Runtime
from worker.pipeline import accounts, dispatch
from worker.providers.base import SendRequest
from worker.providers.sandbox_kit import Fault, OutcomeMix, RunningSandbox, SandboxState, serve
from worker.providers.smsc.sandbox import DEFAULT_LOGIN, DEFAULT_PASSWORD
from worker.providers.smsc.sandbox import create_sandbox as smsc_sandbox

PHONE = "79161234567"
ACCOUNT = "smsc-main"


@asynccontextmanager
async def smsc_hosts(*faults: Fault | None) -> AsyncIterator[list[RunningSandbox]]:
    """One SMSC sandbox per entry: None a healthy one, a Fault a failing one."""
    running = []
    for fault in faults:
        state = SandboxState(OutcomeMix(final_after=60, seed=1), {"*": fault} if fault else None)
        running.append(await serve(smsc_sandbox(state)))
    try:
        yield running
    finally:
        for sandbox in running:
            await sandbox.stop()


def smsc_settings(redis_url: str, hosts: list[str], **account: Any) -> Settings:
    table: dict[str, Any] = {
        "kind": "smsc",
        "base_url": hosts[0],
        "backup_urls": hosts[1:],
        "login": DEFAULT_LOGIN,
        "password": {"env": "SMSC_PASSWORD"},
        "timeout": 5.0,
        **account,
    }
    data = {
        "redis": {"url": redis_url},
        "accounts": {ACCOUNT: table},
        "dispatch": {"backoff_initial": 0.05, "backoff_max": 0.2, "max_attempts": 1},
    }
    return parse_settings(data, {"SMSC_PASSWORD": DEFAULT_PASSWORD})


async def send_one(rt: Runtime) -> Any:
    request = SendRequest("job:0", "SMSC.ru", "hello", [PHONE])
    return await dispatch.limited_call(
        rt, ACCOUNT, "send", "bulk", rt.adapter(ACCOUNT).send, request
    )


async def test_each_request_of_a_failover_takes_a_permit(redis_url: str) -> None:
    async with smsc_hosts(Fault(error_rate=1.0), None) as (broken, good):
        settings = smsc_settings(
            redis_url,
            [broken.url, good.url],
            limits={"send": {"requests": 10, "per_seconds": 60}},
        )
        async with runtime(settings) as rt:
            (outcome,) = await send_one(rt)
            assert outcome.status.value == "submitted"
            permits = await rt.async_redis().zcard(rt.rate_limiter().key(ACCOUNT, "send"))
        assert len(broken.state.log.entries) == 1 and len(good.state.log.entries) == 1
        assert permits == 2  # one a request: the primary's and the backup's


async def test_the_in_flight_lease_covers_the_whole_failover(redis_url: str) -> None:
    # Seven hosts that answer 500 after 0.95 s, then a good one: the failover takes
    # longer than one request's lease (timeout + LEASE_MARGIN), so it must be renewed.
    slow = Fault(latency=0.95, error_rate=1.0)
    async with smsc_hosts(*[slow] * 7, None) as running:
        failing = running[:-1]
        hosts = [h.url for h in running]
        settings = smsc_settings(redis_url, hosts, timeout=1.0, max_in_flight=1)
        lease_time = 6.0  # timeout + 5 s
        async with runtime(settings) as rt:
            started = time.monotonic()
            sending = asyncio.create_task(send_one(rt))
            await asyncio.sleep(lease_time + 0.3)
            assert not sending.done()
            # A second request now would be two in flight with a cap of one.
            other, _ = await rt.concurrency_limiter().try_acquire(ACCOUNT, 1, 10.0)
            (outcome,) = await sending
            assert time.monotonic() - started > lease_time
        assert other is None
        assert outcome.status.value == "submitted"
        assert [len(h.state.log.entries) for h in failing] == [1] * 7


async def probe_after_paused(rt: Runtime) -> str:
    await accounts.pause(rt, ACCOUNT, "insufficient funds")
    await rt.async_redis().hset(f"{Keys().prefix}:account:{ACCOUNT}", "probe_at", 0)
    result: str = await dispatch.dispatch_chunk(
        rt, "job-p", 0, [ACCOUNT], "SMSC.ru", "hi", [PHONE], None, None, "bulk", None
    )
    return result


def balance_requests(sandbox: RunningSandbox) -> int:
    return len([e for e in sandbox.state.log.entries if "balance" in e.path])


async def test_a_balance_probe_keeps_the_rate_rules(redis_url: str) -> None:
    async with smsc_hosts(None) as (good,):
        settings = smsc_settings(
            redis_url, [good.url], limits={"balance": {"requests": 1, "per_seconds": 60}}
        )
        async with runtime(settings) as rt:
            rules = rt.settings.limits_for(ACCOUNT).for_endpoint("balance")
            assert await rt.rate_limiter().try_acquire(ACCOUNT, "balance", rules) == 0.0
            assert await probe_after_paused(rt) == "rescheduled"
            state = await rt.async_redis().hget(f"smsq:account:{ACCOUNT}", "state")
        assert balance_requests(good) == 0  # the minute's one balance request was taken
        assert state == b"paused"


async def test_a_balance_probe_keeps_the_in_flight_cap(redis_url: str) -> None:
    async with smsc_hosts(None) as (good,):
        settings = smsc_settings(redis_url, [good.url], max_in_flight=1)
        async with runtime(settings) as rt:
            held, _ = await rt.concurrency_limiter().try_acquire(ACCOUNT, 1, 60.0)
            assert held is not None
            assert await probe_after_paused(rt) == "rescheduled"
            assert balance_requests(good) == 0  # the one slot is taken: no probe
            await rt.concurrency_limiter().release(ACCOUNT, held)
            # Once the slot is free, the probe is made and resumes the account.
            await rt.async_redis().hset(f"smsq:account:{ACCOUNT}", "probe_at", 0)
            result = await dispatch.dispatch_chunk(
                rt, "job-q", 0, [ACCOUNT], "SMSC.ru", "hi", [PHONE], None, None, "bulk", None
            )
        assert balance_requests(good) == 1
        assert result == "sent"
