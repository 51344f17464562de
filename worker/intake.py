"""Job intake: validate, record, split into chunks and enqueue their dispatch.

Everything an accepted job writes (its record, every recipient as ``queued``
or ``rejected``, the counts, and one dispatch message per chunk) goes in one
MULTI/EXEC transaction guarded by WATCH on the job key: a crash before EXEC
leaves nothing, so the redelivered message starts over; a job id seen before
is acknowledged without writing anything (producers may retry safely).
A job that fails validation is dead-lettered with every reason, never retried.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis

from producers.contract import HlrJob, Job, JobRejected, SendJob, validate_job
from producers.wire import NAMESPACE, build_message, write_message
from worker import metrics, store
from worker.queues import HLR_ACTOR, SEND_ACTOR, dispatch_queue
from worker.runtime import Runtime

log = logging.getLogger("smsq.intake")

CLIENT_ID_MAX = 2_147_483_647  # the largest client message id the providers accept


def accept_job(rt: Runtime, *args: Any, enqueued_at: float | None = None, **kwargs: Any) -> str:
    """Take one job payload; returns 'accepted', 'duplicate' or 'dead_lettered'.

    ``enqueued_at`` (epoch seconds, from the message) is the time the schedule
    is judged against, so a backlog does not turn a valid ``scheduled_at``
    into one "in the past".
    """
    if len(args) != 1 or kwargs:
        reasons = [
            "accept_job takes exactly one positional argument, the job payload "
            f"(got {len(args)} positional and {len(kwargs)} keyword arguments)"
        ]
        _dead_letter(rt, reasons, {"args": list(args), "kwargs": kwargs}, None)
        return "dead_lettered"
    payload = args[0]
    try:
        now = datetime.fromtimestamp(min(enqueued_at or time.time(), time.time()), UTC)
        job = validate_job(payload, providers=rt.settings.provider_names(), now=now)
    except JobRejected as exc:
        _dead_letter(rt, exc.reasons, payload, exc.job_id)
        metrics.JOBS.labels(_kind(payload), "dead_lettered").inc()
        return "dead_lettered"
    result = _store_and_split(rt, job)
    metrics.JOBS.labels(job.kind, result).inc()
    return result


def _kind(payload: Any) -> str:
    kind = payload.get("kind", "send") if isinstance(payload, dict) else "unknown"
    return kind if kind in ("send", "hlr") else "unknown"


def _dead_letter(rt: Runtime, reasons: list[str], payload: Any, job_id: str | None) -> None:
    record_job = bool(job_id) and not rt.redis.exists(rt.keys.job(job_id or ""))
    pipe = rt.redis.pipeline(transaction=True)
    dl_id = store.dead_letter(
        pipe,
        rt.keys,
        source="intake",
        reasons=reasons,
        payload=payload,
        job_id=job_id,
        record_job=record_job,
    )
    pipe.execute()
    metrics.DEAD_LETTERS.labels("intake").inc()
    log.warning("job dead-lettered (%s): %s", dl_id, "; ".join(reasons)[:500])


def _chunks(job: Job, size: int) -> list[list[str]]:
    phones = list(job.recipients)
    return [phones[i : i + size] for i in range(0, len(phones), size)]


def _store_and_split(rt: Runtime, job: Job) -> str:
    accounts = rt.settings.resolve(job.provider)
    route = list(accounts)
    # A chunk may fail over to any account of the route: size it for the smallest batch.
    size = max(1, min(rt.adapter(a).max_batch for a in route))
    chunks = _chunks(job, size)
    now = time.time()
    queue = dispatch_queue(job.priority)
    eta_ms: int | None = None
    if (
        isinstance(job, SendJob)
        and job.scheduled_at is not None
        and job.scheduled_at.timestamp() > now
    ):
        eta_ms = int(job.scheduled_at.timestamp() * 1000)
    job_key = rt.keys.job(job.job_id)
    with rt.redis.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(job_key)  # type: ignore[no-untyped-call]
            if pipe.exists(job_key):
                log.info("job %s seen before; not accepted twice", job.job_id)
                return "duplicate"
            first_id = 0
            if isinstance(job, SendJob) and chunks:
                last = int(pipe.incrby(f"{rt.keys.prefix}:client_ids", len(chunks)))
                first_id = last - len(chunks) + 1
            pipe.multi()
            store.write_job_record(
                pipe, rt.keys, job, accounts=accounts, chunks=len(chunks), now=now
            )
            for index, phones in enumerate(chunks):
                if isinstance(job, HlrJob):
                    actor, args = HLR_ACTOR, [job.job_id, index, route, phones, job.priority]
                else:
                    client_id = (first_id + index - 1) % CLIENT_ID_MAX + 1
                    actor = SEND_ACTOR
                    args = [
                        job.job_id,
                        index,
                        route,
                        job.sender,
                        job.text,
                        phones,
                        job.scheduled_at.isoformat() if job.scheduled_at else None,
                        job.validity,
                        job.priority,
                        client_id,
                    ]
                target, redis_id, body = build_message(queue, actor, args, eta_ms=eta_ms)
                write_message(pipe, target, redis_id, body, NAMESPACE)
            pipe.execute()
        except redis.WatchError:
            return "duplicate"
    log.info(
        "job %s accepted: %d recipients in %d chunks to %s (%d rejected, %d duplicates)",
        job.job_id,
        len(job.recipients),
        len(chunks),
        ",".join(route),
        len(job.rejected),
        job.duplicates,
    )
    return "accepted"
