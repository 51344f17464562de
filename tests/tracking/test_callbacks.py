"""Producer callbacks end to end: real worker, scheduler and Intis sandbox, real Redis, and a
real aiohttp receiver that verifies every signature as docs/wire-format.md tells a producer
to. A receiver down for 30 s then gets every event exactly once after de-duplication by id,
in order per recipient; one that answers 500 gets each batch a bounded number of times and
the events end in the dead letters, kept whole."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis
from aiohttp import web

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from worker.core.config import (
    CallbackProducer,
    CallbackSettings,
    ConfigError,
    Settings,
    parse_settings,
)
from worker.tracking.callbacks import CallbackKeys, backoff, sign, verify
from worker.tracking.scheduler import Scheduler

SECRET = "whsec-test-0123456789abcdef"
OLD_SECRET = "whsec-old-fedcba9876543210"
QUICK = {
    "first_check": 0.3,
    "max_check_interval": 0.5,
    "reconcile_interval": 0.25,
    "tick_seconds": 0.05,
    "lease_seconds": 1.0,
}


def _numbers(n: int, start: int = 0) -> list[str]:
    return [f"+7916{start + i:07d}" for i in range(n)]


def verify_as_documented(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, written from docs/wire-format.md section 7 alone."""
    parts = [p.split("=", 1) for p in header.split(",")]
    t = [v for k, v in parts if k == "t"]
    if len(t) != 1 or abs(time.time() - int(t[0])) > tolerance:
        return False
    mac = hmac.new(secret.encode(), t[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, mac) for k, v in parts)


@dataclass
class Receiver:
    """A producer's callback endpoint: records every request and event it accepts."""

    mode: str = "ok"  # ok | error (HTTP 500) | slow_once (first answer after the timeout)
    requests: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("Smsq-Signature", "")
        ok = verify_as_documented(SECRET, header, body)
        self.requests.append({"at": time.time(), "signed": ok, "mode": self.mode})
        if not ok:
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.mode == "error":
            return web.Response(status=500, text="broken")
        payload = json.loads(body)
        if self.mode == "slow_once":
            # Stores the events, then answers after smsq stopped waiting: smsq must send
            # them again (at least once), and the receiver de-duplicates by id.
            self.mode = "ok"
            self.events.extend(payload["events"])
            await asyncio.sleep(2.0)
            return web.Response(status=204)
        assert payload["delivery_id"] == request.headers["Smsq-Delivery"]
        self.events.extend(payload["events"])
        return web.Response(status=204)


