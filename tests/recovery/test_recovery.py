"""Recovery in seconds: a dead worker's messages are taken again within the configured bound,
a crashed worker process is restarted alone, and a stop is bounded by shutdown_timeout."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import redis

from producers.client import SmsqClient
from producers.wire import NAMESPACE
from tests.support.harness import (
    numbers,
    outcome,
    progress,
    start_worker,
    wait_children,
    wait_dispatched,
    write_config,
)
from tests.support.sandboxes import SandboxFactory, sandbox_settings, set_faults
from worker.core.config import WorkerSettings
from worker.entry.actors import create_app

FAST = {"heartbeat_timeout": 2.0, "maintenance_interval": 0.5}


def test_a_dead_workers_messages_are_taken_again_within_the_bound(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    """A worker fetched the job and died without a word: with Dramatiq's defaults its
    message waited 60 s and more (maintenance by chance); now heartbeat_timeout +
    maintenance_interval."""
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})
    settings = sandbox_settings(redis_url, sandboxes)
    settings = type(settings)(**{**settings.__dict__, "worker": WorkerSettings(**FAST)})
    client = SmsqClient(redis_url)
    job_id = client.enqueue_send(
        provider="intis", sender="smstest", text="dead", recipients=numbers(200)
    )
    dead = create_app(settings).broker
    fetched = dead.do_fetch("smsq-intake", 10)  # into the dead worker's acks set
    assert len(fetched) == 1
    assert redis_client.scard(f"{NAMESPACE}:__acks__.{dead.broker_id}.smsq-intake") == 1
    died = time.monotonic()
    make_worker(settings)
    settle = wait_dispatched(client, [job_id], 200, timeout=30)
    status = client.status(job_id)
    assert status is not None and status.state == "done", status
    bound = settings.worker.requeue_within
    print(f"\ndead worker's job settled {settle:.1f}s after it died (bound {bound:.1f}s)")
    assert time.monotonic() - died < bound + 5
    assert not redis_client.exists(f"{NAMESPACE}:__acks__.{dead.broker_id}.smsq-intake")


def test_a_crashed_process_is_restarted_alone_and_nothing_is_lost(
    redis_url: str, tmp_path: Path, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})
    sandboxes.call(set_faults(sandboxes, "intis", {"send.php": {"latency": 0.3}}))
    extra = "[worker]\nheartbeat_timeout = 3\nmaintenance_interval = 1\nrestart_delay = 0.2\n"
    env = write_config(tmp_path / "smsq.toml", redis_url, sandboxes, "intis", extra)
    group = start_worker(env, processes=2)
    try:
        first = wait_children(group.pid, 2)
        client = SmsqClient(redis_url)
        phones = numbers(4000)
        job_id = client.enqueue_send(
            provider="default", sender="smstest", text="crash", recipients=phones
        )
        deadline = time.monotonic() + 60
        while progress(client, [job_id]).get("submitted", 0) < 500:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(first[0], signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(0.1)
        assert group.poll() is None  # the supervisor goes on
        os.kill(first[1], 0)  # and so does the sibling
        now = wait_children(group.pid, 2, timeout=10)
        assert first[1] in now and first[0] not in now
        restarted = time.monotonic() - killed
        settle = wait_dispatched(client, [job_id], len(phones), timeout=60)
        result = outcome(client, [job_id], sandboxes, "intis", len(phones))
        after_kill = time.monotonic() - killed
        print(
            f"\nkill -9 of one of 2 processes: restarted in {restarted:.1f}s; "
            f"job settled {after_kill:.1f}s after the kill; {dict(result.counts)}"
        )
        assert result.lost == 0 and result.twice == 0 and result.unrecorded == 0
        assert settle < 60
    finally:
        group.send_signal(signal.SIGTERM)
        code = group.wait(timeout=60)
    assert code == 0


def test_sigterm_stops_within_the_bound_and_records_hung_requests_unknown(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, run_sandboxes: SandboxFactory
) -> None:
    """Provider requests hang: before, the stop waited on Dramatiq's 600 s; now
    shutdown_timeout, with the hung chunks recorded unknown (nothing left queued)."""
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})
    sandboxes.call(set_faults(sandboxes, "intis", {"send.php": {"timeout_rate": 1.0}}))
    extra = "[worker]\nshutdown_timeout = 3\n"
    env = write_config(tmp_path / "smsq.toml", redis_url, sandboxes, "intis", extra)
    text = (tmp_path / "smsq.toml").read_text().replace("timeout = 5.0", "timeout = 120.0")
    (tmp_path / "smsq.toml").write_text(text)
    group = start_worker(env, processes=1)
    try:
        client = SmsqClient(redis_url)
        phones = numbers(100)
        job_id = client.enqueue_send(
            provider="default", sender="smstest", text="hang", recipients=phones
        )
        deadline = time.monotonic() + 30
        while not any(
            (v or b"").startswith(b"sending")
            for v in redis_client.mget(list(redis_client.scan_iter("smsq:chunk:*")) or ["none"])
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        started = time.monotonic()
        group.send_signal(signal.SIGTERM)
        code = group.wait(timeout=30)
        took = time.monotonic() - started
        print(f"\nSIGTERM with hung requests: stopped in {took:.1f}s (bound 3s)")
        assert code == 0
        assert took < 3 + 3
        status = client.status(job_id, recipients=True)
        assert status is not None
        sending = [r for r in status.recipients if r.status == "unknown"]
        assert sending and all("reconciliation" in (r.reason or "") for r in sending)
        assert set(status.counts) <= {"unknown", "queued"}
        # What never left stays claimed for its redelivery: nothing is stranded.
        for key in redis_client.scan_iter("smsq:chunk:*"):
            value = redis_client.get(key) or b""
            assert value == b"done" or value.startswith(b"claimed"), value
    finally:
        if group.poll() is None:
            group.kill()
            group.wait()


def test_messages_a_live_worker_forgot_are_put_back(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    """Dramatiq forgets what a consumer had prefetched when it restarts after a Redis error;
    the ids stay in the live process's acks set. They go back on the timer."""
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})
    settings = sandbox_settings(redis_url, sandboxes)
    worker_settings = WorkerSettings(heartbeat_timeout=5.0, maintenance_interval=0.3)
    settings = type(settings)(**{**settings.__dict__, "worker": worker_settings})
    harness = make_worker(settings)
    broker = harness.app.broker
    client = SmsqClient(redis_url)
    # A job message taken off the queue into this live worker's acks set, then forgotten
    # (as a consumer restart does): nothing in the process holds it.
    broker.stopping = True  # keep the consumer from fetching it itself
    job_id = client.enqueue_send(
        provider="intis", sender="smstest", text="forgotten", recipients=numbers(60)
    )
    (message_id,) = redis_client.lrange(f"{NAMESPACE}:smsq-intake", 0, -1)
    redis_client.lrem(f"{NAMESPACE}:smsq-intake", 0, message_id)
    acks = f"{NAMESPACE}:__acks__.{broker.broker_id}.smsq-intake"
    redis_client.sadd(acks, message_id)
    broker.stopping = False
    settle = wait_dispatched(client, [job_id], 60, timeout=20)
    status = client.status(job_id)
    assert status is not None and status.state == "done", status
    print(f"\nforgotten message taken again after {settle:.1f}s")
