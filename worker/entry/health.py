"""Health checks of every smsq process, for ``smsq health`` and the ``/healthz`` endpoints.

- Redis: answers PING within a few seconds.
- worker: a Dramatiq heartbeat of this host (or of one worker instance) is younger than
  ``[worker] heartbeat_timeout``. Every worker process writes ``dramatiq:__heartbeats__``
  (broker id -> time, milliseconds) from a thread, busy or not (worker.recovery.dead_workers); smsq's
  broker ids start with ``<hostname>/<supervisor pid>/``.
- scheduler: some scheduler instance holds the lease ``<prefix>:scheduler:lease``.

Each check returns ``(ok, detail)``; details never carry a secret (URLs are shown without
their password).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import redis

from producers import redis_conn
from producers.keys import Keys
from producers.wire import NAMESPACE
from worker.core.config import Settings, safe_url

HEARTBEAT_FRESH = 15.0  # seconds, when no [worker] heartbeat_timeout is at hand
REDIS_TIMEOUT = 3.0
INSTANCE_ENV = "SMSQ_WORKER_INSTANCE"

Checks = dict[str, dict[str, Any]]


def host_name() -> str:
    """This host's name as it appears in broker ids (no '/', no glob characters)."""
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in socket.gethostname())


def instance_id() -> str:
    """The prefix of this worker instance's broker ids: ``<hostname>/<supervisor pid>``."""
    return os.environ.get(INSTANCE_ENV) or f"{host_name()}/{os.getpid()}"


def client_for(settings: Settings) -> redis.Redis:
    return redis_conn.sync_client(
        settings.redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )


def check_redis(client: redis.Redis, settings: Settings) -> tuple[bool, str]:
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return False, f"Redis at {safe_url(settings.redis_url)} unreachable ({why})"
    return True, "reachable"


def heartbeats(client: redis.Redis, prefix: str) -> list[tuple[str, float]]:
    """(broker id, seconds since its heartbeat) of the worker processes whose id starts so."""
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    out = []
    rows: Any = client.zrange(f"{NAMESPACE}:__heartbeats__", 0, -1, withscores=True)
    for member, score in rows:
        name = member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)
        if name.startswith(prefix):
            out.append((name, max(0.0, (now_ms - float(score)) / 1000)))
    return out


def check_heartbeat(
    client: redis.Redis, prefix: str, fresh_within: float = HEARTBEAT_FRESH
) -> tuple[bool, str]:
    beats = heartbeats(client, prefix)
    fresh = [age for _, age in beats if age <= fresh_within]
    if fresh:
        return True, f"{len(fresh)} worker processes heartbeating (newest {min(fresh):.1f}s ago)"
    if beats:
        newest = min(age for _, age in beats)
        return False, f"last heartbeat of {prefix.rstrip('/')} {newest:.0f}s ago"
    return False, f"no heartbeat from {prefix.rstrip('/')} in Redis"


def check_lease(client: redis.Redis, settings: Settings) -> tuple[bool, str]:
    holder = client.get(Keys(settings.key_prefix).scheduler_lease)
    if holder is None:
        return False, "no scheduler holds the lease"
    name = holder.decode("utf-8", "replace") if isinstance(holder, bytes) else str(holder)
    return True, f"held by {name[:80]}"


def _run(client: redis.Redis, settings: Settings, checks: dict[str, Any]) -> tuple[bool, Checks]:
    out: Checks = {}
    ok, detail = check_redis(client, settings)
    out["redis"] = {"ok": ok, "detail": detail}
    for name, check in checks.items():
        if not ok:
            out[name] = {"ok": False, "detail": "not checked: Redis unreachable"}
            continue
        try:
            passed, detail = check()
        except (redis.RedisError, OSError) as exc:
            passed, detail = False, f"Redis error: {type(exc).__name__}"
        out[name] = {"ok": passed, "detail": detail}
    return all(c["ok"] for c in out.values()), out


def run_checks(
    settings: Settings, process: str | None, *, client: redis.Redis | None = None
) -> tuple[bool, Checks]:
    """The checks of ``smsq health [--process P]`` (None: the whole deployment)."""
    own = client is None
    client = client or client_for(settings)
    try:
        checks: dict[str, Any] = {}
        if process in (None, "worker"):
            prefix = f"{host_name()}/" if process == "worker" else ""
            fresh = settings.worker.heartbeat_timeout
            checks["worker_heartbeat"] = lambda: check_heartbeat(client, prefix, fresh)
        if process in (None, "scheduler"):
            checks["scheduler_lease"] = lambda: check_lease(client, settings)
        return _run(client, settings, checks)
    finally:
        if own:
            client.close()


def worker_checks(settings: Settings, instance: str) -> tuple[bool, Checks]:
    """``/healthz`` of one worker instance: Redis, and its own processes' heartbeats."""
    client = client_for(settings)
    try:
        return _run(
            client,
            settings,
            {
                "worker_heartbeat": lambda: check_heartbeat(
                    client, f"{instance}/", settings.worker.heartbeat_timeout
                )
            },
        )
    finally:
        client.close()


def scheduler_checks(
    settings: Settings, client: redis.Redis, alive: Any = None
) -> tuple[bool, Checks]:
    """``/healthz`` of a scheduler: Redis, some scheduler holding the lease, its loop running."""
    checks: dict[str, Any] = {"scheduler_lease": lambda: check_lease(client, settings)}
    if alive is not None:
        checks["loop"] = alive
    return _run(client, settings, checks)
