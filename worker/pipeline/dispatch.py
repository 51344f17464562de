"""Chunk dispatch: one provider request per chunk, every recipient's outcome recorded once.

A chunk's state key moves ``claimed`` -> ``sending`` -> ``done`` (see
:mod:`worker.pipeline.chunk_state`). It is claimed with SET NX before the request; a
redelivered chunk found ``done`` is acknowledged without sending, one found
``claimed`` never left and is sent, and one found ``sending`` (its worker died
mid-request) is never resent blindly: its recipients become ``unknown`` for
reconciliation to settle.
Transient failures are retried with tenacity (exponential backoff with
jitter, bounded by attempts and total time); permanent ones are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
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

from producers.errors import DispatchInterrupted
from producers.keys import EVENTS_MAXLEN
from producers.status import Status
from producers.wire import NAMESPACE, build_message, write_message
from worker.core import messages, metrics
from worker.core.config import DispatchSettings
from worker.core.queues import HLR_ACTOR, RESEND_INDEX_BASE, SEND_ACTOR, dispatch_queue
from worker.core.runtime import Runtime
from worker.pipeline import accounts, chunk_state
from worker.pipeline.accounts import AccountState
from worker.pipeline.chunk_state import ChunkOwner
from worker.pipeline.resend import MIN_VALIDITY as RESEND_MIN_VALIDITY
from worker.providers.base import (
    NEXT_REQUEST,
    BalanceQuery,
    ErrorClass,
    ExpectedIds,
    HlrLookup,
    HlrResult,
    ProviderAdapter,
    ProviderError,
    RecipientOutcome,
    SendRequest,
)
from worker.recovery.outage import Outage, redis_down
from worker.state import store
from worker.state.limiter import Held, MarkRefused, RateLimiter
from worker.tracking.inbound import hlr_record

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


class Reschedule(DispatchInterrupted):
    """The permit is further away than a worker should wait: send the message again later.

    ``after`` is the failure of an earlier attempt of the same call, if one failed first.
    """

    def __init__(self, delay: float, after: ProviderError | None = None) -> None:
        super().__init__(f"rate limit: next permit in {delay:.1f}s")
        self.delay = delay
        self.after = after


SHORT_WAIT = 2.0  # seconds a dispatch may wait for a permit in the event loop
THROTTLE_PAUSE = 5.0  # seconds an account endpoint pauses on a throttled answer without Retry-After


class LostClaim(DispatchInterrupted):
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


LEASE_MARGIN = 5.0  # seconds an in-flight lease outlives its request's timeout


async def limited_call(
    rt: Runtime,
    account: str,
    endpoint: str,
    priority: str,
    call: Any,
    *args: Any,
    owner: ChunkOwner | None = None,
    attempts: int | None = None,
    granted: Granted | None = None,
    held: list[Held] | None = None,
) -> Any:
    """Await ``call(*args)`` under the account's limits, retrying transient failures.

    Every attempt takes its own in-flight lease (when the account has a cap) and
    then its own rate permit; either further away than SHORT_WAIT raises
    Reschedule. Every further request an attempt makes (a failover to a backup
    host) takes a permit of its own and renews the lease through
    :data:`~worker.providers.base.NEXT_REQUEST`. With an ``owner``, the chunk is
    marked ``sending`` just before the request and set back to ``claimed`` when the
    provider did not take it. A THROTTLED answer pauses the account's endpoint for
    every process, then the attempt is retried like a transient failure. ``attempts``
    bounds the tries below the dispatch settings' ``max_attempts``.

    ``granted``: the lease and permit the chunk's claim took with its move to ``sending``
    (:func:`_claim_sending`), used by the first attempt instead of asking again. ``held``:
    when given, the lease and permit of a successful request are appended to it instead of
    being given back here: the chunk's recording gives them back in its own round trip.
    """
    limits = rt.settings.limits_for(account)
    rules = limits.for_endpoint(endpoint)
    limiter, concurrency = rt.rate_limiter(), rt.concurrency_limiter()
    timeout = rt.settings.accounts[account].timeout
    lease_time = timeout + LEASE_MARGIN
    # A permit counts as in flight until its request completes; past the client's timeout
    # the provider can no longer see it arrive. Each request has its own permit.
    hold = timeout + 1.0

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

    first = granted

    async def attempt() -> Any:
        nonlocal first
        pre, first = first, None
        lease = pre.lease if pre is not None else await lease_slot()
        permits: list[str] = []
        answered = False

        async def next_request() -> None:
            # The previous request is over; this one needs its own permit and a lease
            # that covers it.
            while permits:
                await limiter.complete(account, endpoint, permits.pop())
            if lease is not None and not await concurrency.renew(account, lease, lease_time):
                raise ProviderError(ErrorClass.TRANSIENT, "in-flight lease lost before failover")
            permit = uuid.uuid4().hex if rules else None
            wait = await limiter.acquire(
                account,
                endpoint,
                rules,
                priority=priority,
                max_wait=SHORT_WAIT,
                hold=hold,
                permit_id=permit,
            )
            if wait:
                raise ProviderError(
                    ErrorClass.TRANSIENT, f"no rate permit for the next host within {SHORT_WAIT}s"
                )
            if permit is not None:
                permits.append(permit)

        try:
            permit: str | None
            if pre is not None:
                permit = pre.permit  # taken with the claim, and the chunk marked sending
                if permit is not None:
                    permits.append(permit)
            else:
                # One round trip: the permit (or the provider's pause), and with it the chunk's
                # move to ``sending``: nothing stands between permit and request.
                mark = owner.sending_mark(account) if owner is not None else None
                permit = uuid.uuid4().hex if rules else None
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
                    raise LostClaim() from None
                if wait:
                    raise Reschedule(wait)  # nothing granted: nothing to complete
            if owner is not None:
                try:
                    # A replica must hold ``sending`` before the request leaves: a failover
                    # then finds the chunk sending (unknown, reconciled), never resends it.
                    await rt.confirm_replicated()
                except Exception:
                    await _best_effort("chunk back to claimed", owner.not_sent(account))
                    raise
                owner.maybe_sent = True
            if permit is not None and pre is None:
                permits.append(permit)
            token = NEXT_REQUEST.set(next_request)
            try:
                result = await call(*args)
                answered = True
                return result
            except ProviderError as exc:
                if owner is not None and exc.error_class in NOT_SENT:
                    owner.maybe_sent = False
                    await _best_effort("chunk back to claimed", owner.not_sent(account))
                if exc.error_class is ErrorClass.THROTTLED:
                    pause = limiter.pause(account, endpoint, exc.retry_after or THROTTLE_PAUSE)
                    await _best_effort("endpoint pause", pause)
                raise
            finally:
                NEXT_REQUEST.reset(token)
        finally:
            if answered and held is not None:
                # The chunk's recording gives them back (one round trip instead of two more).
                last = permits.pop() if permits else None
                held.append(
                    Held(
                        limiter.key(account, endpoint) if last else None,
                        last,
                        concurrency.key(account) if lease else None,
                        lease,
                    )
                )
                lease = None
            # Neither may cost a provider's answer: permits and leases expire on their own.
            for done in permits:
                await _best_effort("permit completion", limiter.complete(account, endpoint, done))
            if lease is not None:
                await _best_effort("lease release", concurrency.release(account, lease))

    failures: list[ProviderError] = []

    async def noted() -> Any:
        try:
            return await attempt()
        except ProviderError as exc:
            failures.append(exc)
            raise
        except Reschedule as wait:
            if failures and wait.after is None:
                raise Reschedule(wait.delay, failures[-1]) from None
            raise

    settings = rt.settings.dispatch
    if attempts is not None:
        settings = replace(settings, max_attempts=min(attempts, settings.max_attempts))
    return await with_retries(settings, noted)


async def _best_effort(what: str, step: Awaitable[Any]) -> None:
    """Await a bookkeeping step that may be skipped while Redis is down."""
    try:
        await step
    except Exception as exc:
        if not redis_down(exc):
            raise
        log.warning("%s skipped: Redis unavailable (%s)", what, type(exc).__name__)


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


async def reschedule(
    rt: Runtime,
    actor: str,
    priority: str,
    args: list[Any],
    delay: float,
    chunk_key: str | None = None,
) -> None:
    """Enqueue the same dispatch again after ``delay`` seconds (a new message: no retry used).

    With ``chunk_key``, the chunk's in-flight entry names the new message in the same
    transaction, so the stranded-work sweep knows it is still on its way.
    """
    eta = time.time() + delay
    queue = dispatch_queue(priority)
    message = messages.decode(actor, args)  # written in this version's format
    target, redis_id, body = build_message(
        queue, actor, messages.message_args(message), eta_ms=int(eta * 1000)
    )
    pipe = rt.async_redis().pipeline(transaction=True)
    write_message(pipe, target, redis_id, body, NAMESPACE)
    if chunk_key is not None:
        entry = Delivery(actor, queue, list(args), redis_id).entry(at=eta)
        pipe.hset(rt.keys.inflight, chunk_key, entry)
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


def second_chance(index: int) -> bool:
    """A chunk that resends one recipient (second-chance resend), not one of the job's."""
    return index >= RESEND_INDEX_BASE


