"""The scheduler's cluster-wide gauges, read from Redis's real keys at scrape time: queue
backlog by state from Dramatiq's own lists and acknowledgement sets, the oldest waiting
message, dead letters, reconciliation lag, circuits, balances and limiter utilisation; and
the [metrics] settings, overridable from the environment like every other setting."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from producers.wire import build_message, write_message
from worker.core.config import ConfigError, Settings, parse_settings
from worker.entry.exposition import cluster_collector


def settings(redis_url: str, env: dict[str, str] | None = None, **metrics: Any) -> Settings:
    data: dict[str, Any] = {
        "redis": {"url": redis_url},
        "accounts": {
            "smsc-main": {"kind": "smsc", "base_url": "http://127.0.0.1:9", "login": "x"},
        },
    }
    if metrics:
        data["metrics"] = metrics
    return parse_settings(data, env or {})


def read(s: Settings, client: redis.Redis) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in cluster_collector(s, client).collect():
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def push(client: redis.Redis, queue: str, *, age: float = 0.0, eta_in: float | None = None) -> str:
    eta = int((time.time() + eta_in) * 1000) if eta_in is not None else None
    target, redis_id, body = build_message(queue, "dispatch_chunk", [], eta_ms=eta)
    data = json.loads(body)
    data["message_timestamp"] -= int(age * 1000)
    pipe = client.pipeline(transaction=True)
    write_message(pipe, target, redis_id, json.dumps(data))
    pipe.execute()
    return redis_id


def test_queue_backlog_by_state_and_oldest_age(redis_url: str, redis_client: redis.Redis) -> None:
    s = settings(redis_url)
    push(redis_client, "smsq-dispatch", age=40)
    push(redis_client, "smsq-dispatch", age=5)
    push(redis_client, "smsq-dispatch", eta_in=300)  # delayed, not due: not waiting
    due = push(redis_client, "smsq-dispatch", age=100, eta_in=-30)  # delayed, due 30 s ago
    # A worker fetched one ready message (Dramatiq: id moved to its acks set) and holds the
    # due delayed one in memory.
    worker = "host-a/123/0f0f"
    redis_client.zadd("dramatiq:__heartbeats__", {worker: int(time.time() * 1000)})
    taken = redis_client.lpop("dramatiq:smsq-dispatch")
    redis_client.sadd(f"dramatiq:__acks__.{worker}.smsq-dispatch", taken)
    redis_client.lrem("dramatiq:smsq-dispatch.DQ", 0, due)
    redis_client.sadd(f"dramatiq:__acks__.{worker}.smsq-dispatch.DQ", due)

    got = read(s, redis_client)
    depth = got["smsq_queue_messages"]
    assert depth[(("queue", "smsq-dispatch"), ("state", "ready"))] == 1
    assert depth[(("queue", "smsq-dispatch"), ("state", "unacked"))] == 1
    assert depth[(("queue", "smsq-dispatch"), ("state", "delayed"))] == 2
    assert depth[(("queue", "smsq-intake"), ("state", "ready"))] == 0
    age = got["smsq_queue_oldest_message_age_seconds"]
    # The ready one is 5 s old; the due delayed one has waited 30 s since its eta.
    assert 29 <= age[(("queue", "smsq-dispatch"),)] <= 40
    assert age[(("queue", "smsq-intake"),)] == 0


def test_accounts_dead_letters_lease_and_utilisation(
    redis_url: str, redis_client: redis.Redis
) -> None:
    s = settings(redis_url)
    now = time.time()
    redis_client.zadd("smsq:awaiting:smsc-main", {"m1": now - 120, "m2": now + 60})
    redis_client.hset(
        "smsq:account:smsc-main",
        mapping={"state": "paused", "reason": "no money", "balance": "12.5", "currency": "RUB"},
    )
    redis_client.hset("smsq:dlq", mapping={"a": "{}", "b": "{}"})
    seconds, micros = redis_client.time()
    now_us = int(seconds) * 1_000_000 + int(micros)
    # SMSC's default history rules: 3 a minute and 30 an hour; two permits used just now.
    redis_client.zadd("smsq:rl:smsc-main:history", {"p1": now_us - 1_000_000, "p2": now_us})
    got = read(s, redis_client)
    assert got["smsq_awaiting_messages"][(("account", "smsc-main"),)] == 2
    assert 119 <= got["smsq_reconcile_lag_seconds"][(("account", "smsc-main"),)] <= 130
    assert got["smsq_account_paused"][(("account", "smsc-main"),)] == 1
    assert got["smsq_account_balance"][(("account", "smsc-main"), ("currency", "RUB"))] == 12.5
    assert got["smsq_dead_letters_held"][()] == 2
    assert got["smsq_scheduler_lease_held"][()] == 0
    util = got["smsq_limiter_utilisation"]
    minute = (("account", "smsc-main"), ("endpoint", "history"), ("rule", "3/60s"))
    hour = (("account", "smsc-main"), ("endpoint", "history"), ("rule", "30/3600s"))
    assert util[minute] == pytest.approx(2 / 3)
    assert util[hour] == pytest.approx(2 / 30)
    redis_client.set("smsq:scheduler:lease", "someone")
    assert read(s, redis_client)["smsq_scheduler_lease_held"][()] == 1


def test_an_unreachable_redis_gives_no_samples_not_an_error(redis_url: str) -> None:
    s = settings("redis://127.0.0.1:1/0")
    client = redis.Redis.from_url(s.redis_url, socket_connect_timeout=1)
    assert list(cluster_collector(s, client).collect()) == []


def test_metrics_settings_and_environment_overrides(redis_url: str) -> None:
    s = settings(redis_url)
    assert (s.metrics.host, s.metrics.worker_port, s.metrics.scheduler_port) == (
        "127.0.0.1",
        9191,
        9192,
    )
    env = {
        "SMSQ__METRICS__HOST": "0.0.0.0",
        "SMSQ__METRICS__WORKER_PORT": "9300",
        "SMSQ__METRICS__SCHEDULER_PORT": "0",
        "SMSQ__WEB__HOST": "0.0.0.0",
    }
    s = settings(redis_url, env)
    assert (s.metrics.host, s.metrics.worker_port, s.metrics.scheduler_port) == (
        "0.0.0.0",
        9300,
        0,
    )
    assert s.web.host == "0.0.0.0"
    with pytest.raises(ConfigError) as err:
        settings(redis_url, worker_port=70000, host="", extra=1)
    problems = "\n".join(err.value.problems)
    assert "metrics.worker_port" in problems and "metrics.host" in problems
    assert "metrics.extra: unknown setting" in problems
