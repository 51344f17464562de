"""Jobs through the real worker, real Redis and the Intis sandbox over HTTP."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from producers.cli import format_status
from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, sandbox_settings, sent_numbers, set_faults

BIG_BALANCE = {"intis": {"balance": "10000000"}}


def test_ten_thousand_recipients_each_sent_exactly_once(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"], **BIG_BALANCE)
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    numbers = [f"+79{i:09d}" for i in range(10_000)]
    started = time.monotonic()
    job_id = client.enqueue_send(
        provider="intis", sender="smstest", text="Bulk hello", recipients=numbers
    )
    worker.join(timeout=120)
    elapsed = time.monotonic() - started
    status = client.status(job_id, recipients=True)
    assert status is not None
    assert status.state == "done"
    assert status.counts == {"submitted": 10_000}
    assert len(status.recipients) == 10_000
    assert all(r.provider_message_id for r in status.recipients)
    assert len({r.provider_message_id for r in status.recipients}) == 10_000
    assert client.redis.xlen("smsq:events") == 10_000  # one event per status change

    sends = [e for e in sandboxes.log("intis") if e.path.endswith("/send.php")]
    assert len(sends) == 200  # 50 per request, the Intis batch limit
    assert all(len(e.params["phone"].split(",")) == 50 for e in sends)
    sent = sent_numbers(sandboxes)
    assert Counter(sent) == Counter(n[1:] for n in numbers)
    print(
        f"\n10,000 recipients in {elapsed:.2f}s ({10_000 / elapsed:.0f}/s), {len(sends)} HTTP requests"
    )


def test_same_job_id_is_accepted_once(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    for _ in range(3):
        client.enqueue_send(
            provider="intis",
            sender="smstest",
            text="once",
            recipients=["+447400123001"],
            job_id="dup-1",
        )
    worker.join()
    assert sent_numbers(sandboxes) == ["447400123001"]
    status = client.status("dup-1")
    assert status is not None and status.counts == {"submitted": 1}


def test_impossible_numbers_and_stop_list_are_rejected_alone(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"], intis={"stop_list": {"447400123002"}})
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    job_id = client.enqueue_send(
        provider="intis",
        sender="smstest",
        text="mixed",
        recipients=["+447400123001", "+447400123002", "12", "not a phone", "+44 7400 123001"],
    )
    worker.join()
    status = client.status(job_id, recipients=True)
    assert status is not None
    assert status.counts == {"submitted": 1, "rejected": 3}
    assert status.record["duplicates"] == "1"
    rows = {r.phone: r for r in status.recipients}
    assert rows["447400123002"].status == "rejected" and rows["447400123002"].code == "13"
    rejected_raw = [r for r in status.recipients if r.phone.startswith("#")]
    assert len(rejected_raw) == 2 and all(r.reason for r in rejected_raw)


def test_transient_failures_are_retried_and_nothing_is_sent_twice(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"], **BIG_BALANCE)
    sandboxes.call(set_faults(sandboxes, "intis", {"send.php": {"error_rate": 0.3}}))
    worker = make_worker(sandbox_settings(redis_url, sandboxes, max_attempts=10))
    client = SmsqClient(redis_url)
    numbers = [f"+7911{i:07d}" for i in range(1_000)]
    job_id = client.enqueue_send(
        provider="intis", sender="smstest", text="retry me", recipients=numbers
    )
    worker.join(timeout=120)
    status = client.status(job_id)
    assert status is not None and status.counts == {"submitted": 1_000}
    failed = [e for e in sandboxes.log("intis") if e.fault == "error"]
    assert failed, "the fault injection should have failed some requests"
    assert Counter(sent_numbers(sandboxes)) == Counter(n[1:] for n in numbers)


def test_timeout_after_sending_makes_recipients_unknown_not_resent(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    sandboxes.call(set_faults(sandboxes, "intis", {"send.php": {"latency": 2.0}}))
    settings = sandbox_settings(redis_url, sandboxes)
    settings.accounts["intis-sandbox"].__dict__["timeout"] = (
        0.5  # frozen dataclass: test-only tweak
    )
    worker = make_worker(settings)
    client = SmsqClient(redis_url)
    job_id = client.enqueue_send(
        provider="intis", sender="smstest", text="slow", recipients=["+447400123009"]
    )
    worker.join()
    status = client.status(job_id, recipients=True)
    assert status is not None and status.counts == {"unknown": 1}
    assert "reconciliation" in (status.recipients[0].reason or "")
    assert len([e for e in sandboxes.log("intis") if e.path.endswith("/send.php")]) == 1


def test_redelivered_chunks_are_never_resent(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    app_worker = make_worker(sandbox_settings(redis_url, sandboxes))
    send = app_worker.app.dispatch_chunk
    args = [
        "job-x",
        0,
        "intis-sandbox",
        "smstest",
        "hi",
        ["447400123011"],
        None,
        None,
        "bulk",
        1,
    ]
    redis_client.hset("smsq:job:job-x", mapping={"chunks": 2, "state": "accepted"})
    redis_client.hset("smsq:job:job-x:counts", mapping={"queued": 2})
    send.send(*args)
    app_worker.join()
    send.send(*args)  # a redelivery of a chunk that is done
    # a chunk whose earlier attempt died mid-request
    redis_client.set("smsq:chunk:job-x:1", "sending:intis-sandbox:dead-token")
    send.send("job-x", 1, "intis-sandbox", "smstest", "hi", ["447400123012"], None, None, "bulk", 2)
    app_worker.join()
    assert sent_numbers(sandboxes) == ["447400123011"]
    records = {
        k.decode(): json.loads(v) for k, v in redis_client.hgetall("smsq:job:job-x:rcpt").items()
    }
    assert records["447400123011"]["status"] == "submitted"
    assert records["447400123012"]["status"] == "unknown"
    counts = {k.decode(): int(v) for k, v in redis_client.hgetall("smsq:job:job-x:counts").items()}
    assert counts == {"queued": 0, "submitted": 1, "unknown": 1}
    assert redis_client.hget("smsq:job:job-x", "state") == b"done"


def test_scheduled_job_is_recorded_now_and_dispatched_later(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    at = datetime.now(UTC) + timedelta(seconds=3)
    job_id = client.enqueue_send(
        provider="intis",
        sender="smstest",
        text="later",
        recipients=["+447400123021"],
        scheduled_at=at,
    )
    time.sleep(1.0)
    status = client.status(job_id)
    assert status is not None and status.state == "accepted" and status.counts == {"queued": 1}
    assert sent_numbers(sandboxes) == []
    worker.join(timeout=30)
    assert sent_numbers(sandboxes) == ["447400123021"]
    first_send = next(e for e in sandboxes.log("intis") if e.path.endswith("/send.php"))
    assert first_send.at >= at.timestamp() - 0.05


def test_hlr_job_records_one_result_per_number(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    job_id = client.enqueue_hlr(provider="intis", recipients=["+447400123031", "+79161234567"])
    worker.join()
    status = client.status(job_id, recipients=True)
    assert status is not None and status.state == "done"
    assert set(status.hlr) == {"447400123031", "79161234567"}
    assert all(h["ok"] and h["mcc"] for h in status.hlr.values())
    assert sum(status.counts.values()) == 2
    text = format_status(status)
    assert "hlr results:" in text and "mcc=" in text
    assert "447400123031" not in text and "4474******31" in text
