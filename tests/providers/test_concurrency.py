"""Each provider's documented concurrency cap is a default in-flight limit.

SMSC answers error 9 to "fifteen or more requests simultaneously from different
connections under the same username": its sandbox enforces that, and an SMSC account
sends at most 14 requests at once unless its ``max_in_flight`` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import redis

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from worker.core.config import parse_settings
from worker.providers.sandbox_kit import OutcomeMix, SandboxState, serve
from worker.providers.smsc.sandbox import DEFAULT_LOGIN, DEFAULT_PASSWORD, SMSC_KEY, create_sandbox


async def concurrent_balance_requests(n: int) -> list[Any]:
    sandbox = await serve(create_sandbox(SandboxState(OutcomeMix()), request_seconds=0.3))
    try:
        params = {"login": DEFAULT_LOGIN, "psw": DEFAULT_PASSWORD, "fmt": "3"}
        async with aiohttp.ClientSession() as session:

            async def one() -> Any:
                url = f"{sandbox.url}/sys/balance.php"
                async with session.get(url, params=params) as resp:
                    return json.loads(await resp.text())

            return list(await asyncio.gather(*[one() for _ in range(n)]))
    finally:
        await sandbox.stop()


async def test_the_smsc_sandbox_refuses_the_fifteenth_simultaneous_request() -> None:
    answers = await concurrent_balance_requests(15)
    assert [a.get("error_code") for a in answers].count(9) == 1
    answers = await concurrent_balance_requests(14)
    assert all("balance" in a for a in answers)


def account(kind: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "base_url": "http://127.0.0.1:9", **extra}


def test_the_documented_cap_is_the_default_and_configurable() -> None:
    settings = parse_settings(
        {
            "accounts": {
                "smsc": account("smsc"),
                "smsc-wide": account("smsc", max_in_flight=4),
                "smsc-uncapped": account("smsc", max_in_flight=0),
                "intis": account("intis"),
                "intelli": account("intellisoftware"),
            }
        },
        {},
    )
    caps = {name: settings.limits_for(name).max_in_flight for name in settings.accounts}
    assert caps == {"smsc": 14, "smsc-wide": 4, "smsc-uncapped": 0, "intis": 0, "intelli": 0}


def test_sixteen_workers_never_exceed_smscs_cap(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    # The case: 16 dispatch threads, 20-recipient chunks, 0.4 s a request.
    sandboxes = run_sandboxes(["smsc"], smsc={"request_seconds": 0.4, "balance": "100000"})
    settings = sandbox_settings(redis_url, sandboxes)
    assert settings.limits_for("smsc-sandbox").max_in_flight == 14
    worker = make_worker(settings, threads=16)
    client = SmsqClient(redis_url)
    numbers = [f"+7916{i:07d}" for i in range(400)]
    jobs = [
        client.enqueue_send(
            provider="smsc-sandbox", sender="SMSC.ru", text="hi", recipients=numbers[i : i + 20]
        )
        for i in range(0, 400, 20)
    ]
    worker.join(timeout=60)
    counts: dict[str, int] = {}
    for job_id in jobs:
        status = client.status(job_id)
        assert status is not None
        for k, v in status.counts.items():
            counts[k] = counts.get(k, 0) + v
    assert counts == {"submitted": 400}
    peak = sandboxes.call(_peak(sandboxes))
    assert 1 < peak <= 14
    refused = [e for e in sandboxes.log("smsc") if _error_9(e.body or "")]
    assert refused == []


async def _peak(sandboxes: SandboxThread) -> int:
    peak: int = sandboxes.running["smsc"].app[SMSC_KEY].peak_active
    return peak


def _error_9(body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and str(data.get("error_code")) == "9"
