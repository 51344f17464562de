"""Chunk dispatch: one provider request per chunk, every recipient's outcome recorded once.

A chunk's state key moves ``inflight`` -> ``done``. It is claimed with SET NX
before the request; a redelivered chunk found ``done`` is acknowledged without
sending, and one found ``inflight`` (its worker died mid-request) is never
resent blindly: its recipients become ``unknown`` for reconciliation to settle.
Transient failures are retried with tenacity (exponential backoff with
jitter, bounded by attempts and total time); permanent ones are not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from producers.status import JobState, Status
from worker import metrics, store
from worker.config import DispatchSettings
from worker.providers.base import (
    ErrorClass,
    HlrResult,
    ProviderAdapter,
    ProviderError,
    RecipientOutcome,
    SendRequest,
)
from worker.runtime import Runtime

log = logging.getLogger("smsq.dispatch")

RETRYABLE = frozenset({ErrorClass.TRANSIENT, ErrorClass.THROTTLED})
INTERRUPTED = "send interrupted before its outcome was recorded; awaiting reconciliation"


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.error_class in RETRYABLE


def _wait(settings: DispatchSettings) -> Any:
    backoff = wait_exponential_jitter(multiplier=settings.backoff_initial, max=settings.backoff_max)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return min(exc.retry_after, settings.max_retry_seconds)
        return float(backoff(state))

    return wait


def _count_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    cls = exc.error_class.value if isinstance(exc, ProviderError) else "other"
    metrics.RETRIES.labels(cls).inc()


async def with_retries(settings: DispatchSettings, call: Any, *args: Any) -> Any:
    """Await ``call(*args)``, retrying TRANSIENT and THROTTLED ProviderErrors."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(settings.max_attempts)
        | stop_after_delay(settings.max_retry_seconds),
        wait=_wait(settings),
        before_sleep=_count_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call(*args)
    raise AssertionError("unreachable")  # pragma: no cover


def failure_outcomes(phones: Sequence[str], exc: ProviderError) -> list[RecipientOutcome]:
    """Every recipient's outcome when the request as a whole failed."""
    if exc.error_class is ErrorClass.AMBIGUOUS:
        status, reason = Status.UNKNOWN, f"outcome unknown: {exc.reason}; awaiting reconciliation"
    elif exc.error_class in (ErrorClass.REQUEST, ErrorClass.RECIPIENT):
        status, reason = Status.REJECTED, exc.reason
    elif exc.error_class is ErrorClass.ACCOUNT:
        status, reason = Status.FAILED, f"account error: {exc.reason}"
    else:
        status, reason = Status.FAILED, f"retries exhausted: {exc.reason}"
    return [
        RecipientOutcome(
            p, status, raw_code=exc.raw_code, reason=reason, error_class=exc.error_class
        )
        for p in phones
    ]


def reconcile_outcomes(
    phones: Sequence[str], outcomes: Sequence[RecipientOutcome]
) -> list[RecipientOutcome]:
    """Exactly one outcome per requested phone: missing ones become UNKNOWN, strays are dropped."""
    by_phone: dict[str, RecipientOutcome] = {}
    for o in outcomes:
        by_phone.setdefault(o.phone, o)
    stray = set(by_phone) - set(phones)
    if stray:
        log.warning(
            "adapter returned %d outcomes for numbers not in the chunk; ignored", len(stray)
        )
    return [
        by_phone.get(p)
        or RecipientOutcome(p, Status.UNKNOWN, reason="provider answer did not mention this number")
        for p in phones
    ]


async def _finish(
    rt: Runtime,
    job_id: str,
    chunk_key: str,
    account: str,
    kind: str,
    outcomes: Sequence[RecipientOutcome],
) -> None:
    r = rt.async_redis()
    pipe = r.pipeline(transaction=True)
    tally = store.write_outcomes(pipe, rt.keys, job_id, account, outcomes)
    pipe.set(chunk_key, "done", ex=store.CHUNK_STATE_TTL)
    pipe.hincrby(rt.keys.job(job_id), "chunks_done", 1)
    pipe.hget(rt.keys.job(job_id), "chunks")
    results = await pipe.execute()
    done, total = int(results[-2]), int(results[-1] or 0)
    if total and done >= total:
        await r.hset(
            rt.keys.job(job_id),
            mapping={"state": JobState.DONE.value, "finished_at": round(time.time(), 3)},
        )
    for status, n in tally.items():
        metrics.RECIPIENTS.labels(kind, status.value).inc(n)


