"""The web process in-process and over HTTP: an event loop thread, ``create_web_app`` served on
127.0.0.1, plain HTTP calls, and the settings and secrets the web tests share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from worker.core.config import Settings, WebSettings, parse_settings
from worker.entry.web import AccessLogger, create_web_app

TOKENS = ("intake-token-one", "intake-token-two")


HOOK_SECRET = "hook-secret-0123456789"


class LoopThread:
    """An event loop in a background thread (the tests themselves stay synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class WebServer:
    """``create_web_app(settings)`` served on 127.0.0.1 from a loop thread."""

    def __init__(self, runner: web.AppRunner, url: str, caller: Any) -> None:
        self.runner = runner
        self.url = url
        self._caller = caller

    @classmethod
    def start(cls, caller: Any, settings: Settings, sock: socket.socket | None = None) -> WebServer:
        """Serve on ``sock`` (already bound) or a free port; ``caller`` has ``call(coro)``."""

        async def serve() -> tuple[web.AppRunner, str]:
            runner = web.AppRunner(
                create_web_app(settings),
                access_log=logging.getLogger("smsq.web.access"),
                access_log_class=AccessLogger,
            )
            await runner.setup()
            site: web.BaseSite
            if sock is not None:
                site = web.SockSite(runner, sock)
            else:
                site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            return runner, f"http://127.0.0.1:{port}"

        runner, url = caller.call(serve())
        return cls(runner, url, caller)

    def stop(self) -> None:
        """Clean the runner up (once; a second call does nothing)."""
        if self.runner.server is not None:
            self._caller.call(self.runner.cleanup())


def bound_socket(port: int = 0) -> socket.socket:
    """A listening socket (on a free port by default): its URL can be given out before the
    server starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def post_json(url: str, payload: Any, token: str | None = TOKENS[0]) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, body = http("POST", url, json.dumps(payload).encode(), headers)
    return status, json.loads(body) if body else None


def with_webhook_secrets(settings: Settings, secrets: dict[str, str]) -> Settings:
    accounts = {
        name: replace(acc, webhook_secret=secrets.get(name, acc.webhook_secret))
        for name, acc in settings.accounts.items()
    }
    return replace(settings, accounts=accounts)


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def plain_settings(redis_url: str, **web_options: Any) -> Settings:
    """One Intis account (not served: only the web side is exercised) with a webhook secret."""
    settings = parse_settings(
        {
            "redis": {"url": redis_url},
            "accounts": {
                "intis-main": {"kind": "intis", "base_url": "http://127.0.0.1:9"},
                "open-main": {"kind": "intis", "base_url": "http://127.0.0.1:9"},
            },
        },
        env={},
    )
    settings = with_webhook_secrets(settings, {"intis-main": HOOK_SECRET})
    return replace(settings, web=WebSettings(**web_options))


@contextlib.contextmanager
def served(loop_thread: LoopThread, settings: Settings) -> Iterator[WebServer]:
    server = WebServer.start(loop_thread, settings)
    try:
        yield server
    finally:
        server.stop()


def intis_push(
    url: str, account: str = "intis-main", key: str | None = HOOK_SECRET, **params: str
) -> tuple[int, bytes]:
    query = {"message-id": "4001", "state": "2", **params}
    if key is not None:
        query["key"] = key
    return http("GET", f"{url}/hooks/{account}?{urlencode(query)}")


class WebProcess:
    """A real ``smsq web`` process on a free port, configured by a TOML file.

    The file may name the secrets ``{ env = "WEB_TEST_HOOK_SECRET" }`` (:data:`HOOK_SECRET`)
    and ``{ env = "WEB_TEST_TOKEN" }`` (the first of :data:`TOKENS`)."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.stderr: str | None = None

    @classmethod
    def start(cls, config: Path, *, keep_stderr: bool = False) -> WebProcess:
        """Start it and wait until /health answers; ``keep_stderr``: :meth:`stop` returns what
        it wrote there (its access log)."""
        env = {
            **os.environ,
            "SMSQ_CONFIG": str(config),
            "WEB_TEST_HOOK_SECRET": HOOK_SECRET,
            "WEB_TEST_TOKEN": TOKENS[0],
        }
        env.pop("REDIS_URL", None)
        port = closed_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.entry.cli", "web", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL,
            text=True,
        )
        web = cls(process, f"http://127.0.0.1:{port}")
        try:

            def healthy() -> bool:
                try:
                    return http("GET", web.url + "/health")[0] == 200
                except OSError:
                    return process.poll() is not None

            wait_until(healthy, timeout=15, what="smsq web to answer")
            assert process.poll() is None
        except BaseException:
            web.stop()
            raise
        return web

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def stop(self) -> str:
        """SIGTERM and wait (once); returns what it wrote to stderr when that was kept."""
        if self.stderr is None:
            self.process.send_signal(signal.SIGTERM)
            _, stderr = self.process.communicate(timeout=15)
            self.stderr = stderr or ""
        return self.stderr
