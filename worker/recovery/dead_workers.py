"""A dead worker's messages back on their queues within seconds, not minutes.

Dramatiq's Redis broker keeps each fetched message id in ``dramatiq:__acks__.<worker>.<queue>``
until it is acknowledged, and each worker process's last sign of life in
``dramatiq:__heartbeats__``. By default a worker counts as dead after 60 s without a heartbeat
(heartbeats are only written when it fetches, so a busy worker looks dead), and the requeue of a
dead worker's messages runs by chance on 0.1 % of broker calls: minutes after a crash.

:class:`Recovery` (a Dramatiq middleware, one per worker process) instead:

- writes this process's heartbeat from a thread every ``heartbeat_timeout / 5``, busy or not;
- every ``maintenance_interval`` runs Dramatiq's own maintenance (its dispatch script, forced on)
  for every queue this process consumes: the unacknowledged messages of workers silent for
  ``heartbeat_timeout`` go back to their queues. A dead worker's messages are therefore taken
  again within ``heartbeat_timeout + maintenance_interval`` (``[worker]``, 15 + 5 s by default).
  Right after this process itself lost Redis, it waits one ``heartbeat_timeout`` before judging
  others, who could not write their heartbeats either;
- puts back the messages a live process holds but no longer has in memory: Dramatiq drops its
  prefetched and delayed messages when a consumer restarts after a connection error, and their
  ids would otherwise stay in this process's acks set until it dies. This is done when the
  consumer restarts and, for what that misses (Redis still down then), on the timer: an id
  found in the acks set but nowhere in the process on two checks in a row goes back;
- stops fetching new messages once the worker process is stopping (SIGTERM).

A message taken again by mistake (its worker was only slow) is safe: the chunk state machine
never sends a chunk twice, and the other actors are idempotent.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import dramatiq
import redis

from worker.core import metrics
from worker.core.config import WorkerSettings

log = logging.getLogger("smsq.recovery")


class Recovery(dramatiq.Middleware):
    """Heartbeats, timed maintenance and orphan requeues for one worker process."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.heartbeat_timeout_ms = int(settings.heartbeat_timeout * 1000)
        self.beat_every = max(0.1, settings.heartbeat_timeout / 5)
        self.maintenance_every = settings.maintenance_interval
        self.broker: Any = None
        self.worker: Any = None
        self._processing: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis_lost_at = 0.0  # monotonic time this process last failed to reach Redis
        self._suspects: dict[str, set[str]] = {}  # per queue: ids found orphaned last time

    # -- Dramatiq hooks -------------------------------------------------------------

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        self.broker, self.worker = broker, worker
        broker.on_consumer_restart = self.requeue_orphans
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="smsq-recovery", daemon=True)
        self._thread.start()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._processing.add(message.options.get("redis_message_id", ""))

    def after_ack(self, broker: Any, message: Any) -> None:
        with self._lock:
            self._processing.discard(message.options.get("redis_message_id", ""))

    after_nack = after_ack

    # -- the timer --------------------------------------------------------------------

    def _run(self) -> None:
        next_beat = 0.0
        next_maintenance = time.monotonic() + self.maintenance_every
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_beat:
                    self.beat()
                    next_beat = now + self.beat_every
                if now >= next_maintenance:
                    next_maintenance = now + self.maintenance_every
                    if now - self._redis_lost_at > self.heartbeat_timeout_ms / 1000:
                        self.requeue_dead()
                    for queue in sorted(self.broker.consumed_queues()):
                        self.requeue_orphans(queue, confirm=True)
            except redis.RedisError as exc:
                self._redis_lost_at = time.monotonic()
                log.debug("recovery: Redis unavailable (%s)", type(exc).__name__)
            except Exception:  # the timer must outlive any surprise
                log.exception("recovery: unexpected error")
            self._stop.wait(min(self.beat_every, self.maintenance_every, 0.5))

    def beat(self) -> None:
        b = self.broker
        b.client.zadd(f"{b.namespace}:__heartbeats__", {b.broker_id: int(time.time() * 1000)})

    def _queues(self) -> list[str]:
        b = self.broker
        return sorted(set(b.get_declared_queues()) | set(b.get_declared_delay_queues()))

    def requeue_dead(self) -> int:
        """Put the unacknowledged messages of dead worker processes back; returns how many."""
        b = self.broker
        now = int(time.time() * 1000)
        dead = [
            d.decode() if isinstance(d, bytes) else str(d)
            for d in b.client.zrangebyscore(
                f"{b.namespace}:__heartbeats__", 0, now - self.heartbeat_timeout_ms
            )
        ]
        dead = [d for d in dead if d != b.broker_id]
        if not dead:
            return 0
        total = 0
        for queue in self._queues():
            held = sum(int(b.client.scard(f"{b.namespace}:__acks__.{d}.{queue}")) for d in dead)
            # Dramatiq's own maintenance, forced on: requeues the dead workers' messages of
            # this queue and forgets workers that hold none any more.
            args = [
                "qsize",
                now,
                queue,
                b.broker_id,
                self.heartbeat_timeout_ms,
                b.dead_message_ttl,
                1,
                b._max_unpack_size(),
            ]
            b.scripts["dispatch"](args=args, keys=[b.namespace])
            if held:
                metrics.REQUEUED.labels(queue).inc(held)
                total += held
        if total:
            log.warning("requeued %d messages of %d dead worker process(es)", total, len(dead))
        return total

    def _held(self, queue: str, *, with_cache: bool) -> set[str]:
        """Ids of ``queue`` this process has in memory: being processed, in the work queue,
        in the consumer's delay queue and (``with_cache``) its prefetched bodies."""
        with self._lock:
            keep = set(self._processing)
        if self.worker is None:
            return keep
        work_queues = getattr(self.worker, "work_queues", None) or [self.worker.work_queue]
        for work_queue in work_queues:  # SmsqWorker: the OTP lane's work queue too
            for item in list(work_queue.queue):
                keep.add(item.message.options.get("redis_message_id", ""))
        thread = self.worker.consumers.get(queue)
        if thread is not None:
            for item in list(thread.delay_queue.queue):
                keep.add(item.message.options.get("redis_message_id", ""))
            cache = getattr(getattr(thread, "consumer", None), "message_cache", None) or []
            for body in list(cache) if with_cache else []:
                try:
                    keep.add(json.loads(body)["options"]["redis_message_id"])
                except (ValueError, KeyError, TypeError):
                    continue
        return keep

    def requeue_orphans(self, queue: str, *, confirm: bool = False) -> int:
        """Put back this process's messages of ``queue`` that it no longer has in memory;
        returns how many.

        Called as a consumer restarts (its old prefetched bodies are gone), or with
        ``confirm`` from the timer, where an id must be missing on two checks in a row (a
        message between Redis and the consumer's memory is missing for an instant only).
        """
        b = self.broker
        try:
            ours = {
                i.decode() if isinstance(i, bytes) else str(i)
                for i in b.client.smembers(f"{b.namespace}:__acks__.{b.broker_id}.{queue}")
            }
            missing = ours - self._held(queue, with_cache=confirm)
            if confirm:
                suspects = self._suspects.get(queue, set())
                self._suspects[queue] = missing - suspects
                missing &= suspects
            lost = sorted(missing)
            if lost:
                b.do_requeue(queue, *lost)
                metrics.REQUEUED.labels(queue).inc(len(lost))
                log.warning("requeued %d messages of %s this process had lost", len(lost), queue)
            return len(lost)
        except redis.RedisError as exc:
            log.debug("recovery: orphans of %s not requeued yet (%s)", queue, type(exc).__name__)
            return 0

    def requeue_all_orphans(self) -> int:
        """At the end of a shutdown: everything this process still holds goes back."""
        return sum(self.requeue_orphans(q) for q in self._queues())
