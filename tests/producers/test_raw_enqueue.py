"""A job enqueued with raw Redis commands only (no `producers` import), as any language would."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.support.messages import raw_enqueue
from tests.support.sandboxes import SandboxFactory, sandbox_settings


def test_raw_redis_job_is_dispatched(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    numbers = [f"+7900555{i:04d}" for i in range(120)]
    raw_enqueue(
        redis_client,
        {
            "kind": "send",
            "job_id": "raw-1",
            "provider": "intis-sandbox",
            "sender": "smstest",
            "text": "Hello from a raw producer",
            "recipients": numbers,
        },
    )
    raw_enqueue(
        redis_client,
        {
            "kind": "send",
            "job_id": "raw-otp",
            "provider": "intis",
            "sender": "smstest",
            "text": "Code 1234",
            "recipients": ["+447400123001"],
            "priority": "otp",
        },
        queue="smsq-intake-otp",
    )
    worker.join()
    job = redis_client.hgetall("smsq:job:raw-1")
    assert job[b"state"] == b"done"
    counts = redis_client.hgetall("smsq:job:raw-1:counts")
    assert int(counts[b"submitted"]) == 120
    assert int(counts.get(b"queued", 0)) == 0
    assert redis_client.hget("smsq:job:raw-otp", "state") == b"done"

    sends = [e for e in sandboxes.log("intis") if e.path.endswith("/send.php")]
    sent = [p for e in sends for p in e.params["phone"].split(",")]
    assert sorted(sent) == sorted([n[1:] for n in numbers] + ["447400123001"])
    assert len(sends) == 4  # 50 + 50 + 20, and the OTP
    record = json.loads(redis_client.hget("smsq:job:raw-1:rcpt", "79005550000") or b"{}")
    assert record["status"] == "submitted" and record["provider_message_id"]
