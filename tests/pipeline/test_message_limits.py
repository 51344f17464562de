"""A provider's documented message limits are known at intake.

IntelliSoftware's Unicode (type=2) is one SMS (``hex`` at most 140 octets, no maxconcat):
a longer Unicode text goes to an account of the route that can carry it, or the job is
refused with the reason, instead of being accepted and turned ``rejected`` by the gateway.
"""

from __future__ import annotations

from typing import Any

import redis

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from worker.core.config import Settings, parse_settings
from worker.providers.base import MessageLimits

LONG_CYRILLIC = "Ваш заказ готов к выдаче в пункте самовывоза; код получения 4821. " * 2
SHORT_CYRILLIC = "Ваш код: 4821"
NUMBERS = ["+447911123456", "+447400123456"]


def routed(redis_url: str, sandboxes: SandboxThread) -> Settings:
    base = sandbox_settings(redis_url, sandboxes)
    data: dict[str, Any] = {
        "redis": {"url": redis_url},
        "accounts": {},
        "routes": {
            "uk": ["intellisoftware-sandbox", "intis-sandbox"],
            "uk-only": ["intellisoftware-sandbox"],
        },
        "dispatch": {"backoff_initial": 0.05, "backoff_max": 0.2},
    }
    env: dict[str, str] = {}
    for name, acc in base.accounts.items():
        table: dict[str, Any] = {"kind": acc.kind, "base_url": acc.base_url, "login": acc.login}
        for secret in ("password", "api_key"):
            value = getattr(acc, secret)
            if value:
                env[f"{name}_{secret}".upper().replace("-", "_")] = value
                table[secret] = {"env": f"{name}_{secret}".upper().replace("-", "_")}
        data["accounts"][name] = table
    return parse_settings(data, env)


def test_limits_name_the_reason() -> None:
    limits = MessageLimits(ucs2_parts=1, ucs2_bmp_only=True)
    assert limits.refusal(SHORT_CYRILLIC) is None
    assert limits.refusal("x" * 400) is None  # GSM-7: no documented cap
    reason = limits.refusal(LONG_CYRILLIC)
    assert reason is not None and "needs 2 parts" in reason and "at most 1" in reason
    assert "outside the BMP" in (limits.refusal("hi \U0001f600") or "")
    assert MessageLimits(max_chars=1000).refusal("x" * 1001) is not None


def test_long_unicode_goes_to_the_account_that_can_carry_it(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intellisoftware", "intis"])
    worker = make_worker(routed(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    long_job = client.enqueue_send(
        provider="uk", sender="smstest", text=LONG_CYRILLIC, recipients=NUMBERS
    )
    short_job = client.enqueue_send(
        provider="uk", sender="smstest", text=SHORT_CYRILLIC, recipients=NUMBERS
    )
    refused = client.enqueue_send(
        provider="uk-only", sender="smstest", text=LONG_CYRILLIC, recipients=NUMBERS
    )
    worker.join()
    long_status = client.status(long_job, recipients=True)
    assert long_status is not None and long_status.counts == {"submitted": 2}
    assert {r.account for r in long_status.recipients} == {"intis-sandbox"}
    short_status = client.status(short_job, recipients=True)
    assert short_status is not None and short_status.counts == {"submitted": 2}
    assert {r.account for r in short_status.recipients} == {"intellisoftware-sandbox"}
    dead = client.status(refused)
    assert dead is not None and dead.state == "dead_lettered"
    (reason,) = dead.reasons
    assert "intellisoftware-sandbox" in reason and "at most 1" in reason
    sent = [e for e in sandboxes.log("intellisoftware") if "sendmsg" in e.path]
    assert len(sent) == 1  # only the short text reached the gateway
