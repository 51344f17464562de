"""SMSC status 24 (insufficient funds) at send time is an account failure: the account pauses."""

from __future__ import annotations

from typing import Any

import redis

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from worker.providers.base import ErrorClass
from worker.providers.smsc.adapter import PhoneResult, SendResult, outcomes_from_send

FUNDED, UNFUNDED = "+79161234567", "+79161234568"


def test_status_24_in_the_send_answer_is_an_account_failure_not_a_rejection() -> None:
    result = SendResult(
        id=7,
        cnt=1,
        phones=(
            PhoneResult(FUNDED.lstrip("+"), status=0, error="0"),
            PhoneResult(UNFUNDED.lstrip("+"), status=24, error="0"),
        ),
    )
    funded, unfunded = outcomes_from_send(result, [FUNDED, UNFUNDED])
    assert funded.status.value == "submitted"
    assert unfunded.status.value == "failed"
    assert unfunded.error_class is ErrorClass.ACCOUNT
    assert unfunded.reason is not None and "insufficient funds" in unfunded.reason


def test_a_phone_dropped_for_lack_of_funds_pauses_the_account(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc"], smsc={"unfunded_phones": [UNFUNDED]})
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    job_id = client.enqueue_send(
        provider="smsc-sandbox", sender="SMSC.ru", text="hi", recipients=[FUNDED, UNFUNDED]
    )
    worker.join()
    status = client.status(job_id, recipients=True)
    assert status is not None and status.counts == {"submitted": 1, "failed": 1}
    failed = next(r for r in status.recipients if r.status == "failed")
    assert "insufficient funds" in (failed.reason or "")
    assert redis_client.hget("smsq:account:smsc-sandbox", "state") == b"paused"
    events = [e for _, e in redis_client.xrange("smsq:events")]
    assert any(e[b"type"] == b"account_paused" for e in events)
