"""Intake edge cases: redelivery without a job id, producer kwargs, resubmission, odd timestamps."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import redis

from producers.client import RecipientRow, SmsqClient
from tests.support.messages import message, push_raw
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from worker.core.config import IntakeSettings

JOB = {"provider": "intis", "sender": "smstest", "text": "hi", "recipients": ["+447400123091"]}


def test_a_redelivered_job_without_id_is_accepted_once(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    body = message([JOB])
    push_raw(redis_client, body)
    again = {**body, "options": {"redis_message_id": "redelivered"}}  # same message, again
    push_raw(redis_client, again)
    worker.join()
    jobs = redis_client.zrange("smsq:jobs", 0, -1)
    assert jobs == [body["message_id"].encode()]
    sends = [e for e in sandboxes.log("intis") if e.path.endswith("/send.php")]
    assert len(sends) == 1


def test_producer_kwargs_and_odd_timestamps_never_crash_intake(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    push_raw(redis_client, message([JOB], kwargs={"enqueued_at": 1}))
    push_raw(redis_client, message([{**JOB, "job_id": "ancient"}], message_timestamp=-(10**15)))
    seconds = message([{**JOB, "job_id": "seconds"}], message_timestamp=int(time.time()))
    push_raw(redis_client, seconds)
    worker.join()
    reasons = [" ".join(json.loads(v)["reasons"]) for v in redis_client.hvals("smsq:dlq")]
    assert len(reasons) == 1 and "keyword arguments" in reasons[0]
    assert redis_client.hget("smsq:job:ancient", "state") == b"done"
    assert redis_client.hget("smsq:job:seconds", "state") == b"done"


def test_a_corrected_job_under_a_dead_lettered_id_is_accepted(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    push_raw(redis_client, message([{**JOB, "job_id": "fix-me", "text": ""}]))
    worker.join()
    assert redis_client.hget("smsq:job:fix-me", "state") == b"dead_lettered"
    push_raw(redis_client, message([{**JOB, "job_id": "fix-me"}]))
    worker.join()
    status = SmsqClient(redis_url).status("fix-me", recipients=True)
    assert status is not None and status.state == "done" and status.counts == {"submitted": 1}
    assert "reasons" not in status.record
    push_raw(redis_client, message([{**JOB, "job_id": "fix-me"}]))  # a real duplicate now
    worker.join()
    assert len([e for e in sandboxes.log("intis") if e.path.endswith("/send.php")]) == 1


def test_recipient_rows_accept_fields_from_status_reports() -> None:
    record = {"status": "delivered", "raw_status": "deliver", "source": "poll", "future_field": 1}
    row = RecipientRow.from_record("447400123091", record)
    assert row.status == "delivered" and row.raw_status == "deliver" and row.source == "poll"


def test_intake_rejects_numbers_libphonenumber_calls_invalid_and_records_countries(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    examples = ["+1 000 000 0000", "+99912345678", "+7 000 000 00 00"]
    recipients = [*examples, "+447400123456", "+79161234567"]
    push_raw(redis_client, message([{**JOB, "job_id": "lib", "recipients": recipients}]))
    worker.join()
    status = SmsqClient(redis_url).status("lib", recipients=True)
    assert status is not None and status.counts == {"rejected": 3, "submitted": 2}
    rows = {r.phone: r for r in status.recipients}
    assert rows["447400123456"].country == "GB" and rows["79161234567"].country == "RU"
    assert rows["447400123456"].status == "submitted"  # the country outlives the send
    for i, raw in enumerate(examples):
        row = rows[f"#{i}:{raw}"]
        assert row.status == "rejected" and (row.reason or "").startswith("libphonenumber: ")
    sent = [e.params.get("phone", "") for e in sandboxes.log("intis") if "send" in e.path]
    assert sent == ["447400123456,79161234567"]


def test_a_deployment_may_accept_merely_possible_numbers(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = sandbox_settings(redis_url, sandboxes)
    settings = dataclasses.replace(settings, intake=IntakeSettings(accept_numbers="possible"))
    worker = make_worker(settings)
    recipients = ["+1 000 000 0000", "+99912345678"]
    push_raw(redis_client, message([{**JOB, "job_id": "poss", "recipients": recipients}]))
    worker.join()
    status = SmsqClient(redis_url).status("poss", recipients=True)
    assert status is not None and status.counts == {"rejected": 1, "submitted": 1}
    rows = {r.phone: r for r in status.recipients}
    assert rows["10000000000"].country == "US"
