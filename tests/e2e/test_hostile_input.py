"""Hostile input always ends in ``smsq:dlq`` with its reason, or is refused at HTTP.

Real Redis, a real worker, a real ``smsq web`` process: lone surrogates in every field,
oversized dead letters, job ids that would reach another job's keys, empty and false job
ids, raw dispatch messages, deep JSON and trickling HTTP clients.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producers.client import SmsqClient
from producers.contract import JobRejected, load_schema, validate_job
from producers.dead_letters import DeadLetters, NotReplayable, job_payload
from producers.keys import Keys
from tests.support.messages import dead_letters, message, push_raw, raw_enqueue
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from tests.support.web import HOOK_SECRET, TOKENS, WebProcess, http
from worker.core.config import parse_settings
from worker.entry.cli import main as smsq_cli

GOOD = {
    "provider": "intis",
    "sender": "smstest",
    "text": "hello",
    "recipients": ["+447911123456"],
}


def raw_json_enqueue(client: redis.Redis, payload_json: str, queue: str = "smsq-intake") -> None:
    """Push an accept_job message whose payload is given as JSON text (escapes kept as sent)."""
    redis_id = str(uuid.uuid4())
    head = {"queue_name": queue, "actor_name": "accept_job"}
    tail = {
        "kwargs": {},
        "options": {"redis_message_id": redis_id},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    body = json.dumps(head)[:-1] + f', "args": [{payload_json}], ' + json.dumps(tail)[1:]
    client.hset(f"dramatiq:{queue}.msgs", redis_id, body)
    client.rpush(f"dramatiq:{queue}", redis_id)


def nothing_left_behind(client: redis.Redis) -> None:
    for key in client.keys("dramatiq:*"):
        name = key.decode()
        if name.endswith(".XQ") or name.endswith(".XQ.msgs"):
            raise AssertionError(f"a message ended in Dramatiq's own dead-letter set {name}")
    assert not [k for k in client.keys("dramatiq:__acks__*") if client.scard(k)]


# --------------------------------------------------------------------------- surrogates

SURROGATE = "\\ud800"  # as JSON text: a lone high surrogate escape

SURROGATE_PAYLOADS = {
    "text": {**GOOD, "text": f"hi {SURROGATE}"},
    "sender": {**GOOD, "sender": f"Shop{SURROGATE}"},
    "job_id": {**GOOD, "job_id": f"job{SURROGATE}"},
    "recipient": {**GOOD, "recipients": ["+447911123456", f"+4479111234{SURROGATE}"]},
    "metadata key": {**GOOD, "metadata": {f"k{SURROGATE}": 1}},
    "metadata value": {**GOOD, "metadata": {"nested": [{"v": f"x{SURROGATE}"}]}},
    "provider": {**GOOD, "provider": f"intis{SURROGATE}"},
    "field name": {**GOOD, f"extra{SURROGATE}": 1},
    "priority": {**GOOD, "priority": SURROGATE},
    "scheduled_at": {**GOOD, "scheduled_at": f"2030-01-01T00:00:00{SURROGATE}"},
}


def as_json_text(payload: dict[str, Any]) -> str:
    # json.dumps would escape the backslash of our escape: write it, then undo that.
    return json.dumps(payload).replace("\\\\ud800", "\\ud800")


def test_lone_surrogate_in_any_field_is_dead_lettered_with_its_reason(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    for i, (name, payload) in enumerate(SURROGATE_PAYLOADS.items()):
        text = as_json_text({"job_id": f"s{i}", **payload})
        assert "\\ud800" in text and "\\\\ud800" not in text, name
        raw_json_enqueue(redis_client, text)
    raw_enqueue(redis_client, {**GOOD, "job_id": "after-surrogates"})
    worker.join()
    assert redis_client.hget("smsq:job:after-surrogates", "state") == b"done"
    letters = dead_letters(redis_client)
    assert len(letters) == len(SURROGATE_PAYLOADS), [dl["reasons"] for dl in letters]
    for dl in letters:
        assert any("surrogate" in r for r in dl["reasons"]), dl["reasons"]
        assert dl["source"] == "intake"
    joined = "\n".join(" ".join(dl["reasons"]) for dl in letters)
    for where in ("text holds", "sender holds", "job_id holds", "recipients[1] holds"):
        assert where in joined, where
    assert "a field name in metadata holds" in joined
    assert "metadata.nested[0].v holds" in joined
    # The payload is kept exactly (the escape survives a round trip through Redis).
    texts = [dl["payload"]["text"] for dl in letters if isinstance(dl["payload"], dict)]
    assert "hi \ud800" in texts
    nothing_left_behind(redis_client)


def test_validate_job_names_the_field_of_a_lone_surrogate() -> None:
    with pytest.raises(JobRejected) as info:
        validate_job({**GOOD, "metadata": {"a\udc00": {"b": "\ud83d"}}})
    assert any("field name in metadata" in r for r in info.value.reasons)


# --------------------------------------------------------------------------- dead-letter size


def test_dead_letter_payload_is_truncated_to_the_bound_with_its_size(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = sandbox_settings(redis_url, sandboxes, dead_letter_max_bytes=4096)
    worker = make_worker(settings)
    huge = {**GOOD, "job_id": "huge-1", "text": "x" * 2_000_000}
    raw_enqueue(redis_client, huge)
    worker.join()
    [raw] = redis_client.hvals("smsq:dlq")
    assert len(raw) < 4096 + 2048  # the bound plus the record's other fields
    letter = json.loads(raw)
    assert letter["payload_truncated"] is True
    assert letter["payload_bytes"] == len(json.dumps(huge, separators=(",", ":")))
    assert letter["job_id"] == "huge-1"
    assert any("text is too long" in r for r in letter["reasons"])
    dl = DeadLetters(redis_client, Keys()).get(letter["id"])
    assert dl is not None and dl.payload_truncated and dl.payload_bytes == letter["payload_bytes"]
    with pytest.raises(NotReplayable, match="truncated"):
        job_payload(dl)


def test_dead_letter_bound_is_configurable() -> None:
    settings = parse_settings(
        {
            "redis": {"url": "redis://127.0.0.1:1/0"},
            "accounts": {"a": {"kind": "intis", "base_url": "http://127.0.0.1:9"}},
            "dispatch": {"dead_letter_max_bytes": 1000},
        },
        env={},
    )
    assert settings.dispatch.dead_letter_max_bytes == 1000


# --------------------------------------------------------------------------- job ids


def test_job_id_cannot_reach_another_jobs_keys(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    capsys: Any,
    monkeypatch: Any,
    run_sandboxes: SandboxFactory,
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    raw_enqueue(redis_client, {**GOOD, "job_id": "victim"})
    worker.join()
    before = {
        k: redis_client.hgetall(k)
        for k in (b"smsq:job:victim", b"smsq:job:victim:counts", b"smsq:job:victim:rcpt")
    }
    for attack in ("victim:counts", "victim:rcpt", "victim:hlr"):
        raw_enqueue(redis_client, {**GOOD, "job_id": attack})
    worker.join()
    after = {k: redis_client.hgetall(k) for k in before}
    assert {k: set(v) for k, v in after.items()} == {k: set(v) for k, v in before.items()}
    assert after[b"smsq:job:victim:counts"] == before[b"smsq:job:victim:counts"]
    reasons = [" ".join(dl["reasons"]) for dl in dead_letters(redis_client)]
    assert len(reasons) == 3 and all("no ':'" in r for r in reasons)
    status = SmsqClient(redis_url).status("victim")
    assert status is not None and status.counts == {"submitted": 1}
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("SMSQ_CONFIG", raising=False)
    assert smsq_cli(["status", "victim"]) == 0
    assert smsq_cli(["status", "victim:counts"]) == 2
    err = capsys.readouterr().err
    assert "is not a job id" in err


@pytest.mark.parametrize("job_id", ["", False, 0, [], {}])
def test_empty_or_false_job_id_is_refused_not_replaced(
    job_id: Any,
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    run_sandboxes: SandboxFactory,
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    raw_enqueue(redis_client, {**GOOD, "job_id": job_id})
    worker.join()
    assert redis_client.zcard("smsq:jobs") == 0  # no job accepted under a made-up id
    [letter] = dead_letters(redis_client)
    assert any(r.startswith("job_id") for r in letter["reasons"]), letter["reasons"]
    with pytest.raises(JobRejected):
        SmsqClient(redis_url).enqueue_payload({**GOOD, "job_id": job_id})


def test_schema_job_id_pattern_has_no_key_separator() -> None:
    schema = load_schema()
    text = json.dumps(schema)
    assert "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$" in text
    assert "A-Za-z0-9._:-]{0,127}" not in text


# --------------------------------------------------------------------------- raw dispatch


def test_raw_dispatch_messages_are_dead_lettered_at_once(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    raw_enqueue(redis_client, {**GOOD, "job_id": "victim"})
    worker.join()
    sent_before = len(sandboxes.log("intis"))

    def dispatch(args: list[Any], **over: Any) -> None:
        push_raw(
            redis_client,
            message(args, queue_name="smsq-dispatch", actor_name="dispatch_chunk", **over),
            queue="smsq-dispatch",
        )

    base = ["victim", 7, ["intis-sandbox"], "s", "t", ["447911123456"], None, None, "bulk", 1]
    dispatch(["victim:counts", *base[1:]])  # not a job id
    dispatch(["nojob", *base[1:]])  # no such job
    dispatch([*base[:5], ["+44 7911"], *base[6:]])  # not digits
    dispatch([*base[:4], "\ud800", *base[5:]])  # text Redis cannot store
    dispatch(base[:3])  # too few arguments
    dispatch(base, kwargs={"surprise": 1})  # arguments the actor does not take
    worker.join()
    assert len(sandboxes.log("intis")) == sent_before  # nothing sent
    letters = dead_letters(redis_client)
    assert len(letters) == 6, [dl["reasons"] for dl in letters]
    joined = "\n".join(" ".join(dl["reasons"]) for dl in letters)
    for expected in (
        "is not a job id",
        "has no record",
        "international digits",
        "surrogate",
        "takes 10 to 11 arguments",
        "arguments do not fit actor dispatch_chunk",
    ):
        assert expected in joined, expected
    assert redis_client.hget("smsq:job:victim", "chunks_done") == b"1"
    nothing_left_behind(redis_client)


def test_a_message_failing_every_try_is_also_in_smsq_dlq(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    # A reconciliation run for an account that is not configured raises; the reconcile
    # actors are not retried.
    push_raw(
        redis_client,
        message(["nowhere"], queue_name="smsq-reconcile", actor_name="reconcile_account"),
        queue="smsq-reconcile",
    )
    worker.join()
    [letter] = dead_letters(redis_client)
    assert letter["source"] == "failed:smsq-reconcile"
    assert "failed on every try" in letter["reasons"][0]
    assert letter["payload"]["args"] == ["nowhere"]


# --------------------------------------------------------------------------- smsq web


@pytest.fixture
def web_url(redis_url: str, smsq_web: Callable[..., WebProcess]) -> str:
    """A real ``smsq web`` process with short header and body timeouts; its URL."""
    config = f"""
