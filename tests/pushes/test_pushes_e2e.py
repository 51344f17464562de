"""Delivery tracking end to end: jobs sent through all three sandboxes reach their final
statuses through the providers' own callbacks to a running web process, applied by an
in-process worker; duplicates change nothing; forged pushes are refused; a push is stored
before it is answered and applied by whichever worker comes later."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from producers.client import SmsqClient
from producers.dead_letters import DeadLetters, NotReplayable
from producers.keys import Keys
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from tests.support.web import (
    LoopThread,
    WebServer,
    bound_socket,
    closed_port,
    http,
    wait_until,
    with_webhook_secrets,
)
from tests.support.worker import WorkerHarness
from worker.core.config import Settings
from worker.devtools.sandboxes import sandbox_account
from worker.entry.actors import create_app
from worker.providers.intellisoftware.sandbox import sandbox_of as is_sandbox_of
from worker.providers.intis.sandbox import INTIS_KEY
from worker.providers.sandbox_kit import OutcomeMix
from worker.providers.smsc.sandbox import sandbox_of as smsc_sandbox_of

SMSC_SECRET = "smsc-hook_secret-1"
IS_SECRET = "is-hook-secret-2"
INTIS_SECRET = "intis-hook-secret-3"
SECRETS = {
    "smsc-sandbox": SMSC_SECRET,
    "intellisoftware-sandbox": IS_SECRET,
    "intis-sandbox": INTIS_SECRET,
}
FINAL = {"delivered", "undeliverable", "expired"}
# Every outcome shows up among a few recipients.
MIX = OutcomeMix(delivered=0.5, undeliverable=0.3, expired=0.2, final_after=0.4, seed=11)


def status_events(client: redis.Redis) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in client.xrange("smsq:events")
        if fields.get(b"type") == b"status"
    ]


def snapshot(client: redis.Redis, job_ids: list[str]) -> dict[str, Any]:
    """Everything a push could change."""
    return {
        "events": client.xlen("smsq:events"),
        "inbox": client.hlen("smsq:inbox"),
        "queued": client.llen("dramatiq:smsq-webhooks"),
        "dlq": client.hlen("smsq:dlq"),
        **{f"counts:{j}": client.hgetall(f"smsq:job:{j}:counts") for j in job_ids},
        **{f"rcpt:{j}": client.hgetall(f"smsq:job:{j}:rcpt") for j in job_ids},
    }


def drained(client: redis.Redis) -> bool:
    return client.hlen("smsq:inbox") == 0 and client.llen("dramatiq:smsq-webhooks") == 0


def recipients(client: SmsqClient, job_id: str) -> dict[str, dict[str, Any]]:
    """The job's recipient records, read from Redis (docs/wire-format.md, section 5)."""
    raw = client.redis.hgetall(f"smsq:job:{job_id}:rcpt")
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def recipient_statuses(client: SmsqClient, job_id: str) -> dict[str, str]:
    return {phone: r["status"] for phone, r in recipients(client, job_id).items()}


class Stack:
    """Sandboxes (pushing to the web process), the web process and its settings."""

    def __init__(
        self,
        redis_url: str,
        kinds: list[str],
        options: dict[str, Any],
        run_sandboxes: SandboxFactory,
        start_web: Callable[..., WebServer],
    ) -> None:
        sock = bound_socket()
        self.web_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # Callback URLs name the web process, whose port is known before it serves.
        per_kind = {
            kind: {k: v.format(web=self.web_url) if isinstance(v, str) else v for k, v in o.items()}
            for kind, o in options.items()
        }
        self.sandboxes = run_sandboxes(kinds, mix=MIX, **per_kind)
        self.settings: Settings = with_webhook_secrets(
            sandbox_settings(redis_url, self.sandboxes), SECRETS
        )
        self.web = start_web(self.settings, sock)


