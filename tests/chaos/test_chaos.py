"""The chaos suite: smsq's processes and Redis are killed, stopped and starved mid-run, and
afterwards every recipient of every job is settled (final, submitted or ``unknown`` for
reconciliation), no number was accepted twice by the provider's sandbox (its own record),
every number the sandbox accepted is recorded as sent, and all of it within the bound after
the last fault.

Short form (part of ``make test``): one run of each experiment on a few thousand recipients.
``make chaos`` runs them longer; the environment sets the sizes:

| variable | short | meaning |
|---|---|---|
| ``SMSQ_CHAOS_RUNS`` | 1 | runs of each experiment |
| ``SMSQ_CHAOS_RECIPIENTS`` | 2000 | recipients per run |
| ``SMSQ_CHAOS_KILLS`` | 3 | kills (or restarts) per storm |
| ``SMSQ_CHAOS_INTERVAL`` | 1.5 | seconds between kills |
| ``SMSQ_CHAOS_HEARTBEAT`` | 5 | ``[worker] heartbeat_timeout`` (the default, 15, in ``make chaos``) |
| ``SMSQ_CHAOS_MAINTENANCE`` | 1 | ``[worker] maintenance_interval`` (the default, 5, in ``make chaos``) |
| ``SMSQ_CHAOS_REPORT`` | unset | a file to append one JSON line of figures per run to |

Every process group, Redis server and sandbox here is the test's own, on free ports.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from producers.client import SmsqClient
from tests.support.harness import (
    FINAL,
    children,
    numbers,
    outcome,
    progress,
    start_worker,
    wait_children,
    wait_dispatched,
    wait_for,
    write_config,
)
from tests.support.sandboxes import SandboxFactory, set_faults
from worker.devtools.redis_server import RedisServer

RUNS = int(os.environ.get("SMSQ_CHAOS_RUNS", "1"))
RECIPIENTS = int(os.environ.get("SMSQ_CHAOS_RECIPIENTS", "2000"))
KILLS = int(os.environ.get("SMSQ_CHAOS_KILLS", "3"))
INTERVAL = float(os.environ.get("SMSQ_CHAOS_INTERVAL", "1.5"))
HEARTBEAT = float(os.environ.get("SMSQ_CHAOS_HEARTBEAT", "5"))
MAINTENANCE = float(os.environ.get("SMSQ_CHAOS_MAINTENANCE", str(max(0.5, HEARTBEAT / 5))))
REPORT = os.environ.get("SMSQ_CHAOS_REPORT")
# A fault's work is settled within this long after it: requeue bound + a margin for the
# remaining sends of the job on a loaded machine (the row reports the time measured).
SETTLE_BOUND = 30.0
KIND = "intis"


@dataclass
class Row:
    experiment: str
    run: int
    recipients: int
    kills: int = 0
    restarts: int = 0
    faults: int = 0
    lost: int = 0
    twice: int = 0
    unrecorded: int = 0
    unknown: int = 0
    settle_seconds: float = 0.0  # from the last fault until nothing was left queued
    final_seconds: float = 0.0  # from the last fault until every recipient was final or unknown


class Lab:
    """One experiment's world: a private Redis with AOF, the sandbox, a worker group, a scheduler."""

    def __init__(
        self,
        tmp: Path,
        run_sandboxes: SandboxFactory,
        *,
        appendfsync: str = "everysec",
        latency: float = 0.5,
    ) -> None:
        self.redis = RedisServer(appendonly=True, appendfsync=appendfsync).start()
        self.sandboxes = run_sandboxes([KIND], **{KIND: {"balance": "1000000000"}})
        self.sandboxes.call(set_faults(self.sandboxes, KIND, {"send.php": {"latency": latency}}))
        extra = (
            f"[worker]\nheartbeat_timeout = {HEARTBEAT}\nmaintenance_interval = {MAINTENANCE}\n"
            "shutdown_timeout = 5\nstranded_after = 10\nrestart_delay = 0.2\n"
            "[scheduler]\nfirst_check = 1\nreconcile_interval = 1\nmax_check_interval = 2\n"
        )
        self.env = write_config(tmp / "smsq.toml", self.redis.url, self.sandboxes, KIND, extra)
        self.client = SmsqClient(self.redis.url)
        self.groups: list[subprocess.Popen[bytes]] = []
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "worker.entry.cli", "scheduler"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_group(self, processes: int = 3) -> subprocess.Popen[bytes]:
        group = start_worker(self.env, processes)
        self.groups.append(group)
        wait_children(group.pid, processes)
        return group

    def enqueue(self, n: int, block: int) -> tuple[list[str], int]:
        job = self.client.enqueue_send(
            provider="default", sender="smstest", text="chaos", recipients=numbers(n, block)
        )
        return [job], n

    def wait_submitted(self, jobs: list[str], at_least: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:  # dispatched: submitted, or final already
            counts = progress(self.client, jobs)
            if sum(counts.values()) - counts.get("queued", 0) >= at_least:
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.05)

    def settle(self, row: Row, jobs: list[str], n: int, last_fault: float) -> Row:
        wait_dispatched(self.client, jobs, n, timeout=SETTLE_BOUND + 60)
        row.settle_seconds = round(time.monotonic() - last_fault, 1)
        # Then reconciliation: every recipient final, or unknown with the reason.
        deadline = time.monotonic() + 90
        while "submitted" in progress(self.client, jobs) and time.monotonic() < deadline:
            time.sleep(0.2)
        row.final_seconds = round(time.monotonic() - last_fault, 1)
        result = outcome(self.client, jobs, self.sandboxes, KIND, n)
        row.lost, row.twice, row.unrecorded = result.lost, result.twice, result.unrecorded
        row.unknown = result.counts.get("unknown", 0)
        assert set(result.counts) <= FINAL | {"unknown"}, result.counts
        for job_id in jobs:
            status = self.client.status(job_id, recipients=True)
            assert status is not None
            unknown = [r for r in status.recipients if r.status == "unknown"]
            assert all("reconciliation" in (r.reason or "") for r in unknown), unknown[:3]
        return row

    def close(self) -> None:
        for p in [*self.groups, self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.groups, self.scheduler]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.redis.stop()


