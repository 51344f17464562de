"""Chunk dispatch: one provider request per chunk, every recipient's outcome recorded once.

A chunk's state key moves ``inflight`` -> ``done``. It is claimed with SET NX
before the request; a redelivered chunk found ``done`` is acknowledged without
sending, and one found ``inflight`` (its worker died mid-request) is never
resent blindly: its recipients become ``unknown`` for reconciliation to settle.
Transient failures are retried with tenacity (exponential backoff with
jitter, bounded by attempts and total time); permanent ones are not.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from producers.status import Status
from producers.wire import NAMESPACE, build_message, write_message
from worker import accounts, chunk_state, metrics, store
from worker.accounts import AccountState
from worker.chunk_state import ChunkOwner
from worker.config import DispatchSettings
from worker.inbound import hlr_record
from worker.limiter import MarkRefused
from worker.providers.base import (
    ErrorClass,
    HlrResult,
    ProviderAdapter,
    ProviderError,
    RecipientOutcome,
    SendRequest,
)
from worker.queues import HLR_ACTOR, SEND_ACTOR, dispatch_queue
from worker.runtime import Runtime
from worker.status_apply import EVENTS_MAXLEN

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


class Reschedule(Exception):
    """The permit is further away than a worker should wait: send the message again later."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"rate limit: next permit in {delay:.1f}s")
        self.delay = delay


SHORT_WAIT = 2.0  # seconds a dispatch may wait for a permit in the event loop
THROTTLE_PAUSE = 5.0  # seconds an account endpoint pauses on a throttled answer without Retry-After


class LostClaim(Exception):
    """Another delivery owns the chunk now: this one must not send."""


NOT_SENT = frozenset(
    {
        ErrorClass.TRANSIENT,
        ErrorClass.THROTTLED,
        ErrorClass.ACCOUNT,
        ErrorClass.REQUEST,
        ErrorClass.RECIPIENT,
    }
)


async def limited_call(
    rt: Runtime,
    account: str,
    endpoint: str,
    priority: str,
    call: Any,
    *args: Any,
    owner: ChunkOwner | None = None,
) -> Any:
    """Await ``call(*args)`` under the account's limits, retrying transient failures.

    Every attempt takes its own in-flight lease (when the account has a cap) and
    then its own rate permit; either further away than SHORT_WAIT raises
    Reschedule. With an ``owner``, the chunk is marked ``sending`` just before the
    request and set back to ``claimed`` when the provider did not take it. A
    THROTTLED answer pauses the account's endpoint for every process, then the
    attempt is retried like a transient failure.
    """
    limits = rt.settings.limits_for(account)
    rules = limits.for_endpoint(endpoint)
    limiter, concurrency = rt.rate_limiter(), rt.concurrency_limiter()
    lease_time = rt.settings.accounts[account].timeout + 5.0
    # A permit counts as in flight until its request completes; past the client's timeout
    # (and failover to backup hosts) the provider can no longer see it arrive.
    hold = (
        rt.settings.accounts[account].timeout * (1 + len(rt.settings.accounts[account].backup_urls))
        + 1.0
    )

    async def lease_slot() -> str | None:
        if not limits.max_in_flight:
            return None
        waited = 0.0
        while True:
            lease, wait = await concurrency.try_acquire(account, limits.max_in_flight, lease_time)
            if lease is not None:
                return lease
            if waited >= SHORT_WAIT:
                # Slots are usually released long before a lease expires: look again soon.
                raise Reschedule(min(wait, SHORT_WAIT))
            await asyncio.sleep(0.05)
            waited += 0.05

    async def attempt() -> Any:
        lease = await lease_slot()
        try:
            # One round trip: the permit (or the provider's pause), and with it the chunk's
            # move to ``sending``: nothing stands between permit and request.
            mark = owner.sending_mark(account) if owner is not None else None
            permit: str | None = uuid.uuid4().hex if rules else None
            try:
                wait = await limiter.acquire(
                    account,
                    endpoint,
                    rules,
                    priority=priority,
                    max_wait=SHORT_WAIT,
                    mark=mark,
                    hold=hold,
                    permit_id=permit,
                )
            except MarkRefused:
                permit = None
                raise LostClaim() from None
            if wait:
                permit = None  # nothing granted: nothing to complete
                raise Reschedule(wait)
            try:
                return await call(*args)
            except ProviderError as exc:
                if owner is not None and exc.error_class in NOT_SENT:
                    await owner.not_sent(account)
                if exc.error_class is ErrorClass.THROTTLED:
                    await limiter.pause(account, endpoint, exc.retry_after or THROTTLE_PAUSE)
                raise
        finally:
            if permit is not None:
                await limiter.complete(account, endpoint, permit)
            if lease is not None:
                await concurrency.release(account, lease)

    return await with_retries(rt.settings.dispatch, attempt)


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


