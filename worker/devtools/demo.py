"""``smsq demo``: smsq end to end on this machine, with nothing but Python.

Starts Redis (the one at REDIS_URL, or an embedded redis-server), the
providers' sandboxes and a worker; enqueues a sample bulk job and a few
OTP-style jobs; shows their progress; prints the per-status summary; stops
everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from producers import redis_conn
from producers.cli import format_status
from producers.client import SmsqClient
from producers.status import FINAL_STATUSES, Status
from worker.core.config import ConfigError, redis_url_problem
from worker.devtools.redis_server import RedisServer, free_port
from worker.devtools.sandboxes import sandbox_account, wait_until_serving
from worker.providers import known_kinds, provider_spec

TIMEOUT = 180.0


def _write_config(
    directory: Path,
    urls: dict[str, str],
    redis_url: str,
    web_port: int,
    hook_secrets: dict[str, str],
) -> tuple[Path, dict[str, str]]:
    """A config pointing every account at its sandbox; secrets go by environment reference."""
    env: dict[str, str] = {}
    lines = ["[redis]", f'url = "{redis_url}"', ""]
    for kind, url in urls.items():
        account = {**sandbox_account(kind), "webhook_secret": hook_secrets[kind]}
        lines += [f"[accounts.{kind}-sandbox]", f'kind = "{kind}"', f'base_url = "{url}"']
        if account.get("login"):
            lines.append(f'login = "{account["login"]}"')
        for secret in ("password", "api_key", "webhook_secret"):
            if account.get(secret):
                var = f"SMSQ_DEMO_{kind.upper()}_{secret.upper()}"
                env[var] = account[secret]
                lines.append(f'{secret} = {{ env = "{var}" }}')
        lines.append("")
    lines += ["[routes]", f'default = ["{next(iter(urls))}-sandbox"]', ""]
    lines += ["[web]", f"port = {web_port}", ""]
    # Quick polling: the sandboxes settle messages within a second or two.
    lines += ["[scheduler]", "tick_seconds = 0.5", "reconcile_interval = 1", "first_check = 1"]
    lines += ["max_check_interval = 2", "lease_seconds = 5", ""]
    path = directory / "smsq-demo.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, env


def _stop(proc: subprocess.Popen[bytes] | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop on SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        problem = redis_url_problem(url)
        if problem:
            raise ConfigError([f"REDIS_URL: {problem}"])
        client = redis_conn.sync_client(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()  # unreachable: one line from `smsq`, before anything starts
        finally:
            client.close()
        yield url
        return
    with RedisServer() as server:
        print(f"embedded Redis on {server.url}")
        yield server.url


def push_options(kind: str, hook_url: str, secret: str) -> dict[str, str]:
    """How the kind's sandbox is told to push to ``hook_url`` (see its package)."""
    return provider_spec(kind).sandbox().push_options(hook_url, secret)


def _bar(done: int, total: int, width: int = 40) -> str:
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _progress(client: SmsqClient, jobs: list[tuple[str, int]], done: Callable[[str], bool]) -> int:
    n = 0
    for job_id, _ in jobs:
        st = client.status(job_id)
        if st is not None:
            n += sum(count for status, count in st.counts.items() if done(status))
    return n


