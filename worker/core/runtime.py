"""Per-process runtime: settings, Redis clients, one aiohttp session and the adapters.

The asynchronous parts live on Dramatiq's event-loop thread: they are created
by :class:`RuntimeMiddleware` when the worker boots (after the AsyncIO
middleware has started the loop) and closed when it shuts down.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import dramatiq
import redis.asyncio as aredis
from dramatiq.asyncio import get_event_loop_thread

from producers import redis_conn
from producers.keys import Keys
from worker.core import metrics
from worker.core.config import Settings
from worker.pipeline.resend import Resender
from worker.providers import provider_spec
from worker.providers.base import ProbingConnector, ProviderAdapter
from worker.recovery.outage import Outage
from worker.state.limiter import ConcurrencyLimiter, RateLimiter
from worker.state.store import ChunkRecorder

log = logging.getLogger("smsq.runtime")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = redis_conn.sync_client(settings.redis_url)
        self.replication = redis_conn.replication_options(settings.redis_url)
        self.session: aiohttp.ClientSession | None = None
        self.aredis: aredis.Redis | None = None
        self.adapters: dict[str, ProviderAdapter] = {}
        self._chunk_recorder: ChunkRecorder | None = None
        self.limiter: RateLimiter | None = None
        self.concurrency: ConcurrencyLimiter | None = None
        self.outage = Outage(settings.worker.redis_outage)
        self._interrupter: asyncio.Task[Any] | None = None
        self._send_slots: dict[str, asyncio.Semaphore | None] = {}

    async def start(self) -> None:
        """Create the session, the asyncio Redis client and one adapter per account."""
        connector = ProbingConnector(limit=200, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector)
        self.aredis = redis_conn.async_client(self.settings.redis_url)
        self.limiter = RateLimiter(self.aredis, self.keys.prefix)
        self.concurrency = ConcurrencyLimiter(self.aredis, self.keys.prefix)
        self._send_slots = {}
        self.adapters = {
            name: provider_spec(acc.kind).adapter(acc, self.session)
            for name, acc in self.settings.accounts.items()
        }

    async def stop(self) -> None:
        if self._interrupter is not None and self._interrupter is not asyncio.current_task():
            self._interrupter.cancel()
            self._interrupter = None
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.aredis is not None:
            await self.aredis.aclose()
            self.aredis = None
            self._chunk_recorder = None

    async def interrupt_after(self, grace: float) -> int:
        """At shutdown: after ``grace`` seconds, cancel the work still running on this loop
        (dispatches record what they cannot finish, see ``dispatch.dispatch_or_give_up``)."""
        me = asyncio.current_task()
        self._interrupter = me
        await asyncio.sleep(grace)
        tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            log.warning("shutdown bound reached: %d tasks interrupted", len(tasks))
        return len(tasks)

    def account_kinds(self) -> dict[str, str]:
        """Account name -> provider kind (the ``provider`` label of the metrics)."""
        return {name: acc.kind for name, acc in self.settings.accounts.items()}

    def adapter(self, account: str) -> ProviderAdapter:
        try:
            return self.adapters[account]
        except KeyError:
            if account not in self.settings.accounts:
                raise KeyError(f"account {account!r} is not configured here") from None
            raise RuntimeError(f"no adapter for account {account!r}: runtime not started") from None

    def send_slots(self, account: str) -> asyncio.Semaphore | None:
        """This process's sends through ``account`` at once, bounded by its in-flight cap
        (None: no cap). The cap across processes is kept by the leases in Redis; this
        keeps one process from asking for a lease it cannot have."""
        if account not in self._send_slots:
            cap = self.settings.limits_for(account).max_in_flight if account in self.adapters else 0
            self._send_slots[account] = asyncio.Semaphore(cap) if cap else None
        return self._send_slots[account]

    def rate_limiter(self) -> RateLimiter:
        if self.limiter is None:
            raise RuntimeError("runtime not started")
        return self.limiter

    def concurrency_limiter(self) -> ConcurrencyLimiter:
        if self.concurrency is None:
            raise RuntimeError("runtime not started")
        return self.concurrency

    def async_redis(self) -> aredis.Redis:
        if self.aredis is None:
            raise RuntimeError("runtime not started")
        return self.aredis

    def chunk_recorder(self) -> ChunkRecorder:
        if self._chunk_recorder is None:
            self._chunk_recorder = ChunkRecorder(
                self.async_redis(),
                self.keys,
                self.settings.scheduler.first_check,
                resender=Resender(self),
            )
        return self._chunk_recorder

    async def confirm_replicated(self) -> bool:
        """With ``wait_replicas`` (a Sentinel URL's default: 1), wait until that many replicas
        hold every write so far (the chunk's move to ``sending`` before its request), so a
        failover cannot forget it and send the chunk again. False when fewer confirmed within
        ``wait_timeout`` (the send goes on: see docs/reliability.md)."""
        replicas, timeout = self.replication
        if not replicas:
            return True
        acked = await redis_conn.wait_for_replicas(
            self.async_redis(), self.keys.replication_probe, replicas, timeout
        )
        if acked < replicas:
            metrics.REPLICATION_WAITS.labels("short").inc()
            log.warning("only %d of %d replicas confirmed within %.2fs", acked, replicas, timeout)
            return False
        metrics.REPLICATION_WAITS.labels("ok").inc()
        return True

    def close(self) -> None:
        self.redis.close()


class RuntimeMiddleware(dramatiq.Middleware):
    """Starts the runtime's async parts at worker boot and closes them at shutdown.

    Registered after the AsyncIO middleware: Dramatiq runs ``before_*`` hooks in
    registration order (the loop exists when we start) and ``after_*`` hooks in
    reverse order (we close before the loop stops, once the worker threads are done).
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        thread = get_event_loop_thread()
        if thread is None:
            raise RuntimeError("the AsyncIO middleware must come before RuntimeMiddleware")
        thread.run_coroutine(self.runtime.start())

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        thread = get_event_loop_thread()
        if thread is None:
            log.error("event loop gone before the runtime closed")
            return
        thread.run_coroutine(self.runtime.stop())
