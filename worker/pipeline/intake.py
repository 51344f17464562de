"""Job intake: validate, record, split into chunks and enqueue their dispatch.

Everything an accepted job writes (its record, every recipient as ``queued``
or ``rejected``, the counts, and one dispatch message per chunk) goes in one
MULTI/EXEC transaction guarded by WATCH on the job key: a crash before EXEC
leaves nothing, so the redelivered message starts over; a job id seen before
is acknowledged without writing anything (producers may retry safely).
A job that fails validation is dead-lettered with every reason, never retried.

An OTP send job of one chunk taken from a message this worker can name (its queue and
Redis id: a :class:`Carrier`) gets no dispatch message: the transaction notes the chunk in
flight under the intake message instead, and the caller dispatches it in the same run
(``worker.pipeline.fast_path``). A redelivery of that message (its worker died) finds the
job accepted and the chunk still noted under it, and dispatches it again: the chunk's state
decides whether anything is sent.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from producers.contract import HlrJob, Job, JobRejected, SendJob, is_job_id, validate_job
from producers.phones import number_library
from producers.status import JobState
from producers.wire import NAMESPACE, build_message, write_message
from worker.core import metrics
from worker.core.messages import (
    MAX_BATCH,
    DispatchMessage,
    HlrChunk,
    MessageInvalid,
    SendChunk,
    batch,
    decode,
    message_args,
)
from worker.core.queues import SEND_ACTOR, dispatch_queue
from worker.core.runtime import Runtime
from worker.pipeline import routing
from worker.pipeline.dispatch import Delivery
from worker.state import store

log = logging.getLogger("smsq.intake")

if number_library() is None:  # pragma: no cover - a dependency of the worker
    raise ImportError("smsq's worker checks numbers with phonenumbers: pip install phonenumbers")

CLIENT_ID_MAX = 2_147_483_647  # the largest client message id the providers accept


ENQUEUED_AT_TRUSTED = 24 * 3600.0  # an enqueue time older than this (or ahead) is not trusted


@dataclass(frozen=True)
class Carrier:
    """The Dramatiq message a job came in: its queue and its Redis message id."""

    queue: str
    message_id: str


@dataclass(frozen=True)
class Taken:
    """What taking a job did, and the chunk to dispatch in this run (the OTP fast path)."""

    result: str
    direct: SendChunk | None = None


def accept_job(
    rt: Runtime,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    *,
    enqueued_at: float | None = None,
    message_id: str | None = None,
) -> str:
    """Take one job message's arguments; returns 'accepted', 'duplicate' or 'dead_lettered'
    (every chunk enqueued: see :func:`take_job` for the OTP fast path)."""
    return take_job(rt, args, kwargs, enqueued_at=enqueued_at, message_id=message_id).result


def take_job(
    rt: Runtime,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    *,
    enqueued_at: float | None = None,
    message_id: str | None = None,
    carrier: Carrier | None = None,
) -> Taken:
    """Take one job message's arguments; its result is 'accepted', 'duplicate' or
    'dead_lettered'.

    ``enqueued_at`` (epoch seconds, from the message) is the time a schedule is
    judged against, so a backlog does not turn a valid ``scheduled_at`` into one
    "in the past". ``message_id`` (stable across redeliveries and retries) becomes
    the job id of a payload that has none, so a redelivered job is still accepted once.
    Anything unexpected dead-letters the job with its reason; only Redis errors
    propagate (Dramatiq retries the message). With ``carrier`` (the message the job came
    in), an OTP of one chunk is not enqueued: its chunk is returned in ``direct``, noted in
    flight under that message, for the caller to dispatch now.
    """
    if len(args) != 1 or kwargs:
        reasons = [
            "accept_job takes exactly one positional argument, the job payload "
            f"(got {len(args)} positional and {len(kwargs)} keyword arguments)"
        ]
        _dead_letter(rt, reasons, {"args": list(args), "kwargs": kwargs}, None)
        return Taken("dead_lettered")
    payload = args[0]
    if isinstance(payload, dict) and payload.get("job_id") is None and message_id:
        # Only an absent (or null) id is generated: "" or false is refused with its reason.
        payload = {**payload, "job_id": message_id}
    try:
        job = validate_job(
            payload,
            providers=rt.settings.provider_names(),
            now=_judged_at(enqueued_at),
            numbers=rt.settings.intake.accept_numbers,
        )
        taken = _store_and_split(rt, job, carrier)
    except JobRejected as exc:
        _dead_letter(rt, exc.reasons, payload, exc.job_id)
        metrics.JOBS.labels(_kind(payload), "dead_lettered").inc()
        return Taken("dead_lettered")
    except redis.RedisError:
        raise
    except Exception as exc:
        log.exception("job could not be accepted")
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        reason = f"internal error while accepting the job: {type(exc).__name__}"
        _dead_letter(rt, [reason], payload, job_id if is_job_id(job_id) else None)
        metrics.JOBS.labels(_kind(payload), "dead_lettered").inc()
        return Taken("dead_lettered")
    metrics.JOBS.labels(job.kind, taken.result).inc()
    return taken


def _judged_at(enqueued_at: float | None) -> datetime:
    now = time.time()
    if enqueued_at is None or not now - ENQUEUED_AT_TRUSTED <= enqueued_at <= now:
        return datetime.fromtimestamp(now, UTC)
    return datetime.fromtimestamp(enqueued_at, UTC)


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
        max_bytes=int(rt.settings.dispatch.dead_letter_max_bytes),
    )
    if job_id:
        pipe.delete(rt.keys.pending(job_id))
    pipe.execute()
    metrics.DEAD_LETTERS.labels("intake").inc()
    log.warning("job dead-lettered (%s): %s", dl_id, "; ".join(reasons)[:500])


def _chunks(phones: list[str], size: int) -> list[list[str]]:
    return [phones[i : i + size] for i in range(0, len(phones), size)]


def callback_url(rt: Runtime, job: Job) -> str | None:
    """The job's callback URL (its own, or its route's default); JobRejected when no
    configured callback producer covers it (smsq could not sign its events)."""
    cfg = rt.settings.callbacks
    url = job.callback_url or cfg.routes.get(job.provider)
    if url is not None and cfg.producer_for(url) is None:
        raise JobRejected(
            [
                "callback_url does not start with the URL of any configured callback producer"
                " ([callbacks.producers.<name>] urls); smsq has no secret to sign its events"
            ],
            job.job_id,
        )
    return url


def _plan(
    rt: Runtime, job: Job, route: list[str]
) -> tuple[list[tuple[list[str], list[str]]], list[dict[str, Any]] | None, list[str]]:
    """The chunks (each with its route) after routing, each recipient's decision, and the
    numbers to look up. Failover: the route as configured for every chunk. Cost: the
    recipients grouped by the account chosen for each (in route order), each group's chunks
    going to that account first and failing over to the others in order."""

    # A chunk may fail over to any account of the route: size it for the smallest batch.
    size = max(1, min(rt.adapter(a).max_batch for a in route))
    policy = rt.settings.policy(job.provider)
    if not isinstance(job, SendJob):
        return [(c, route) for c in _chunks(list(job.recipients), size)], None, []
    decisions, wanted = routing.route_recipients(rt, route, policy, job.recipients, job.countries)
    if policy.strategy != "cost":
        # Failover: the records keep the price a recipient goes at, when one is known.
        priced = any(d.price is not None for d in decisions)
        fields = [d.fields() for d in decisions] if priced else None
        return [(c, route) for c in _chunks(list(job.recipients), size)], fields, []
    fields = [d.fields() for d in decisions]
    groups: dict[str, list[str]] = {a: [] for a in route}
    for phone, decision in zip(job.recipients, decisions, strict=True):
        groups[decision.account].append(phone)
    planned = []
    for account, phones in groups.items():
        order = [account, *(a for a in route if a != account)]
        planned += [(c, order) for c in _chunks(phones, size)]
    return planned, fields, wanted


def _route_fields(rt: Runtime, job: Job, now: float) -> dict[str, Any] | None:
    """Job record fields of the route's policy: its strategy, and what a second-chance
    resend needs (the statuses, the attempts, the text, and when the message's validity
    ends: from its start, the job's validity or else the scheduler's horizon)."""
    if not isinstance(job, SendJob):
        return None
    policy = rt.settings.policy(job.provider)
    fields: dict[str, Any] = {"strategy": policy.strategy}
    if policy.resend_on and policy.attempts > 1:
        start = max(now, job.scheduled_at.timestamp()) if job.scheduled_at else now
        lasts = job.validity or rt.settings.scheduler.horizon
        fields.update(
            {
                "resend_on": ",".join(policy.resend_on),
                "max_attempts": policy.attempts,
                "text": job.text,
                "expires_at": round(start + lasts, 3),
            }
        )
    return fields


def carriers(rt: Runtime, job: Job, accounts: tuple[str, ...]) -> tuple[str, ...]:
    """The accounts of the route whose provider can carry the job's text (its documented
    message limits); JobRejected naming each account's reason when none can."""
    if not isinstance(job, SendJob):
        return accounts
    refusals = {a: rt.settings.message_limits(a).refusal(job.text) for a in accounts}
    able = tuple(a for a in accounts if refusals[a] is None)
    if not able:
        reasons = [f"text: account {a} cannot send it: {why}" for a, why in refusals.items()]
        raise JobRejected(reasons, job.job_id)
    return able


