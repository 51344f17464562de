"""The Dramatiq message format on Redis, written without Dramatiq.

A job enters smsq as a Dramatiq message for the actor ``accept_job`` whose
only argument is the job payload (see producers/contract.py and
docs/wire-format.md). Writing it takes two Redis commands, in this order:

    HSET dramatiq:<queue>.msgs <redis_message_id> <message JSON>
    RPUSH dramatiq:<queue> <redis_message_id>

A delayed message goes to ``<queue>.DQ`` instead, with ``options.eta`` (epoch ms).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

NAMESPACE = "dramatiq"
INTAKE_QUEUE = "smsq-intake"
INTAKE_OTP_QUEUE = "smsq-intake-otp"
INTAKE_ACTOR = "accept_job"
MAX_DELAY_MS = 7 * 24 * 3600 * 1000  # Dramatiq refuses longer delays
# How long a "pending" marker outlives its enqueue: the longest delay, plus a day of backlog.
PENDING_TTL = MAX_DELAY_MS // 1000 + 24 * 3600


def intake_queue(priority: str) -> str:
    return INTAKE_OTP_QUEUE if priority == "otp" else INTAKE_QUEUE


def delayed_queue(queue: str) -> str:
    return f"{queue}.DQ"


def build_message(
    queue: str,
    actor: str,
    args: Sequence[Any],
    *,
    eta_ms: int | None = None,
    message_id: str | None = None,
) -> tuple[str, str, str]:
    """Return (queue actually written, redis_message_id, message JSON).

    The JSON has exactly the seven fields Dramatiq decodes; ``options`` carries
    ``redis_message_id`` (the hash field name) and, when delayed, ``eta``.
    """
    redis_id = str(uuid.uuid4())
    options: dict[str, Any] = {"redis_message_id": redis_id}
    target = queue
    if eta_ms is not None:
        target = delayed_queue(queue)
        options["eta"] = eta_ms
    body = {
        "queue_name": target,
        "actor_name": actor,
        "args": list(args),
        "kwargs": {},
        "options": options,
        "message_id": message_id or str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    return target, redis_id, json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def write_message(
    pipe: Any,  # a sync or asyncio pipeline: both queue commands without I/O
    queue: str,
    redis_id: str,
    body: str,
    namespace: str = NAMESPACE,
) -> None:
    """Queue the two writes of one message (hash first, then the id) on ``pipe``."""
    pipe.hset(f"{namespace}:{queue}.msgs", redis_id, body)
    pipe.rpush(f"{namespace}:{queue}", redis_id)


def mark_pending(pipe: Any, pending_key: str, kind: str, now: float | None = None) -> None:
    """Queue the write of a job's "pending" marker (``Keys.pending``), which tells a job
    enqueued and not yet taken by a worker from no job at all. The intake deletes it in the
    transaction that records the job (or dead-letters it); otherwise it expires."""
    marker = json.dumps({"enqueued_at": round(now or time.time(), 3), "kind": kind})
    pipe.set(pending_key, marker, ex=PENDING_TTL)


def write_job(
    pipe: Any,
    payload: dict[str, Any],
    *,
    pending_key: str | None = None,
    queue: str | None = None,
    delay_ms: int | None = None,
    namespace: str = NAMESPACE,
) -> str:
    """Queue (without I/O) the writes of one job message for ``accept_job`` on ``pipe``,
    with its pending marker when ``pending_key`` is given; returns the Redis message id."""
    if delay_ms is not None and not 0 <= delay_ms <= MAX_DELAY_MS:
        raise ValueError(f"delay must be between 0 and {MAX_DELAY_MS} ms")
    queue = queue or intake_queue(str(payload.get("priority", "bulk")))
    eta = int(time.time() * 1000) + delay_ms if delay_ms is not None else None
    target, redis_id, body = build_message(queue, INTAKE_ACTOR, [payload], eta_ms=eta)
    if pending_key is not None:
        mark_pending(pipe, pending_key, str(payload.get("kind", "send")))
    write_message(pipe, target, redis_id, body, namespace)
    return redis_id


def enqueue_payload(
    client: redis.Redis,
    payload: dict[str, Any],
    *,
    queue: str | None = None,
    delay_ms: int | None = None,
    namespace: str = NAMESPACE,
    pending_key: str | None = None,
) -> str:
    """Enqueue one job payload for ``accept_job``; returns the Redis message id."""
    pipe = client.pipeline(transaction=True)
    redis_id = write_job(
        pipe,
        payload,
        pending_key=pending_key,
        queue=queue,
        delay_ms=delay_ms,
        namespace=namespace,
    )
    pipe.execute()
    return redis_id
