"""The OTP fast path: an OTP's one chunk is dispatched in its intake message's run, with every
guarantee of a dispatch message; what cannot go at once becomes an ordinary dispatch message;
a worker killed mid-dispatch neither loses nor resends it."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from producers.client import SmsqClient
from producers.wire import INTAKE_OTP_QUEUE, NAMESPACE
from tests.support.harness import start_worker, wait_children, write_config
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings, set_faults
from worker.core.queues import DISPATCH_OTP_QUEUE
from worker.devtools.sandboxes import sandbox_account

SENDER = sandbox_account("smsc")["sender"]
INFLIGHT = "smsq:inflight"


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _sends(sandboxes: SandboxThread, phone: str) -> list[Any]:
    """The sandbox's send requests for ``phone`` (every one, answered or not)."""
    return [
        e
        for e in sandboxes.log("smsc")
        if e.path.endswith("/send.php") and phone in e.params.get("phones", "").split(",")
    ]


def _accepted(sandboxes: SandboxThread, phone: str) -> int:
    return sum(1 for e in _sends(sandboxes, phone) if e.status == 200 and e.fault is None)


def _otp(client: SmsqClient, phone: str) -> str:
    return client.enqueue_send(
        provider="smsc",
        sender=SENDER,
        text="Your code is 4242",
        recipients=[f"+{phone}"],
        priority="otp",
    )


