"""Serving ``/metrics`` and ``/healthz`` from the worker and the scheduler.

- ``smsq worker``: the supervising process serves a registry that adds up the
  multiprocess files of its Dramatiq processes (:func:`multiprocess_registry`); the files
  of a process that died are marked dead first, so its gauges leave no stale value.
- ``smsq scheduler``: the process registry plus :class:`~worker.core.metrics.ClusterCollector`.
- ``smsq web`` serves both paths from its own aiohttp app (``worker.entry.web``).

``/healthz`` answers 200 with ``{"ok": true, "checks": {...}}`` when every check passes,
else 503 with the same body; the checks are the ones ``smsq health`` runs.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_mp
from prometheus_client.registry import Collector

from producers.errors import SmsqError
from producers.keys import Keys
from producers.wire import INTAKE_OTP_QUEUE, INTAKE_QUEUE, NAMESPACE
from worker.core import queues
from worker.core.config import Settings
from worker.core.metrics import SCHEDULER_ONLY, SUPERVISOR_ONLY, ClusterCollector, LimitRule
from worker.state.limiter import margin_for

log = logging.getLogger("smsq.metrics")

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]

_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def all_queues() -> list[str]:
    """Every queue smsq's workers consume."""
    from worker.pushes.apply import WEBHOOK_QUEUE
    from worker.tracking.runs import RECONCILE_QUEUE

    return [
        INTAKE_QUEUE,
        INTAKE_OTP_QUEUE,
        queues.DISPATCH_QUEUE,
        queues.DISPATCH_OTP_QUEUE,
        WEBHOOK_QUEUE,
        RECONCILE_QUEUE,
    ]


def rule_label(limit: int, window: float) -> str:
    return f"{limit}/{window:g}s"


def limit_rules(settings: Settings) -> list[LimitRule]:
    """The configured rate rules of every account, as the collector reads them."""
    out: list[LimitRule] = []
    for account in sorted(settings.accounts):
        for endpoint, rules in sorted(settings.limits_for(account).rules.items()):
            for rule in rules:
                out.append(
                    LimitRule(
                        account,
                        endpoint,
                        rule.limit,
                        rule.window + margin_for(rule.window),
                        rule_label(rule.limit, rule.window),
                    )
                )
    return out


def cluster_collector(settings: Settings, client: redis.Redis) -> ClusterCollector:
    return ClusterCollector(
        client,
        keys=Keys(settings.key_prefix),
        accounts=sorted(settings.accounts),
        queues=all_queues(),
        rules=limit_rules(settings),
        namespace=NAMESPACE,
    )


# --------------------------------------------------------------------------- multiprocess


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_dead_processes(path: str) -> list[int]:
    """Drop the live-gauge files of processes that no longer run (SIGKILL leaves them)."""
    dead: set[int] = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(os.path.basename(name))
        if match and not pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        prom_mp.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


class _LiveMultiProcessCollector(Collector):
    """MultiProcessCollector that first marks the files of dead processes dead."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._inner = prom_mp.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        mark_dead_processes(self.path)
        result: Iterable[Any] = self._inner.collect()  # type: ignore[no-untyped-call]
        return [
            family
            for family in result
            if family.name not in SCHEDULER_ONLY and family.name not in SUPERVISOR_ONLY
        ]


def multiprocess_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_LiveMultiProcessCollector(path))
    return registry


class _Supervisor(Collector):
    """The supervisor's own metrics (worker restarts): they live in its process only."""

    def collect(self) -> Iterable[Any]:
        from prometheus_client import REGISTRY

        return [f for f in REGISTRY.collect() if f.name in SUPERVISOR_ONLY]


class WorkerExposition:
    """``/metrics`` and ``/healthz`` of one ``smsq worker`` instance, for its supervisor.

    :meth:`start` (before any worker process starts): a private multiprocess directory,
    created empty, named in ``PROMETHEUS_MULTIPROC_DIR`` for the processes to come; the
    instance id their broker ids start with; the HTTP server. :meth:`process_exited` with
    every pid that ended; :meth:`stop` at exit removes the directory.
    """

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.directory = ""
        self.server: MetricsServer | None = None

    def start(self) -> None:
        from worker.entry.health import INSTANCE_ENV, host_name, worker_checks

        instance = f"{host_name()}/{os.getpid()}"
        self.directory = tempfile.mkdtemp(prefix="smsq-worker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.directory
        os.environ[INSTANCE_ENV] = instance
        registry = multiprocess_registry(self.directory)
        registry.register(_Supervisor())
        try:
            self.server = MetricsServer(
                self.host, self.port, registry, lambda: worker_checks(self.settings, instance)
            ).start()
        except OSError as exc:
            self.stop()
            raise MetricsPortError(self.host, self.port, exc) from None

    def process_exited(self, pid: int | None) -> None:
        if pid is not None and self.directory:
            prom_mp.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            self.directory = ""


class MetricsPortError(SmsqError):
    def __init__(self, host: str, port: int, exc: OSError) -> None:
        super().__init__(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
            "(set [metrics] worker_port / --metrics-port; 0 takes any free port)"
        )


def use_multiprocess_values() -> None:
    """In a worker process forked from its supervisor: write metrics to the instance's
    multiprocess directory. prometheus-client chose its value class when the supervisor
    imported it; labelled metrics make their values later, so switching the class here is
    enough (the supervisor itself never labels a metric)."""
    from prometheus_client import values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------- HTTP


class MetricsServer:
    """``/metrics`` and ``/healthz`` on (host, port) from a daemon thread; port 0: any free."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: HealthCheck
    ) -> None:
        self.registry = registry
        self.health = health
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body = generate_latest(server.registry)
                    except Exception as exc:  # a broken collector must not kill the port
                        log.exception("metrics collection failed")
                        self._send(500, f"collection failed: {type(exc).__name__}\n".encode())
                        return
                    self._send(200, body, CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/health"):
                    ok, checks = server.health()
                    payload = json.dumps({"ok": ok, "checks": checks}).encode()
                    self._send(200 if ok else 503, payload, "application/json")
                else:
                    self._send(404, b"not found: /metrics or /healthz\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds: not worth a log line each

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="smsq-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (health: /healthz)", self.host, self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