CALLBACKS = {
    "smsc": {
        "callback_url": "{web}/hooks/smsc-sandbox?charset=utf-8",
        "callback_secret": SMSC_SECRET,
        "callback_retry_interval": 0.2,
    },
    "intellisoftware": {
        "status_report_url": "{web}/hooks/intellisoftware-sandbox?key=" + IS_SECRET,
        "forward_url": "{web}/hooks/intellisoftware-sandbox/inbound?key=" + IS_SECRET,
        "push_retry_interval": 0.2,
    },
    "intis": {
        "callback_url": "{web}/hooks/intis-sandbox?key=" + INTIS_SECRET,
        "callback_retry_interval": 0.2,
        "callback_repeat": 2,  # every delivery report pushed twice
    },
}


@pytest.fixture
def stack(
    redis_url: str, run_sandboxes: SandboxFactory, start_web: Callable[..., WebServer]
) -> Stack:
    return Stack(
        redis_url, ["smsc", "intellisoftware", "intis"], CALLBACKS, run_sandboxes, start_web
    )


def test_jobs_through_all_three_sandboxes_reach_final_statuses_via_callbacks(
    stack: Stack, redis_client: redis.Redis, make_worker: Any
) -> None:
    worker = make_worker(stack.settings)
    client = SmsqClient(stack.settings.redis_url)
    numbers = {
        kind: [f"+44740012{i:04d}" for i in range(base, base + 8)]
        for kind, base in (("smsc", 1000), ("intellisoftware", 2000), ("intis", 3000))
    }
    jobs = {
        kind: client.enqueue_send(
            provider=kind,
            sender=sandbox_account(kind).get("sender", "smsq"),
            text="Your parcel is on its way",
            recipients=phones,
        )
        for kind, phones in numbers.items()
    }

    def all_final() -> bool:
        return all(
            len(statuses := recipient_statuses(client, j)) == 8
            and set(statuses.values()) <= FINAL
            and drained(redis_client)
            for j in jobs.values()
        )

    wait_until(all_final, timeout=15, what="every recipient final")

    # Every recipient ended as the provider decided, told by a callback.
    for kind, job_id in jobs.items():
        outcomes = {
            m.phone.lstrip("+"): m.outcome
            for m in stack.sandboxes.call(_messages(stack.sandboxes, kind))
        }
        assert recipient_statuses(client, job_id) == outcomes
        assert set(outcomes.values()) >= {"delivered"}
    assert {s for j in jobs.values() for s in recipient_statuses(client, j).values()} == FINAL

    # The Intis sandbox pushed every report twice; now SMSC and IntelliSoftware push one
    # status again each, the way a gateway does when it never saw our answer.
    stack.sandboxes.call(_push_duplicates(stack.sandboxes))
    intis = stack.sandboxes.running["intis"].app[INTIS_KEY]
    assert Counter(a.message_id for a in intis.callback_log if a.http_status == 200) == Counter(
        {m: 2 for m in intis.state.messages}
    )
    wait_until(lambda: drained(redis_client), what="duplicates processed")

    # Exactly one event per status change: the dispatch (submitted) and the final one.
    events = status_events(redis_client)
    per_recipient = Counter((e["job_id"], e["phone"]) for e in events)
    assert per_recipient == Counter({(j, p[1:]): 2 for k, j in jobs.items() for p in numbers[k]})
    finals = [e for e in events if e["status"] in FINAL]
    assert len(finals) == 24 and {e["source"] for e in finals} == {"webhook"}
    assert redis_client.hlen("smsq:dlq") == 0

    # Forged pushes are refused and change nothing.
    before = snapshot(redis_client, list(jobs.values()))
    smsc_msg = next(iter(stack.sandboxes.running["smsc"].state.messages.values()))
    forged = {
        "id": str(smsc_msg.extra["sms_id"]),
        "phone": smsc_msg.phone,
        "status": "1",
        "md5": hashlib.md5(
            f"{smsc_msg.extra['sms_id']}:{smsc_msg.phone}:1:guess".encode()
        ).hexdigest(),
    }
    assert http("POST", f"{stack.web_url}/hooks/smsc-sandbox", urlencode(forged).encode())[0] == 403
    is_msg = next(iter(stack.sandboxes.running["intellisoftware"].state.messages.values()))
    fields = {"msgid": is_msg.extra["gateway_id"], "status": "4", "toaddr": is_msg.phone}
    status, _ = http(
        "POST",
        f"{stack.web_url}/hooks/intellisoftware-sandbox?key=guess",
        urlencode(fields).encode(),
    )
    assert status == 403
    intis_msg = next(iter(intis.state.messages.values()))
    query = urlencode({"message-id": intis_msg.message_id, "state": "2", "key": "guess"})
    assert http("GET", f"{stack.web_url}/hooks/intis-sandbox?{query}")[0] == 403
    time.sleep(0.2)
    assert snapshot(redis_client, list(jobs.values())) == before
    worker.join()