async def _claim(rt: Runtime, chunk_key: str) -> str:
    """'claimed', 'done' (already dispatched) or 'interrupted' (an earlier attempt died mid-request)."""
    r = rt.async_redis()
    if await r.set(chunk_key, "inflight", nx=True, ex=store.CHUNK_STATE_TTL):
        return "claimed"
    state = await r.get(chunk_key)
    return "done" if state == b"done" else "interrupted"


async def dispatch_chunk(
    rt: Runtime,
    job_id: str,
    index: int,
    account: str,
    sender: str,
    text: str,
    recipients: list[str],
    scheduled_at: str | None,
    validity: int | None,
    priority: str,
    client_id: int | None,
) -> str:
    """Send one chunk; returns 'sent', 'duplicate' or 'interrupted'."""
    chunk_key = rt.keys.chunk(job_id, index)
    adapter: ProviderAdapter = rt.adapter(account)
    claim = await _claim(rt, chunk_key)
    if claim == "done":
        return "duplicate"
    if claim == "interrupted":
        outcomes = [RecipientOutcome(p, Status.UNKNOWN, reason=INTERRUPTED) for p in recipients]
        await _finish(rt, job_id, chunk_key, account, adapter.kind, outcomes)
        return "interrupted"
    request = SendRequest(
        chunk_id=f"{job_id}:{index}",
        sender=sender,
        text=text,
        recipients=recipients,
        scheduled_at=datetime.fromisoformat(scheduled_at) if scheduled_at else None,
        validity=validity,
        priority=priority,
        client_id=client_id,
    )
    try:
        sent = await with_retries(rt.settings.dispatch, adapter.send, request)
        outcomes = reconcile_outcomes(recipients, sent)
    except ProviderError as exc:
        log.warning("chunk %s:%d to %s failed: %s", job_id, index, account, exc)
        outcomes = failure_outcomes(recipients, exc)
    await _finish(rt, job_id, chunk_key, account, adapter.kind, outcomes)
    return "sent"


def hlr_outcome(result: HlrResult) -> RecipientOutcome:
    """An HLR answer as a recipient outcome: DELIVERED means the lookup answered."""
    if result.pending:
        return RecipientOutcome(
            result.phone, Status.SUBMITTED, provider_message_id=result.provider_message_id
        )
    if result.ok:
        return RecipientOutcome(
            result.phone, Status.DELIVERED, provider_message_id=result.provider_message_id
        )
    return RecipientOutcome(
        result.phone, Status.UNDELIVERABLE, reason=result.error or "lookup failed"
    )


async def dispatch_hlr(
    rt: Runtime, job_id: str, index: int, account: str, recipients: list[str]
) -> str:
    """Look up one chunk of numbers; records one HLR result per number."""
    chunk_key = rt.keys.chunk(job_id, index)
    adapter = rt.adapter(account)
    claim = await _claim(rt, chunk_key)
    if claim == "done":
        return "duplicate"
    results: list[HlrResult] = []
    if claim == "interrupted":
        outcomes = [RecipientOutcome(p, Status.UNKNOWN, reason=INTERRUPTED) for p in recipients]
    else:
        try:
            results = await with_retries(rt.settings.dispatch, adapter.hlr, recipients)
            outcomes = reconcile_outcomes(recipients, [hlr_outcome(r) for r in results])
        except ProviderError as exc:
            outcomes = failure_outcomes(recipients, exc)
    if results:
        records: dict[Any, Any] = {
            r.phone: store.dumps(
                {
                    "ok": r.ok,
                    "pending": r.pending,
                    "imsi": r.imsi,
                    "mcc": r.mcc,
                    "mnc": r.mnc,
                    "network": r.network,
                    "ported": r.ported,
                    "roaming": r.roaming,
                    "error": r.error,
                    "raw": dict(r.raw),
                }
            )
            for r in results
            if r.phone in recipients
        }
        if records:
            await rt.async_redis().hset(rt.keys.hlr(job_id), mapping=records)
    await _finish(rt, job_id, chunk_key, account, adapter.kind, outcomes)
    return "sent" if claim == "claimed" else claim
