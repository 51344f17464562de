"""An ``unknown`` recipient on a provider without a status query reaches a final state.

IntelliSoftware only pushes. A connection reset after it read the request leaves the
recipients ``unknown`` with no provider id; reconciliation settles them at their
validity (or the horizon) as ``expired`` with the reason, counted in the run's figures
and shown by ``smsq status``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis

from producers.cli import format_status
from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory
from tests.support.tracking import make_settings, runtime
from worker.providers.sandbox_kit import Fault
from worker.tracking import runs, status_polls

NUMBERS = ["+447911123456", "+447400123456"]
ACCOUNT = "intellisoftware-sandbox"


def test_unknown_without_status_query_expires_at_its_validity(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intellisoftware"])
    settings = make_settings(redis_url, sandboxes)
    sandboxes.running["intellisoftware"].state.faults = {"*": Fault(drop_rate=1.0)}
    worker = make_worker(settings)
    client = SmsqClient(redis_url)
    job_id = client.enqueue_send(
        provider=ACCOUNT, sender="smsq", text="hello", recipients=NUMBERS, validity=600
    )
    worker.join()
    status = client.status(job_id, recipients=True)
    assert status is not None and status.counts == {"unknown": 2}
    assert all(r.provider_message_id is None for r in status.recipients)

    async def settle(at: float) -> dict[str, int]:
        async with runtime(settings) as rt:
            return await status_polls.reconcile_account(rt, ACCOUNT, clock=lambda: at)

    early = asyncio.run(settle(time.time() + 60))  # first check: before the deadline
    assert early.get("expired", 0) == 0
    figures = asyncio.run(settle(time.time() + 601))  # past its validity
    assert figures["expired"] == 2 and figures["expired_unknown"] == 2
    status = client.status(job_id, recipients=True)
    assert status is not None and status.counts == {"expired": 2}
    for row in status.recipients:
        assert row.reason is not None and "validity" in row.reason
        assert "no status query" in row.reason
    assert "no status query" in format_status(status)
    last_run = redis_client.hgetall(runs.TrackingKeys("smsq").last_run(ACCOUNT))
    assert last_run[b"expired_unknown"] == b"2" and last_run[b"awaiting"] == b"0"