async def _messages(sandboxes: SandboxThread, kind: str) -> list[Any]:
    return list(sandboxes.running[kind].state.messages.values())


async def _push_duplicates(sandboxes: SandboxThread) -> None:
    """One more status push from the SMSC and IntelliSoftware sandboxes, through their own
    delivery code (signing, encoding, retries), for a message already final here."""
    smsc = smsc_sandbox_of(sandboxes.running["smsc"].app)
    msg = next(iter(smsc.state.messages.values()))
    await smsc._deliver("status", msg.message_id, smsc.status_callback_params(msg))
    assert smsc.callback_log[-1].http_status == 200
    gateway = is_sandbox_of(sandboxes.running["intellisoftware"].app)
    first = next(p for p in gateway.pushes if p.kind == "status_report" and p.status == 200)
    count = len(gateway.pushes)
    gateway._schedule(time.time(), first.kind, first.url, dict(first.fields))
    while len(gateway.pushes) == count:
        await asyncio.sleep(0.02)
    assert gateway.pushes[-1].status == 200


def test_incoming_messages_and_other_pushes_stored_once(
    stack: Stack, redis_client: redis.Redis, make_worker: Any
) -> None:
    make_worker(stack.settings)
    smsc = smsc_sandbox_of(stack.sandboxes.running["smsc"].app)
    gateway = is_sandbox_of(stack.sandboxes.running["intellisoftware"].app)

    async def receive() -> None:
        smsc.add_incoming("+79161234567", "Да, подтверждаю", sms_id="42")
        smsc.confirm_call("79161234568")
        gateway.receive_sms("447400123900", "STOP", usercontext="campaign-7")

    stack.sandboxes.call(receive())

    def stored() -> bool:
        return (
            redis_client.hlen("smsq:mo:smsc-sandbox") == 1
            and redis_client.hlen("smsq:mo:intellisoftware-sandbox") == 1
            and drained(redis_client)
            and any(
                f.get(b"type") == b"call_confirmation"
                for _, f in redis_client.xrange("smsq:events")
            )
        )

    wait_until(stored, what="incoming messages stored")
    [smsc_mo] = [json.loads(v) for v in redis_client.hvals("smsq:mo:smsc-sandbox")]
    assert smsc_mo["text"] == "Да, подтверждаю" and smsc_mo["sender"] == "79161234567"
    assert smsc_mo["source"] == "webhook" and smsc_mo["extra"]["reply_to"] == "42"
    [is_mo] = [json.loads(v) for v in redis_client.hvals("smsq:mo:intellisoftware-sandbox")]
    assert is_mo["text"] == "STOP" and is_mo["extra"]["usercontext"] == "campaign-7"
    events = [
        {k.decode(): v.decode() for k, v in f.items()}
        for _, f in redis_client.xrange("smsq:events")
    ]
    assert Counter(e["type"] for e in events) == {"incoming": 2, "call_confirmation": 1}
    call = next(e for e in events if e["type"] == "call_confirmation")
    assert call["account"] == "smsc-sandbox" and call["source"] == "webhook"
    assert call["phone"] == "79161234568"

    # The same incoming SMS pushed again is not stored or published again.
    async def again() -> None:
        first = next(p for p in gateway.pushes if p.kind == "sms")
        gateway._schedule(time.time(), first.kind, first.url, dict(first.fields))

    stack.sandboxes.call(again())
    wait_until(lambda: sum(p.kind == "sms" for p in gateway.pushes) == 2, what="second push")
    wait_until(lambda: drained(redis_client), what="duplicate processed")
    assert redis_client.xlen("smsq:events") == len(events)

    # SMSC retrying the same call confirmation publishes nothing new either.
    async def call_again() -> None:
        first = next(a for a in smsc.callback_log if a.kind == "call" and a.http_status == 200)
        await smsc._deliver("call", first.key, dict(first.params))

    stack.sandboxes.call(call_again())
    wait_until(lambda: drained(redis_client), what="repeated call confirmation processed")
    assert sum(a.kind == "call" and a.http_status == 200 for a in smsc.callback_log) == 2
    assert redis_client.xlen("smsq:events") == len(events)


