"""The OTP path: its queues are waited on, not polled, and have threads no other work takes."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis

from producers.client import SmsqClient
from producers.wire import INTAKE_OTP_QUEUE, NAMESPACE
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings, set_faults
from worker.core.broker import WakingConsumer
from worker.core.queues import DISPATCH_OTP_QUEUE
from worker.devtools.sandboxes import sandbox_account

SMSC_SENDER = sandbox_account("smsc")["sender"]
INTIS_SENDER = sandbox_account("intis")["sender"]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _smsc_sent(sandboxes: SandboxThread) -> list[str]:
    out: list[str] = []
    for e in sandboxes.log("smsc"):
        if e.path.endswith("/send.php") and e.status == 200 and e.fault is None:
            out.extend(p.strip().lstrip("+") for p in e.params.get("phones", "").split(","))
    return out


def test_an_idle_otp_queue_is_waited_on_and_every_job_is_sent_once(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    """The OTP queues' consumers block on their lists instead of sleeping (Dramatiq's own
    consumer sleeps up to worker_timeout on an empty queue); bursts separated by idle
    gaps are each sent exactly once."""
    sandboxes = run_sandboxes(["smsc"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))

    def consumer_of(queue: str) -> Any:
        return getattr(worker.worker.consumers.get(queue), "consumer", None)

    for queue in (INTAKE_OTP_QUEUE, DISPATCH_OTP_QUEUE, "smsq-intake"):
        _wait(lambda queue=queue: consumer_of(queue) is not None, 10, f"consumer of {queue}")
    consumers = {q: consumer_of(q) for q in (INTAKE_OTP_QUEUE, DISPATCH_OTP_QUEUE, "smsq-intake")}
    assert isinstance(consumers[INTAKE_OTP_QUEUE], WakingConsumer)
    assert isinstance(consumers[DISPATCH_OTP_QUEUE], WakingConsumer)
    assert not isinstance(consumers["smsq-intake"], WakingConsumer)  # bulk polls as before

    def blocked_on_otp() -> bool:
        # BLMOVE's key is not in CLIENT LIST: count clients blocked in it (the OTP
        # queues and their delay queues; no other consumer blocks).
        blocked = [
            e
            for e in redis_client.client_list()
            if e.get("cmd") == "blmove" and "b" in str(e.get("flags", ""))
        ]
        return len(blocked) >= 2

    _wait(blocked_on_otp, 10, "the OTP consumers to block on their queues")

    client = SmsqClient(redis_url)
    phones = [f"+4479111{i:05d}" for i in range(30)]
    jobs: list[str] = []
    for burst in range(3):
        for phone in phones[burst * 10 : burst * 10 + 10]:
            jobs.append(
                client.enqueue_send(
                    provider="smsc",
                    sender=SMSC_SENDER,
                    text="Your code is 4242",
                    recipients=[phone],
                    priority="otp",
                )
            )
        worker.join(timeout=30)
        _wait(blocked_on_otp, 10, "the OTP consumers to block again after a burst")
    for job_id in jobs:
        status = client.status(job_id)
        assert status is not None and status.state == "done", job_id
        assert status.counts == {"submitted": 1}
    assert Counter(_smsc_sent(sandboxes)) == Counter(p.lstrip("+") for p in phones)
    # Nothing was left behind by the waits: no ids in the lists or the acks sets.
    for queue in (INTAKE_OTP_QUEUE, DISPATCH_OTP_QUEUE):
        assert redis_client.llen(f"{NAMESPACE}:{queue}") == 0
        assert redis_client.hlen(f"{NAMESPACE}:{queue}.msgs") == 0


def test_bulk_holding_every_thread_does_not_hold_up_an_otp(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    """Both shared threads are held by bulk chunks whose provider answers slowly; an OTP
    (another account) is sent on the OTP lane's threads before either bulk request ends,
    so the bulk provider has still received only those two requests."""
    sandboxes = run_sandboxes(["intis", "smsc"], intis={"balance": "100000000"})
    sandboxes.call(set_faults(sandboxes, "intis", {"send.php": {"latency": 6.0}}))
    # One chunk a message, so each shared thread holds exactly one bulk request.
    settings = sandbox_settings(
        redis_url,
        sandboxes,
        accounts_extra={"intis-sandbox": {"timeout": 20.0}},
        chunks_per_message=1,
    )
    worker = make_worker(settings, threads=2)
    client = SmsqClient(redis_url)
    bulk = client.enqueue_send(
        provider="intis",
        sender=INTIS_SENDER,
        text="Bulk hello",
        recipients=[f"+79{i:09d}" for i in range(500)],  # 10 chunks of 50
    )

    def bulk_requests() -> int:
        return sum(1 for e in sandboxes.log("intis") if e.path.endswith("/send.php"))

    _wait(lambda: bulk_requests() >= 2, 20, "both shared threads to hold a bulk chunk")
    otp = client.enqueue_send(
        provider="smsc",
        sender=SMSC_SENDER,
        text="Your code is 4242",
        recipients=["+447911123456"],
        priority="otp",
    )

    def otp_done() -> bool:
        status = client.status(otp)
        return status is not None and status.state == "done"

    _wait(otp_done, 5, "the OTP to be sent")
    assert bulk_requests() == 2  # the shared threads were still in their first requests
    assert _smsc_sent(sandboxes) == ["447911123456"]
    sandboxes.call(set_faults(sandboxes, "intis", {}))
    worker.join(timeout=60)
    status = client.status(bulk)
    assert status is not None and status.state == "done"
    assert status.counts == {"submitted": 500}
