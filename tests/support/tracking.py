"""Tracking helpers: settings over the sandboxes (or unreachable accounts), a started
runtime, a clock moved by hand, and finished jobs seeded straight into Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis

from producers.keys import Keys
from tests.support.sandboxes import SandboxThread
from worker.core.config import Settings, parse_settings
from worker.core.runtime import Runtime
from worker.devtools.sandboxes import sandbox_account

KEYS = Keys()
PHONES = ["447400123101", "447400123102", "447400123103"]


def make_settings(
    redis_url: str,
    sandboxes: SandboxThread | None,
    *,
    scheduler: dict[str, float] | None = None,
    limits: dict[str, dict[str, Any]] | None = None,
    kinds: tuple[str, ...] = ("intis",),
) -> Settings:
    """One account per running sandbox ('<kind>-sandbox'), or unreachable ones of ``kinds``."""
    accounts: dict[str, Any] = {}
    env: dict[str, str] = {}
    kinds = tuple(sandboxes.running) if sandboxes is not None else kinds
    for kind in kinds:
        creds = sandbox_account(kind)
        url = sandboxes.url(kind) if sandboxes is not None else "http://127.0.0.1:9"
        table: dict[str, Any] = {"kind": kind, "base_url": url, "timeout": 5.0}
        if creds.get("login"):
            table["login"] = creds["login"]
        for secret in ("password", "api_key"):
            if creds.get(secret):
                var = f"TEST_{kind.upper()}_{secret.upper()}"
                env[var] = creds[secret]
                table[secret] = {"env": var}
        if limits and kind in limits:
            table["limits"] = limits[kind]
        accounts[f"{kind}-sandbox"] = table
    data: dict[str, Any] = {
        "redis": {"url": redis_url},
        "accounts": accounts,
        "dispatch": {"backoff_initial": 0.05, "backoff_max": 0.5},
        "scheduler": scheduler or {},
    }
    return parse_settings(data, env)


@asynccontextmanager
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime(settings)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()
        rt.close()


def at(t0: float, offset: float) -> Callable[[], float]:
    return lambda: t0 + offset


def seed_job(
    client: redis.Redis,
    job: str,
    *,
    state: str,
    counts: dict[str, int],
    created_at: float,
    account: str = "intis-sandbox",
) -> None:
    client.hset(KEYS.job(job), mapping={"state": state, "created_at": created_at, "kind": "send"})
    client.zadd(KEYS.jobs, {job: created_at})
    if counts:
        client.hset(KEYS.counts(job), mapping=counts)
    n = 0
    for status, how_many in counts.items():
        for _ in range(how_many):
            n += 1
            pid = f"{job}{n:04d}"
            record = {"status": status, "account": account, "provider_message_id": pid}
            client.hset(KEYS.recipients(job), f"4474001{n:05d}", json.dumps(record))
            client.hset(KEYS.message_index(account), pid, f"{job}|4474001{n:05d}")


def records(client: redis.Redis, job_id: str) -> dict[str, dict[str, Any]]:
    return {k.decode(): json.loads(v) for k, v in client.hgetall(KEYS.recipients(job_id)).items()}
