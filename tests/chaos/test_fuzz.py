"""Hypothesis fuzz of everything that arrives from outside: raw Dramatiq messages pushed into
Redis, HTTP intake bodies, webhook bodies for each provider, and provider answers fed to each
adapter over real HTTP.

Asserted after each batch: the worker never crashes or stalls (its threads alive, every
queue drained, nothing left unacknowledged, whatever Dramatiq gave up on also in ``smsq:dlq``), every hostile
message ends in ``smsq:dlq`` with a reason (or is accepted, when it happens to be a valid
job), the web process answers 4xx (never 5xx) to bad bodies, and adapters raise only the
project's classified :class:`ProviderError`. ``SMSQ_FUZZ_EXAMPLES`` sets the number of
examples per target (default 25 in ``make test``; ``make chaos`` runs 150).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from tests.support.web import TOKENS, LoopThread, WebServer, http, with_webhook_secrets
from tests.support.worker import WorkerHarness
from worker.core.config import WebSettings, parse_settings
from worker.devtools.redis_server import RedisServer
from worker.entry.actors import create_app
from worker.providers import known_kinds, provider_spec
from worker.providers.base import ProviderError, SendRequest

EXAMPLES = int(
    os.environ.get("SMSQ_FUZZ_EXAMPLES")
    or (150 if os.environ.get("SMSQ_CHAOS_LONG") == "1" else 25)
)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=os.environ.get("SMSQ_FUZZ_RANDOM") != "1",
)
SECRET = "fuzz-hook-secret-0123456789"
# uuid4 in the strategies draws from os.urandom, not from Hypothesis: ids only, never shrunk.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
FIGURES: dict[str, dict[str, int]] = {}

# Strings a JSON parser accepts, lone surrogates included.
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["\ud800", "x\udfff", "\ud83d", "", " ", "+79161234567", "job:victim", "0" * 200]
    ),
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(TEXT, inner, max_size=5)),
    max_leaves=20,
)
JOB_FIELDS = ["kind", "job_id", "provider", "sender", "text", "recipients", "scheduled_at",
              "validity", "priority", "metadata"]  # fmt: skip
JOB = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.one_of(st.sampled_from(["send", "hlr"]), JSON),
        "job_id": st.one_of(
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True), JSON
        ),
        "provider": st.one_of(st.just("intis"), JSON),
        "sender": st.one_of(st.just("smstest"), JSON),
        "text": st.one_of(st.just("hello"), TEXT, JSON),
        "recipients": st.one_of(
            st.lists(
                st.one_of(st.sampled_from(["+79161234567", "+447911123456"]), JSON), max_size=4
            ),
            JSON,
        ),
        "scheduled_at": JSON,
        "validity": JSON,
        "priority": st.one_of(st.sampled_from(["otp", "bulk"]), JSON),
        "metadata": JSON,
    },
).flatmap(lambda job: st.dictionaries(TEXT, JSON, max_size=2).map(lambda extra: {**job, **extra}))

QUEUES = ["smsq-intake", "smsq-intake-otp", "smsq-dispatch", "smsq-webhooks", "smsq-reconcile"]
ACTORS = ["accept_job", "dispatch_chunk", "dispatch_hlr", "apply_webhook", "reconcile_account",
          "sweep_retention", "nope"]  # fmt: skip


@st.composite
def raw_messages(draw: Any) -> tuple[str, bytes]:
    """(queue, body): a whole Dramatiq message with hostile parts, or any bytes at all."""
    queue = draw(st.sampled_from(QUEUES))
    kind = draw(st.sampled_from(["job", "message", "json", "bytes"]))
    if kind == "bytes":
        return queue, draw(st.binary(max_size=200))
    if kind == "json":
        return queue, json.dumps(draw(JSON)).encode()
    redis_id = str(uuid.uuid4())
    actor = "accept_job" if kind == "job" else draw(st.sampled_from(ACTORS))
    args = [draw(JOB)] if kind == "job" else draw(st.lists(JSON, max_size=12))
    body: dict[str, Any] = {
        "queue_name": queue,
        "actor_name": actor,
        "args": args,
        "kwargs": draw(st.one_of(st.just({}), st.dictionaries(TEXT, JSON, max_size=2))),
        "options": {"redis_message_id": redis_id},
        "message_id": draw(st.one_of(st.just(str(uuid.uuid4())), TEXT)),
        "message_timestamp": int(time.time() * 1000),
    }
    for field in draw(st.lists(st.sampled_from(list(body)), max_size=2, unique=True)):
        if field != "options":
            body[field] = draw(JSON)
    return queue, json.dumps(body).encode()


def push(client: redis.Redis, queue: str, body: bytes) -> None:
    try:
        redis_id = json.loads(body)["options"]["redis_message_id"]
        assert isinstance(redis_id, str)
    except Exception:
        redis_id = str(uuid.uuid4())
    pipe = client.pipeline(transaction=True)
    pipe.hset(f"dramatiq:{queue}.msgs", redis_id, body)
    pipe.rpush(f"dramatiq:{queue}", redis_id)
    pipe.execute()


def settled(client: redis.Redis, harness: WorkerHarness, timeout: float = 120.0) -> None:
    """Every queue drained and nothing unacknowledged (delay queues excepted: a retry or a
    scheduled job waits there for its time), whatever Dramatiq gave up on also in
    ``smsq:dlq``, every worker thread alive."""
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        for key in client.scan_iter(match="dramatiq:*"):
            name = key.decode()
            if ".DQ" in name or name.endswith((".msgs", ".XQ")) or "__heartbeats__" in name:
                continue
            kind = client.type(key)
            if (kind == b"list" and client.llen(key)) or (kind == b"set" and client.scard(key)):
                busy.append(name)
        if not busy:
            break
        assert time.monotonic() < deadline, f"not drained within {timeout}s: {busy}"
        time.sleep(0.05)
    assert all(t.is_alive() for t in harness.worker.workers), "a worker thread died"
    for key in client.scan_iter(match="dramatiq:*.XQ.msgs"):
        # Dramatiq gave up on it (every retry failed): smsq must have dead-lettered it too.
        letters = [json.loads(raw) for raw in client.hvals("smsq:dlq")]
        failed = {
            d["payload"].get("message_id")
            for d in letters
            if d["source"].startswith("failed:") and isinstance(d["payload"], dict)
        }
        for body in client.hvals(key):
            message_id = json.loads(body).get("message_id")
            assert message_id in failed, f"{key.decode()} holds {body[:300]!r}, not in smsq:dlq"


FuzzStack = tuple[redis.Redis, WorkerHarness, SandboxThread, Any]


@pytest.fixture
def fuzz_stack(run_sandboxes: SandboxFactory) -> Iterator[FuzzStack]:
    """A Redis, the Intis sandbox and a worker of our own for the whole fuzz run."""
    server = RedisServer().start()
    sandboxes = run_sandboxes(["intis"])
    client = redis.Redis.from_url(server.url)
    base = sandbox_settings(server.url, sandboxes)
    settings_ = with_webhook_secrets(
        replace(base, web=WebSettings(intake_tokens=TOKENS, max_body_bytes=65536)),
        {name: SECRET for name in base.accounts},
    )
    harness = WorkerHarness(create_app(settings_), threads=4).start()
    yield client, harness, sandboxes, settings_
    harness.stop()
    client.close()
    server.stop()


def test_fuzz_raw_messages_end_in_dlq_and_the_worker_goes_on(fuzz_stack: FuzzStack) -> None:
    client, harness, _, _settings = fuzz_stack
    tried = {"inputs": 0, "dead_lettered": 0, "accepted": 0}

    @FUZZ
    @given(st.lists(raw_messages(), min_size=1, max_size=8))
    def batch(messages: list[tuple[str, bytes]]) -> None:
        letters_before = client.hlen("smsq:dlq")
        jobs_before = client.zcard("smsq:jobs")
        for queue, body in messages:
            push(client, queue, body)
        settled(client, harness)
        letters = client.hlen("smsq:dlq") - letters_before
        jobs = client.zcard("smsq:jobs") - jobs_before
        tried["inputs"] += len(messages)
        tried["dead_lettered"] += letters
        tried["accepted"] += jobs
        intake = [b for q, b in messages if q.startswith("smsq-intake")]
        # Each intake message is a new job or a dead letter (a valid job may also be a
        # duplicate of an earlier example's id; a dead-lettered job may leave a record).
        assert letters + jobs >= len(intake) - duplicates(intake), (letters, jobs, intake)
        for raw in client.hvals("smsq:dlq"):
            letter = json.loads(raw)
            assert letter["reasons"] and all(isinstance(r, str) and r for r in letter["reasons"])

    def duplicates(bodies: list[bytes]) -> int:
        seen: set[str] = set()
        n = 0
        for body in bodies:
            try:
                job_id = json.loads(body)["args"][0]["job_id"]
            except Exception:
                continue
            if isinstance(job_id, str) and (job_id in seen or client.exists(f"smsq:job:{job_id}")):
                n += 1
            if isinstance(job_id, str):
                seen.add(job_id)
        return n

    batch()
    FIGURES["raw messages"] = tried
    print("fuzz raw messages:", json.dumps(tried))


def test_fuzz_http_intake_and_webhooks_answer_4xx_never_5xx(fuzz_stack: FuzzStack) -> None:
    client, harness, _, settings_ = fuzz_stack
    loop = LoopThread()
    server = WebServer.start(loop, settings_)
    tried = {"intake": 0, "webhooks": 0, "pushes_dead_lettered": 0}
    accounts = list(settings_.accounts)
    try:

        @FUZZ
        @given(
            st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()),
                      JOB.map(lambda j: json.dumps(j).encode())),
            st.sampled_from(accounts),
            st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
            st.dictionaries(st.sampled_from(["state", "message-id", "id", "phone", "status", "x"]),
                            st.text(max_size=20), max_size=3),
        )  # fmt: skip
        def one(body: bytes, account: str, content_type: str, query: dict[str, str]) -> None:
            headers = {
                "Authorization": f"Bearer {TOKENS[0]}",
                "Content-Type": "application/json",
            }
            status, _ = http("POST", server.url + "/v1/jobs", body, headers)
            assert status in (202, 400, 413, 422), status
            tried["intake"] += 1
            params = "&".join(
                f"{k}={v.encode('utf-8', 'backslashreplace').hex()}" for k, v in query.items()
            )
            url = f"{server.url}/hooks/{account}?key={SECRET}&{params}"
            status, _ = http(
                "POST", url, body, {"Content-Type": content_type} if content_type else {}
            )
            assert status < 500, status
            tried["webhooks"] += 1

        one()
        letters_before = client.hlen("smsq:dlq")
        settled(client, harness)
        assert client.hlen("smsq:inbox") == 0  # every stored push applied or dead-lettered
        tried["pushes_dead_lettered"] = client.hlen("smsq:dlq") - letters_before
    finally:
        server.stop()
        loop.stop()
    FIGURES["http"] = tried
    print("fuzz http:", json.dumps(tried))


class AnswerServer:
    """An HTTP server answering every request with the answer set for the current example."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.answer: tuple[int, bytes, str] = (200, b"", "text/plain")

        async def handle(request: web.Request) -> web.Response:
            await request.read()
            status, body, ctype = self.answer
            return web.Response(status=status, body=body, headers={"Content-Type": ctype})

        async def start() -> tuple[web.AppRunner, str]:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

        self.runner, self.url = loop.call(start())

    def stop(self) -> None:
        self.loop.call(self.runner.cleanup())


