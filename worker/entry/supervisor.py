"""``smsq worker --processes N``: N worker processes, each restarted alone when it dies.

Dramatiq's own CLI stops the whole group when one child dies. Here a small supervisor
forks N processes (``worker.entry.worker_process.run``; the modules are imported once, in the
supervisor, so a new process is ready in a fraction of a second), and when one exits without being
asked to (a crash, ``kill -9``, out of memory) it starts a new one after
``[worker] restart_delay`` seconds (doubling, up to 30 s, while a process keeps dying
within 10 s of its start); its siblings go on untouched. The dead process's messages are
taken again by the survivors within ``heartbeat_timeout + maintenance_interval``
(worker.recovery.dead_workers).

With a :class:`~worker.entry.exposition.WorkerExposition` it also serves the instance's
``/metrics`` (every process added up: prometheus-client's multiprocess mode, in a directory
private to the instance, created empty before the first fork and removed at exit) and
``/healthz``; when a process ends, its live gauges are marked dead at once, so
``dramatiq_messages_inprogress`` keeps no value of a process that was killed.

SIGTERM or SIGINT is passed on to every process, which stops within ``[worker]
shutdown_timeout`` (worker.entry.worker_process); a process still running ``KILL_MARGIN`` seconds
after that is killed. The worker processes are told (Linux ``PR_SET_PDEATHSIG``) to stop
when the supervisor itself dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from worker.core import metrics
from worker.core.config import WorkerSettings
from worker.entry.exposition import WorkerExposition

log = logging.getLogger("smsq.supervisor")

KILL_MARGIN = 10.0
MAX_RESTART_DELAY = 30.0
QUICK_DEATH = 10.0  # a process that dies sooner than this after its start backs off


@dataclass
class Slot:
    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    restart_at: float | None = None
    delay: float = 1.0
    restarts: int = 0


class Supervisor:
    def __init__(
        self,
        processes: int,
        threads: int,
        queues: Sequence[str] | None,
        settings: WorkerSettings,
        exposition: WorkerExposition | None = None,
    ) -> None:
        # Imported here, before any fork: every process starts from them at once.
        from worker.entry import worker_process

        self.target = worker_process.child
        self.threads = threads
        self.queues = list(queues) if queues else None
        self.context = multiprocessing.get_context("fork")
        self.settings = settings
        self.slots = [Slot(i, delay=settings.restart_delay) for i in range(max(1, processes))]
        self.stopping = threading.Event()
        self.exposition = exposition

    def _start(self, slot: Slot) -> None:
        slot.process = self.context.Process(
            target=self.target, args=(self.threads, self.queues), name=f"smsq-worker-{slot.index}"
        )
        slot.process.start()
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker process %d started (pid %d)", slot.index, slot.process.pid)

    def _check(self, slot: Slot, now: float) -> None:
        if slot.process is not None:
            code = slot.process.exitcode
            if code is None:
                if now - slot.started > 6 * QUICK_DEATH:
                    slot.delay = self.settings.restart_delay  # it lived: a new crash starts over
                return
            if self.exposition is not None:
                # Its live gauges (messages in progress) leave the sum at once.
                self.exposition.process_exited(slot.process.pid)
            slot.process = None
            quick = now - slot.started < QUICK_DEATH
            wait = slot.delay
            slot.delay = min(MAX_RESTART_DELAY, slot.delay * 2) if quick else slot.delay
            slot.restart_at = now + wait
            log.error(
                "worker process %d exited with %s; starting a new one in %.1fs",
                slot.index,
                f"signal {-code}" if code < 0 else f"code {code}",
                wait,
            )
        if slot.restart_at is not None and now >= slot.restart_at:
            slot.restarts += 1
            metrics.WORKER_RESTARTS.inc()
            self._start(slot)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns 0 when every process stopped cleanly."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if not self.stopping.is_set():
                log.info("%s received: stopping the worker processes", signal.Signals(signum).name)
            self.stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        if self.exposition is not None:
            self.exposition.start()  # before the first fork: the processes write its directory
        try:
            for slot in self.slots:
                self._start(slot)
            while not self.stopping.wait(0.2):
                now = time.monotonic()
                for slot in self.slots:
                    self._check(slot, now)
            return self.stop()
        finally:
            if self.exposition is not None:
                for slot in self.slots:
                    if slot.process is not None and slot.process.exitcode is not None:
                        self.exposition.process_exited(slot.process.pid)
                self.exposition.stop()

    def stop(self) -> int:
        running = [s.process for s in self.slots if s.process is not None]
        for p in running:
            if p.exitcode is None and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout + KILL_MARGIN
        clean = True
        for p in running:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.exitcode is None:
                log.error("worker process pid %s did not stop in time: killed", p.pid)
                p.kill()
                p.join()
                clean = False
            clean = clean and p.exitcode == 0
        return 0 if clean else 1