def _follow(
    label: str,
    client: SmsqClient,
    jobs: list[tuple[str, int]],
    done: Callable[[str], bool],
    procs: list[tuple[str, subprocess.Popen[bytes]]],
    logs: Path,
    timeout: float,
) -> bool:
    """Show a progress bar until every recipient is ``done``; False on timeout or a dead process."""
    total = sum(n for _, n in jobs)
    print(label)
    started, shown = time.monotonic(), -1
    while True:
        n = _progress(client, jobs, done)
        if n != shown:
            print("\r  " + _bar(n, total), end="", flush=True)
            shown = n
        if n >= total:
            print(f"  ({time.monotonic() - started:.1f}s)")
            return True
        for name, proc in procs:
            if proc.poll() is not None:
                print(f"\n{name} exited with code {proc.returncode}; its log:", file=sys.stderr)
                print((logs / f"{name}.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                return False
        if time.monotonic() - started > timeout:
            print(
                f"\ntimed out after {timeout:.0f}s with {total - n} recipients to go",
                file=sys.stderr,
            )
            return False
        time.sleep(0.2)


def _start(
    name: str,
    args: list[str],
    env: dict[str, str],
    logs: Path,
    procs: list[tuple[str, subprocess.Popen[bytes]]],
) -> None:
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
    cmd = [sys.executable, "-m", "worker.entry.cli", *args]
    procs.append((name, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))


def run_demo(*, bulk: int = 1000, otp: int = 5, workers: int = 1) -> int:
    kinds = known_kinds()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    with _redis() as redis_url, tempfile.TemporaryDirectory(prefix="smsq-demo-") as tmp:
        logs = Path(tmp)
        try:
            ports = {kind: free_port() for kind in kinds}
            web_port = free_port()
            hook_secrets = {kind: secrets.token_hex(12) for kind in kinds}
            sandbox_args = ["sandbox", "--final-after", "1.0"]
            for kind, port in ports.items():
                hook = f"http://127.0.0.1:{web_port}/hooks/{kind}-sandbox"
                options = {"balance": "100000000", **push_options(kind, hook, hook_secrets[kind])}
                sandbox_args += [f"--port={kind}={port}"]
                sandbox_args += [f"--option={kind}.{k}={v}" for k, v in options.items()]
            _start("sandbox", sandbox_args, dict(os.environ), logs, procs)
            urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
            for url in urls.values():
                wait_until_serving(url + "/__sandbox/faults")
            print("sandboxes: " + ", ".join(f"{k} {u}" for k, u in urls.items()))

            config, env_secrets = _write_config(logs, urls, redis_url, web_port, hook_secrets)
            env = {**os.environ, **env_secrets, "SMSQ_CONFIG": str(config), "REDIS_URL": redis_url}
            worker_metrics, scheduler_metrics = free_port(), free_port()
            _start(
                "worker",
                [
                    "worker",
                    "--processes",
                    str(workers),
                    "--threads",
                    "8",
                    "--metrics-port",
                    str(worker_metrics),
                ],
                env,
                logs,
                procs,
            )
            _start("web", ["web", "--port", str(web_port)], env, logs, procs)
            _start(
                "scheduler",
                ["scheduler", "--metrics-port", str(scheduler_metrics)],
                env,
                logs,
                procs,
            )
            wait_until_serving(f"http://127.0.0.1:{web_port}/health")
            print(f"worker, scheduler and web (http://127.0.0.1:{web_port}) running")
            print(
                "metrics: "
                + ", ".join(
                    f"{name} http://127.0.0.1:{port}/metrics"
                    for name, port in (
                        ("worker", worker_metrics),
                        ("scheduler", scheduler_metrics),
                        ("web", web_port),
                    )
                )
            )

            client = SmsqClient(redis_url, providers=None)
            jobs = _enqueue_samples(client, kinds, bulk, otp)
            total = sum(n for _, n in jobs)
            print(f"enqueued {len(jobs)} jobs, {total} recipients")
            started = time.monotonic()
            if not _follow(
                "dispatching:",
                client,
                jobs,
                lambda s: s != Status.QUEUED.value,
                procs,
                logs,
                TIMEOUT,
            ):
                return 1
            dispatched = time.monotonic() - started
            finals = {s.value for s in FINAL_STATUSES}
            if not _follow(
                "delivery reports (provider callbacks and status polling):",
                client,
                jobs,
                lambda s: s in finals,
                procs,
                logs,
                TIMEOUT,
            ):
                return 1
            _summary(client, jobs, urls, dispatched)
            return 0
        finally:
            for name, proc in reversed(procs):
                _stop(proc, name)


def _enqueue_samples(
    client: SmsqClient, kinds: list[str], bulk: int, otp: int
) -> list[tuple[str, int]]:
    bulk_numbers: list[str | int] = [
        f"+7 900 {i // 10000:03d}-{i % 10000:04d}" for i in range(bulk)
    ]
    bulk_numbers += ["12345", "+7 900 000-0000"]  # one impossible number, one duplicate
    route = f"{kinds[0]}-sandbox"
    jobs = [
        (
            client.enqueue_send(
                provider=route,
                sender=sandbox_account(kinds[0]).get("sender", "smsq"),
                text="Your December statement is ready. Reply STOP to opt out.",
                recipients=bulk_numbers,
                metadata={"campaign": "demo"},
            ),
            bulk + 1,
        )
    ]
    for i in range(otp):
        kind = kinds[i % len(kinds)]
        jobs.append(
            (
                client.enqueue_send(
                    provider=f"{kind}-sandbox",
                    sender=sandbox_account(kind).get("sender", "smsq"),
                    text=f"Your code is {100000 + i * 7919 % 900000}",
                    recipients=[f"+44 7400 123{i:03d}"],
                    priority="otp",
                    validity=300,
                ),
                1,
            )
        )
    return jobs


def _summary(
    client: SmsqClient, jobs: list[tuple[str, int]], urls: dict[str, str], dispatched: float
) -> None:
    totals: dict[str, int] = {}
    for job_id, _ in jobs:
        st = client.status(job_id)
        for status, n in (st.counts if st else {}).items():
            totals[status] = totals.get(status, 0) + n
    n = sum(totals.values())
    print(f"dispatched {n} recipients in {dispatched:.1f}s ({n / dispatched:.0f}/s)")
    print("recipients by status:")
    for status, count in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {status:<13} {count}")
    for kind, url in urls.items():
        with urllib.request.urlopen(url + "/__sandbox/requests", timeout=5) as resp:
            requests = json.load(resp)
        by_endpoint: dict[str, int] = {}
        for r in requests:
            name = r["path"].rstrip("/").rsplit("/", 1)[-1]
            by_endpoint[name] = by_endpoint.get(name, 0) + 1
        shown = ", ".join(f"{v} {k}" for k, v in sorted(by_endpoint.items(), key=lambda kv: -kv[1]))
        print(f"{kind} sandbox received: {shown}")
    print(f"events stream smsq:events: {client.redis.xlen(client.keys.events)} entries")
    bulk = client.status(jobs[0][0], recipients=True, limit=5)
    if bulk is not None:
        print("the bulk job, as `smsq status` shows it:")
        print("  " + format_status(bulk, limit=5).replace("\n", "\n  "))
    print("where to look next:")
    print("  smsq sandbox                      run the providers' sandboxes yourself")
    print("  smsq worker / web / scheduler     with SMSQ_CONFIG and REDIS_URL set (README)")
    print("  docs/wire-format.md               enqueue jobs, read events, from any language")