async def reschedule(rt: Runtime, actor: str, priority: str, args: list[Any], delay: float) -> None:
    """Enqueue the same dispatch again after ``delay`` seconds (a new message: no retry used)."""
    eta = int((time.time() + delay) * 1000)
    target, redis_id, body = build_message(dispatch_queue(priority), actor, args, eta_ms=eta)
    pipe = rt.async_redis().pipeline(transaction=True)
    write_message(pipe, target, redis_id, body, NAMESPACE)
    await pipe.execute()
    metrics.RESCHEDULED.labels(actor).inc()


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
    """Record the chunk's outcomes, mark it done (and the job, with its last chunk): one round trip."""
    tally = await rt.chunk_recorder().record(job_id, chunk_key, account, outcomes)
    for status, n in tally.items():
        metrics.RECIPIENTS.labels(kind, status.value).inc(n)


@dataclass
class Claim:
    """What claiming a chunk found: 'claimed' (ours now), 'done' or 'interrupted'."""

    state: str
    account: str | None
    accounts: list[AccountState]
    owner: ChunkOwner


async def _claim(rt: Runtime, chunk_key: str, route: Sequence[str]) -> Claim:
    """Claim the chunk for the route's first account; read the route's account states in the
    same round trip."""
    owner = ChunkOwner(rt.async_redis(), chunk_key)
    pipe = rt.async_redis().pipeline(transaction=False)
    pipe.set(chunk_key, owner.value("claimed", route[0]), nx=True, ex=store.CHUNK_STATE_TTL)
    pipe.get(chunk_key)
    for name in route:
        pipe.hgetall(accounts.account_key(rt, name))
    claimed, value, *raw_states = await pipe.execute()
    states = [accounts.parse_state(n, r) for n, r in zip(route, raw_states, strict=True)]
    if claimed:
        return Claim("claimed", route[0], states, owner)
    state, account, _ = chunk_state.parse((value or b"").decode())
    if state == "done":
        return Claim("done", None, states, owner)
    if state == "claimed":
        # An earlier delivery claimed it and never sent it (it died, or was retried): ours now.
        await owner.take_over(account or route[0])
        return Claim("claimed", account or route[0], states, owner)
    return Claim("interrupted", account or route[0], states, owner)


T = TypeVar("T")


@dataclass
class Attempt(Generic[T]):
    """What one dispatch did: the account that carried it, and the result or the failure."""

    account: str
    result: T | None = None
    error: ProviderError | None = None


async def _on_route(
    rt: Runtime,
    claim: Claim,
    route: Sequence[str],
    endpoint: str,
    priority: str,
    call: Callable[[ProviderAdapter], Awaitable[T]],
) -> Attempt[T]:
    """Run ``call`` on the first usable account of the route.

    An account error pauses that account and moves on to the next; with no
    usable account, a provider's pause longer than SHORT_WAIT, or a permit too far
    away, the claim is released and the caller reschedules: the work stays queued.
    """
    states = list(claim.accounts)
    owner = claim.owner
    while True:
        account, wait = await accounts.choose(rt, route, states)
        if account is None:
            await owner.release()
            raise Reschedule(wait)
        adapter = rt.adapter(account)
        try:
            result = await limited_call(rt, account, endpoint, priority, call, adapter, owner=owner)
            return Attempt(account, result=result)
        except Reschedule:
            await owner.release()
            raise
        except ProviderError as exc:
            if exc.error_class is not ErrorClass.ACCOUNT:
                return Attempt(account, error=exc)
            probe_at = await accounts.pause(rt, account, exc.reason)
            states = [
                AccountState(s.name, True, exc.reason, probe_at) if s.name == account else s
                for s in states
            ]