async def _finish(
    rt: Runtime,
    job_id: str,
    chunk_key: str,
    account: str,
    kind: str,
    outcomes: Sequence[RecipientOutcome],
    *,
    resend: bool = False,
    held: Held | None = None,
) -> None:
    """Record the chunk's outcomes, mark it done (and the job, with its last chunk): one round trip.

    ``held``: the request's permit and lease, given back in the same call.

    The outcomes are held here until Redis takes them: the call is retried across a Redis
    outage of up to ``[worker] redis_outage`` seconds (recording twice changes nothing).
    """
    recorder = rt.chunk_recorder()
    tally = await rt.outage.call(
        f"recording chunk {chunk_key}",
        lambda: recorder.record(
            job_id, chunk_key, account, outcomes, second_chance=resend, held=held
        ),
    )
    count_recorded(kind, account, tally)


def count_recorded(kind: str, account: str, tally: Mapping[Status, int]) -> None:
    """Metrics of a recorded chunk: outcomes, first final statuses, one event per recipient."""
    for status, n in tally.items():
        metrics.RECIPIENTS.labels(kind, account, status.value).inc(n)
    metrics.count_finals(kind, account, {s.value: n for s, n in tally.items()})
    metrics.EVENTS_PUBLISHED.labels("status").inc(sum(tally.values()))