def record(row: Row) -> None:
    line = json.dumps(asdict(row))
    print(f"\nchaos {line}")
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    assert row.lost == 0, row
    assert row.twice == 0, row
    assert row.unrecorded == 0, row
    # 0: nothing was left when the fault ended (a graceful stop finished every chunk in
    # flight: with several chunks a message, a short job can be in flight as a whole).
    assert 0 <= row.settle_seconds <= SETTLE_BOUND, row


@pytest.fixture
def lab(tmp_path: Path, run_sandboxes: SandboxFactory) -> Iterator[Any]:
    """``lab(**options)``: a Lab; closed when the test ends (its sandbox stopped after)."""
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        labs.append(Lab(tmp_path, run_sandboxes, **kwargs))
        return labs[-1]

    yield make
    for one in labs:
        one.close()


@pytest.mark.parametrize("run", range(RUNS))
def test_kill_9_storm_of_worker_processes(lab: Any, run: int) -> None:
    """One of three worker processes killed with SIGKILL every INTERVAL seconds."""
    world = lab()
    group = world.start_group(3)
    jobs, n = world.enqueue(RECIPIENTS, run)
    world.wait_submitted(jobs, RECIPIENTS // 10)
    rng = random.Random(run)
    row = Row("kill -9 storm, one of 3 worker processes", run, n)
    for _ in range(KILLS):
        victim = rng.choice(children(group.pid))
        os.kill(victim, signal.SIGKILL)
        row.kills += 1
        time.sleep(INTERVAL)
    last = time.monotonic() - INTERVAL
    assert group.poll() is None  # the supervisor and the siblings went on
    wait_children(group.pid, 3, timeout=10)
    row.restarts = row.kills
    record(world.settle(row, jobs, n, last))


@pytest.mark.parametrize("run", range(RUNS))
def test_kill_9_storm_of_the_whole_group(lab: Any, run: int) -> None:
    """The whole worker group (supervisor and processes) killed with SIGKILL and started
    again, as a container restart policy does."""
    world = lab()
    group = world.start_group(2)
    jobs, n = world.enqueue(RECIPIENTS, 10 + run)
    world.wait_submitted(jobs, RECIPIENTS // 10)
    row = Row("kill -9 storm, whole worker group", run, n)
    for _ in range(KILLS):
        os.killpg(group.pid, signal.SIGKILL)
        group.wait()
        row.kills += 1
        group = world.start_group(2)
        row.restarts += 1
        time.sleep(INTERVAL)
    last = time.monotonic() - INTERVAL
    record(world.settle(row, jobs, n, last))


@pytest.mark.parametrize(
    ("how", "fsync"),
    [("shutdown", "everysec"), ("kill -9", "everysec"), ("kill -9", "always")],
)
def test_redis_stopped_mid_run(lab: Any, how: str, fsync: str) -> None:
    """Redis stopped for 2 s mid-run and started again on its AOF."""
    for run in range(RUNS):
        world = lab(appendfsync=fsync)
        world.start_group(2)
        jobs, n = world.enqueue(RECIPIENTS, 20 + run)
        world.wait_submitted(jobs, RECIPIENTS // 5)
        row = Row(f"Redis {how}, 2 s, AOF {fsync}", run, n)
        if how == "shutdown":
            world.redis.shutdown()
        else:
            world.redis.kill()
        time.sleep(2.0)
        world.redis.start()
        wait_for(world.redis.url)
        row.restarts = 1
        record(world.settle(row, jobs, n, time.monotonic()))


@pytest.mark.parametrize("run", range(RUNS))
def test_sigterm_mid_run_then_restart(lab: Any, run: int) -> None:
    world = lab()
    group = world.start_group(2)
    jobs, n = world.enqueue(RECIPIENTS, 30 + run)
    world.wait_submitted(jobs, RECIPIENTS // 5)
    row = Row("SIGTERM mid-run, then a new group", run, n)
    started = time.monotonic()
    os.kill(group.pid, signal.SIGTERM)
    assert group.wait(timeout=30) == 0
    stopped = time.monotonic() - started
    assert stopped < 5 + 5, stopped  # shutdown_timeout = 5
    row.kills = 1
    world.start_group(2)
    row.restarts = 1
    record(world.settle(row, jobs, n, time.monotonic()))


@pytest.mark.parametrize("run", range(RUNS))
def test_provider_hangs_and_errors(lab: Any, run: int) -> None:
    """The provider holds some requests past the client timeout and fails others."""
    world = lab(latency=0.1)
    faults = {"send.php": {"timeout_rate": 0.05, "error_rate": 0.1, "latency": 0.1}}
    world.sandboxes.call(set_faults(world.sandboxes, KIND, faults))
    text = Path(world.env["SMSQ_CONFIG"]).read_text().replace("timeout = 5.0", "timeout = 1.0")
    Path(world.env["SMSQ_CONFIG"]).write_text(text)
    world.start_group(2)
    jobs, n = world.enqueue(RECIPIENTS, 40 + run)
    row = Row("provider hangs (5 %) and HTTP 500s (10 %)", run, n)
    started = time.monotonic()
    wait_dispatched(world.client, jobs, n, timeout=120)
    log = world.sandboxes.log(KIND)
    row.faults = sum(1 for e in log if e.fault)
    assert row.faults > 0
    record(world.settle(row, jobs, n, started))
