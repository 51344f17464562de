"""Receiving a provider's push (``/hooks/{account}``, any method), in the web process.

The account's provider module verifies it (``verify_push``); the raw request is then stored in
``<prefix>:inbox`` and the ``apply_webhook`` message enqueued on ``smsq-webhooks`` in one
MULTI/EXEC, and only then is the provider answered (its ``PushAnswer``). Nothing is parsed
or applied here: a worker does that (:mod:`worker.pushes.apply`). Unknown account: 404 (our
URL is wrong, logged); refused: the provider module's status (403 bad signature / key /
source, ...); body over ``[web] max_body_bytes``: 413; Redis unreachable: 503, so the
provider retries.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from producers.keys import Keys
from worker.core import metrics
from worker.core.http_input import (
    REDIS_ERRORS,
    SETTINGS_KEY,
    BodyTooLarge,
    BodyTooSlow,
    app_redis,
    json_body_problem,
    read_body,
    too_large,
    too_slow,
)
from worker.providers import provider_spec
from worker.providers.base import InboundRequest, PushAnswer, PushRejected
from worker.pushes import apply as stored

log = logging.getLogger("smsq.web")


async def receive_push(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    name = request.match_info["account"]
    account = settings.accounts.get(name)
    if account is None:
        log.warning("push for unknown account %r: check the URL set at the provider", name[:64])
        return web.Response(status=404, text="unknown account")
    limit = settings.web.max_body_bytes
    try:
        body = await read_body(request, limit, settings.web.body_timeout)
    except BodyTooLarge:
        log.warning("push to %s refused: body larger than %d bytes", name, limit)
        return too_large(limit)
    except BodyTooSlow:
        log.warning("push to %s refused: body too slow", name)
        return too_slow(settings.web.body_timeout)
    problem = json_body_problem(body)
    if problem is not None:
        log.warning("push to %s refused (400): %s", name, problem)
        return web.Response(status=400, text=problem)
    inbound = InboundRequest(
        method=request.method,
        path=request.match_info.get("tail", ""),
        query={k: v for k, v in request.query.items()},
        content_type=request.headers.get("Content-Type", ""),
        body=body,
        remote=request.remote or "",
        received_at=time.time(),
    )
    module = provider_spec(account.kind)
    try:
        answer: PushAnswer = module.verify_push(account, inbound)
    except PushRejected as exc:
        log.warning("push to %s refused (%d): %s", name, exc.status, exc.reason)
        metrics.PUSHES_RECEIVED.labels(account.kind, name, "rejected").inc()
        return web.Response(status=exc.status, text=exc.reason)
    except Exception as exc:  # a bug, not the push's fault: the provider retries
        log.error("push to %s: verification failed with %s", name, type(exc).__name__)
        return web.Response(status=500, text="verification failed")
    push_id = stored.new_push_id()
    try:
        pipe = app_redis(request).pipeline(transaction=True)
        stored.queue_push(
            pipe, Keys(settings.key_prefix), push_id, stored.encode_push(account, inbound)
        )
        await pipe.execute()
    except REDIS_ERRORS as exc:
        log.error("push to %s not stored, answered 503: %s", name, type(exc).__name__)
        metrics.PUSHES_RECEIVED.labels(account.kind, name, "unavailable").inc()
        return web.Response(status=503, text="temporarily unavailable, retry later")
    metrics.PUSHES_RECEIVED.labels(account.kind, name, "stored").inc()
    return web.Response(
        status=answer.status,
        body=answer.body.encode("utf-8"),
        headers={"Content-Type": answer.content_type},
    )