def observe_submit(priority: str, since: float | None) -> None:
    """A provider accepted a chunk: the time since its job was accepted by the intake."""
    if since is not None:
        metrics.TIME_TO_SUBMIT.labels(priority).observe(max(0.0, time.time() - since))


@dataclass
class Delivery:
    """The Dramatiq message carrying a chunk, and this delivery's hold on it once claimed.

    Its entry in ``<prefix>:inflight`` (written with the claim, removed with the recording)
    lets the stranded-work sweep send a chunk again whose message is gone.
    """

    actor: str
    queue: str
    args: list[Any]
    message_id: str | None = None
    owner: ChunkOwner | None = None
    outcomes: list[RecipientOutcome] | None = None  # the answer, once it came
    request: SendRequest | None = None
    # The queue of the message carrying the chunk when that is not ``queue``: an OTP sent
    # in its intake message's run (worker.pipeline.fast_path). The sweep looks there.
    carrier_queue: str | None = None

    def entry(self, at: float | None = None) -> str:
        fields: dict[str, Any] = {
            "actor": self.actor,
            "queue": self.queue,
            "args": self.args,
            "msg": self.message_id,
            "at": round(at or time.time(), 3),
        }
        if self.carrier_queue is not None:
            fields["mq"] = self.carrier_queue
        return store.dumps(fields)


@dataclass
class Claim:
    """What claiming a chunk found: 'claimed' (ours now), 'done', 'cancelled' or 'interrupted'."""

    state: str
    account: str | None
    accounts: list[AccountState]
    owner: ChunkOwner


async def _claim(
    rt: Runtime, chunk_key: str, route: Sequence[str], delivery: Delivery | None = None
) -> Claim:
    """Claim the chunk for the route's first account; read the route's account states and
    note the delivery in flight in the same round trip.

    A delivery run again after a Redis outage keeps its owner: a chunk it marked
    ``sending`` without calling the provider is still its own to send.
    """
    owner = (delivery.owner if delivery else None) or ChunkOwner(rt.async_redis(), chunk_key)
    if delivery is not None:
        delivery.owner = owner
    pipe = rt.async_redis().pipeline(transaction=False)
    pipe.set(chunk_key, owner.value("claimed", route[0]), nx=True, ex=store.CHUNK_STATE_TTL)
    pipe.get(chunk_key)
    for name in route:
        pipe.hgetall(accounts.account_key(rt, name))
    if delivery is not None:
        pipe.hset(rt.keys.inflight, chunk_key, delivery.entry())
    claimed, value, *raw_states = await pipe.execute()
    raw_states = raw_states[: len(route)]
    states = [accounts.parse_state(n, r) for n, r in zip(route, raw_states, strict=True)]
    if claimed:
        return Claim("claimed", route[0], states, owner)
    state, account, token = chunk_state.parse((value or b"").decode())
    if state in ("done", "cancelled"):
        if delivery is not None:
            await rt.async_redis().hdel(rt.keys.inflight, chunk_key)
        return Claim(state, None, states, owner)
    if state == "claimed" or (token == owner.token and not owner.maybe_sent):
        # An earlier delivery claimed it and never sent it (it died, or was retried): ours now,
        # unless it was cancelled (or recorded) since it was read.
        if not await owner.take_over(account or route[0]):
            return await _claim(rt, chunk_key, route, delivery)
        return Claim("claimed", account or route[0], states, owner)
    return Claim("interrupted", account or route[0], states, owner)


