"""The stranded-work sweep: chunks whose delivery ended without recording them.

Every dispatch notes its chunk in ``<prefix>:inflight`` when it claims it (with the
Dramatiq message carrying it) and the recording removes the entry in the same script.
A Dramatiq message can still end without a recording: acknowledged after a Redis outage
longer than ``[worker] redis_outage``, dead-lettered by Dramatiq, or dropped with a
retry that could not be enqueued. The sweep (a scheduler task on ``smsq-reconcile``)
finds entries older than ``[worker] stranded_after`` whose message no longer exists in
its queue (nor its delay queue) and whose chunk is not ``done``, and sends the chunk's
message again. (An OTP dispatched in its intake message's run names that message and its
intake queue; sent again, it goes to its dispatch queue.) The new delivery settles it by the chunk's state: still ``claimed`` (or
released) it is sent, since nothing left; caught ``sending`` its recipients become
``unknown`` for reconciliation; ``done`` it is only acknowledged.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

from producers.wire import NAMESPACE, build_message, write_message
from worker.core import metrics
from worker.core.runtime import Runtime

log = logging.getLogger("smsq.stranded")


async def _message_exists(r: Any, queue: str, message_id: str) -> bool:
    pipe = r.pipeline(transaction=False)
    pipe.hexists(f"{NAMESPACE}:{queue}.msgs", message_id)
    pipe.hexists(f"{NAMESPACE}:{queue}.DQ.msgs", message_id)
    return any(await pipe.execute())


async def sweep_stranded(rt: Runtime, *, now: float | None = None) -> dict[str, int]:
    """One sweep; returns its figures (``resent``, ``live``, ``young``, ``done``, ``bad``)."""
    r = rt.async_redis()
    bound = rt.settings.worker.stranded_after
    now = now if now is not None else time.time()
    stats: Counter[str] = Counter()
    async for field, raw in r.hscan_iter(rt.keys.inflight, count=500):
        chunk_key = field.decode() if isinstance(field, bytes) else str(field)
        try:
            entry = json.loads(raw)
            at, queue, actor = float(entry["at"]), str(entry["queue"]), str(entry["actor"])
            args = list(entry["args"])
        except (ValueError, KeyError, TypeError):
            log.warning("in-flight entry of %s is unreadable; dropped", chunk_key)
            await r.hdel(rt.keys.inflight, chunk_key)
            stats["bad"] += 1
            continue
        if now - at < bound:
            stats["young"] += 1
            continue
        message_id = entry.get("msg")
        # An OTP sent in its intake message's run is carried by that message ("mq"); once
        # stranded it is sent again as a dispatch message on its dispatch queue like any chunk.
        carrier = entry.pop("mq", None)
        held_in = carrier if isinstance(carrier, str) else queue
        if isinstance(message_id, str) and await _message_exists(r, held_in, message_id):
            stats["live"] += 1  # queued, or held by a worker (requeued if that worker dies)
            continue
        state = await r.get(chunk_key)
        if state == b"done":
            await r.hdel(rt.keys.inflight, chunk_key)
            stats["done"] += 1
            continue
        target, redis_id, body = build_message(queue, actor, args)
        entry.update(msg=redis_id, at=round(now, 3))
        pipe = r.pipeline(transaction=True)
        write_message(pipe, target, redis_id, body, NAMESPACE)
        pipe.hset(rt.keys.inflight, chunk_key, json.dumps(entry, separators=(",", ":")))
        await pipe.execute()
        metrics.STRANDED.labels(actor).inc()
        found = state.decode(errors="replace") if isinstance(state, bytes) else "released"
        log.warning(
            "chunk %s was stranded (%s, no message left): sent to %s again",
            chunk_key,
            found.split(":", 1)[0],
            queue,
        )
        stats["resent"] += 1
    return dict(stats)