def _route(accounts_arg: str | list[str]) -> list[str]:
    return [accounts_arg] if isinstance(accounts_arg, str) else list(accounts_arg)


def with_expected_ids(
    adapter: ProviderAdapter, request: SendRequest, outcomes: Sequence[RecipientOutcome]
) -> list[RecipientOutcome]:
    """Give UNKNOWN outcomes without an id the id the provider gives that message, when the
    adapter knows it before any answer (``expected_message_ids``, e.g. SMSC's client id):
    reconciliation then finds them through status polls and the sent history."""
    expected = getattr(adapter, "expected_message_ids", None)
    ids = expected(request) if expected is not None else None
    if not ids:
        return list(outcomes)
    by_phone = dict(zip(request.recipients, ids, strict=False))
    return [
        replace(o, provider_message_id=by_phone[o.phone])
        if o.status is Status.UNKNOWN and not o.provider_message_id and o.phone in by_phone
        else o
        for o in outcomes
    ]


async def dispatch_chunk(
    rt: Runtime,
    job_id: str,
    index: int,
    route_arg: str | list[str],
    sender: str,
    text: str,
    recipients: list[str],
    scheduled_at: str | None,
    validity: int | None,
    priority: str,
    client_id: int | None,
    created_at: float | None = None,
) -> str:
    """Send one chunk; returns 'sent', 'duplicate', 'interrupted', 'rescheduled',
    'superseded' (another delivery owns it) or 'too_old' (an OTP past its max age)."""
    route = _route(route_arg)
    chunk_key = rt.keys.chunk(job_id, index)
    claim = await _claim(rt, chunk_key, route)
    if claim.state == "done":
        return "duplicate"
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
    if claim.state == "interrupted":
        account = claim.account or route[0]
        outcomes = [RecipientOutcome(p, Status.UNKNOWN, reason=INTERRUPTED) for p in recipients]
        outcomes = with_expected_ids(rt.adapter(account), request, outcomes)
        await _finish(rt, job_id, chunk_key, account, rt.adapter(account).kind, outcomes)
        return "interrupted"

    max_age = rt.settings.dispatch.otp_max_age
    if priority == "otp" and created_at is not None and time.time() - created_at > max_age:
        # A one-time code that arrives this late is worse than none.
        reason = f"not sent: older than the otp_max_age of {max_age:.0f}s when it could be sent"
        outcomes = [RecipientOutcome(p, Status.FAILED, reason=reason) for p in recipients]
        account = claim.account or route[0]
        await _finish(rt, job_id, chunk_key, account, rt.adapter(account).kind, outcomes)
        return "too_old"

    async def send(adapter: ProviderAdapter) -> list[RecipientOutcome]:
        return await adapter.send(request)

    try:
        attempt = await _on_route(rt, claim, route, "send", priority, send)
    except LostClaim:
        return "superseded"
    except Reschedule as wait:
        args = [
            job_id,
            index,
            route,
            sender,
            text,
            recipients,
            scheduled_at,
            validity,
            priority,
            client_id,
            created_at,
        ]
        await reschedule(rt, SEND_ACTOR, priority, args, wait.delay)
        return "rescheduled"
    if attempt.error is not None:
        log.warning("chunk %s:%d to %s failed: %s", job_id, index, attempt.account, attempt.error)
        outcomes = failure_outcomes(recipients, attempt.error)
    else:
        outcomes = reconcile_outcomes(recipients, attempt.result or [])
    adapter = rt.adapter(attempt.account)
    outcomes = with_expected_ids(adapter, request, outcomes)
    await _finish(rt, job_id, chunk_key, attempt.account, adapter.kind, outcomes)
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
    rt: Runtime,
    job_id: str,
    index: int,
    route_arg: str | list[str],
    recipients: list[str],
    priority: str = "bulk",
) -> str:
    """Look up one chunk of numbers; records one HLR result per number."""
    route = _route(route_arg)
    chunk_key = rt.keys.chunk(job_id, index)
    claim = await _claim(rt, chunk_key, route)
    if claim.state == "done":
        return "duplicate"
    results: list[HlrResult] = []
    account = claim.account or route[0]
    if claim.state == "interrupted":
        outcomes = [RecipientOutcome(p, Status.UNKNOWN, reason=INTERRUPTED) for p in recipients]
    else:

        async def lookup(adapter: ProviderAdapter) -> list[HlrResult]:
            return await adapter.hlr(recipients)

        try:
            attempt = await _on_route(rt, claim, route, "hlr", priority, lookup)
        except LostClaim:
            return "superseded"
        except Reschedule as wait:
            args = [job_id, index, route, recipients, priority]
            await reschedule(rt, HLR_ACTOR, priority, args, wait.delay)
            return "rescheduled"
        account = attempt.account
        if attempt.error is not None:
            outcomes = failure_outcomes(recipients, attempt.error)
        else:
            results = attempt.result or []
            outcomes = reconcile_outcomes(recipients, [hlr_outcome(r) for r in results])
    if results:
        records: dict[Any, Any] = {
            r.phone: store.dumps(hlr_record(r)) for r in results if r.phone in recipients
        }
        if records:
            pipe = rt.async_redis().pipeline(transaction=True)
            pipe.hset(rt.keys.hlr(job_id), mapping=records)
            for phone, record in records.items():
                event: dict[Any, Any] = {
                    "type": "hlr",
                    "job_id": job_id,
                    "phone": phone,
                    "result": record,
                }
                pipe.xadd(rt.keys.events, event, maxlen=EVENTS_MAXLEN, approximate=True)
            await pipe.execute()
    await _finish(rt, job_id, chunk_key, account, rt.adapter(account).kind, outcomes)
    return "sent" if claim.state == "claimed" else claim.state