@dataclass(frozen=True)
class Granted:
    """What :func:`_claim_sending` took with the chunk's move to ``sending`` through
    ``account``: the in-flight lease (None: no cap) and the rate permit (None: no rule)."""

    account: str
    lease: str | None
    permit: str | None


async def _claim_sending(
    rt: Runtime,
    chunk_key: str,
    route: Sequence[str],
    priority: str,
    delivery: Delivery | None,
) -> tuple[Claim, Granted | None] | None:
    """The hot path's claim: the chunk claimed, its lease and permit taken and its move to
    ``sending`` through the route's first account, in one round trip (``claim_send.lua``).

    Waits up to SHORT_WAIT for a lease or a permit (Reschedule beyond). None when the
    step-by-step path must decide: the chunk is in another state (caught sending, or this
    delivery's own after a Redis outage), or the first account is paused.
    """
    if delivery is not None and delivery.owner is not None:
        return None  # run again after an outage: the step-by-step path knows its hold
    account = route[0]
    if account not in rt.adapters:
        return None
    owner = ChunkOwner(rt.async_redis(), chunk_key)
    limits = rt.settings.limits_for(account)
    rules = limits.for_endpoint("send")
    timeout = rt.settings.accounts[account].timeout
    limiter, concurrency = rt.rate_limiter(), rt.concurrency_limiter()
    entry = delivery.entry() if delivery is not None else ""
    waited = rate_waited = 0.0
    while True:
        lease = uuid.uuid4().hex if limits.max_in_flight else None
        permit = uuid.uuid4().hex if rules else None
        found = await owner.claim_sending(
            account,
            inflight=rt.keys.inflight,
            entry=entry,
            account_keys=[accounts.account_key(rt, name) for name in route],
            rate_log=limiter.key(account, "send"),
            rate_pause=rt.keys.rate_pause(account, "send"),
            leases=concurrency.key(account),
            lease=lease,
            cap=limits.max_in_flight,
            lease_time=timeout + LEASE_MARGIN,
            permit=permit or "",
            otp=priority == "otp",
            hold=timeout + 1.0,
            rules=rules,
        )
        if found.state != "wait":
            break
        # Slots are usually released long before a lease expires: look again soon.
        pause = min(found.wait, 0.05) if found.blocked_by == "lease" else found.wait
        if waited + pause > SHORT_WAIT:
            if found.blocked_by != "lease":
                result = "paused" if found.blocked_by == "pause" else "rescheduled"
                metrics.LIMITER_PERMITS.labels(account, "send", result).inc()
            raise Reschedule(min(found.wait, SHORT_WAIT) if found.blocked_by == "lease" else pause)
        await asyncio.sleep(pause)
        waited += pause
        if found.blocked_by != "lease":
            rate_waited += pause
    if delivery is not None:
        delivery.owner = owner
    if found.state in ("done", "cancelled"):
        return Claim(found.state, None, [], owner), None
    if found.state != "sending":
        return None
    RateLimiter.count(account, "send", rate_waited)
    states = [accounts.parse_state(n, r) for n, r in zip(route, found.accounts, strict=True)]
    return Claim("claimed", account, states, owner), Granted(account, lease, permit)


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
    *,
    granted: Granted | None = None,
    held: list[Held] | None = None,
    attempts: int | None = None,
) -> Attempt[T]:
    """Run ``call`` on the first usable account of the route.

    ``granted`` (what the claim took for its account) serves the first attempt when that
    account is the one chosen; ``held`` as in :func:`limited_call`.

    An account error pauses that account and moves on to the next; with no
    usable account, a provider's pause longer than SHORT_WAIT, or a permit too far
    away, the claim is released and the caller reschedules: the work stays queued.
    """
    states = list(claim.accounts)
    owner = claim.owner

    async def ask_balance(name: str) -> object:
        # A probe is a request like any other: the account's rate rules and in-flight cap.
        adapter = rt.adapter(name)
        if not isinstance(adapter, BalanceQuery):
            raise ProviderError(ErrorClass.REQUEST, "the provider has no balance query")
        try:
            return await limited_call(rt, name, "balance", priority, adapter.balance, attempts=1)
        except Reschedule as wait:
            raise accounts.ProbeDeferred(wait.delay) from None

    while True:
        account, wait = await accounts.choose(rt, route, states, ask_balance)
        if account is None:
            await owner.release()
            raise Reschedule(wait)
        adapter = rt.adapter(account)
        pre = granted if granted is not None and granted.account == account else None
        granted = None
        try:
            result = await limited_call(
                rt,
                account,
                endpoint,
                priority,
                call,
                adapter,
                owner=owner,
                granted=pre,
                held=held,
                attempts=attempts,
            )
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
    ids = adapter.expected_message_ids(request) if isinstance(adapter, ExpectedIds) else None
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
    *,
    delivery: Delivery | None = None,
    one_try: bool = False,
) -> str:
    """Send one chunk; returns 'sent', 'duplicate', 'interrupted', 'rescheduled',
    'superseded' (another delivery owns it), 'cancelled' (the producer cancelled the job
    before it was dispatched) or 'too_old' (an OTP past its max age, or a second chance
    past the message's validity).

    ``one_try`` (the OTP fast path): a failure worth a retry is not retried here; the chunk
    is released and rescheduled as a dispatch message after the backoff's first wait.

    At most the in-flight cap of the route's first account is sent at once by this
    process (the leases in Redis hold the cap across processes): the others wait here
    instead of asking Redis for a lease again and again."""
    route = _route(route_arg)
    slots = rt.send_slots(route[0])
    async with slots if slots is not None else contextlib.nullcontext():
        return await _dispatch_chunk(
            rt,
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
            delivery=delivery,
            one_try=one_try,
        )


