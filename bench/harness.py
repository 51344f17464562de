"""What every benchmark sets up: a private Redis, provider sandboxes in processes of their
own, a worker configuration, ``smsq worker`` processes, and the probes that read what
they cost (CPU and memory from /proc, Redis ``INFO``, the sandbox's request log).

Nothing here measures by itself; :mod:`bench.scenarios` and :mod:`bench.ceilings` do.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from producers.client import SmsqClient
from worker.devtools.redis_server import RedisServer, free_port
from worker.devtools.sandboxes import sandbox_account, wait_until_serving
from worker.providers.base import AccountConfig

BULK_TEXT = "Your December statement is ready."
PROVIDERS = ("intis", "smsc", "intellisoftware")
OTP_CODE = re.compile(r"code is (\d{6,})")
CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def numbers(n: int, offset: int) -> list[str]:
    """``n`` distinct valid Russian mobile numbers (no ``+``), from ``offset``."""
    return [f"79{offset + i:09d}" for i in range(n)]


def otp_text(code: int) -> str:
    return f"Your code is {code:06d}"


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max (nearest rank) and mean of ``values`` in milliseconds."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    return {
        "p50_ms": round(rank(0.50) * 1000, 2),
        "p95_ms": round(rank(0.95) * 1000, 2),
        "p99_ms": round(rank(0.99) * 1000, 2),
        "max_ms": round(s[-1] * 1000, 2),
        "mean_ms": round(sum(s) / len(s) * 1000, 2),
    }


def ratio(value: float | None, ceiling: float | None) -> float | None:
    if value is None or not ceiling:
        return None
    return round(value / ceiling, 3)


# -- processes: CPU and memory from /proc ---------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant of it alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (threads included)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICK


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += pages * PAGE_SIZE
    return total


class Proc:
    """A child process of the benchmark, stopped with SIGTERM (then SIGKILL) by its pid."""

    def __init__(self, cmd: list[str], env: Mapping[str, str] | None = None) -> None:
        self.cmd = cmd
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            cmd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.tree())

    def rss(self) -> int:
        return rss_bytes(self.tree())

    def stop(self, timeout: float = 30.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


# -- sandboxes --------------------------------------------------------------------------


class Sandbox(Proc):
    """One provider's sandbox (``smsq sandbox KIND``) in a process of its own."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "worker.entry.cli",
            "sandbox",
            kind,
            f"--port={kind}={self.port}",
        ]
        super().__init__([*cmd, f"--option={kind}.balance=1000000000"])
        wait_until_serving(self.url + "/__sandbox/faults")
        self.creds = sandbox_account(kind)

    @property
    def sender(self) -> str:
        return self.creds.get("sender", "smsq")

    def account(self, name: str | None = None) -> AccountConfig:
        return AccountConfig(
            name=name or self.kind,
            kind=self.kind,
            base_url=self.url,
            login=self.creds.get("login", ""),
            password=self.creds.get("password", ""),
            api_key=self.creds.get("api_key", ""),
        )

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The request log (admin routes excluded) from entry ``since``."""
        with urllib.request.urlopen(
            f"{self.url}/__sandbox/requests?since={since}", timeout=60
        ) as r:
            entries: list[dict[str, Any]] = json.load(r)
        return entries

    def clear_log(self) -> None:
        req = urllib.request.Request(f"{self.url}/__sandbox/requests", method="DELETE")
        with urllib.request.urlopen(req, timeout=30):
            pass


@dataclass
class Account:
    name: str
    sandbox: Sandbox
    limits: Mapping[str, tuple[int, float]] = field(default_factory=dict)


def write_config(directory: str, accounts: Sequence[Account]) -> tuple[Path, dict[str, str]]:
    """A worker configuration for ``accounts`` and the environment holding their secrets."""
    lines: list[str] = []
    env: dict[str, str] = {}
    for acc in accounts:
        creds = acc.sandbox.creds
        lines += [
            f'[accounts."{acc.name}"]',
            f'kind = "{acc.sandbox.kind}"',
            f'base_url = "{acc.sandbox.url}"',
            f'login = "{creds.get("login", "")}"',
        ]
        for secret in ("password", "api_key"):
            if creds.get(secret):
                var = f"BENCH_{re.sub(r'[^A-Z0-9]', '_', acc.name.upper())}_{secret.upper()}"
                env[var] = creds[secret]
                lines.append(f'{secret} = {{ env = "{var}" }}')
        for endpoint, (requests, per_seconds) in acc.limits.items():
            lines.append(
                f"limits.{endpoint} = {{ requests = {requests}, per_seconds = {per_seconds} }}"
            )
        lines.append("")
    path = Path(directory) / f"bench-{len(os.listdir(directory))}.toml"
    path.write_text("\n".join(lines))
    return path, env


class Worker(Proc):
    """``smsq worker --processes P --threads T`` on a configuration of our own."""

    def __init__(
        self,
        redis_url: str,
        config: Path,
        secrets: Mapping[str, str],
        *,
        processes: int = 1,
        threads: int = 8,
    ) -> None:
        self.processes = processes
        self.threads = threads
        env = {**os.environ, **secrets, "SMSQ_CONFIG": str(config), "REDIS_URL": redis_url}
        cmd = [sys.executable, "-m", "worker.entry.cli", "worker", "--processes", str(processes)]
        super().__init__([*cmd, "--threads", str(threads), "--metrics-port", "0"], env)


# -- Redis ------------------------------------------------------------------------------


@dataclass
class RedisSnapshot:
    at: float
    calls: dict[str, int]
    reads: int
    cpu: float


def redis_snapshot(client: redis.Redis) -> RedisSnapshot:
    """``INFO commandstats`` calls per command, read events (≈ round trips: a pipeline
    arriving in one read is one) and the server's CPU seconds."""
    info = client.info("all")
    calls = {
        k.removeprefix("cmdstat_"): int(v["calls"])
        for k, v in info.items()
        if k.startswith("cmdstat_") and isinstance(v, dict)
    }
    reads = int(info.get("total_reads_processed", 0))
    cpu = float(info.get("used_cpu_user", 0.0)) + float(info.get("used_cpu_sys", 0.0))
    return RedisSnapshot(time.perf_counter(), calls, reads, cpu)


