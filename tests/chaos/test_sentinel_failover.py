"""Redis Sentinel failover mid-run: a real primary, replica and three sentinels.

A job is dispatching when the primary is killed (kill -9). The worker (broker, state,
limiter), the scheduler and the web process all reach Redis through the Sentinel URL;
after the sentinels promote the replica they follow the new primary. Afterwards every
recipient is final, submitted or unknown (reconciliation settles those), none was
accepted twice by the provider, and none the provider took is missing from smsq's
records. Short form in ``make test``; ``SMSQ_CHAOS_LONG=1`` (``make chaos``) runs a
larger job and more kills.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from producers import redis_conn
from producers.client import SmsqClient
from tests.support.harness import numbers, outcome, progress, wait_dispatched
from tests.support.sandboxes import SandboxFactory, sandbox_settings, set_faults
from tests.support.sentinel import MASTER, SentinelCluster, sentinel_available
from tests.support.web import WebServer, http
from worker.core.config import WorkerSettings
from worker.tracking.scheduler import Scheduler

LONG = os.environ.get("SMSQ_CHAOS_LONG") == "1"
RECIPIENTS = 6000 if LONG else 1500
ROUNDS = 2 if LONG else 1  # failovers per run (each kills the current primary)

pytestmark = pytest.mark.skipif(sentinel_available() is not None, reason=str(sentinel_available()))


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    c = SentinelCluster(down_after_ms=2000).start()
    yield c
    c.stop()


def diagnose(url: str, job_id: str) -> dict[str, Any]:
    """Where the recipients still queued are: chunk states, in-flight notes, queues."""
    r = redis_conn.sync_client(url)
    try:
        chunks = {
            k.decode(): (r.get(k) or b"").decode()
            for k in r.scan_iter(match=f"smsq:chunk:{job_id}:*", count=1000)
        }
        not_done = {k: v for k, v in chunks.items() if v != "done"}
        inflight = {k.decode(): v.decode()[:200] for k, v in r.hgetall("smsq:inflight").items()}
        queues = {
            k.decode(): (
                r.llen(k)
                if r.type(k) == b"list"
                else r.hlen(k)
                if r.type(k) == b"hash"
                else r.scard(k)
                if r.type(k) == b"set"
                else r.zcard(k)
            )
            for k in r.scan_iter(match="dramatiq:*", count=1000)
        }
        return {
            "chunks": len(chunks),
            "not_done": not_done,
            "inflight": inflight,
            "queues": queues,
            "job": {k.decode(): v.decode() for k, v in r.hgetall(f"smsq:job:{job_id}").items()},
        }
    finally:
        r.close()


def restart_killed(cluster: SentinelCluster, port: int) -> None:
    """Bring a killed node back: the sentinels make it a replica of the new master."""
    node = cluster.node_on(port)
    node.start()
    node.wait_up()
    # It comes back empty (no persistence here): only once it is a synced replica of the
    # new master may it stand for promotion again.
    deadline = time.monotonic() + 30
    client = node.client()
    try:
        while True:
            try:
                info = client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") == "up":
                    return
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "the old primary did not rejoin as a replica"
            time.sleep(0.1)
    finally:
        client.close()


def test_failover_mid_run_loses_nothing_and_sends_nothing_twice(
    cluster: SentinelCluster,
    make_worker: Any,
    tmp_path: Any,
    run_sandboxes: SandboxFactory,
    start_scheduler: Callable[..., Scheduler],
    start_web: Callable[..., WebServer],
) -> None:
    url = cluster.url
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})  # never runs dry
    figures: dict[str, Any] = {"recipients": RECIPIENTS, "failovers": ROUNDS}
    settings = sandbox_settings(url, sandboxes, scheduler={"reconcile_interval": 1.0})
    settings = replace(
        settings,
        worker=WorkerSettings(heartbeat_timeout=5.0, maintenance_interval=1.0, stranded_after=5.0),
    )
    assert redis_conn.is_sentinel(settings.redis_url)
    # Each request takes a little while, so the job is mid-run when the primary dies.
    sandboxes.call(set_faults(sandboxes, "intis", {"*": {"latency": 0.02}}))
    make_worker(settings)  # worker: broker, state and limiter through the Sentinel URL
    scheduler = start_scheduler(settings, identity="chaos")
    web = start_web(settings)
    client = SmsqClient(url)
    job_ids = [
        client.enqueue_send(
            provider="intis-sandbox",
            sender="smstest",
            text="failover",
            recipients=numbers(RECIPIENTS, block=11),
        )
    ]
    settle = []
    fault_times = []
    for round_no in range(ROUNDS):
        # Wait until part of the job is out, then kill the primary.
        target = RECIPIENTS * (round_no + 1) // (ROUNDS + 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                counts = progress(client, job_ids)
            except redis.RedisError:
                counts = None
            if counts is not None and sum(n for s, n in counts.items() if s != "queued") >= target:
                break
            time.sleep(0.05)
        old_port, killed_at = cluster.kill_master()
        fault_times.append(killed_at)
        failover = cluster.wait_failover(old_port)
        settle.append(failover)
        if round_no < ROUNDS - 1:
            restart_killed(cluster, old_port)  # the next failover needs a replica
    # The web process answers from the new primary.
    deadline = time.monotonic() + 30
    while http("GET", web.url + "/health")[0] != 200:
        assert time.monotonic() < deadline, "web did not follow the new primary"
        time.sleep(0.1)
    wait_dispatched(client, job_ids, RECIPIENTS, timeout=120)
    figures["settle_after_last_fault_s"] = round(time.monotonic() - fault_times[-1], 1)
    figures["failover_s"] = [round(s, 1) for s in settle]
    result = outcome(client, job_ids, sandboxes, "intis", RECIPIENTS)
    figures.update(
        lost=result.lost,
        twice=result.twice,
        accepted=result.accepted,
        unrecorded=result.unrecorded,
        counts=dict(result.counts),
    )
    # The scheduler holds its lease on the new primary and keeps claiming slots.
    claimed = scheduler.claimed
    deadline = time.monotonic() + 20
    while not (scheduler.is_leader and scheduler.claimed > claimed):
        assert time.monotonic() < deadline, "scheduler did not follow the new primary"
        time.sleep(0.1)
    if result.lost:
        figures["diagnosis"] = diagnose(url, job_ids[0])
    (tmp_path / "figures.json").write_text(json.dumps(figures))
    print("sentinel failover figures:", json.dumps(figures))
    assert result.lost == 0, figures
    assert result.twice == 0, figures
    assert result.unrecorded == 0, figures
    # The master is now the former replica (or, after two rounds, the first primary).
    master = redis_conn.sync_client(url)
    try:
        assert master.info("replication")["role"] == "master"
        assert master.hget(f"smsq:job:{job_ids[0]}", "state") is not None
    finally:
        master.close()
    assert MASTER