async def _dispatch_chunk(
    rt: Runtime,
    job_id: str,
    index: int,
    route: list[str],
    sender: str,
    text: str,
    recipients: list[str],
    scheduled_at: str | None,
    validity: int | None,
    priority: str,
    client_id: int | None,
    created_at: float | None,
    *,
    delivery: Delivery | None,
    one_try: bool = False,
) -> str:
    chunk_key = rt.keys.chunk(job_id, index)
    resend = second_chance(index)
    max_age = rt.settings.dispatch.otp_max_age
    too_old = priority == "otp" and created_at is not None and time.time() - created_at > max_age

    async def again_later(delay: float) -> str:
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
        await reschedule(rt, SEND_ACTOR, priority, args, delay, chunk_key)
        return "rescheduled"

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
    granted: Granted | None = None
    fast = None
    if not resend and not too_old:
        # The hot path: claim, lease, permit and the move to sending in one round trip.
        try:
            fast = await _claim_sending(rt, chunk_key, route, priority, delivery)
        except Reschedule as wait:
            return await again_later(wait.delay)
    if fast is not None:
        claim, granted = fast
    else:
        claim = await _claim(rt, chunk_key, route, delivery)
    if claim.state == "done":
        return "duplicate"
    if claim.state == "cancelled":
        return "cancelled"  # the cancel recorded the recipients: nothing to send or write
    if delivery is not None:
        delivery.request = request
    if claim.state == "interrupted":
        account = claim.account or route[0]
        outcomes = [RecipientOutcome(p, Status.UNKNOWN, reason=INTERRUPTED) for p in recipients]
        outcomes = with_expected_ids(rt.adapter(account), request, outcomes)
        await _finish(
            rt, job_id, chunk_key, account, rt.adapter(account).kind, outcomes, resend=resend
        )
        return "interrupted"

    if too_old:
        # A one-time code that arrives this late is worse than none.
        reason = f"not sent: older than the otp_max_age of {max_age:.0f}s when it could be sent"
        outcomes = [RecipientOutcome(p, Status.FAILED, reason=reason) for p in recipients]
        account = claim.account or route[0]
        await _finish(
            rt, job_id, chunk_key, account, rt.adapter(account).kind, outcomes, resend=resend
        )
        return "too_old"
    if resend:
        # A second chance goes out only within the message's validity, however late its
        # dispatch runs (a crash before it was drained, a paused or rate-limited account).
        expires_at = await rt.async_redis().hget(rt.keys.job(job_id), "expires_at")
        left = float(expires_at) - time.time() if expires_at else None
        if left is not None and left < RESEND_MIN_VALIDITY:
            reason = "not sent: the message's validity ended before its second chance could go out"
            outcomes = [RecipientOutcome(p, Status.FAILED, reason=reason) for p in recipients]
            account = claim.account or route[0]
            await _finish(
                rt, job_id, chunk_key, account, rt.adapter(account).kind, outcomes, resend=True
            )
            return "too_old"
        if left is not None and (request.validity is None or request.validity > left):
            request = replace(request, validity=int(left))
            if delivery is not None:
                delivery.request = request

    async def send(adapter: ProviderAdapter) -> list[RecipientOutcome]:
        return await adapter.send(request)

    held: list[Held] = []
    try:
        attempt = await _on_route(
            rt,
            claim,
            route,
            "send",
            priority,
            send,
            granted=granted,
            held=held,
            attempts=1 if one_try else None,
        )
    except LostClaim:
        return "superseded"
    except Reschedule as wait:
        return await again_later(wait.delay)
    failed = attempt.error
    if one_try and failed is not None and failed.error_class in RETRYABLE:
        # The fast path tries once: the retries are an ordinary dispatch message's.
        await claim.owner.release()
        return await again_later(failed.retry_after or rt.settings.dispatch.backoff_initial)
    if attempt.error is not None:
        log.warning("chunk %s:%d to %s failed: %s", job_id, index, attempt.account, attempt.error)
        outcomes = failure_outcomes(recipients, attempt.error)
    else:
        observe_submit(priority, created_at)
        outcomes = reconcile_outcomes(recipients, attempt.result or [])
    adapter = rt.adapter(attempt.account)
    outcomes = with_expected_ids(adapter, request, outcomes)
    if delivery is not None:
        delivery.outcomes = outcomes
    await _finish(
        rt,
        job_id,
        chunk_key,
        attempt.account,
        adapter.kind,
        outcomes,
        resend=resend,
        held=held[-1] if held else None,
    )
    await pause_on_account_outcome(rt, attempt.account, outcomes)
    return "sent"