ANSWER_BODIES = st.one_of(
    st.binary(max_size=300),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["id", "cnt", "error", "error_code", "status", "balance",
                                     "79161234567", "phone", "sms", "result"]), JSON,
                    max_size=4).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"OK", b"ERROR: 1", b"<xml>", b"{", b"[]", b"null", b"ID:1,2"]),
)  # fmt: skip


@pytest.mark.parametrize("kind", known_kinds())
def test_fuzz_provider_answers_raise_only_classified_errors(kind: str) -> None:
    loop = LoopThread()
    server = AnswerServer(loop)
    spec = provider_spec(kind)
    creds = {k: v for k, v in spec.sandbox().account.items() if k in ("login",)}
    settings_ = parse_settings(
        {
            "redis": {"url": "redis://127.0.0.1:1/0"},
            "accounts": {
                "fuzz": {
                    "kind": kind,
                    "base_url": server.url,
                    "timeout": 5.0,
                    "password": {"env": "FUZZ_SECRET"},
                    "api_key": {"env": "FUZZ_SECRET"},
                    **creds,
                }
            },
        },
        env={"FUZZ_SECRET": "secret"},
    )
    account = settings_.accounts["fuzz"]
    tried = {"answers": 0, "classified_errors": 0}

    async def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    http_session = loop.call(session())
    adapter = spec.adapter(account, http_session)
    request = SendRequest(
        chunk_id="fuzz:0", sender="smstest", text="hello",
        recipients=["79161234567", "447911123456"], client_id=7,
    )  # fmt: skip
    calls = [lambda: adapter.send(request), lambda: adapter.balance()]
    if hasattr(adapter, "status"):  # adapters without status polling are settled by pushes
        calls.append(lambda: adapter.status(["1:79161234567", "123"]))
    try:

        @FUZZ
        @given(
            st.sampled_from([200, 200, 200, 400, 401, 403, 404, 429, 500, 502, 503]),
            ANSWER_BODIES,
            st.sampled_from(["application/json", "text/plain", "text/xml", "text/html"]),
            st.sampled_from(range(len(calls))),
        )
        def one(status: int, body: bytes, ctype: str, which: int) -> None:
            server.answer = (status, body, ctype)
            try:
                loop.call(asyncio.wait_for(calls[which](), 20))
            except ProviderError:
                tried["classified_errors"] += 1
            except NotImplementedError:
                pass  # the provider has no such endpoint
            tried["answers"] += 1

        one()
    finally:
        loop.call(http_session.close())
        server.stop()
        loop.stop()
    FIGURES[f"answers {kind}"] = tried
    print(f"fuzz answers {kind}:", json.dumps(tried))