def _chunk_of(actor: str, args: Sequence[Any]) -> tuple[str, int, list[str], list[str]]:
    """(job id, chunk index, route, recipients) of a dispatch message's arguments."""
    job_id, index, route_arg = str(args[0]), int(args[1]), args[2]
    recipients = args[5] if actor == SEND_ACTOR else args[3]
    if not isinstance(recipients, list) or not all(isinstance(p, str) for p in recipients):
        raise TypeError("recipients must be a list of numbers")
    return job_id, index, _route(route_arg), recipients


async def dispatch_or_give_up(
    rt: Runtime, actor: str, args: tuple[Any, ...], *, final: bool
) -> None:
    """Run a dispatch actor's work; on its last try, an unexpected failure is given up cleanly.

    Earlier tries re-raise (Dramatiq retries with backoff). On the last one, the chunk's
    recipients are recorded ``failed`` with the reason and a dead letter says what failed,
    instead of the message ending in Dramatiq's own dead-letter set with everyone still
    ``queued``. If even that cannot be written (Redis down), the error propagates.
    """
    run = dispatch_chunk if actor == SEND_ACTOR else dispatch_hlr
    try:
        await run(rt, *args)
    except Exception as exc:
        if not final:
            raise
        reason = f"dispatch failed on every try: {type(exc).__name__}"
        log.exception("%s gave up", actor)
        try:
            job_id, index, route, recipients = _chunk_of(actor, args)
        except (IndexError, TypeError, ValueError):
            job_id, index, route, recipients = "", -1, [], []
        pipe = rt.async_redis().pipeline(transaction=True)
        store.dead_letter(
            pipe,
            rt.keys,
            source=f"dispatch:{actor}",
            reasons=[reason],
            payload={"job_id": job_id, "chunk": index, "recipients": len(recipients)},
            job_id=job_id or None,
        )
        await pipe.execute()
        metrics.DEAD_LETTERS.labels("dispatch").inc()
        if job_id and recipients:
            chunk_key = rt.keys.chunk(job_id, index)
            raw = await rt.async_redis().get(chunk_key)
            value = raw.decode() if isinstance(raw, bytes) else (raw or "")
            state, in_flight, _ = chunk_state.parse(value) if value else ("", None, None)
            account = in_flight or (route[0] if route else "unknown")
            # Caught sending, the provider may have it: unknown, for reconciliation.
            status = Status.UNKNOWN if state == "sending" else Status.FAILED
            outcomes = [RecipientOutcome(p, status, reason=reason) for p in recipients]
            tally = await rt.chunk_recorder().record(job_id, chunk_key, account, outcomes)
            acc = rt.settings.accounts.get(account)
            for recorded, n in tally.items():
                metrics.RECIPIENTS.labels(acc.kind if acc else "unknown", recorded.value).inc(n)
