"""A delivery report that overtakes the recording of its send is applied once the record exists."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from tests.support.sandboxes import SandboxFactory, sandbox_settings
from worker.providers.base import InboundRequest
from worker.pushes.apply import encode_push, inbox_key, new_push_id, queue_push


def test_an_early_report_is_applied_when_its_message_is_recorded(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = sandbox_settings(redis_url, sandboxes)
    worker = make_worker(settings)
    account = settings.accounts["intis-sandbox"]
    request = InboundRequest(
        method="GET",
        path="",
        query={"message-id": "4092112510348380960001", "state": "2"},
        content_type="",
        body=b"",
        remote="127.0.0.1",
        received_at=time.time(),
    )
    push_id = new_push_id()
    with redis_client.pipeline(transaction=True) as pipe:
        queue_push(pipe, worker.app.runtime.keys, push_id, encode_push(account, request))
        pipe.execute()
    time.sleep(1.0)  # applied once already: nothing matched, the push is kept
    assert redis_client.hexists(inbox_key(worker.app.runtime.keys), push_id)

    # Now the send's outcome is recorded (as dispatch would).
    redis_client.hset("smsq:job:j-race:rcpt", "447400123301", json.dumps({"status": "submitted"}))
    redis_client.hset("smsq:job:j-race:counts", "submitted", 1)
    redis_client.hset("smsq:msgid:intis-sandbox", "4092112510348380960001", "j-race|447400123301")
    deadline = time.monotonic() + 15
    while redis_client.hexists(inbox_key(worker.app.runtime.keys), push_id):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    record = json.loads(redis_client.hget("smsq:job:j-race:rcpt", "447400123301") or b"{}")
    assert record["status"] == "delivered" and record["source"] == "webhook"
    assert [e[b"status"] for _, e in redis_client.xrange("smsq:events")] == [b"delivered"]
