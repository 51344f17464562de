"""An account's balance is stored and exported as ``smsq_account_balance``."""

from __future__ import annotations

import redis

from tests.support.sandboxes import SandboxFactory
from tests.support.tracking import make_settings, runtime
from worker.entry.exposition import cluster_collector
from worker.tracking import balance


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
