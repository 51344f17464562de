"""The scheduler: one active instance, takeover after a crash, every slot run once, and jobs
through the real worker reaching final statuses by polling within the providers' caps."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory
from tests.support.tracking import make_settings
from worker.core import metrics
from worker.devtools.sandboxes import sandbox_account
from worker.providers.sandbox_kit import OutcomeMix
from worker.tracking.scheduler import Scheduler

FAST = {"lease_seconds": 1.0, "tick_seconds": 0.05, "reconcile_interval": 0.1}
QUIET = {"history_interval": 0.2, "incoming_interval": 0.2, "balance_interval": 0.5}


def queued(client: redis.Redis) -> list[tuple[str, tuple[Any, ...]]]:
    """(actor, args) of every message waiting on smsq-reconcile."""
    bodies = [json.loads(v) for v in client.hvals("dramatiq:smsq-reconcile.msgs")]
    out = []
    for b in bodies:
        (run,) = b["args"]  # one versioned dict (worker/core/messages.py)
        out.append((b["actor_name"], (run["account"], run["slot"])))
    return out


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(step)
    return time.monotonic() - started


def test_standby_takes_over_after_a_crash_and_no_slot_runs_twice(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_url, None, scheduler=FAST | QUIET, kinds=("intis", "smsc"))
    a = Scheduler(settings, identity="a").start()
    b = Scheduler(settings, identity="b").start()
    try:
        wait_for(lambda: a.is_leader or b.is_leader, 3)
        time.sleep(0.6)
        assert a.is_leader != b.is_leader  # exactly one active
        active, standby = (a, b) if a.is_leader else (b, a)
        claimed_before = active.claimed
        active.stop(release=False)  # a crash: the lease is left to expire
        takeover = wait_for(lambda: standby.is_leader, 3)
        time.sleep(0.6)
    finally:
        a.stop()
        b.stop()
    lease = settings.scheduler.lease_seconds
    print(f"\nstandby active {takeover:.3f}s after the crash (lease {lease}s)")
    assert takeover <= lease + 0.25  # one lease period, plus thread scheduling
    assert claimed_before > 0 and standby.claimed > 0

    messages = queued(redis_client)
    assert max(Counter(messages).values()) == 1  # no (actor, account, slot) twice
    assert len(messages) == a.claimed + b.claimed
    owners = Counter(v for k in redis_client.scan_iter("smsq:slot:*") if (v := redis_client.get(k)))
    assert set(owners) == {b"a", b"b"} and sum(owners.values()) == len(messages)
    tasks = {actor for actor, _ in messages}
    assert tasks == {
        "reconcile_account",
        "sweep_history",  # SMSC only: the adapter offers history
        "poll_incoming",
        "poll_balance",
        "sweep_retention",
        "sweep_stranded",
    }
    assert {args[0] for actor, args in messages if actor == "sweep_history"} == {"smsc-sandbox"}
    slots = sorted(
        args[1]
        for actor, args in messages
        if args[0] == "intis-sandbox" and actor == "reconcile_account"
    )
    gap = max(y - x for x, y in itertools.pairwise(slots)) - 1
    print(f"reconcile slots of {FAST['reconcile_interval']}s skipped during the takeover: {gap}")
    assert gap * FAST["reconcile_interval"] <= lease + 0.5


def test_two_instances_that_both_think_they_are_active_claim_each_slot_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_url, None, scheduler=FAST | QUIET)
    instances = [Scheduler(settings, identity=name) for name in ("a", "b", "c")]
    t0 = time.time()
    moments = [t0 + i * 0.03 for i in range(100)]

    def drive(s: Scheduler) -> None:
        for now in moments:
            s.run_due(now)

    threads = [threading.Thread(target=drive, args=(s,)) for s in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = sum(
        len({int(now // task.interval) for now in moments}) for task in instances[0].tasks
    )
    messages = queued(redis_client)
    assert len(messages) == expected == sum(s.claimed for s in instances)
    assert max(Counter(messages).values()) == 1


def test_a_clean_shutdown_hands_over_at_once(redis_url: str) -> None:
    settings = make_settings(redis_url, None, scheduler=FAST | QUIET)
    a = Scheduler(settings, identity="a").start()
    wait_for(lambda: a.is_leader, 3)
    b = Scheduler(settings, identity="b").start()
    try:
        time.sleep(0.2)
        assert not b.is_leader
        a.stop()  # releases the lease
        handover = wait_for(lambda: b.is_leader, 3)
    finally:
        a.stop()
        b.stop()
    assert handover < 0.3


def test_sigterm_stops_the_scheduler_and_releases_the_lease(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config = tmp_path / "smsq.toml"
    config.write_text(
        f"""
