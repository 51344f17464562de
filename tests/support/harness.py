"""What the chaos experiments share: a private Redis that can be stopped and brought back,
a sandbox whose request log says what the provider accepted, and the checks made after
every experiment (nothing lost, nothing sent twice, settled within the bound)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from producers.client import SmsqClient
from producers.status import FINAL_STATUSES
from tests.support.sandboxes import SandboxThread, accepted_phones
from worker.devtools.sandboxes import sandbox_account

FINAL = {s.value for s in FINAL_STATUSES}
SETTLED = FINAL | {"submitted", "unknown"}  # dispatched: nothing left for a worker to do
TOOK = {"submitted", "unknown", "delivered", "undeliverable", "expired"}  # may be at the provider


def numbers(n: int, block: int = 0) -> list[str]:
    """``n`` valid Russian mobile numbers (libphonenumber accepts them)."""
    return [f"+7916{block:02d}{i:05d}" for i in range(n)]


def wait_for(redis_url: str, timeout: float = 60.0) -> None:
    """Wait until Redis answers again (a restart)."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@dataclass
class Outcome:
    """What an experiment left behind."""

    counts: Counter[str] = field(default_factory=Counter)
    lost: int = 0  # recipients still queued (or missing) when the wait ended
    twice: int = 0  # numbers the provider accepted more than once
    accepted: int = 0  # numbers the provider accepted
    unrecorded: int = 0  # numbers the provider accepted that smsq does not show as sent
    settle_seconds: float = 0.0  # from the last fault until nothing was left queued


def progress(client: SmsqClient, job_ids: Iterable[str]) -> Counter[str]:
    total: Counter[str] = Counter()
    for job_id in job_ids:
        status = client.status(job_id)
        if status is not None:
            total.update(status.counts)
    return total


def wait_dispatched(client: SmsqClient, job_ids: list[str], expected: int, timeout: float) -> float:
    """Seconds until every recipient of the jobs left ``queued`` (or the timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            counts = progress(client, job_ids)
        except redis.RedisError:
            time.sleep(0.1)
            continue
        if sum(counts.values()) >= expected and not set(counts) - SETTLED:
            return time.monotonic() - started
        time.sleep(0.1)
    return time.monotonic() - started


def outcome(
    client: SmsqClient, job_ids: list[str], sandboxes: SandboxThread, kind: str, expected: int
) -> Outcome:
    result = Outcome()
    sent: set[str] = set()
    for job_id in job_ids:
        status = client.status(job_id, recipients=True)
        assert status is not None, job_id
        result.counts.update(status.counts)
        sent.update(r.phone.lstrip("+") for r in status.recipients if r.status in TOOK)
    result.lost = expected - sum(n for s, n in result.counts.items() if s in SETTLED)
    accepted = Counter(accepted_phones(sandboxes, kind))
    result.accepted = len(accepted)
    result.twice = sum(1 for n in accepted.values() if n > 1)
    result.unrecorded = len(set(accepted) - sent)
    return result


def write_config(
    path: Path, redis_url: str, sandboxes: SandboxThread, kind: str, extra: str = ""
) -> dict[str, str]:
    """A TOML configuration with one account on the sandbox; returns the environment to run
    ``smsq`` with."""
    creds = sandbox_account(kind)
    secret = "CHAOS_SANDBOX_KEY"
    field_name = "api_key" if creds.get("api_key") else "password"
    path.write_text(
        f"""
[redis]
url = "{redis_url}"

[accounts.{kind}-sandbox]
kind = "{kind}"
base_url = "{sandboxes.url(kind)}"
login = "{creds.get("login", "")}"
{field_name} = {{ env = "{secret}" }}
timeout = 5.0

[routes]
default = ["{kind}-sandbox"]
{extra}
"""
    )
    env = {**os.environ, "SMSQ_CONFIG": str(path), secret: creds[field_name]}
    env.pop("REDIS_URL", None)
    return env


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":  # a zombie is dead already
            found.append(int(entry.name))
    return sorted(found)


def start_worker(env: dict[str, str], processes: int, threads: int = 4) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.entry.cli",
            "worker",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_children(pid: int, n: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        kids = children(pid)
        if len(kids) >= n:
            return kids
        assert time.monotonic() < deadline, f"{len(kids)} of {n} worker processes"
        time.sleep(0.05)
