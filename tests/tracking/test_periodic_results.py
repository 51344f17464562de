"""A periodic run that found its lease busy, or that the provider failed, is not counted ``ok``."""

from __future__ import annotations

from typing import Any

import redis

from tests.support.tracking import make_settings
from worker.core import metrics
from worker.tracking import runs


def run_count(task: str, result: str) -> float:
    value: float = metrics.SCHEDULED_RUNS.labels(task, result)._value.get()
    return value


def test_run_results() -> None:
    assert runs.run_result({"new": 0}) == "ok"
    assert runs.run_result({"skipped": 1}) == "skipped"
    assert runs.run_result({"failed": 1}) == "failed"
    assert runs.run_result({"errors": 1, "requests": 0}) == "failed"
    assert runs.run_result({"errors": 1, "requests": 2}) == "ok"


def test_busy_and_failed_incoming_and_balance_runs_are_counted_as_such(
    redis_url: str, redis_client: redis.Redis, make_worker: Any
) -> None:
    # The account's gateway refuses connections: every poll fails.
    settings = make_settings(redis_url, None, kinds=("smsc",))
    account = "smsc-sandbox"
    before = {
        (task, result): run_count(task, result)
        for task in ("incoming", "balance")
        for result in ("ok", "skipped", "failed")
    }
    worker = make_worker(settings)
    actors = worker.app.actors
    actors[runs.BALANCE_ACTOR].send(account)
    actors[runs.INCOMING_ACTOR].send(account)
    worker.join(timeout=60)
    # Another run holds the incoming lease.
    redis_client.set(runs.TrackingKeys("smsq").lock("incoming", account), "other", ex=60)
    actors[runs.INCOMING_ACTOR].send(account)
    worker.join(timeout=60)

    def delta(task: str, result: str) -> float:
        return run_count(task, result) - before[(task, result)]

    assert delta("balance", "failed") == 1 and delta("balance", "ok") == 0
    assert delta("incoming", "failed") == 1 and delta("incoming", "skipped") == 1
    assert delta("incoming", "ok") == 0
