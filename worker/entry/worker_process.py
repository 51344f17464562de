"""One worker process (started by ``smsq worker``'s supervisor): a Dramatiq worker with a
bounded, graceful stop.

On SIGTERM (or SIGINT, or its supervisor dying) it stops fetching at once, lets the
messages in progress finish for up to ``[worker] shutdown_timeout`` seconds, then cancels
what is still running: a chunk whose request may have left is recorded ``unknown`` (or with
the provider's answer if it came), one that never left stays ``claimed`` for its redelivery.
Messages fetched but not started go back to their queues. Dramatiq's 600 s default plays
no part.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import signal
import sys
import threading
import time
from types import FrameType

from dramatiq.asyncio import get_event_loop_thread

import worker.entry.actors  # noqa: F401  (imported before the supervisor forks: processes start at once)
from worker.entry.exposition import use_multiprocess_values

LOG_FORMAT = (
    "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(message)s"
)
STOP_MARGIN = 1.0  # seconds of the bound kept for recording what was interrupted

log = logging.getLogger("smsq.worker")


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its supervisor dies, so no worker outlives it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run(threads: int, queues: list[str] | None) -> int:
    use_multiprocess_values()  # metrics into the instance's directory (see worker.entry.exposition)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    _die_with_parent()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    from worker.entry.app import app  # builds the broker and actors from SMSQ_CONFIG

    # Python's 5 ms: a thread back from Redis waits up to that for the GIL while another runs
    # Python code (a bulk job's intake, bulk chunks on the event loop); an OTP takes it
    # tens of times on its way.
    sys.setswitchinterval(app.settings.worker.gil_switch_interval)

    app.broker.emit_after("process_boot")
    worker = app.worker(threads, set(queues) if queues else None)
    worker.start()
    log.info("worker process ready: %d threads (+%d for OTP)", threads, worker.lane_threads)
    stop.wait()

    bound = app.settings.worker.shutdown_timeout
    started = time.monotonic()
    log.info("stopping: nothing new is taken; in-flight work has %.0fs", bound)
    app.broker.stopping = True
    loop_thread = get_event_loop_thread()
    if loop_thread is not None:
        grace = max(0.0, bound - STOP_MARGIN)
        asyncio.run_coroutine_threadsafe(app.runtime.interrupt_after(grace), loop_thread.loop)
    worker.stop(timeout=int(bound * 1000))
    app.recovery.requeue_all_orphans()
    app.broker.close()
    log.info("worker process stopped in %.1fs", time.monotonic() - started)
    return 0


def child(threads: int, queues: list[str] | None) -> None:
    """Entry of a forked worker process."""
    sys.exit(run(threads, queues))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smsq-worker-process")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--queues", nargs="*")
    args = parser.parse_args(argv)
    return run(args.threads, args.queues)


if __name__ == "__main__":
    sys.exit(main())
