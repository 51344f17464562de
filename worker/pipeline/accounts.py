"""Account circuit breaker: pause a provider account on an account error, probe, resume.

Bad credentials, insufficient funds or a blocked IP pause the account: its
work stays queued (nothing is dropped), a route with several accounts sends
new chunks to the next active one, ``smsq_account_paused`` (read from this hash by the
scheduler's metrics) goes to 1 and an
``account_paused`` event is appended to the events stream. Once the probe
time has come, the next dispatch that needs the account takes the probe lock
and asks the provider for its balance: an answer resumes the account.

State per account, hash ``<prefix>:account:<name>``: ``state`` (active |
paused), ``reason``, ``since``, ``probe_at`` (epoch seconds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from producers.errors import DispatchInterrupted
from producers.keys import EVENTS_MAXLEN
from worker.core import metrics
from worker.core.runtime import Runtime
from worker.providers.base import ErrorClass, ProviderError

log = logging.getLogger("smsq.accounts")


@dataclass(frozen=True)
class AccountState:
    name: str
    paused: bool
    reason: str = ""
    probe_at: float = 0.0


def account_key(rt: Runtime, name: str) -> str:
    return rt.keys.account(name)


def parse_state(name: str, raw: dict[bytes, bytes]) -> AccountState:
    if raw.get(b"state") != b"paused":
        return AccountState(name, False)
    return AccountState(
        name,
        True,
        reason=raw.get(b"reason", b"").decode(errors="replace"),
        probe_at=float(raw.get(b"probe_at", b"0") or 0),
    )


async def pause(rt: Runtime, name: str, reason: str) -> float:
    """Pause the account; returns the time its first probe is due."""
    now = time.time()
    probe_in = rt.settings.dispatch.probe_interval
    pipe = rt.async_redis().pipeline(transaction=True)
    pipe.hset(
        account_key(rt, name),
        mapping={
            "state": "paused",
            "reason": reason[:300],
            "since": round(now, 3),
            "probe_at": now + probe_in,
        },
    )
    pipe.xadd(
        rt.keys.events,
        {"type": "account_paused", "account": name, "reason": reason[:300], "at": round(now, 3)},
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )
    await pipe.execute()
    metrics.EVENTS_PUBLISHED.labels("account_paused").inc()
    log.warning("account %s paused: %s", name, reason)
    return now + probe_in


async def resume(rt: Runtime, name: str) -> None:
    now = time.time()
    pipe = rt.async_redis().pipeline(transaction=True)
    pipe.hset(
        account_key(rt, name), mapping={"state": "active", "reason": "", "since": round(now, 3)}
    )
    pipe.xadd(
        rt.keys.events,
        {"type": "account_resumed", "account": name, "at": round(now, 3)},
        maxlen=EVENTS_MAXLEN,
        approximate=True,
    )
    await pipe.execute()
    metrics.EVENTS_PUBLISHED.labels("account_resumed").inc()
    log.info("account %s resumed", name)


BalanceProbe = Callable[[str], Awaitable[object]]


class ProbeDeferred(DispatchInterrupted):
    """The probe could not be made now (rate rules, in-flight cap): try again in ``delay``."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"balance probe deferred {delay:.1f}s")
        self.delay = delay


async def probe(rt: Runtime, state: AccountState, ask: BalanceProbe) -> tuple[bool, float]:
    """If the paused account's probe is due and no one else is probing it, ask for its balance.

    ``ask(account)`` makes the balance request under the account's rate rules and
    in-flight cap (dispatch passes its limited call); it raises ProbeDeferred when those
    do not allow it soon. Returns (resumed, seconds until the next probe may be made).
    """
    now = time.time()
    if not state.paused:
        return True, 0.0
    if state.probe_at > now:
        return False, state.probe_at - now
    lock = rt.keys.probe_lock(state.name)
    interval = rt.settings.dispatch.probe_interval
    if not await rt.async_redis().set(lock, "1", nx=True, px=max(1, int(interval * 1000))):
        return False, 0.5  # another process is probing it: look again soon
    try:
        await ask(state.name)
    except ProbeDeferred as wait:
        # Not asked: the next probe may come once the limits allow it.
        pipe = rt.async_redis().pipeline(transaction=True)
        pipe.hset(account_key(rt, state.name), "probe_at", time.time() + wait.delay)
        pipe.delete(lock)
        await pipe.execute()
        metrics.ACCOUNT_PROBES.labels(state.name, "deferred").inc()
        return False, wait.delay
    except ProviderError as exc:
        reason = exc.reason if exc.error_class is ErrorClass.ACCOUNT else state.reason
        await rt.async_redis().hset(
            account_key(rt, state.name),
            mapping={"probe_at": time.time() + interval, "reason": reason},
        )
        metrics.ACCOUNT_PROBES.labels(state.name, "failed").inc()
        return False, interval
    metrics.ACCOUNT_PROBES.labels(state.name, "resumed").inc()
    await resume(rt, state.name)
    return True, 0.0


async def choose(
    rt: Runtime, accounts: Sequence[str], states: Sequence[AccountState], ask: BalanceProbe
) -> tuple[str | None, float]:
    """The first usable account of the route, probing due paused ones in order.

    Returns (account, 0.0), or (None, seconds until the earliest probe may be made).
    """
    waits: list[float] = []
    for state in states:
        usable, wait = await probe(rt, state, ask)
        if usable:
            return state.name, 0.0
        waits.append(wait)
    return None, max(0.2, min(waits, default=0.2))