def redis_delta(
    before: RedisSnapshot, after: RedisSnapshot, background: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Commands and read events between two snapshots, less ``background`` (per-second
    rates measured while idle) over the elapsed time; ``INFO`` itself is left out."""
    elapsed = after.at - before.at
    bg = background or {}
    calls: dict[str, float] = {}
    for name in set(after.calls) | set(before.calls):
        if name == "info":
            continue
        n = after.calls.get(name, 0) - before.calls.get(name, 0) - bg.get(name, 0.0) * elapsed
        if n > 0.5:
            calls[name] = n
    reads = after.reads - before.reads - bg.get("__reads__", 0.0) * elapsed
    return {"calls": calls, "reads": max(0.0, reads), "cpu": after.cpu - before.cpu}


def background_rates(client: redis.Redis, poll: Any, seconds: float = 1.0) -> dict[str, float]:
    """Per-second commands and reads while nothing but ``poll()`` (called as during a
    measurement) and the idle worker talk to Redis."""
    before = redis_snapshot(client)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        poll()
        time.sleep(POLL)
    after = redis_snapshot(client)
    elapsed = after.at - before.at
    rates = {
        k: (after.calls.get(k, 0) - before.calls.get(k, 0)) / elapsed
        for k in after.calls
        if k != "info"
    }
    rates["__reads__"] = (after.reads - before.reads) / elapsed
    return rates


POLL = 0.02  # seconds between status reads while waiting for a job


def wait_done(client: SmsqClient, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status(job_id)
        if status is not None and status.state == "done":
            return {"record": dict(status.record), "counts": dict(status.counts)}
        time.sleep(POLL)
    raise TimeoutError(f"job {job_id} not done within {timeout}s")


def wait_queues_empty(client: SmsqClient, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.queue_depths().values()):
            return
        time.sleep(0.05)
    raise TimeoutError("queues not empty")


# -- the stack ----------------------------------------------------------------------------


class Stack:
    """A private Redis and one sandbox process per provider; workers started on demand."""

    def __init__(self, kinds: Sequence[str] = PROVIDERS) -> None:
        self.kinds = list(kinds)
        self.server = RedisServer()
        self.sandboxes: dict[str, Sandbox] = {}
        self.tmp = tempfile.mkdtemp(prefix="smsq-bench-")
        self._procs: list[Proc] = []
        self.client: SmsqClient | None = None
        self.last_job: str | None = None  # a finished job: idle status reads poll it

    def __enter__(self) -> Stack:
        self.server.start()
        try:
            for kind in self.kinds:
                self.sandboxes[kind] = Sandbox(kind)
                self._procs.append(self.sandboxes[kind])
            # The benchmark's own producer skips the local number check (the worker checks).
            self.client = SmsqClient(self.server.url, numbers=None)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        for proc in reversed(self._procs):
            proc.stop()
        self.server.stop()
        for path in Path(self.tmp).glob("*"):
            path.unlink()
        os.rmdir(self.tmp)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def smsq(self) -> SmsqClient:
        assert self.client is not None
        return self.client

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    @contextmanager
    def worker(
        self,
        processes: int = 1,
        threads: int = 8,
        accounts: Sequence[Account] | None = None,
    ) -> Iterator[Worker]:
        """A running ``smsq worker``, warmed up (a small job to every account done)."""
        accounts = accounts or [Account(k, s) for k, s in self.sandboxes.items()]
        config, secrets = write_config(self.tmp, accounts)
        worker = Worker(self.url, config, secrets, processes=processes, threads=threads)
        self._procs.append(worker)
        try:
            for i, acc in enumerate(accounts):
                if acc.limits:
                    continue
                job = self.smsq.enqueue_send(
                    provider=acc.name,
                    sender=acc.sandbox.sender,
                    text=BULK_TEXT,
                    recipients=numbers(400, 900_000_000 + i * 1000),
                )
                wait_done(self.smsq, job, 120)
                self.last_job = job
            yield worker
        finally:
            worker.stop()
            self._procs.remove(worker)