def test_smsc_hlr_results_arrive_by_callback(
    stack: Stack, redis_client: redis.Redis, make_worker: Any
) -> None:
    make_worker(stack.settings)
    client = SmsqClient(stack.settings.redis_url)
    phones = [f"79161234{i:03d}" for i in range(6)]
    job_id = client.enqueue_hlr(provider="smsc", recipients=["+" + p for p in phones])

    def looked_up() -> bool:
        raw = redis_client.hgetall(f"smsq:job:{job_id}:hlr")
        results = [json.loads(v) for v in raw.values()]
        return (
            len(results) == len(phones)
            and not any(r["pending"] for r in results)
            and drained(redis_client)
        )

    wait_until(looked_up, what="HLR results by callback")
    outcomes = {
        m.phone: m.outcome for m in stack.sandboxes.call(_messages(stack.sandboxes, "smsc"))
    }
    results = {
        k.decode(): json.loads(v) for k, v in redis_client.hgetall(f"smsq:job:{job_id}:hlr").items()
    }
    for phone in phones:
        assert results[phone]["ok"] is (outcomes[phone] == "delivered")
        if results[phone]["ok"]:
            assert results[phone]["imsi"] and results[phone]["mcc"]
    # An HLR lookup answers (delivered) or fails (undeliverable: SMSC status 20).
    expected = {p: "delivered" if outcomes[p] == "delivered" else "undeliverable" for p in phones}
    assert recipient_statuses(client, job_id) == expected
    assert set(expected.values()) == {"delivered", "undeliverable"}
    hlr_events = [f for _, f in redis_client.xrange("smsq:events") if f[b"type"] == b"hlr"]
    # One event per lookup started (pending) and one per result.
    assert len(hlr_events) == 2 * len(phones)


def test_push_is_persisted_before_200_and_applied_by_a_later_worker(
    redis_url: str,
    redis_client: redis.Redis,
    run_sandboxes: SandboxFactory,
    loop_thread: LoopThread,
) -> None:
    sandboxes = run_sandboxes(["intis"], mix=MIX)  # no callbacks: we push by hand
    settings = with_webhook_secrets(sandbox_settings(redis_url, sandboxes), SECRETS)
    first = WorkerHarness(create_app(settings)).start()
    try:
        client = SmsqClient(redis_url)
        job_id = client.enqueue_send(
            provider="intis", sender="smstest", text="Hi", recipients=["+447400123301"]
        )
        first.join()
    finally:
        first.stop()  # no worker from here on
    [rcpt] = recipients(client, job_id).values()
    assert rcpt["status"] == "submitted" and rcpt["provider_message_id"]
    web = WebServer.start(loop_thread, settings)
    try:
        query = {"message-id": rcpt["provider_message_id"], "state": "2", "key": INTIS_SECRET}
        url = f"{web.url}/hooks/intis-sandbox?{urlencode(query)}"
        assert http("GET", url) == (200, b"OK")
        # Answered only once both the raw push and its message were stored.
        [(push_id, raw)] = redis_client.hgetall("smsq:inbox").items()
        assert json.loads(raw)["query"]["message-id"] == rcpt["provider_message_id"]
        [message_id] = redis_client.lrange("dramatiq:smsq-webhooks", 0, -1)
        body = json.loads(redis_client.hget("dramatiq:smsq-webhooks.msgs", message_id) or b"")
        assert body["args"] == [{"v": 1, "push_id": push_id.decode()}]
        assert recipient_statuses(client, job_id) == {"447400123301": "submitted"}

        second = WorkerHarness(create_app(settings)).start()
        try:
            wait_until(lambda: drained(redis_client), what="the stored push applied")
            assert recipient_statuses(client, job_id) == {"447400123301": "delivered"}
            events = status_events(redis_client)
            assert [(e["status"], e["source"]) for e in events] == [
                ("submitted", "dispatch"),
                ("delivered", "webhook"),
            ]
            # The same push again: stored, applied, and nothing changes.
            assert http("GET", url) == (200, b"OK")
            wait_until(lambda: drained(redis_client), what="the duplicate applied")
            assert status_events(redis_client) == events
            assert client.status(job_id).counts == {"delivered": 1}  # type: ignore[union-attr]
        finally:
            second.stop()
    finally:
        web.stop()


