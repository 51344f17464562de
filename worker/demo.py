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
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from producers.cli import format_status
from producers.client import SmsqClient
from producers.status import Status
from worker.providers import known_kinds
from worker.redis_server import RedisServer, free_port
from worker.sandboxes import sandbox_account

TIMEOUT = 180.0


def _write_config(
    directory: Path, urls: dict[str, str], redis_url: str
) -> tuple[Path, dict[str, str]]:
    """A config pointing every account at its sandbox; secrets go by environment reference."""
    env: dict[str, str] = {}
    lines = ["[redis]", f'url = "{redis_url}"', ""]
    for kind, url in urls.items():
        account = sandbox_account(kind)
        lines += [f"[accounts.{kind}-sandbox]", f'kind = "{kind}"', f'base_url = "{url}"']
        if account.get("login"):
            lines.append(f'login = "{account["login"]}"')
        for secret in ("password", "api_key"):
            if account.get(secret):
                var = f"SMSQ_DEMO_{kind.upper()}_{secret.upper()}"
                env[var] = account[secret]
                lines.append(f'{secret} = {{ env = "{var}" }}')
        lines.append("")
    lines += ["[routes]", f'default = ["{next(iter(urls))}-sandbox"]', ""]
    path = directory / "smsq-demo.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, env


def _wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout}s") from None
            time.sleep(0.1)


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
        yield url
        return
    with RedisServer() as server:
        print(f"embedded Redis on {server.url}")
        yield server.url


def _bar(done: int, total: int, width: int = 40) -> str:
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def run_demo(*, bulk: int = 1000, otp: int = 5, workers: int = 1) -> int:
    kinds = known_kinds()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    with _redis() as redis_url, tempfile.TemporaryDirectory(prefix="smsq-demo-") as tmp:
        try:
            ports = {kind: free_port() for kind in kinds}
            sandbox_cmd = [sys.executable, "-m", "worker.cli", "sandbox", "--final-after", "1.0"]
            sandbox_cmd += [f"--port={k}={p}" for k, p in ports.items()]
            sandbox_cmd += [f"--option={k}.balance=100000000" for k in ports]  # never runs dry
            sandbox_log = open(Path(tmp) / "sandbox.log", "wb")  # noqa: SIM115
            procs.append(
                (
                    "sandbox",
                    subprocess.Popen(sandbox_cmd, stdout=sandbox_log, stderr=subprocess.STDOUT),
                )
            )
            urls = {k: f"http://127.0.0.1:{p}" for k, p in ports.items()}
            for url in urls.values():
                _wait_http(url + "/__sandbox/faults")
            print("sandboxes: " + ", ".join(f"{k} {u}" for k, u in urls.items()))

            config, secrets = _write_config(Path(tmp), urls, redis_url)
            env = {**os.environ, **secrets, "SMSQ_CONFIG": str(config), "REDIS_URL": redis_url}
            worker_log = open(Path(tmp) / "worker.log", "wb")  # noqa: SIM115
            worker_cmd = [
                sys.executable,
                "-m",
                "worker.cli",
                "worker",
                "--processes",
                str(workers),
                "--threads",
                "8",
            ]
            procs.append(
                (
                    "worker",
                    subprocess.Popen(
                        worker_cmd, env=env, stdout=worker_log, stderr=subprocess.STDOUT
                    ),
                )
            )

            client = SmsqClient(redis_url, providers=None)
            jobs = _enqueue_samples(client, kinds, bulk, otp)
            total = sum(n for _, n in jobs)
            print(f"enqueued {len(jobs)} jobs, {total} recipients; dispatching:")
            started = time.monotonic()
            done, shown = 0, -1
            while time.monotonic() - started < TIMEOUT:
                done = 0
                for job_id, _ in jobs:
                    st = client.status(job_id)
                    if st is not None:
                        done += sum(n for s, n in st.counts.items() if s != Status.QUEUED.value)
                if done != shown:
                    print("\r  " + _bar(done, total), end="", flush=True)
                    shown = done
                if done >= total:
                    break
                for name, proc in procs:
                    if proc.poll() is not None:
                        print(
                            f"\n{name} exited with code {proc.returncode}; its log:",
                            file=sys.stderr,
                        )
                        print(
                            (Path(tmp) / f"{name}.log").read_text(errors="replace")[-3000:],
                            file=sys.stderr,
                        )
                        return 1
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            print()
            if done < total:
                print(
                    f"timed out after {TIMEOUT:.0f}s with {total - done} recipients still queued",
                    file=sys.stderr,
                )
                return 1
            _summary(client, jobs, urls, elapsed)
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
                    recipients=[f"+44 7700 900{i:03d}"],
                    priority="otp",
                    validity=300,
                ),
                1,
            )
        )
    return jobs


def _summary(
    client: SmsqClient, jobs: list[tuple[str, int]], urls: dict[str, str], elapsed: float
) -> None:
    totals: dict[str, int] = {}
    for job_id, _ in jobs:
        st = client.status(job_id)
        for status, n in (st.counts if st else {}).items():
            totals[status] = totals.get(status, 0) + n
    n = sum(totals.values())
    print(f"dispatched {n} recipients in {elapsed:.1f}s ({n / elapsed:.0f}/s)")
    print("recipients by status:")
    for status, count in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {status:<13} {count}")
    for kind, url in urls.items():
        with urllib.request.urlopen(url + "/__sandbox/requests", timeout=5) as resp:
            requests = json.load(resp)
        print(f"{kind} sandbox received {len(requests)} HTTP requests")
    bulk = client.status(jobs[0][0], recipients=True, limit=5)
    if bulk is not None:
        print("the bulk job, as `smsq status` shows it:")
        print("  " + format_status(bulk, limit=5).replace("\n", "\n  "))
    print("where to look next:")
    print("  smsq sandbox                      run the providers' sandboxes yourself")
    print(
        "  smsq worker / smsq send / smsq status JOB_ID   with SMSQ_CONFIG and REDIS_URL set (README)"
    )
    print("  docs/wire-format.md               enqueue jobs from any language")
