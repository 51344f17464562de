"""The web process over real HTTP and real Redis: health, the HTTP intake (with a real
worker dispatching what it accepts), and the receipt of provider pushes (stored and
enqueued before the answer; refused, too large, or Redis down)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from tests.support.web import (
    HOOK_SECRET,
    TOKENS,
    LoopThread,
    WebProcess,
    WebServer,
    closed_port,
    http,
    intis_push,
    plain_settings,
    post_json,
    served,
)
from worker.core.config import WebSettings

# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- health


def test_health_ok_when_redis_answers(web_server: WebServer) -> None:
    status, body = http("GET", web_server.url + "/health")
    data = json.loads(body)
    assert status == 200 and data["redis"] == "ok"
    assert data["inbox"] == 0 and data["webhook_queue"] == 0 and data["intake"] is True


def test_health_503_when_redis_is_down(loop_thread: LoopThread, redis_url: str) -> None:
    settings = replace(plain_settings(redis_url), redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with served(loop_thread, settings) as server:
        status, body = http("GET", server.url + "/health")
        assert status == 503 and json.loads(body)["redis"] == "error"


# --------------------------------------------------------------------------- intake


def test_intake_is_off_without_tokens(loop_thread: LoopThread, redis_url: str) -> None:
    with served(loop_thread, plain_settings(redis_url)) as server:
        status, _ = http("POST", server.url + "/v1/jobs", b"{}")
        assert status == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKENS[0]}", "Bearer ", f"Bearer {TOKENS[0]}x"],
)
def test_intake_needs_a_configured_bearer_token(
    web_server: WebServer, redis_client: redis.Redis, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    payload = {"kind": "hlr", "provider": "intis-main", "recipients": ["+447400123001"]}
    status, body = http("POST", web_server.url + "/v1/jobs", json.dumps(payload).encode(), headers)
    assert status == 401 and json.loads(body)["errors"]
    assert redis_client.llen("dramatiq:smsq-intake") == 0


def test_intake_lists_every_reason_with_422(
    web_server: WebServer, redis_client: redis.Redis
) -> None:
    payload = {
        "kind": "send",
        "job_id": "bad id with spaces",
        "provider": "nowhere",
        "text": "",
        "recipients": [],
        "colour": "blue",
    }
    status, body = post_json(web_server.url + "/v1/jobs", payload, token=TOKENS[1])
    assert status == 422
    errors = body["errors"]
    assert len(errors) >= 5
    for word in ("job_id", "provider", "sender", "text", "recipients", "colour"):
        assert any(word in e for e in errors), word
    assert redis_client.llen("dramatiq:smsq-intake") == 0


def test_intake_refuses_malformed_json_and_large_bodies(
    web_server: WebServer, redis_client: redis.Redis
) -> None:
    headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/json"}
    status, body = http("POST", web_server.url + "/v1/jobs", b"{nope", headers)
    assert status == 400 and "not JSON" in json.loads(body)["errors"][0]
    big = {"kind": "hlr", "provider": "intis-main", "recipients": ["+447400123001"] * 400}
    status, _ = post_json(web_server.url + "/v1/jobs", big)
    assert status == 413
    assert redis_client.llen("dramatiq:smsq-intake") == 0


def test_intake_accepts_and_a_worker_dispatches(
    loop_thread: LoopThread, redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = replace(
        sandbox_settings(redis_url, sandboxes), web=WebSettings(intake_tokens=TOKENS)
    )
    with served(loop_thread, settings) as server:
        payload = {
            "kind": "send",
            "job_id": "web-job-1",
            "provider": "intis",
            "sender": "smstest",
            "text": "Hello from HTTP",
            "recipients": ["+447400123101", "+44 7400 123102", "12"],
        }
        status, body = post_json(server.url + "/v1/jobs", payload)
        assert status == 202 and body["job_id"] == "web-job-1"
        assert body["recipients"] == 2 and [r["index"] for r in body["rejected"]] == [2]
        # The same job again: accepted at the door, de-duplicated by the worker.
        assert post_json(server.url + "/v1/jobs", payload, token=TOKENS[1])[0] == 202
        # Without a job id, the answer names the id the worker records.
        anonymous = {k: v for k, v in payload.items() if k != "job_id"}
        status, body = post_json(server.url + "/v1/jobs", dict(anonymous, priority="otp"))
        assert status == 202
        anonymous_id = body["job_id"]
        worker = make_worker(settings)
        worker.join()
    client = SmsqClient(redis_url)
    for job_id in ("web-job-1", anonymous_id):
        status_ = client.status(job_id, recipients=True)
        assert status_ is not None and status_.state == "done"
        assert status_.counts == {"submitted": 2, "rejected": 1}
    sent = [
        e.params["phone"]
        for e in sandboxes.log("intis")
        if e.path.endswith("/send.php") and e.status == 200
    ]
    assert sorted(sent) == ["447400123101,447400123102"] * 2  # each job once


# --------------------------------------------------------------------------- pushes


def test_push_is_stored_and_enqueued_before_the_answer(
    web_server: WebServer, redis_client: redis.Redis
) -> None:
    status, body = intis_push(web_server.url)
    assert (status, body) == (200, b"OK")
    [(push_id, raw)] = redis_client.hgetall("smsq:inbox").items()
    entry = json.loads(raw)
    assert entry["account"] == "intis-main" and entry["kind"] == "intis"
    assert entry["method"] == "GET" and entry["query"]["message-id"] == "4001"
    [message_id] = redis_client.lrange("dramatiq:smsq-webhooks", 0, -1)
    message = json.loads(redis_client.hget("dramatiq:smsq-webhooks.msgs", message_id) or b"")
    assert message["actor_name"] == "apply_webhook"
    assert message["args"] == [{"v": 1, "push_id": push_id.decode()}]
    assert message["options"]["redis_message_id"] == message_id.decode()
    # The tail of the path is kept for the provider module.
    status, _ = http("POST", web_server.url + f"/hooks/intis-main/x/y?key={HOOK_SECRET}", b"")
    assert status == 200
    tails = sorted(json.loads(v)["path"] for v in redis_client.hvals("smsq:inbox"))
    assert tails == ["", "x/y"]


def test_refused_pushes_store_nothing(web_server: WebServer, redis_client: redis.Redis) -> None:
    assert intis_push(web_server.url, key="wrong")[0] == 403
    assert intis_push(web_server.url, key=None)[0] == 403
    status, body = intis_push(web_server.url, account="open-main")  # no secret, no allow-list
    assert status == 403 and b"webhook_secret" in body
    status, _ = intis_push(web_server.url, account="nobody")
    assert status == 404
    too_big = http("POST", f"{web_server.url}/hooks/intis-main?key={HOOK_SECRET}", b"x" * 5000)
    assert too_big[0] == 413
    assert redis_client.hlen("smsq:inbox") == 0
    assert redis_client.llen("dramatiq:smsq-webhooks") == 0


def test_push_answered_503_when_redis_is_down(loop_thread: LoopThread, redis_url: str) -> None:
    settings = replace(plain_settings(redis_url), redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with served(loop_thread, settings) as server:
        assert intis_push(server.url)[0] == 503  # the provider retries later
        assert intis_push(server.url, key="wrong")[0] == 403  # verified before storing


def test_logs_show_no_secret_token_phone_or_body(
    web_server: WebServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    intis_push(web_server.url, phone="447400123555")
    intis_push(web_server.url, key="wrong-" + HOOK_SECRET)
    post_json(
        web_server.url + "/v1/jobs",
        {"kind": "hlr", "provider": "intis-main", "recipients": ["+447400123556"]},
    )
    post_json(web_server.url + "/v1/jobs", {"kind": "hlr"}, token="bad-" + TOKENS[0])
    text = caplog.text
    assert "/hooks/intis-main" in text  # the access log is there ...
    for secret in (HOOK_SECRET, TOKENS[0], "447400123555", "447400123556", "message-id"):
        assert secret not in text  # ... without query strings, bodies or tokens


# --------------------------------------------------------------------------- smsq web


def test_smsq_web_command_serves_and_stops(
    redis_url: str, smsq_web: Callable[..., WebProcess]
) -> None:
    web = smsq_web(
        f"""
[redis]
url = "{redis_url}"

[accounts.intis-main]
kind = "intis"
base_url = "http://127.0.0.1:9"
webhook_secret = {{ env = "WEB_TEST_HOOK_SECRET" }}

[web]
intake_tokens = [{{ env = "WEB_TEST_TOKEN" }}]
""",
        keep_stderr=True,
    )
    assert intis_push(web.url, phone="447400123557") == (200, b"OK")
    assert post_json(web.url + "/v1/jobs", {"kind": "hlr"})[0] == 422
    client = redis.Redis.from_url(redis_url)
    assert client.hlen("smsq:inbox") == 1 and client.llen("dramatiq:smsq-webhooks") == 1
    client.close()
    stderr = web.stop()
    assert web.returncode == 0
    assert "GET /hooks/intis-main 200" in stderr  # the access log, without the query
    for secret in (HOOK_SECRET, TOKENS[0], "447400123557"):
        assert secret not in stderr