async def pause_on_account_outcome(
    rt: Runtime, account: str, outcomes: Sequence[RecipientOutcome]
) -> None:
    """A recipient dropped for an account reason (e.g. no funds) pauses the account, as a
    whole-request account error does: the next chunks wait or take the route's next account."""
    failed = next((o for o in outcomes if o.error_class is ErrorClass.ACCOUNT), None)
    if failed is not None:
        await accounts.pause(rt, account, failed.reason or "account error")


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
    *,
    delivery: Delivery | None = None,
) -> str:
    """Look up one chunk of numbers; records one HLR result per number."""
    route = _route(route_arg)
    chunk_key = rt.keys.chunk(job_id, index)
    claim = await _claim(rt, chunk_key, route, delivery)
    if claim.state == "done":
        return "duplicate"
    if claim.state == "cancelled":
        return "cancelled"
    results: list[HlrResult] = []
    account = claim.account or route[0]
    if claim.state == "interrupted":
        outcomes = [RecipientOutcome(p, Status.UNKNOWN, reason=INTERRUPTED) for p in recipients]
    else:

        async def lookup(adapter: ProviderAdapter) -> list[HlrResult]:
            if not isinstance(adapter, HlrLookup):
                raise ProviderError(
                    ErrorClass.REQUEST, "HLR lookup is not supported by this provider"
                )
            return await adapter.hlr(recipients)

        try:
            attempt = await _on_route(rt, claim, route, "hlr", priority, lookup)
        except LostClaim:
            return "superseded"
        except Reschedule as wait:
            args = [job_id, index, route, recipients, priority]
            await reschedule(rt, HLR_ACTOR, priority, args, wait.delay, chunk_key)
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

            async def write() -> None:
                pipe = rt.async_redis().pipeline(transaction=True)
                pipe.hset(rt.keys.hlr(job_id), mapping=records)
                for r in results:  # least-cost routing learns the number's operator
                    if r.phone in recipients and r.mcc and r.mnc:
                        store.remember_operator(
                            pipe, rt.keys, r.phone, r.mcc + r.mnc, rt.settings.routing.operator_ttl
                        )
                for phone, record in records.items():
                    event: dict[Any, Any] = {
                        "type": "hlr",
                        "job_id": job_id,
                        "phone": phone,
                        "result": record,
                    }
                    pipe.xadd(rt.keys.events, event, maxlen=EVENTS_MAXLEN, approximate=True)
                await pipe.execute()

            await rt.outage.call(f"recording HLR results of {chunk_key}", write)
            metrics.EVENTS_PUBLISHED.labels("hlr").inc(len(records))
    if delivery is not None:
        delivery.outcomes = outcomes
    await _finish(rt, job_id, chunk_key, account, rt.adapter(account).kind, outcomes)
    return "sent" if claim.state == "claimed" else claim.state


