"""Exact distributed rate limits and concurrency leases, on Redis.

``RateLimiter``: a sliding log per (provider account, endpoint class), kept
in Redis and decided by one Lua script on the Redis server's clock, so "at
most N requests in any window of W seconds" holds across every process and
host, with one round trip per acquire. Several rules may guard one key (e.g.
3 per minute and 30 per hour); a rule may keep a reserve that only ``otp``
traffic can use, so a bulk backlog never starves OTPs. A throttled answer
from the provider sets a pause on the key that every process honours.

``ConcurrencyLimiter``: at most N requests in flight per account, by leases
that expire, so a killed process leaks no slot.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aredis

from producers.errors import DispatchInterrupted
from producers.keys import Keys
from worker.core import metrics


def lua_with_limits(name: str) -> str:
    """A Lua script of ``worker/state/scripts``, with the shared limit decisions (limits.lua)
    before it."""
    folder = resources.files("worker.state").joinpath("scripts")
    shared = folder.joinpath("limits.lua").read_text(encoding="utf-8")
    return shared + "\n" + folder.joinpath(name).read_text(encoding="utf-8")


class MarkRefused(DispatchInterrupted):
    """The key to mark with the grant is owned by another token: nothing was granted."""


@dataclass(frozen=True)
class Mark:
    """A key set to ``value`` atomically with a grant, if its value ends in ``:<token>``.

    Dispatch uses it to move a chunk to ``sending`` in the same round trip as its
    permit, so nothing stands between the permit and the request.
    """

    key: str
    token: str
    value: str
    ttl: int


@dataclass(frozen=True)
class Held:
    """A finished request's rate permit and in-flight lease, still to be given back: the
    recording of its chunk completes the permit and releases the lease in its own round trip
    (``record_chunk.lua``), as :meth:`RateLimiter.complete` and
    :meth:`ConcurrencyLimiter.release` would."""

    permit_log: str | None = None
    permit: str | None = None
    leases: str | None = None
    lease: str | None = None

    def script_keys(self) -> list[str]:
        """The keys ``record_chunk.lua`` takes for them, in its order."""
        keys = [self.permit_log] if self.permit and self.permit_log else []
        return keys + ([self.leases] if self.lease and self.leases else [])

    def script_args(self) -> list[str]:
        """The permit id and the lease id ``record_chunk.lua`` takes ("": none)."""
        permit = self.permit if self.permit and self.permit_log else ""
        lease = self.lease if self.lease and self.leases else ""
        return [permit, lease]


def rate_key(prefix: str, account: str, endpoint: str) -> str:
    """The permit log of (account, endpoint); ``rate_key(...) + ':pause'`` is its pause flag."""
    return Keys(prefix).rate(account, endpoint)


@dataclass(frozen=True)
class Rule:
    """At most ``limit`` requests in any ``window`` seconds; ``reserve`` of them kept for otp."""

    limit: int
    window: float
    reserve: int = 0

    def __post_init__(self) -> None:
        if (
            self.limit < 1
            or not math.isfinite(self.window)
            or self.window <= 0
            or not 0 <= self.reserve < self.limit
        ):
            raise ValueError(
                f"invalid rate rule {self}: need limit >= 1, window > 0, 0 <= reserve < limit"
            )


def margin_for(window: float) -> float:
    """Slack added to each window: requests leave the process a little after their permit."""
    return min(0.1, window * 0.01)


class RateLimiter:
    def __init__(self, client: aredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._acquire = client.register_script(lua_with_limits("limiter.lua"))
        self._complete = client.register_script(lua_with_limits("complete.lua"))
        self.last_paused = False  # the last try_acquire was refused by a provider's pause

    def key(self, account: str, endpoint: str) -> str:
        return rate_key(self._prefix, account, endpoint)

    @staticmethod
    def rule_args(rules: list[Rule]) -> list[Any]:
        """The rules as the scripts take them: count, then limit, window (us), reserve each."""
        args: list[Any] = [len(rules)]
        for rule in rules:
            window_us = int((rule.window + margin_for(rule.window)) * 1_000_000)
            args += [rule.limit, window_us, rule.reserve]
        return args

    @staticmethod
    def count(account: str, endpoint: str, waited: float) -> None:
        """Metrics of a permit granted after ``waited`` seconds (0: at once)."""
        if waited:
            metrics.LIMITER_WAIT_SECONDS.labels(account, endpoint).observe(waited)
        result = "waited" if waited else "granted"
        metrics.LIMITER_PERMITS.labels(account, endpoint, result).inc()

    async def try_acquire(
        self,
        account: str,
        endpoint: str,
        rules: list[Rule],
        *,
        priority: str = "bulk",
        mark: Mark | None = None,
        hold: float = 0.0,
        permit_id: str | None = None,
    ) -> float:
        """Take a permit if one is free: returns 0.0, or the seconds to wait before asking again.

        With ``hold`` (seconds, at least the request's timeout) the permit counts as in
        flight until :meth:`complete` is called with ``permit_id``, then from the moment
        the request completed: the provider saw it in between, so the cap holds where the
        provider counts, however loaded this machine is. With no rules the provider's
        pause is still honoured (and ``mark`` applied). Raises MarkRefused when
        ``mark``'s key is owned by another token.
        """
        if not rules and mark is None:
            return 0.0
        key = self.key(account, endpoint)
        keys = [key, Keys(self._prefix).rate_pause(account, endpoint)]
        args: list[Any] = [
            permit_id or uuid.uuid4().hex,
            1 if priority == "otp" else 0,
            int(hold * 1_000_000),
            *self.rule_args(rules),
        ]
        if mark is not None:
            keys.append(mark.key)
            args += [mark.token, mark.value, mark.ttl]
        granted, wait_us = await self._acquire(keys=keys, args=args)
        self.last_paused = int(granted) == 3
        if int(granted) == 2:
            raise MarkRefused(mark.key if mark else key)
        if int(granted) == 1:
            return 0.0
        return max(0.001, int(wait_us) / 1_000_000)

    async def acquire(
        self,
        account: str,
        endpoint: str,
        rules: list[Rule],
        *,
        priority: str = "bulk",
        max_wait: float = 5.0,
        mark: Mark | None = None,
        hold: float = 0.0,
        permit_id: str | None = None,
    ) -> float:
        """Wait (in the event loop) for a permit for up to ``max_wait`` seconds.

        Returns 0.0 once granted, or the remaining wait when it is longer than
        ``max_wait`` (the caller reschedules instead of holding a worker).
        """
        waited = 0.0
        while True:
            wait = await self.try_acquire(
                account,
                endpoint,
                rules,
                priority=priority,
                mark=mark,
                hold=hold,
                permit_id=permit_id,
            )
            if wait == 0.0:
                self.count(account, endpoint, waited)
                return 0.0
            if waited + wait > max_wait:
                result = "paused" if self.last_paused else "rescheduled"
                metrics.LIMITER_PERMITS.labels(account, endpoint, result).inc()
                return wait
            await asyncio.sleep(wait)
            waited += wait

    async def complete(self, account: str, endpoint: str, permit_id: str) -> None:
        """The permit's request is over (answered or failed): count it from now on."""
        await self._complete(keys=[self.key(account, endpoint)], args=[permit_id])

    async def pause(self, account: str, endpoint: str, seconds: float) -> None:
        """Stop granting permits on the key for ``seconds`` (a provider said: too many requests)."""
        await self._client.set(
            Keys(self._prefix).rate_pause(account, endpoint), "1", px=max(1, int(seconds * 1000))
        )


class ConcurrencyLimiter:
    def __init__(self, client: aredis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._script = client.register_script(lua_with_limits("concurrency.lua"))

    def key(self, account: str) -> str:
        return Keys(self._prefix).in_flight_leases(account)

    async def try_acquire(self, account: str, limit: int, lease: float) -> tuple[str | None, float]:
        """(lease id, 0.0) when a slot was free, else (None, seconds until one may be)."""
        lease_id = uuid.uuid4().hex
        granted, wait_us = await self._script(
            keys=[self.key(account)], args=["acquire", lease_id, limit, int(lease * 1_000_000)]
        )
        if int(granted):
            return lease_id, 0.0
        return None, max(0.001, int(wait_us) / 1_000_000)

    async def renew(self, account: str, lease_id: str, lease: float) -> bool:
        """Extend a held lease to ``lease`` seconds from now; False if it had expired."""
        renewed = await self._script(
            keys=[self.key(account)], args=["renew", lease_id, 0, int(lease * 1_000_000)]
        )
        return bool(int(renewed))

    async def release(self, account: str, lease_id: str) -> None:
        await self._script(keys=[self.key(account)], args=["release", lease_id])