class ReceiverServer:
    """The receiver on 127.0.0.1: its port is reserved (bound, not listening: connections are
    refused) until :meth:`open`."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/smsq/events"
        self.runner: web.AppRunner | None = None

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def open(self) -> None:
        self.sock.listen(128)
        self.sock.setblocking(False)

        async def serve() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/smsq/events", self.receiver.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, self.sock).start()
            return runner

        self.runner = self.call(serve())

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async def copy() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            return list(self.receiver.events), list(self.receiver.requests)

        result: tuple[list[dict[str, Any]], list[dict[str, Any]]] = self.call(copy())
        return result

    def stop(self) -> None:
        if self.runner is not None:
            self.call(self.runner.cleanup())
        else:
            self.sock.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def receiver_server() -> Iterator[ReceiverServer]:
    server = ReceiverServer(Receiver())
    yield server
    server.stop()


def callback_settings(
    redis_url: str, sandboxes: SandboxThread, url: str, **options: Any
) -> Settings:
    settings = sandbox_settings(redis_url, sandboxes, scheduler=QUICK)
    cfg = CallbackSettings(
        producers={"shop": CallbackProducer("shop", (url.rsplit("/", 1)[0] + "/",), (SECRET,))},
        **{
            "interval": 0.2,
            "batch_size": 50,
            "timeout": 2.0,
            "backoff_initial": 0.25,
            "backoff_max": 2.0,
            "max_attempts": 1000,
            **options,
        },
    )
    return replace(settings, callbacks=cfg)


def stream_events(client: redis.Redis, job_ids: set[str]) -> list[tuple[str, dict[str, str]]]:
    out = []
    for entry_id, fields in client.xrange("smsq:events", "-", "+"):
        data = {k.decode(): v.decode() for k, v in fields.items()}
        if data.get("job_id") in job_ids and data.get("type") in ("status", "hlr"):
            out.append((entry_id.decode(), data))
    return out


def test_receiver_down_30s_then_gets_every_event_once_in_order(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    receiver_server: ReceiverServer,
    run_sandboxes: SandboxFactory,
    start_scheduler: Callable[..., Scheduler],
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = callback_settings(redis_url, sandboxes, receiver_server.url)
    make_worker(settings)
    start_scheduler(settings)
    with SmsqClient(redis_url) as client:
        send_id = client.enqueue_send(
            provider="intis",
            sender="smstest",
            text="callbacks",
            recipients=_numbers(120),
            callback_url=receiver_server.url,
        )
        hlr_id = client.enqueue_hlr(
            provider="intis", recipients=_numbers(5, 500), callback_url=receiver_server.url
        )
        quiet_id = client.enqueue_send(  # no callback: its events go nowhere
            provider="intis", sender="smstest", text="quiet", recipients=_numbers(3, 900)
        )
        down_from = time.time()
        for job_id in (send_id, hlr_id, quiet_id):
            client.wait(job_id, timeout=25)
    # Down: connections refused; smsq retries with backoff and keeps the events.
    time.sleep(max(0.0, 30 - (time.time() - down_from)))
    k = CallbackKeys("smsq")
    pending = sum(redis_client.llen(key) for key in redis_client.scan_iter(k.outbox("*")))
    expected = stream_events(redis_client, {send_id, hlr_id})
    assert pending == len(expected) > 240  # 2 per send recipient, HLR results too
    attempts = [
        int(v)
        for key in redis_client.scan_iter(k.state("*"))
        for v in [redis_client.hget(key, "attempts") or 0]
    ]
    assert attempts and max(attempts) >= 5  # it kept trying while the receiver was down
    receiver_server.open()
    up_at = time.time()
    deadline = time.monotonic() + 30
    while True:
        received, requests = receiver_server.snapshot()
        if {e["id"] for e in received} >= {i for i, _ in expected}:
            break
        assert time.monotonic() < deadline, (len(received), len(expected))
        time.sleep(0.1)
    time.sleep(1.0)  # anything sent twice would arrive now
    received, requests = receiver_server.snapshot()
    catch_up = max(r["at"] for r in requests) - up_at
    assert receiver_server.receiver.bad_signatures == 0
    unique: dict[str, dict[str, Any]] = {}
    for event in received:
        unique.setdefault(event["id"], event)
    # Exactly once after de-duplication by id; nothing of the job without a callback.
    assert sorted(unique) == sorted(i for i, _ in expected)
    assert all(e["job_id"] in (send_id, hlr_id) for e in unique.values())
    by_id = dict(expected)
    for event_id, event in unique.items():
        assert {k: v for k, v in event.items() if k != "id"} == by_id[event_id]
    # Order per recipient: the ids of one recipient's events arrive increasing.
    per_phone: dict[tuple[str, str], list[str]] = {}
    for event in received:
        per_phone.setdefault((event["job_id"], event["phone"]), []).append(event["id"])
    for ids in per_phone.values():
        firsts = list(dict.fromkeys(ids))
        assert firsts == sorted(firsts, key=lambda i: tuple(int(x) for x in i.split("-")))
    statuses = [e["status"] for e in unique.values() if e["job_id"] == send_id]
    assert statuses.count("submitted") == 120
    assert redis_client.zcard("smsq:dlq:index") == 0
    print(
        f"\ncallbacks: receiver down 30 s; {len(expected)} events, {len(received)} received,"
        f" {len(unique)} after de-duplication, {len(requests)} POSTs after it came up,"
        f" caught up in {catch_up:.1f}s"
    )


def test_receiver_answering_500_dead_letters_the_events_after_the_bound(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    receiver_server: ReceiverServer,
    run_sandboxes: SandboxFactory,
    start_scheduler: Callable[..., Scheduler],
) -> None:
    receiver_server.receiver.mode = "error"
    receiver_server.open()
    sandboxes = run_sandboxes(["intis"])
    settings = callback_settings(
        redis_url,
        sandboxes,
        receiver_server.url,
        max_attempts=3,
        backoff_initial=0.1,
        backoff_max=0.3,
        batch_size=100,
    )
    make_worker(settings)
    start_scheduler(settings)
    with SmsqClient(redis_url) as client:
        job_id = client.enqueue_send(
            provider="intis",
            sender="smstest",
            text="to a broken receiver",
            recipients=_numbers(10),
            callback_url=receiver_server.url,
        )
        client.wait(job_id, timeout=25)
    expected = stream_events(redis_client, {job_id})
    deadline = time.monotonic() + 30
    kept: list[dict[str, Any]] = []
    while True:
        letters = [json.loads(v) for v in redis_client.hvals("smsq:dlq")]
        kept = [e for dl in letters if dl["source"] == "callback" for e in dl["payload"]["events"]]
        if len(kept) >= len(expected):
            break
        assert time.monotonic() < deadline, (len(kept), len(expected))
        time.sleep(0.1)
    time.sleep(1.0)
    _, requests = receiver_server.snapshot()
    letters = [json.loads(v) for v in redis_client.hvals("smsq:dlq")]
    callback_letters = [dl for dl in letters if dl["source"] == "callback"]
    # Every event kept whole in the dead letters, once; the reason says what failed.
    assert sorted(e["id"] for e in kept) == sorted(i for i, _ in expected)
    assert all("HTTP 500" in dl["reasons"][0] and dl["job_id"] == job_id for dl in callback_letters)
    assert all(dl["payload"]["attempts"] == 3 for dl in callback_letters)
    # Each batch was tried exactly max_attempts times; nothing more after.
    assert len(requests) == 3 * len(callback_letters)
    assert all(r["signed"] for r in requests)
    print(
        f"\ncallbacks: receiver answering 500; {len(expected)} events in"
        f" {len(callback_letters)} dead letters after {len(requests)} POSTs"
    )


def test_an_answer_that_comes_too_late_means_the_events_come_again(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    receiver_server: ReceiverServer,
    run_sandboxes: SandboxFactory,
    start_scheduler: Callable[..., Scheduler],
) -> None:
    receiver_server.receiver.mode = "slow_once"
    receiver_server.open()
    sandboxes = run_sandboxes(["intis"])
    settings = callback_settings(
        redis_url, sandboxes, receiver_server.url, timeout=0.5, backoff_initial=0.1
    )
    make_worker(settings)
    start_scheduler(settings)
    with SmsqClient(redis_url) as client:
        job_id = client.enqueue_send(
            provider="intis",
            sender="smstest",
            text="twice?",
            recipients=_numbers(5),
            callback_url=receiver_server.url,
        )
        client.wait(job_id, timeout=25)
    expected = {i for i, _ in stream_events(redis_client, {job_id})}
    deadline = time.monotonic() + 20
    while True:
        received, _ = receiver_server.snapshot()
        if {e["id"] for e in received} >= expected and len(received) > len(expected):
            break
        assert time.monotonic() < deadline, (len(received), len(expected))
        time.sleep(0.1)
    ids = [e["id"] for e in received]
    assert set(ids) == expected  # every event, after de-duplication exactly once
    assert len(ids) > len(set(ids))  # and the batch whose answer came late, twice


def test_callback_url_must_belong_to_a_configured_producer(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = callback_settings(redis_url, sandboxes, "https://shop.example.com/smsq/events")
    settings = replace(
        settings,
        callbacks=replace(
            settings.callbacks, routes={"intis": "https://shop.example.com/smsq/default"}
        ),
    )
    worker = make_worker(settings)
    with SmsqClient(redis_url) as client:
        foreign = client.enqueue_send(
            provider="intis",
            sender="smstest",
            text="x",
            recipients=_numbers(1),
            callback_url="https://elsewhere.example.net/hook",
        )
        defaulted = client.enqueue_send(
            provider="intis", sender="smstest", text="x", recipients=_numbers(1, 10)
        )
        worker.join(timeout=30)
        rejected = client.status(foreign)
        assert rejected is not None and rejected.state == "dead_lettered"
        assert "callback producer" in rejected.reasons[0]
        assert redis_client.hget(f"smsq:job:{defaulted}", "callback_url") == (
            b"https://shop.example.com/smsq/default"
        )


def test_config_callbacks_section_is_validated() -> None:
    base: dict[str, Any] = {
        "accounts": {"intis-main": {"kind": "intis", "base_url": "http://127.0.0.1:9"}},
        "routes": {"default": ["intis-main"]},
    }
    good = {
        **base,
        "callbacks": {
            "batch_size": 20,
            "producers": {
                "shop": {
                    "urls": ["https://shop.example.com/smsq/"],
                    "secrets": [{"env": "CB_NEW"}, {"env": "CB_OLD"}],
                }
            },
            "routes": {"default": "https://shop.example.com/smsq/events"},
        },
    }
    settings = parse_settings(good, {"CB_NEW": SECRET, "CB_OLD": OLD_SECRET})
    shop = settings.callbacks.producers["shop"]
    assert shop.secrets == (SECRET, OLD_SECRET) and SECRET not in repr(settings)
    assert settings.callbacks.batch_size == 20
    assert settings.callbacks.producer_for("https://shop.example.com/smsq/x") is shop
    assert settings.callbacks.producer_for("https://shop.example.com.evil/smsq/x") is None
    bad = {
        **base,
        "callbacks": {
            "max_attempts": 0,
            "retry": 1,
            "producers": {"shop": {"urls": ["ftp://x"], "secrets": ["inline-secret"]}},
            "routes": {"nowhere": "https://shop.example.com/x", "default": "https://other/x"},
        },
    }
    with pytest.raises(ConfigError) as err:
        parse_settings(bad, {})
    text = "\n".join(err.value.problems)
    for expected in (
        "callbacks.max_attempts",
        "callbacks.retry: unknown setting",
        "callbacks.producers.shop.urls",
        "callbacks.producers.shop.secrets[0]: credentials are not written inline",
        "callbacks.routes.default",
        "callbacks.routes.nowhere",
    ):
        assert expected in text, (expected, text)
    assert "inline-secret" not in text


def test_signature_rotation_replay_window_and_backoff() -> None:
    body = b'{"delivery_id":"d","events":[]}'
    now = int(time.time())
    header = sign([SECRET, OLD_SECRET], now, body)
    assert header.startswith(f"t={now},v1=") and header.count("v1=") == 2
    assert verify(SECRET, header, body) and verify(OLD_SECRET, header, body)
    assert verify_as_documented(SECRET, header, body)
    assert not verify(SECRET, header, body + b" ")  # the raw body, byte for byte
    assert not verify("other", header, body)
    stale = sign([SECRET], now - 301, body)
    assert not verify(SECRET, stale, body) and not verify_as_documented(SECRET, stale, body)
    settings = CallbackSettings(backoff_initial=1.0, backoff_max=60.0)
    delays = [backoff(settings, n) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 1.0 and 4.0 <= delays[3] <= 8.0
    assert all(30.0 <= d <= 60.0 for d in delays[6:])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_verification_snippet_from_the_docs(tmp_path: Any) -> None:
    """The Node.js snippet of docs/wire-format.md, run as written."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "wire-format.md").read_text()
    snippet = doc.split("```js\n", 1)[1].split("```", 1)[0]
    body = '{"delivery_id":"d1","events":[{"id":"1-0","type":"status"}]}'
    header = sign([SECRET], int(time.time()), body.encode())
    script = tmp_path / "verify.js"
    script.write_text(
        snippet
        + "\nconst ok = verifySmsq(process.env.SECRET, process.env.HEADER, Buffer.from(process.env.BODY));"
        + "\nconst bad = verifySmsq(process.env.SECRET, process.env.HEADER, Buffer.from(process.env.BODY + ' '));"
        + "\nconsole.log(JSON.stringify({ok, bad}));\n"
    )
    out = subprocess.run(
        ["node", str(script)],
        env={"SECRET": SECRET, "HEADER": header, "BODY": body},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": True, "bad": False}