def _chunk_of(actor: str, args: Sequence[Any]) -> tuple[str, int, list[str], list[str]]:
    """(job id, chunk index, route, recipients) of a dispatch message's arguments."""
    job_id, route_arg = str(args[0]), args[2]
    index = int(args[1])
    recipients = args[5] if actor == SEND_ACTOR else args[3]
    if not isinstance(recipients, list) or not all(isinstance(p, str) for p in recipients):
        raise TypeError("recipients must be a list of numbers")
    return job_id, index, _route(route_arg), recipients


async def dispatch_message(
    rt: Runtime, message: messages.DispatchMessage, *, message_id: str | None = None
) -> None:
    """Dispatch every chunk a message carries, concurrently on this event loop.

    Each chunk is claimed, sent, recorded and noted in flight on its own (with this
    message's id, so the stranded-work sweep knows it is on its way). The first failure
    is raised once every chunk has ended: Dramatiq then retries the message, and its
    chunks already recorded are acknowledged without a send.
    """
    chunks = messages.chunks_of(message)
    if len(chunks) == 1:
        chunk = chunks[0]
        await dispatch_or_give_up(rt, chunk.actor, tuple(chunk.positional()), message_id=message_id)
        return
    results = await asyncio.gather(
        *(
            dispatch_or_give_up(rt, c.actor, tuple(c.positional()), message_id=message_id)
            for c in chunks
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def dispatch_or_give_up(
    rt: Runtime,
    actor: str,
    args: tuple[Any, ...],
    *,
    message_id: str | None = None,
    carrier_queue: str | None = None,
    one_try: bool = False,
) -> str:
    """Run a dispatch actor's work; returns what it did (see :func:`dispatch_chunk`).

    ``carrier_queue`` and ``one_try``: the OTP fast path (worker.pipeline.fast_path) runs a
    send chunk in its intake message, ``message_id`` in ``carrier_queue``.

    A Redis outage is ridden out in the process: the work waits for Redis (up to
    ``[worker] redis_outage`` seconds) and runs again with the same hold on the chunk, so
    a provider's answer is never dropped for a retry message that cannot be enqueued.
    Other failures re-raise: Dramatiq retries with backoff, and once its retries are
    exhausted its ``on_retry_exhausted`` hook runs :func:`give_up` (the ``dispatch_gave_up``
    actor), so nothing here counts tries.
    """
    priority = args[8] if actor == SEND_ACTOR and len(args) > 8 else (args[4:5] or ["bulk"])[0]
    delivery = Delivery(
        actor, dispatch_queue(str(priority)), list(args), message_id, carrier_queue=carrier_queue
    )
    deadline = time.monotonic() + rt.settings.worker.redis_outage
    try:
        while True:
            try:
                if actor == SEND_ACTOR:
                    return await dispatch_chunk(rt, *args, delivery=delivery, one_try=one_try)
                return await dispatch_hlr(rt, *args, delivery=delivery)
            except Exception as exc:
                left = deadline - time.monotonic()
                if not redis_down(exc) or left <= 0:
                    raise
                log.warning("%s waits for Redis (%s)", actor, type(exc).__name__)
                await Outage(left).call(f"{actor}: waiting for Redis", rt.async_redis().ping)
    except asyncio.CancelledError:
        await _interrupted(rt, actor, args, delivery)
        raise


INTERRUPT_RECORD_SECONDS = 2.0  # what a shutdown waits for the recording of an interrupted chunk


async def _interrupted(rt: Runtime, actor: str, args: tuple[Any, ...], delivery: Delivery) -> None:
    """A dispatch cancelled by the shutdown bound: record what is known, in one short try.

    With the provider's answer in hand, that answer; with a request that may have left,
    every recipient ``unknown`` for reconciliation; with nothing sent, nothing: the chunk
    stays ``claimed`` and its redelivery sends it.
    """
    owner = delivery.owner
    if owner is None or not owner.maybe_sent:
        return
    try:
        job_id, index, route, recipients = _chunk_of(actor, args)
    except (IndexError, TypeError, ValueError):
        return
    account = owner.account or route[0]
    outcomes = delivery.outcomes
    if outcomes is None:
        outcomes = [RecipientOutcome(p, Status.UNKNOWN, reason=INTERRUPTED) for p in recipients]
        if delivery.request is not None and account in rt.adapters:
            outcomes = with_expected_ids(rt.adapter(account), delivery.request, outcomes)
    chunk_key = rt.keys.chunk(job_id, index)
    try:
        tally = await asyncio.wait_for(
            rt.chunk_recorder().record(
                job_id, chunk_key, account, outcomes, second_chance=second_chance(index)
            ),
            INTERRUPT_RECORD_SECONDS,
        )
    except Exception as exc:  # the sweep or a redelivery settles it
        log.warning("interrupted chunk %s not recorded: %s", chunk_key, type(exc).__name__)
        return
    acc = rt.settings.accounts.get(account)
    for status, n in tally.items():
        metrics.RECIPIENTS.labels(acc.kind if acc else "unknown", status.value).inc(n)


async def give_up_message(rt: Runtime, message: messages.DispatchMessage, error: str) -> None:
    """:func:`give_up` on every chunk of a message Dramatiq gave up on; in a message of
    several chunks, those already recorded are left alone (they did not fail)."""
    chunks = messages.chunks_of(message)
    for chunk in chunks:
        await give_up(rt, chunk.actor, chunk.positional(), error, skip_done=len(chunks) > 1)


async def give_up(
    rt: Runtime, actor: str, args: Sequence[Any], error: str, *, skip_done: bool = False
) -> None:
    """A dispatch Dramatiq gave up on (every try raised ``error``, an exception's name).

    The chunk's recipients are recorded ``failed`` with the reason (``unknown`` if caught
    sending: the provider may have it) and a dead letter says what failed, instead of
    everyone staying ``queued``. If even that cannot be written, the error propagates (this
    message is retried) and the stranded-work sweep sends the chunk again. ``skip_done``:
    a chunk already recorded is left alone, without a dead letter.
    """
    reason = f"dispatch failed on every try: {error}"
    args = tuple(args)
    try:
        job_id, index, route, recipients = _chunk_of(actor, args)
    except (IndexError, TypeError, ValueError):
        job_id, index, route, recipients = "", -1, [], []
    if skip_done and job_id:
        key = rt.keys.chunk(job_id, index)
        found = await rt.outage.call(f"{actor}: chunk state", lambda: rt.async_redis().get(key))
        if found in (b"done", b"cancelled"):
            return
    log.warning("%s gave up: %s", actor, error)

    async def write_dead_letter() -> None:
        pipe = rt.async_redis().pipeline(transaction=True)
        store.dead_letter(
            pipe,
            rt.keys,
            source=f"dispatch:{actor}",
            reasons=[reason],
            payload={"job_id": job_id, "chunk": index, "recipients": len(recipients)},
            job_id=job_id or None,
            max_bytes=int(rt.settings.dispatch.dead_letter_max_bytes),
        )
        await pipe.execute()

    await rt.outage.call(f"{actor}: dead letter", write_dead_letter)
    metrics.DEAD_LETTERS.labels("dispatch").inc()
    if job_id and recipients:
        chunk_key = rt.keys.chunk(job_id, index)
        raw = await rt.outage.call(f"{actor}: chunk state", lambda: rt.async_redis().get(chunk_key))
        value = raw.decode() if isinstance(raw, bytes) else (raw or "")
        state, in_flight, _ = chunk_state.parse(value) if value else ("", None, None)
        account = in_flight or (route[0] if route else "unknown")
        # Caught sending, the provider may have it: unknown, for reconciliation.
        status = Status.UNKNOWN if state == "sending" else Status.FAILED
        outcomes = [RecipientOutcome(p, status, reason=reason) for p in recipients]
        acc = rt.settings.accounts.get(account)
        await _finish(
            rt,
            job_id,
            chunk_key,
            account,
            acc.kind if acc else "unknown",
            outcomes,
            resend=second_chance(index),
        )
