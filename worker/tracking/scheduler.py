"""The scheduler process (``smsq scheduler``): periodic work, one active instance.

Any number of replicas may run; one is active. It holds the lease
``<prefix>:scheduler:lease`` (:class:`~worker.state.lease.Lease`: ``SET NX PX``, renewed
every ``min(tick_seconds, lease_seconds / 3)`` by compare-and-set, released on
SIGTERM/SIGINT); the others stand by and take the lease the moment it expires, so
after a crash a standby is active within one lease period of the last renewal, and
at once after a clean shutdown.

The active instance divides time into slots per task (slot number = Redis server time
// interval, so every replica counts alike) and enqueues one Dramatiq message per task,
account and slot on ``smsq-reconcile``. Claiming the slot and enqueueing its message
are one Lua script: ``SET <prefix>:slot:<task>:<account>:<slot> NX`` and, only when
that succeeds, the message. Two instances that both believe they are active for a
moment (a paused process whose lease ran out) therefore never run a slot twice.

| task | actor | every | accounts |
|---|---|---|---|
| reconcile | ``reconcile_account`` | ``reconcile_interval`` | all (deadlines apply to push-only ones too) |
| history | ``sweep_history`` | ``history_interval`` | those whose adapter offers ``history_page`` |
| incoming | ``poll_incoming`` | ``incoming_interval`` | those whose adapter offers ``poll_incoming`` |
| balance | ``poll_balance`` | ``balance_interval`` | all |
| retention | ``sweep_retention`` | ``reconcile_interval``, at least retention / 1000 (≤ 10 min) | one for all |
| stranded | ``sweep_stranded`` | ``[worker] stranded_after`` / 3 (≥ 1 s) | one for all |
| prices | ``refresh_prices`` | ``[routing] price_interval`` | those of cost routes whose adapter offers ``price_list`` |
| operators | ``lookup_operators`` | ``[routing] operator_interval`` | those of cost routes whose adapter offers ``lookup_operators`` |
| callbacks | ``deliver_callbacks`` | ``[callbacks] interval`` (when producers are configured) | one for all |

The message carries the slot; the scheduler also records the newest slot queued per
task and account, and a run whose slot is older skips itself, so a backlog of queued
runs (workers down for a while) collapses into one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import FrameType

import redis
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from producers import redis_conn
from producers.keys import Keys
from producers.wire import NAMESPACE, build_message
from worker.core import logs, messages, metrics
from worker.core.config import Settings, load_settings
from worker.entry.exposition import MetricsServer, cluster_collector
from worker.entry.health import client_for as health_client
from worker.entry.health import scheduler_checks
from worker.pipeline.routing import offers_operators, offers_prices
from worker.providers import provider_spec
from worker.state.lease import Lease
from worker.tracking.callbacks import CALLBACK_ACTOR
from worker.tracking.runs import (
    BALANCE_ACTOR,
    HISTORY_ACTOR,
    INCOMING_ACTOR,
    OPERATORS_ACTOR,
    PRICES_ACTOR,
    RECONCILE_ACTOR,
    RECONCILE_QUEUE,
    RETENTION_ACTOR,
    STRANDED_ACTOR,
    TrackingKeys,
    offers_history,
    polls_incoming,
)

log = logging.getLogger("smsq.scheduler")

ALL_ACCOUNTS = "all"  # the account part of the keys of tasks that are not per account


_CLAIM = """
-- KEYS[1] slot key   KEYS[2] the queue's message hash   KEYS[3] the queue list
-- KEYS[4] newest-slot key
-- ARGV[1] owner   ARGV[2] key ttl (ms)   ARGV[3] redis message id   ARGV[4] message body
-- ARGV[5] slot number
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return 0
end
redis.call("HSET", KEYS[2], ARGV[3], ARGV[4])
redis.call("RPUSH", KEYS[3], ARGV[3])
redis.call("SET", KEYS[4], ARGV[5], "PX", ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Task:
    name: str
    actor: str
    interval: float
    account: str | None  # None: one run for every account


def retention_interval(settings: Settings) -> float:
    cfg = settings.scheduler
    return max(cfg.reconcile_interval, min(600.0, cfg.retention / 1000))


def build_tasks(settings: Settings) -> list[Task]:
    """The periodic tasks of this configuration (capabilities read from the adapter classes)."""
    cfg = settings.scheduler
    tasks: list[Task] = []
    for name, account in sorted(settings.accounts.items()):
        adapter_class = provider_spec(account.kind).adapter
        tasks.append(Task("reconcile", RECONCILE_ACTOR, cfg.reconcile_interval, name))
        if offers_history(adapter_class):
            tasks.append(Task("history", HISTORY_ACTOR, cfg.history_interval, name))
        if polls_incoming(adapter_class):
            tasks.append(Task("incoming", INCOMING_ACTOR, cfg.incoming_interval, name))
        tasks.append(Task("balance", BALANCE_ACTOR, cfg.balance_interval, name))
    tasks.append(Task("retention", RETENTION_ACTOR, retention_interval(settings), None))
    stranded_every = max(1.0, settings.worker.stranded_after / 3)
    tasks.append(Task("stranded", STRANDED_ACTOR, stranded_every, None))
    costed = {
        account
        for route, policy in settings.route_policies.items()
        if policy.strategy == "cost"
        for account in settings.routes.get(route, ())
    }
    routing_cfg = settings.routing
    for name in sorted(costed):
        adapter_class = provider_spec(settings.accounts[name].kind).adapter
        if offers_prices(adapter_class):
            tasks.append(Task("prices", PRICES_ACTOR, routing_cfg.price_interval, name))
        if offers_operators(adapter_class):
            tasks.append(Task("operators", OPERATORS_ACTOR, routing_cfg.operator_interval, name))
    if settings.callbacks.producers:
        tasks.append(Task("callbacks", CALLBACK_ACTOR, settings.callbacks.interval, None))
    return tasks


def default_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    """One scheduler instance: run it in the foreground (:meth:`run`) or a thread (:meth:`start`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        identity: str | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity or default_identity()
        self.keys = Keys(settings.key_prefix)
        self.tracking = TrackingKeys(settings.key_prefix)
        self.client = client or redis_conn.sync_client(settings.redis_url)
        cfg = settings.scheduler
        self.lease = Lease(self.client, self.keys.scheduler_lease, cfg.lease_seconds, self.identity)
        self.tasks = build_tasks(settings)
        self.claimed = 0  # slots this instance claimed (and enqueued)
        self._claim = self.client.register_script(_CLAIM)
        self._tick = cfg.tick_seconds
        self._renew_every = min(cfg.tick_seconds, cfg.lease_seconds / 3)
        self._last_slot: dict[tuple[str, str], int] = {}
        self._leader = False
        self._stop = threading.Event()
        self._release_on_stop = True
        self._thread: threading.Thread | None = None
        self.last_step = time.monotonic()  # when the loop last ran a step (for /healthz)

    @property
    def is_leader(self) -> bool:
        return self._leader

    def slot_key(self, task: str, account: str, slot: int) -> str:
        return self.keys.slot(task, account, slot)

    # -- one iteration ------------------------------------------------------------

    def step(self) -> float:
        """Keep or seek the lease, run the due slots if active; returns seconds to wait."""
        try:
            if self._leader and not self.lease.renew():
                log.warning("scheduler %s lost the lease; standing by", self.identity)
                self._set_leader(False)
            if not self._leader and self.lease.acquire():
                log.info("scheduler %s is active", self.identity)
                self._set_leader(True)
            if self._leader:
                self.run_due(self._redis_now())
                return self._renew_every
            remaining = self.lease.remaining()
        except redis.RedisError as exc:
            log.warning("scheduler: Redis unavailable (%s)", type(exc).__name__)
            self._set_leader(False)
            return self._tick
        # Standing by: ask again the moment the current lease runs out.
        return min(self._tick, remaining) if remaining > 0 else self._tick

    def run_due(self, now: float) -> int:
        """Claim and enqueue every task's current slot not seen yet; returns how many claimed.

        Safe to call from several instances at once: a slot is claimed by exactly one.
        """
        claimed = 0
        for task in self.tasks:
            account = task.account or ALL_ACCOUNTS
            slot = int(now // task.interval)
            if self._last_slot.get((task.name, account)) == slot:
                continue
            if self._enqueue(task, account, slot):
                claimed += 1
                metrics.SCHEDULER_SLOTS.labels(task.name).inc()
            self._last_slot[(task.name, account)] = slot
        self.claimed += claimed
        return claimed

    def _enqueue(self, task: Task, account: str, slot: int) -> bool:
        args = messages.run_args(messages.PeriodicRun(task.account, slot))
        queue, redis_id, body = build_message(RECONCILE_QUEUE, task.actor, args)
        ttl_ms = int((2 * task.interval + 60) * 1000)
        keys = [
            self.slot_key(task.name, account, slot),
            f"{NAMESPACE}:{queue}.msgs",
            f"{NAMESPACE}:{queue}",
            self.tracking.latest(task.name, account),
        ]
        return bool(int(self._claim(keys=keys, args=[self.identity, ttl_ms, redis_id, body, slot])))

    def _redis_now(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1_000_000

    def _set_leader(self, value: bool) -> None:
        self._leader = value
        metrics.SCHEDULER_ACTIVE.set(1 if value else 0)

    # -- lifecycle ----------------------------------------------------------------

    def run(self) -> None:
        """Loop until :meth:`request_stop`; then release the lease (unless told not to)."""
        try:
            while not self._stop.is_set():
                self.last_step = time.monotonic()
                try:
                    wait = self.step()
                except Exception:  # a bug must not kill the loop and leave the lease to lapse
                    log.exception("scheduler: unexpected error; going on")
                    wait = self._tick
                self._stop.wait(max(0.005, wait))
        finally:
            if self._leader and self._release_on_stop:
                try:
                    self.lease.release()
                    log.info("scheduler %s released the lease", self.identity)
                except redis.RedisError:
                    log.warning("scheduler: could not release the lease; it expires on its own")
            self._set_leader(False)

    def request_stop(self, *, release: bool = True) -> None:
        self._release_on_stop = release
        self._stop.set()

    def start(self) -> Scheduler:
        """Run in a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.run, name="smsq-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, release: bool = True, timeout: float = 10.0) -> None:
        """Stop the background thread; ``release=False`` leaves the lease to expire (a crash)."""
        self.request_stop(release=release)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def close(self) -> None:
        self.client.close()


def metrics_registry(settings: Settings, client: redis.Redis) -> CollectorRegistry:
    """This process's metrics plus the cluster-wide gauges read from Redis at scrape time."""
    registry = CollectorRegistry()
    registry.register(_Delegate(REGISTRY))
    registry.register(cluster_collector(settings, client))
    return registry


class _Delegate(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def main(
    settings: Settings | None = None,
    *,
    metrics_host: str | None = None,
    metrics_port: int | None = None,
) -> int:
    """``smsq scheduler``: run until SIGTERM or SIGINT, then give the lease up."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logs.install()
    settings = settings or load_settings()
    scheduler = Scheduler(settings)
    scrape_client = health_client(settings)
    stale_after = max(5 * settings.scheduler.tick_seconds, settings.scheduler.lease_seconds)

    def loop_alive() -> tuple[bool, str]:
        age = time.monotonic() - scheduler.last_step
        ok = age <= stale_after
        return ok, f"last step {age:.1f}s ago" + ("" if ok else f" (over {stale_after:.0f}s)")

    server = MetricsServer(
        metrics_host or settings.metrics.host,
        settings.metrics.scheduler_port if metrics_port is None else metrics_port,
        metrics_registry(settings, scrape_client),
        lambda: scheduler_checks(settings, scrape_client, loop_alive),
    ).start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("scheduler: %s received, stopping", signal.Signals(signum).name)
        scheduler.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "scheduler %s: %d periodic tasks over %d accounts",
        scheduler.identity,
        len(scheduler.tasks),
        len(settings.accounts),
    )
    try:
        scheduler.run()
    finally:
        server.stop()
        scheduler.close()
        scrape_client.close()
    return 0