[redis]
url = "{redis_url}"

[accounts.intis-main]
kind = "intis"
base_url = "http://127.0.0.1:9"
webhook_secret = {{ env = "WEB_TEST_HOOK_SECRET" }}

[accounts.smsc-main]
kind = "smsc"
base_url = "http://127.0.0.1:9"
login = "l"
password = {{ env = "WEB_TEST_HOOK_SECRET" }}
webhook_secret = {{ env = "WEB_TEST_HOOK_SECRET" }}

[accounts.intellisoftware-main]
kind = "intellisoftware"
base_url = "http://127.0.0.1:9"
login = "l"
password = {{ env = "WEB_TEST_HOOK_SECRET" }}
webhook_secret = {{ env = "WEB_TEST_HOOK_SECRET" }}

[web]
intake_tokens = [{{ env = "WEB_TEST_TOKEN" }}]
header_timeout = 1
body_timeout = 1
max_body_bytes = 2000000
"""
    web: WebProcess = smsq_web(config)
    return web.url


def test_deep_json_is_refused_with_400_at_intake_and_webhooks(
    web_url: str, redis_client: redis.Redis
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    auth = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/json"}
    assert http("POST", web_url + "/v1/jobs", deep, auth)[0] == 400
    nested: Any = "x"
    for _ in range(500):  # parses, but deeper than any job needs
        nested = {"a": nested}
    body = json.dumps({**GOOD, "metadata": nested}).encode()
    status, answer = http("POST", web_url + "/v1/jobs", body, auth)
    assert status == 400 and b"nested deeper" in answer
    for account in ("intis-main", "smsc-main", "intellisoftware-main"):
        for payload in (deep, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
            status, _ = http(
                "POST",
                f"{web_url}/hooks/{account}?key={HOOK_SECRET}",
                payload,
                {"Content-Type": "application/json"},
            )
            assert status == 400, (account, status)
    assert redis_client.hlen("smsq:inbox") == 0


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` within ``seconds`` (we keep trickling bytes)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
            if not data or data.startswith(b"HTTP/1.1 408"):
                return True
        except TimeoutError:
            pass
        except OSError:
            return True
        try:
            sock.sendall(b"X")
        except OSError:
            return True
    return False


def test_slow_headers_and_slow_bodies_are_timed_out(web_url: str) -> None:
    port = int(web_url.rsplit(":", 1)[1])
    slow_headers = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow_headers.append(s)
    slow_body = socket.create_connection(("127.0.0.1", port))
    slow_body.sendall(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKENS[0].encode()
        + b"\r\nContent-Length: 100000\r\n\r\n{"
    )
    try:
        # Timeouts are 1 s; without them these connections stay open (aiohttp's default
        # keep-alive timeout is 75 s, and a body read has no bound at all).
        assert all(_closed_within(s, 10) for s in slow_headers)
        assert _closed_within(slow_body, 10)
        assert http("GET", web_url + "/health")[0] == 200  # still serving
    finally:
        for s in [*slow_headers, slow_body]:
            s.close()