def _carried(rt: Runtime, job: Job, carrier: Carrier | None) -> SendChunk | None:
    """The chunk this very message was dispatching when its worker died (noted in flight
    under it, not done): dispatched again, its state decides whether anything is sent."""
    if carrier is None or not isinstance(job, SendJob) or job.priority != "otp":
        return None
    raw = rt.redis.hget(rt.keys.inflight, rt.keys.chunk(job.job_id, 0))
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        if entry.get("msg") != carrier.message_id or entry.get("mq") != carrier.queue:
            return None
        message = decode(SEND_ACTOR, entry["args"])
    except (ValueError, KeyError, TypeError, AttributeError, MessageInvalid):
        return None
    return message if isinstance(message, SendChunk) else None


def _store_and_split(rt: Runtime, job: Job, carrier: Carrier | None = None) -> Taken:
    callback = callback_url(rt, job)
    accounts = carriers(rt, job, rt.settings.resolve(job.provider))
    route = list(accounts)
    planned, decisions, wanted = _plan(rt, job, route)
    chunks = [c for c, _ in planned]
    now = time.time()
    queue = dispatch_queue(job.priority)
    eta_ms: int | None = None
    if (
        isinstance(job, SendJob)
        and job.scheduled_at is not None
        and job.scheduled_at.timestamp() > now
    ):
        eta_ms = int(job.scheduled_at.timestamp() * 1000)
    # The OTP fast path: one chunk to send now, and a message to note it under.
    fast = (
        carrier is not None
        and isinstance(job, SendJob)
        and job.priority == "otp"
        and len(planned) == 1
        and eta_ms is None
    )
    direct: SendChunk | None = None
    job_key = rt.keys.job(job.job_id)
    with rt.redis.pipeline(transaction=True) as pipe:
        try:
            tombstone = rt.keys.purged(job.job_id)
            pipe.watch(job_key, tombstone)  # type: ignore[no-untyped-call]
            previous_state = pipe.hget(job_key, "state")
            resubmitted = previous_state == JobState.DEAD_LETTERED.value.encode()
            if (previous_state is not None and not resubmitted) or pipe.exists(tombstone):
                log.info("job %s seen before; not accepted twice", job.job_id)
                rt.redis.delete(rt.keys.pending(job.job_id))
                return Taken("duplicate", _carried(rt, job, carrier))
            first_id = 0
            if isinstance(job, SendJob) and chunks:
                last = int(pipe.incrby(rt.keys.client_ids, len(chunks)))
                first_id = last - len(chunks) + 1
            pipe.multi()
            if resubmitted:  # a corrected job under the id of one that was dead-lettered
                pipe.delete(job_key)
                pipe.zrem(rt.keys.retention, job.job_id)
            store.write_job_record(
                pipe,
                rt.keys,
                job,
                accounts=accounts,
                chunks=len(chunks),
                now=now,
                decisions=decisions,
                extra=_route_fields(rt, job, now),
            )
            routing.want_lookups(pipe, rt.keys, wanted, now)
            pipe.delete(rt.keys.pending(job.job_id))  # "pending" ends as the record appears
            if callback is not None:
                pipe.hset(job_key, "callback_url", callback)
            dispatch: list[DispatchMessage] = []
            sends: list[SendChunk] = []
            per_message = max(1, min(rt.settings.dispatch.chunks_per_message, MAX_BATCH))
            for index, (phones, chunk_route) in enumerate(planned):
                if isinstance(job, HlrJob):
                    dispatch.append(
                        HlrChunk(job.job_id, index, tuple(chunk_route), tuple(phones), job.priority)
                    )
                    continue
                sends.append(
                    SendChunk(
                        job_id=job.job_id,
                        index=index,
                        route=tuple(chunk_route),
                        sender=job.sender,
                        text=job.text,
                        recipients=tuple(phones),
                        scheduled_at=job.scheduled_at.isoformat() if job.scheduled_at else None,
                        validity=job.validity,
                        priority=job.priority,
                        client_id=(first_id + index - 1) % CLIENT_ID_MAX + 1,
                        created_at=round(now, 3),
                    )
                )
            if fast and carrier is not None and len(sends) == 1:
                # No dispatch message: noted in flight under the intake message, sent now.
                direct = sends.pop()
                held = Delivery(
                    SEND_ACTOR,
                    queue,
                    direct.positional(),
                    carrier.message_id,
                    carrier_queue=carrier.queue,
                )
                pipe.hset(
                    rt.keys.inflight, rt.keys.chunk(job.job_id, direct.index), held.entry(now)
                )
            # Several chunks a message: the worker sends them concurrently (worker/pipeline/
            # dispatch.py, dispatch_message), one fetch and one acknowledgement for all.
            dispatch += [
                batch(sends[i : i + per_message]) for i in range(0, len(sends), per_message)
            ]
            for message in dispatch:
                target, redis_id, body = build_message(
                    queue, message.actor, message_args(message), eta_ms=eta_ms
                )
                write_message(pipe, target, redis_id, body, NAMESPACE)
            pipe.execute()
        except redis.WatchError:
            return Taken("duplicate")
    if job.rejected:  # final at intake: they never reach a provider
        metrics.count_finals("none", "none", {"rejected": len(job.rejected)})
    log.info(
        "job %s accepted: %d recipients in %d chunks to %s (%d rejected, %d duplicates)",
        job.job_id,
        len(job.recipients),
        len(chunks),
        ",".join(route),
        len(job.rejected),
        job.duplicates,
    )
    return Taken("accepted", direct)
