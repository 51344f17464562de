"""Riding out a Redis outage inside the process, instead of through a new Dramatiq message.

When Redis is down, Dramatiq cannot enqueue a retry either ("Unexpected failure in
after_process_message of Retries"): the message is then acknowledged once Redis is back,
and work that failed for want of Redis is stranded. So the steps that must not be lost
(recording a provider's answer, taking a job in, applying a push) keep what they hold in
the process and retry the Redis call itself with backoff, for up to
``[worker] redis_outage`` seconds: long enough for a Redis restart or a failover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis

log = logging.getLogger("smsq.outage")

T = TypeVar("T")

FIRST_WAIT = 0.1
MAX_WAIT = 2.0
_TRANSIENT_REPLIES = ("LOADING", "MASTERDOWN", "TRYAGAIN", "READONLY", "CLUSTERDOWN")


def redis_down(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis is unreachable or not serving for now (not a bad command)."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.ReadOnlyError):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


class Outage:
    """Retries of Redis calls across an outage of at most ``limit`` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` until it succeeds; Redis errors are retried with backoff up to the limit."""
        deadline = time.monotonic() + self.limit
        wait = FIRST_WAIT
        warned = False
        while True:
            try:
                result = await fn()
            except Exception as exc:
                if not redis_down(exc) or time.monotonic() + wait > deadline:
                    raise
                if not warned:
                    log.warning("%s: Redis unavailable (%s); retrying", what, type(exc).__name__)
                    warned = True
                await asyncio.sleep(wait)
                wait = min(MAX_WAIT, wait * 2)
                continue
            if warned:
                log.info("%s: Redis is back; done", what)
            return result

    def call_sync(self, what: str, fn: Callable[[], T]) -> T:
        """:meth:`call` for synchronous code (the intake actor)."""
        deadline = time.monotonic() + self.limit
        wait = FIRST_WAIT
        warned = False
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not redis_down(exc) or time.monotonic() + wait > deadline:
                    raise
                if not warned:
                    log.warning("%s: Redis unavailable (%s); retrying", what, type(exc).__name__)
                    warned = True
                time.sleep(wait)
                wait = min(MAX_WAIT, wait * 2)
                continue
            if warned:
                log.info("%s: Redis is back; done", what)
            return result
