"""Account circuit breaker: pause on account errors, fail over along the route, probe, resume."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, SandboxThread
from worker.core.config import parse_settings
from worker.devtools.sandboxes import sandbox_account
from worker.providers.intis.sandbox import INTIS_KEY


def two_accounts(redis_url: str, sandboxes: SandboxThread, good_key: str) -> Any:
    creds = sandbox_account("intis")
    account = {
        "kind": "intis",
        "base_url": sandboxes.url("intis"),
        "login": creds["login"],
        "timeout": 5.0,
    }
    data = {
        "redis": {"url": redis_url},
        "accounts": {
            "primary": {**account, "api_key": {"env": "PRIMARY_KEY"}},
            "backup": {**account, "api_key": {"env": "BACKUP_KEY"}},
        },
        "routes": {"main": ["primary", "backup"], "solo": ["primary"]},
        "dispatch": {"backoff_initial": 0.05, "backoff_max": 0.2, "probe_interval": 0.5},
    }
    return parse_settings(data, {"PRIMARY_KEY": "wrong-key", "BACKUP_KEY": good_key})


def test_account_error_pauses_it_and_the_route_fails_over(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = two_accounts(redis_url, sandboxes, sandbox_account("intis")["api_key"])
    worker = make_worker(settings)
    client = SmsqClient(redis_url)
    numbers = [f"+7933{i:07d}" for i in range(120)]
    job_id = client.enqueue_send(
        provider="main", sender="smstest", text="failover", recipients=numbers
    )
    worker.join()
    status = client.status(job_id, recipients=True)
    assert status is not None and status.counts == {"submitted": 120}
    assert {r.account for r in status.recipients} == {"backup"}
    assert redis_client.hget("smsq:account:primary", "state") == b"paused"
    assert b"signature" in (redis_client.hget("smsq:account:primary", "reason") or b"").lower()
    events = [e for _, e in redis_client.xrange("smsq:events")]
    assert any(e[b"type"] == b"account_paused" and e[b"account"] == b"primary" for e in events)


def test_paused_account_keeps_work_queued_until_a_probe_resumes_it(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = two_accounts(redis_url, sandboxes, sandbox_account("intis")["api_key"])
    worker = make_worker(settings)
    client = SmsqClient(redis_url)
    job_id = client.enqueue_send(
        provider="solo", sender="smstest", text="wait for me", recipients=["+447400123041"]
    )
    deadline = time.monotonic() + 10
    while redis_client.hget("smsq:account:primary", "state") != b"paused":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    status = client.status(job_id)
    assert status is not None and status.counts == {"queued": 1}  # nothing dropped, nothing failed

    async def fix_key() -> None:
        sandboxes.running["intis"].app[INTIS_KEY].api_key = "wrong-key"

    sandboxes.call(fix_key())
    worker.join(timeout=30)
    status = client.status(job_id, recipients=True)
    assert status is not None and status.counts == {"submitted": 1}
    assert redis_client.hget("smsq:account:primary", "state") == b"active"
    probes = [e for e in sandboxes.log("intis") if e.path.endswith("/balance.php")]
    assert probes, "the account must be resumed by a balance probe"
    types = [e[b"type"] for _, e in redis_client.xrange("smsq:events")]
    assert types.index(b"account_paused") < types.index(b"account_resumed")
    assert (
        json.loads(redis_client.hget(f"smsq:job:{job_id}:rcpt", "447400123041") or b"{}")["account"]
        == "primary"
    )
