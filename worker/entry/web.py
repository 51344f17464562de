"""The web process (``smsq web``): provider pushes, health, and the optional HTTP intake.

Routes:

- ``/hooks/{account}`` and ``/hooks/{account}/{tail}``, any method: a provider's push,
  received by :func:`worker.pushes.receive.receive_push` (stored, then answered).
- ``GET /health``: 200 ``{"redis": "ok", ...}`` when Redis answers, else 503.
- ``GET /healthz``: 200 ``{"ok": true, "checks": {"redis": ...}}`` (503 when not), like the
  worker's and the scheduler's metrics ports; ``GET /metrics``: this process's metrics
  (``smsq_pushes_received_total`` and the Python process collectors).
- ``POST /v1/jobs`` (only with ``[web] intake_tokens``): ``Authorization: Bearer <token>``
  (401 otherwise), a JSON job payload (docs/wire-format.md) validated like the worker does
  (422 ``{"errors": [...]}``), enqueued on the intake queue (state ``pending`` until a
  worker takes it): 202 ``{"job_id": ...}``.
- ``GET /v1/jobs/{job_id}`` (same tokens): the job's state and counts, 200; ``pending`` for a
  job enqueued and not yet taken by a worker; 404 for no such job. ``?recipients=N`` adds up
  to N recipient rows, numbers masked unless ``&show_numbers=1``.

Logs never carry a phone number, a secret, a token, a query string or a body: the access
log shows method, path, status and time only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aredis
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from producers import redis_conn
from producers.client import AsyncSmsqClient
from producers.contract import JobRejected, RejectedRecipient, validate_job
from producers.keys import Keys
from producers.wire import INTAKE_ACTOR, build_message, intake_queue, mark_pending, write_message
from worker.core import logs
from worker.core.config import ConfigError, Settings, load_settings
from worker.core.http_input import (
    MAX_JSON_DEPTH,
    REDIS_ERRORS,
    REDIS_KEY,
    SETTINGS_KEY,
    BodyTooLarge,
    BodyTooSlow,
    app_redis,
    json_depth,
    read_body,
    too_large,
    too_slow,
)
from worker.providers import push_auth
from worker.pushes import apply as stored
from worker.pushes.receive import receive_push

log = logging.getLogger("smsq.web")

HEALTH_TIMEOUT = 2.0


# --------------------------------------------------------------------------- health


async def health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    client = app_redis(request)
    keys = Keys(settings.key_prefix)
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await client.ping()
            inbox = int(await client.hlen(stored.inbox_key(keys)))
            queued = int(await client.llen(f"dramatiq:{stored.WEBHOOK_QUEUE}"))
    except REDIS_ERRORS as exc:
        return web.json_response({"redis": "error", "error": type(exc).__name__}, status=503)
    return web.json_response(
        {
            "redis": "ok",
            "accounts": len(settings.accounts),
            "intake": bool(settings.web.intake_tokens),
            "inbox": inbox,
            "webhook_queue": queued,
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """The same body as the worker's and scheduler's ``/healthz``: ``{"ok", "checks"}``."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await app_redis(request).ping()
        check = {"ok": True, "detail": "reachable"}
    except REDIS_ERRORS as exc:
        check = {"ok": False, "detail": f"unreachable: {type(exc).__name__}"}
    ok = bool(check["ok"])
    return web.json_response({"ok": ok, "checks": {"redis": check}}, status=200 if ok else 503)