def _entry(r: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = r.hget(INFLIGHT, f"smsq:chunk:{job_id}:0")
    return json.loads(raw) if raw else None


def _done(client: SmsqClient, job_id: str) -> bool:
    status = client.status(job_id)
    return status is not None and status.state == "done"


def _dispatch_messages(r: redis.Redis) -> int:
    return sum(
        int(r.hlen(f"{NAMESPACE}:{q}.msgs"))
        for q in (DISPATCH_OTP_QUEUE, f"{DISPATCH_OTP_QUEUE}.DQ")
    )


def test_an_otp_is_sent_in_its_intake_run_with_no_dispatch_message(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc"])
    sandboxes.call(set_faults(sandboxes, "smsc", {"send.php": {"latency": 0.5}}))
    make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    phone = "447911123456"
    job_id = _otp(client, phone)
    _wait(lambda: _sends(sandboxes, phone), 10, "the send request")
    # In flight: the chunk is sending, noted under the intake message; no dispatch message.
    entry = _entry(redis_client, job_id)
    assert entry is not None and entry["mq"] == INTAKE_OTP_QUEUE
    assert entry["queue"] == DISPATCH_OTP_QUEUE
    assert redis_client.hexists(f"{NAMESPACE}:{INTAKE_OTP_QUEUE}.msgs", entry["msg"])
    assert (redis_client.get(f"smsq:chunk:{job_id}:0") or b"").startswith(b"sending:")
    assert _dispatch_messages(redis_client) == 0
    _wait(lambda: _done(client, job_id), 10, "the job to be done")
    status = client.status(job_id, recipients=True)
    assert status is not None and status.counts == {"submitted": 1}
    assert status.recipients[0].provider_message_id
    assert _accepted(sandboxes, phone) == 1
    assert redis_client.hlen(INFLIGHT) == 0
    assert redis_client.get(f"smsq:chunk:{job_id}:0") == b"done"
    events = [e for _, e in redis_client.xrange("smsq:events")]
    assert [e[b"status"] for e in events if e.get(b"job_id") == job_id.encode()] == [b"submitted"]
    assert _dispatch_messages(redis_client) == 0


def test_a_transient_failure_goes_to_a_dispatch_message_and_is_sent_once(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    """One try in the intake run; the HTTP 500 is retried by an ordinary dispatch message."""
    sandboxes = run_sandboxes(["smsc"])
    sandboxes.call(set_faults(sandboxes, "smsc", {"send.php": {"error_rate": 1.0}}))
    settings = sandbox_settings(redis_url, sandboxes, backoff_initial=1.0, backoff_max=1.0)
    make_worker(settings)
    client = SmsqClient(redis_url)
    phone = "447911123457"
    job_id = _otp(client, phone)

    def handed_over() -> bool:
        entry = _entry(redis_client, job_id)
        return entry is not None and "mq" not in entry and _sends(sandboxes, phone) != []

    _wait(handed_over, 10, "the chunk to be handed to a dispatch message")
    entry = _entry(redis_client, job_id)
    assert entry is not None
    assert redis_client.hexists(f"{NAMESPACE}:{DISPATCH_OTP_QUEUE}.DQ.msgs", entry["msg"])
    sandboxes.call(set_faults(sandboxes, "smsc", {}))
    _wait(lambda: _done(client, job_id), 20, "the job to be done")
    status = client.status(job_id)
    assert status is not None and status.counts == {"submitted": 1}
    assert _accepted(sandboxes, phone) == 1
    assert len(_sends(sandboxes, phone)) >= 2  # the failed try, then the dispatch's
    assert redis_client.hlen(INFLIGHT) == 0


def test_a_far_permit_reschedules_the_otp_as_a_dispatch_message(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc"])
    limits = {"smsc-sandbox": {"limits": {"send": {"requests": 1, "per_seconds": 4}}}}
    make_worker(sandbox_settings(redis_url, sandboxes, accounts_extra=limits))
    client = SmsqClient(redis_url)
    first, second = "447911123458", "447911123459"
    first_job = _otp(client, first)
    _wait(lambda: _done(client, first_job), 10, "the first OTP")
    second_job = _otp(client, second)

    def rescheduled() -> bool:
        entry = _entry(redis_client, second_job)
        return entry is not None and "mq" not in entry

    _wait(rescheduled, 10, "the second OTP to be rescheduled")
    entry = _entry(redis_client, second_job)
    assert entry is not None
    assert redis_client.hexists(f"{NAMESPACE}:{DISPATCH_OTP_QUEUE}.DQ.msgs", entry["msg"])
    assert redis_client.get(f"smsq:chunk:{second_job}:0") is None  # released
    _wait(lambda: _done(client, second_job), 20, "the second OTP")
    assert (_accepted(sandboxes, first), _accepted(sandboxes, second)) == (1, 1)
    sends = sorted(e.at for e in sandboxes.log("smsc") if e.path.endswith("/send.php"))
    assert sends[1] - sends[0] >= 4.0  # the rule held


# Any free metrics port: another worker group on this host may hold the default one.
RECOVERY = (
    "[metrics]\nworker_port = 0\n"
    "[worker]\nheartbeat_timeout = 3\nmaintenance_interval = 1\nrestart_delay = 0.2\n"
)


def _kill_the_worker(group: Any) -> None:
    (child,) = wait_children(group.pid, 1)
    os.kill(child, signal.SIGKILL)


def test_a_worker_killed_while_the_otp_is_sending_leaves_it_unknown_not_resent(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, run_sandboxes: SandboxFactory
) -> None:
    """Killed between the request and its answer: the intake message is requeued, finds the
    chunk sending, and records the recipient unknown (SMSC's id known) without a second send."""
    sandboxes = run_sandboxes(["smsc"])
    sandboxes.call(set_faults(sandboxes, "smsc", {"send.php": {"latency": 2.0}}))
    env = write_config(tmp_path / "smsq.toml", redis_url, sandboxes, "smsc", RECOVERY)
    group = start_worker(env, processes=1)
    try:
        wait_children(group.pid, 1)
        client = SmsqClient(redis_url)
        phone = "447911123460"
        job_id = _otp(client, phone)
        _wait(lambda: _sends(sandboxes, phone), 20, "the send request")
        _kill_the_worker(group)
        _wait(lambda: _done(client, job_id), 30, "the job to be settled")
        status = client.status(job_id, recipients=True)
        assert status is not None and status.counts == {"unknown": 1}
        assert status.recipients[0].provider_message_id  # reconciliation can settle it
        time.sleep(2.5)  # the killed request's answer, had anything been sent again
        assert len(_sends(sandboxes, phone)) == 1
        assert redis_client.hlen(INFLIGHT) == 0
        assert redis_client.hlen(f"{NAMESPACE}:{INTAKE_OTP_QUEUE}.msgs") == 0
        assert _dispatch_messages(redis_client) == 0
    finally:
        group.send_signal(signal.SIGTERM)
        group.wait(timeout=60)


def test_a_worker_killed_before_the_otp_left_sends_it_once_on_redelivery(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, run_sandboxes: SandboxFactory
) -> None:
    """Killed while the accepted OTP waits in its intake run for its rate permit (the claim
    and the permit are taken together, so nothing is claimed yet): the requeued intake message
    finds the chunk noted under it and sends it, once."""
    sandboxes = run_sandboxes(["smsc"])
    limits = "\n[accounts.smsc-sandbox.limits]\nsend = { requests = 1, per_seconds = 1.9 }\n"
    env = write_config(tmp_path / "smsq.toml", redis_url, sandboxes, "smsc", RECOVERY + limits)
    group = start_worker(env, processes=1)
    try:
        wait_children(group.pid, 1)
        client = SmsqClient(redis_url)
        first, second = "447911123461", "447911123462"
        first_job = _otp(client, first)
        _wait(lambda: _done(client, first_job), 20, "the first OTP")
        second_job = _otp(client, second)

        def waiting() -> bool:
            entry = _entry(redis_client, second_job)
            return entry is not None and entry.get("mq") == INTAKE_OTP_QUEUE

        _wait(waiting, 5, "the second OTP accepted and waiting in its intake run")
        _kill_the_worker(group)
        assert _sends(sandboxes, second) == []
        assert redis_client.get(f"smsq:chunk:{second_job}:0") is None  # never claimed
        _wait(lambda: _done(client, second_job), 30, "the second OTP")
        status = client.status(second_job)
        assert status is not None and status.counts == {"submitted": 1}
        assert Counter(e.status for e in _sends(sandboxes, second)) == Counter({200: 1})
        assert redis_client.hlen(INFLIGHT) == 0
        assert redis_client.hlen(f"{NAMESPACE}:{INTAKE_OTP_QUEUE}.msgs") == 0
    finally:
        group.send_signal(signal.SIGTERM)
        group.wait(timeout=60)