[redis]
url = "{redis_url}"

[accounts.main]
kind = "intellisoftware"
base_url = "http://127.0.0.1:9"

[scheduler]
lease_seconds = 30
reconcile_interval = 1
balance_interval = 3600
"""
    )
    env = {**os.environ, "SMSQ_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.entry.cli", "scheduler", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: redis_client.exists("smsq:scheduler:lease") == 1, 20, 0.05)
        assert redis_client.pttl("smsq:scheduler:lease") > 20_000
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert redis_client.exists("smsq:scheduler:lease") == 0  # released, not left to expire
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "released the lease" in stderr


def test_a_backlog_of_queued_runs_collapses_into_the_newest(
    redis_url: str, make_worker: Any
) -> None:
    settings = make_settings(redis_url, None, scheduler={"reconcile_interval": 1.0})
    scheduler = Scheduler(settings)
    scheduler.tasks = [t for t in scheduler.tasks if t.name == "reconcile"]
    t0 = time.time()
    for i in range(4):  # four slots queued while no worker ran
        scheduler.run_due(t0 + i)

    def runs(result: str) -> float:
        value: float = metrics.SCHEDULED_RUNS.labels("reconcile", result)._value.get()
        return value

    before = runs("ok"), runs("superseded")
    make_worker(settings).join(timeout=30)
    assert (runs("ok") - before[0], runs("superseded") - before[1]) == (1, 3)


def _error_9(body: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    items = data if isinstance(data, list) else [data]
    return any(isinstance(d, dict) and str(d.get("error_code")) == "9" for d in items)


def test_jobs_reach_final_statuses_by_polling_within_the_caps(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    # SMSC's caps with every window scaled by 0.05 (a minute is 3 s, an hour 180 s); the
    # account's limits scaled the same way, so the test takes seconds, not minutes.
    sandboxes = run_sandboxes(
        ["intis", "smsc"],
        mix=OutcomeMix(final_after=0.5, seed=7),
        intis={"balance": "10000000"},
        smsc={"balance": "10000000", "caps": 0.05},
    )
    scale = {
        "status": {"requests": 1, "per_seconds": 3.0},
        "history": [
            {"requests": 3, "per_seconds": 3.0},
            {"requests": 30, "per_seconds": 180.0},
        ],
        "incoming": {"requests": 3, "per_seconds": 3.0},
    }
    cfg = {
        "first_check": 1.0,
        "max_check_interval": 2.0,
        "reconcile_interval": 0.25,
        "tick_seconds": 0.05,
        "lease_seconds": 1.0,
        "history_interval": 1.0,
        "incoming_interval": 1.0,
        "balance_interval": 1.0,
    }
    settings = make_settings(redis_url, sandboxes, scheduler=cfg, limits={"smsc": scale})
    worker = make_worker(settings)
    client = SmsqClient(redis_url)
    jobs = {
        kind: client.enqueue_send(
            provider=f"{kind}-sandbox",
            sender=sandbox_account(kind)["sender"],
            text="polled",
            recipients=[f"+7916{i:07d}" for i in range(1000)],
        )
        for kind in ("intis", "smsc")
    }
    worker.join(timeout=60)
    started = time.monotonic()
    scheduler = Scheduler(settings).start()

    def settled() -> bool:
        for job in jobs.values():
            status = client.status(job)
            assert status is not None
            if status.state != "done" or any(
                status.counts.get(s) for s in ("queued", "submitted", "unknown")
            ):
                return False
        return True

    try:
        took = wait_for(settled, 30, 0.1)
    finally:
        scheduler.stop()
    print(f"\nall 2,000 recipients final {took:.1f}s after the scheduler started")
    for kind, job in jobs.items():
        status = client.status(job)
        assert status is not None
        delivered = status.counts.get("delivered", 0)
        assert sum(status.counts.values()) == 1000 and delivered > 800
        polls = [e for e in sandboxes.log(kind) if e.path.endswith("/status.php")]
        ratio = len(polls) / delivered
        print(
            f"{kind}: {len(polls)} status requests for {delivered} delivered "
            f"= {ratio:.4f} per delivered message (1/{1 / ratio:.0f}); counts {status.counts}"
        )
        assert ratio <= 1 / 20
    smsc_log = sandboxes.log("smsc")
    assert not [e for e in smsc_log if _error_9(e.body)], "SMSC answered error 9"
    status_times = [e.at for e in smsc_log if e.path.endswith("/status.php")]
    assert all(y - x >= 3.0 for x, y in itertools.pairwise(status_times))
    assert client.redis.hget("smsq:account:smsc-sandbox", "balance") is not None
    assert time.monotonic() - started < 30


def test_smsc_caps_hold_while_status_history_and_incoming_are_polled(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    """Statuses that need several polls, unknown recipients the history sweep keeps looking
    for, incoming polls: SMSC (caps scaled to a 3 s minute) never answers error 9."""
    sandboxes = run_sandboxes(
        ["smsc"], mix=OutcomeMix(final_after=2.5, seed=9), smsc={"balance": "1e7", "caps": 0.05}
    )
    scale = {
        "status": {"requests": 1, "per_seconds": 3.0},
        "history": [
            {"requests": 3, "per_seconds": 3.0},
            {"requests": 30, "per_seconds": 180.0},
        ],
        "incoming": {"requests": 3, "per_seconds": 3.0},
    }
    cfg = {
        "first_check": 0.5,
        "max_check_interval": 1.0,
        "reconcile_interval": 0.2,
        "tick_seconds": 0.05,
        "history_interval": 0.5,
        "incoming_interval": 0.5,
        "balance_interval": 60.0,
    }
    settings = make_settings(redis_url, sandboxes, scheduler=cfg, limits={"smsc": scale})
    worker = make_worker(settings)
    client = SmsqClient(redis_url)
    # Chunk 1 of this job is found sending (its worker died mid-request): unknown.
    redis_client.set("smsq:chunk:caps-job:1", "sending:smsc-sandbox:dead-worker")
    job = client.enqueue_send(
        provider="smsc-sandbox",
        sender="SMSC.ru",
        text="caps",
        recipients=[f"+7903{i:07d}" for i in range(300)],
        job_id="caps-job",
    )
    worker.join(timeout=60)
    scheduler = Scheduler(settings).start()

    def settled() -> bool:
        status = client.status(job)
        return status is not None and not status.counts.get("submitted")

    try:
        took = wait_for(settled, 30, 0.1)
        time.sleep(max(0.0, 5.0 - took))  # keep the history sweep and incoming polls going
    finally:
        scheduler.stop()
    status = client.status(job)
    assert status is not None and status.counts.get("unknown") == 100
    log = sandboxes.log("smsc")
    kinds = Counter(
        "status"
        if e.path.endswith("/status.php")
        else "history"
        if e.params.get("get_messages") == "1"
        else "incoming"
        if e.params.get("get_answers") == "1"
        else e.path.rsplit("/", 1)[-1]
        for e in log
    )
    print(f"\nSMSC requests while reconciling: {dict(kinds)}; final after {took:.1f}s")
    assert kinds["status"] >= 2 and kinds["history"] >= 3 and kinds["incoming"] >= 3
    assert not [e for e in log if _error_9(e.body)], "SMSC answered error 9"


async def test_a_run_lease_renews_itself_while_held(redis_url: str) -> None:
    import redis.asyncio as aredis

    from worker.state.lease import AsyncLease

    client = aredis.Redis.from_url(redis_url)
    lease = AsyncLease(client, "smsq:lock:test", 0.3)
    assert await lease.acquire()
    await asyncio.sleep(0.8)  # well past its length: still held, renewed
    assert not await AsyncLease(client, "smsq:lock:test", 0.3).acquire()
    assert await lease.release()
    successor = AsyncLease(client, "smsq:lock:test", 0.3)
    assert await successor.acquire()
    await successor.release()
    await client.aclose()