async def metrics_page(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# --------------------------------------------------------------------------- HTTP intake


def _authorized(header: str, tokens: tuple[str, ...]) -> bool:
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    given = presented.strip().encode("utf-8")
    ok = False
    for token in tokens:  # every token compared, in constant time each
        ok |= hmac.compare_digest(given, token.encode("utf-8"))
    return ok


def _rejected(rejected: list[RejectedRecipient]) -> list[dict[str, Any]]:
    return [{"index": r.index, "reason": r.reason} for r in rejected]


async def post_job(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if not _authorized(request.headers.get("Authorization", ""), settings.web.intake_tokens):
        return _unauthorized()
    limit = settings.web.max_body_bytes
    try:
        body = await read_body(request, limit, settings.web.body_timeout)
    except BodyTooLarge:
        return too_large(limit)
    except BodyTooSlow:
        return too_slow(settings.web.body_timeout)
    try:
        payload = json.loads(body)
    except RecursionError:
        return web.json_response(
            {"errors": [f"the body is JSON nested deeper than {MAX_JSON_DEPTH} levels"]},
            status=400,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        return web.json_response({"errors": [f"the body is not JSON: {exc}"]}, status=400)
    if json_depth(payload, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return web.json_response(
            {"errors": [f"the body is JSON nested deeper than {MAX_JSON_DEPTH} levels"]},
            status=400,
        )
    try:
        job = validate_job(
            payload, providers=settings.provider_names(), numbers=settings.intake.accept_numbers
        )
    except JobRejected as exc:
        return web.json_response({"errors": list(exc.reasons)}, status=422)
    assert isinstance(payload, dict)  # validate_job accepts objects only
    # The worker validates the payload again: give it the id we answer with.
    payload = {**payload, "job_id": job.job_id}
    target, redis_id, message = build_message(intake_queue(job.priority), INTAKE_ACTOR, [payload])
    try:
        pipe = app_redis(request).pipeline(transaction=True)
        mark_pending(pipe, Keys(settings.key_prefix).pending(job.job_id), job.kind)
        write_message(pipe, target, redis_id, message)
        await pipe.execute()
    except REDIS_ERRORS as exc:
        log.error("job not enqueued, answered 503: %s", type(exc).__name__)
        return web.json_response({"errors": ["temporarily unavailable, retry"]}, status=503)
    return web.json_response(
        {
            "job_id": job.job_id,
            "recipients": len(job.recipients),
            "rejected": _rejected(list(job.rejected)),
        },
        status=202,
    )


def _unauthorized() -> web.Response:
    return web.json_response(
        {"errors": ["missing or wrong bearer token"]},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="smsq"'},
    )


async def get_job(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if not _authorized(request.headers.get("Authorization", ""), settings.web.intake_tokens):
        return _unauthorized()
    job_id = request.match_info["job_id"]
    try:
        limit = int(request.query.get("recipients", "0"))
    except ValueError:
        return web.json_response({"errors": ["recipients must be a whole number"]}, status=400)
    limit = max(0, min(limit, MAX_ROWS))
    show_numbers = request.query.get("show_numbers", "") in ("1", "true", "yes")
    client = AsyncSmsqClient(client=app_redis(request), prefix=settings.key_prefix)
    try:
        status = await client.status(job_id, recipients=limit > 0, limit=limit or None)
    except REDIS_ERRORS as exc:
        log.error("job status not read, answered 503: %s", type(exc).__name__)
        return web.json_response({"errors": ["temporarily unavailable, retry"]}, status=503)
    if status is None:
        return web.json_response({"errors": [f"no job {job_id!r}"]}, status=404)
    body: dict[str, Any] = {
        "job_id": status.job_id,
        "state": status.state,
        "counts": dict(status.counts),
        "record": {k: v for k, v in status.record.items() if k in JOB_FIELDS},
    }
    if status.reasons:
        body["reasons"] = status.reasons
    if limit:
        rows = [r if show_numbers else r.masked() for r in status.recipients]
        body["recipients"] = [{k: v for k, v in r.__dict__.items() if v is not None} for r in rows]
    return web.json_response(body)


MAX_ROWS = 10_000  # recipient rows one GET /v1/jobs/{id} returns at most
# The job record's fields a status answer shows (docs/wire-format.md, "Reading the outcome").
JOB_FIELDS = frozenset(
    {
        "kind",
        "provider",
        "accounts",
        "priority",
        "recipients",
        "valid",
        "rejected",
        "duplicates",
        "chunks",
        "chunks_done",
        "created_at",
        "finished_at",
        "cancelled_at",
        "enqueued_at",
        "sender",
        "encoding",
        "parts",
        "scheduled_at",
        "validity",
        "callback_url",
    }
)


# --------------------------------------------------------------------------- application


class AccessLogger(AbstractAccessLogger):
    """Method, path, status, duration: never the query string (it may carry a secret)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path in ("/metrics", "/healthz") and response.status == 200:
            return  # scraped and probed every few seconds: not worth a line each
        self.logger.info(
            "%s %s %s %.1fms", request.method, request.path, response.status, time * 1000
        )


def create_web_app(
    settings: Settings, *, redis_client: aredis.Redis | None = None
) -> web.Application:
    """The web application. Without ``redis_client`` it makes (and closes) its own."""
    app = web.Application(client_max_size=settings.web.max_body_bytes)
    app[SETTINGS_KEY] = settings

    async def redis_lifecycle(app: web.Application) -> AsyncIterator[None]:
        own = redis_client is None
        client = redis_client or redis_conn.async_client(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=10
        )
        app[REDIS_KEY] = client
        yield
        if own:
            await client.aclose()

    app.cleanup_ctx.append(redis_lifecycle)
    app.router.add_route("*", "/hooks/{account}", receive_push)
    app.router.add_route("*", "/hooks/{account}/{tail:.*}", receive_push)
    app.router.add_get("/health", health)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    if settings.web.intake_tokens:
        app.router.add_post("/v1/jobs", post_job)
        app.router.add_get("/v1/jobs/{job_id}", get_job)
    return app


def main(host: str | None = None, port: int | None = None, settings: Settings | None = None) -> int:
    """``smsq web``: serve until SIGINT / SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logs.install()
    if settings is None:
        try:
            settings = load_settings()
        except ConfigError as exc:
            print(exc, file=sys.stderr, flush=True)
            return 2
    host = host or settings.web.host
    port = port if port is not None else settings.web.port
    log.info(
        "serving on %s:%d (%d accounts, intake %s)",
        host,
        port,
        len(settings.accounts),
        "on" if settings.web.intake_tokens else "off",
    )
    open_accounts = [
        name
        for name, acc in settings.accounts.items()
        if not acc.webhook_secret and not push_auth.listed_ips(acc)
    ]
    if open_accounts:
        log.warning(
            "pushes to %s will be refused: no webhook_secret and no options.webhook_ips",
            ", ".join(open_accounts),
        )
    web.run_app(
        create_web_app(settings),
        host=host,
        port=port,
        print=None,
        **server_options(settings),
    )
    return 0


def server_options(settings: Settings) -> dict[str, Any]:
    """The aiohttp server options of ``smsq web`` (also for an ``AppRunner``).

    aiohttp closes a connection whose next request has not fully arrived (request line
    and headers) within ``keepalive_timeout`` of the connection opening or of the last
    answer: that is ``[web] header_timeout``, so trickling headers cannot hold a
    connection. Bodies are bounded by ``[web] body_timeout`` in the handlers.
    """
    return {
        "keepalive_timeout": settings.web.header_timeout,
        "access_log": logging.getLogger("smsq.web.access"),
        "access_log_class": AccessLogger,
    }
