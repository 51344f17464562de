"""Messages put into Redis by hand: a job enqueued with the raw commands of
docs/wire-format.md, arbitrary bodies pushed onto a Dramatiq queue, and the dead letters."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis


def raw_enqueue(client: redis.Redis, payload: dict[str, Any], queue: str = "smsq-intake") -> None:
    """Exactly the commands of docs/wire-format.md."""
    redis_id = str(uuid.uuid4())
    message = {
        "queue_name": queue,
        "actor_name": "accept_job",
        "args": [payload],
        "kwargs": {},
        "options": {"redis_message_id": redis_id},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"dramatiq:{queue}.msgs", redis_id, json.dumps(message))
        pipe.rpush(f"dramatiq:{queue}", redis_id)
        pipe.execute()


def push_raw(
    client: redis.Redis, body: bytes | str | dict[str, Any], queue: str = "smsq-intake"
) -> str:
    """Store and push ``body`` under its own redis_message_id (or a fresh id for non-messages)."""
    redis_id = str(uuid.uuid4())
    if isinstance(body, dict):
        options = body.get("options")
        if isinstance(options, dict) and isinstance(options.get("redis_message_id"), str):
            redis_id = options["redis_message_id"]
        body = json.dumps(body)
    client.hset(f"dramatiq:{queue}.msgs", redis_id, body)
    client.rpush(f"dramatiq:{queue}", redis_id)
    return redis_id


def message(args: list[Any], **overrides: Any) -> dict[str, Any]:
    redis_id = str(uuid.uuid4())
    body = {
        "queue_name": "smsq-intake",
        "actor_name": "accept_job",
        "args": args,
        "kwargs": {},
        "options": {"redis_message_id": redis_id},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    body.update(overrides)
    return body


def dead_letters(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(v) for v in client.hvals("smsq:dlq")]
