"""An in-process Dramatiq worker over the real broker and Redis (the ``make_worker`` fixture)."""

from __future__ import annotations

import time

from worker.entry.actors import App


class WorkerHarness:
    """An in-process Dramatiq worker over the real broker and Redis."""

    def __init__(self, app: App, threads: int = 8) -> None:
        self.app = app
        self.worker = app.worker(threads, worker_timeout=50)

    def start(self) -> WorkerHarness:
        self.worker.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        """Wait until every queue is drained and every message processed."""
        broker = self.app.broker
        queues = sorted(broker.get_declared_queues(), key=lambda q: "intake" not in q)
        deadline = time.monotonic() + timeout
        while True:
            for queue in queues:
                remaining = max(0.1, deadline - time.monotonic())
                broker.join(queue, timeout=int(remaining * 1000))
            if all(broker.do_qsize(q) == 0 for q in queues):
                break
        self.worker.join()

    def stop(self) -> None:
        """Stop the worker (once: a test may stop it before the fixture's teardown does)."""
        if getattr(self, "_stopped", False):
            return
        self._stopped = True
        self.worker.stop(timeout=10_000)
        self.app.runtime.close()
        self.app.broker.close()