def test_unreadable_push_is_dead_lettered_once_and_not_replayable(
    redis_url: str,
    redis_client: redis.Redis,
    run_sandboxes: SandboxFactory,
    loop_thread: LoopThread,
) -> None:
    sandboxes = run_sandboxes(["intis"], mix=MIX)
    settings = with_webhook_secrets(sandbox_settings(redis_url, sandboxes), SECRETS)
    web = WebServer.start(loop_thread, settings)
    try:
        query = urlencode({"message-id": "4001", "state": "42", "key": INTIS_SECRET})
        assert http("GET", f"{web.url}/hooks/intis-sandbox?{query}")[0] == 200
    finally:
        web.stop()
    # A message for a push that is gone (applied before) is acknowledged quietly.
    app = create_app(settings)
    app.actors["apply_webhook"].send("no-such-push")
    worker = WorkerHarness(app).start()
    try:
        worker.join()
    finally:
        worker.stop()
    assert drained(redis_client)
    letters = DeadLetters(redis_client, Keys())
    [letter] = letters.list()
    assert letter.source == "webhook" and "state" in letter.reasons[0]
    assert INTIS_SECRET not in json.dumps(letter.payload)
    assert "key" not in json.loads(letter.payload)["query"]  # never stored
    with pytest.raises(NotReplayable):
        letters.replay(letter.id)
    assert redis_client.xlen("smsq:events") == 0
    assert redis_client.zcard("dramatiq:smsq-webhooks.XQ") == 0  # nothing failed


def test_intis_sandbox_retries_reports_until_the_web_process_answers(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    run_sandboxes: SandboxFactory,
    start_web: Callable[..., WebServer],
) -> None:
    port = closed_port()  # nothing listens yet: the first reports find no one
    options = {
        "callback_url": f"http://127.0.0.1:{port}/hooks/intis-sandbox?key={INTIS_SECRET}",
        "callback_retry_interval": 0.3,
    }
    sandboxes = run_sandboxes(["intis"], mix=MIX, intis=options)
    settings = with_webhook_secrets(sandbox_settings(redis_url, sandboxes), SECRETS)
    make_worker(settings)
    client = SmsqClient(redis_url)
    phones = ["447400123401", "447400123402", "447400123403"]
    job_id = client.enqueue_send(
        provider="intis", sender="smstest", text="Hi", recipients=["+" + p for p in phones]
    )
    intis = sandboxes.running["intis"].app[INTIS_KEY]
    wait_until(lambda: len({a.message_id for a in intis.callback_log}) == 3, what="first attempts")
    assert {a.http_status for a in intis.callback_log} == {None}
    assert set(recipient_statuses(client, job_id).values()) == {"submitted"}

    start_web(settings, bound_socket(port))
    wait_until(
        lambda: set(recipient_statuses(client, job_id).values()) <= FINAL and drained(redis_client),
        what="reports applied after the retries",
    )
    outcomes = {m.phone: m.outcome for m in intis.state.messages.values()}
    assert recipient_statuses(client, job_id) == {p: outcomes[p] for p in phones}
    for message_id in intis.state.messages:
        attempts = [a for a in intis.callback_log if a.message_id == message_id]
        assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
        assert attempts[0].http_status is None and attempts[-1].http_status == 200
        assert [a.http_status for a in attempts].count(200) == 1  # no retry after a 200
        assert set(attempts[-1].params) == {
            "message-id",
            "state",
            "price",
            "currency",
            "mcc",
            "mnc",
        }
    status, body = http("GET", sandboxes.url("intis") + "/__sandbox/intis/callbacks")
    listed = json.loads(body)
    assert status == 200 and len(listed) == len(intis.callback_log)
    assert sum(a["http_status"] == 200 for a in listed) == 3
