"""What every route of the web process shares: the application's keys, and request bodies
read within bounds (size, time, JSON nesting) before anything else looks at them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aredis
from aiohttp import web
from redis.exceptions import RedisError

from producers.errors import InputError
from worker.core.config import Settings

SETTINGS_KEY = web.AppKey("smsq_settings", Settings)
REDIS_KEY = web.AppKey("smsq_redis", aredis.Redis)
REDIS_ERRORS = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)


MAX_JSON_DEPTH = 32  # nesting a JSON body may have (a job needs 3; metadata a few more)


class BodyTooLarge(InputError):
    pass


class BodyTooSlow(InputError):
    pass


async def read_body(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, or BodyTooLarge past ``limit`` bytes (checked before reading), or
    BodyTooSlow when it has not all arrived within ``timeout`` seconds."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.read(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge()
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow() from None
    return b"".join(chunks)


def too_large(limit: int) -> web.Response:
    return web.json_response({"error": f"body larger than {limit} bytes"}, status=413)


def too_slow(timeout: float) -> web.Response:
    # The rest of the body is not read: close the connection rather than drain it.
    return web.json_response(
        {"error": f"body not received within {timeout:g} s"},
        status=408,
        headers={"Connection": "close"},
    )


def json_depth(value: Any, limit: int) -> int:
    """The nesting depth of a decoded JSON value, counted up to ``limit + 1`` (no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def json_body_problem(body: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why a body that looks like JSON (starts with ``{`` or ``[``) is refused: nested deeper
    than ``limit``. None otherwise (other bodies, and invalid JSON, are the reader's business)."""
    head = body.lstrip()[:1]
    if head not in (b"{", b"["):
        return None
    try:
        value = json.loads(body)
    except RecursionError:
        return f"JSON nested deeper than {limit} levels"
    except ValueError:
        return None
    if json_depth(value, limit) > limit:
        return f"JSON nested deeper than {limit} levels"
    return None


def app_redis(request: web.Request) -> aredis.Redis:
    return request.app[REDIS_KEY]
