"""Dead letters: listed, shown, replayed through validation again, purged; back-pressure view."""

from __future__ import annotations

from typing import Any

import redis

from producers.client import SmsqClient
from producers.dead_letters import DeadLetters, NotReplayable
from producers.keys import Keys
from producers.wire import enqueue_payload
from tests.support.messages import push_raw
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from worker.core.config import parse_settings


def test_replay_goes_through_validation_again(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = sandbox_settings(redis_url, sandboxes)
    first = make_worker(settings)
    payload = {
        "job_id": "late-route",
        "provider": "promo",  # no such route yet
        "sender": "smstest",
        "text": "hello again",
        "recipients": ["+447400123051"],
    }
    enqueue_payload(redis_client, payload)
    push_raw(redis_client, b"{broken")
    first.join()
    first.stop()

    letters = DeadLetters(redis_client, Keys())
    listed = letters.list()
    assert len(listed) == 2 and letters.count() == 2
    job_letter = next(d for d in listed if d.job_id == "late-route")
    assert "promo" in job_letter.reasons[0]
    assert redis_client.hget("smsq:job:late-route", "state") == b"dead_lettered"
    broken = next(d for d in listed if d.source.startswith("queue:"))
    try:
        letters.replay(broken.id)
        raise AssertionError("an undecodable message has no job to replay")
    except NotReplayable as exc:
        assert "not JSON" in str(exc)

    # The route now exists: the replayed job is validated again and dispatched.
    data = {
        "redis": {"url": redis_url},
        "accounts": {
            "intis-sandbox": {
                "kind": "intis",
                "base_url": sandboxes.url("intis"),
                "login": "testuser",
                "api_key": {"env": "K"},
            }
        },
        "routes": {"promo": ["intis-sandbox"]},
    }
    second = make_worker(parse_settings(data, {"K": settings.accounts["intis-sandbox"].api_key}))
    assert letters.replay(job_letter.id) == "late-route"
    second.join()
    status = SmsqClient(redis_url).status("late-route")
    assert status is not None and status.state == "done" and status.counts == {"submitted": 1}
    assert letters.count() == 1
    assert letters.purge() == 1 and letters.count() == 0


def test_overview_shows_queues_accounts_limits_and_dead_letters(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = SmsqClient(redis_url)
    enqueue_payload(
        redis_client, {"provider": "x", "sender": "s", "text": "t", "recipients": ["+447400123061"]}
    )
    redis_client.hset(
        "smsq:account:acct", mapping={"state": "paused", "reason": "no money", "probe_at": 1e12}
    )
    redis_client.zadd("smsq:rl:acct:send", {"a": 1, "b": 2})
    redis_client.set("smsq:rl:acct:send:pause", "1", px=5000)
    overview = client.overview()
    assert overview.queues["smsq-intake"] == 1
    assert [(a.name, a.state, a.reason) for a in overview.accounts] == [
        ("acct", "paused", "no money")
    ]
    assert [(v.account, v.endpoint, v.recent) for v in overview.limiters] == [("acct", "send", 2)]
    assert 0 < overview.limiters[0].paused_for <= 5
    assert overview.dead_letters == 0
