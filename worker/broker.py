"""The Redis broker smsq runs on, hardened against messages it cannot decode.

Dramatiq's Redis consumer decodes each fetched body without knowing its Redis
id; a body that fails to decode raises in the consumer thread and stays
unacknowledged forever, and a body without ``options.redis_message_id`` cannot
be acknowledged at all. :class:`SafeRedisBroker` checks every fetched body
before the consumer sees it: one that is not a well-formed message for a
declared actor is handed to the poison sink (smsq dead-letters it with the
reason), acknowledged by the id found in this worker's own acks set, and never
reaches the consumer. Raw producers therefore cannot stall a worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

log = logging.getLogger("smsq.broker")

MESSAGE_FIELDS = frozenset(
    {"queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp"}
)

PoisonSink = Callable[[str, bytes, str], None]


def message_problem(data: bytes | None, actors: set[str] | frozenset[str]) -> str | None:
    """Why ``data`` is not a message this worker can process, or None when it is."""
    if data is None:
        return "message id with no body"
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "body is not UTF-8"
    except json.JSONDecodeError as exc:
        return f"body is not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(body, dict):
        return f"body is a JSON {type(body).__name__}, not an object"
    missing = sorted(MESSAGE_FIELDS - set(body))
    extra = sorted(set(body) - MESSAGE_FIELDS)
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing fields " + ", ".join(missing))
        if extra:
            parts.append("unexpected fields " + ", ".join(extra))
        return "not a Dramatiq message: " + "; ".join(parts)
    checks: list[tuple[str, type | tuple[type, ...]]] = [
        ("queue_name", str),
        ("actor_name", str),
        ("args", list),
        ("kwargs", dict),
        ("options", dict),
        ("message_id", str),
        ("message_timestamp", int),
    ]
    for name, expected in checks:
        value = body[name]
        if not isinstance(value, expected) or isinstance(value, bool):
            return f"field {name} has the wrong type ({type(value).__name__})"
    if not isinstance(body["options"].get("redis_message_id"), str):
        return "options.redis_message_id is missing or not a string"
    if body["actor_name"] not in actors:
        return f"no actor named {body['actor_name'][:64]!r}"
    return None


class SafeRedisBroker(RedisBroker):
    """RedisBroker whose fetch filters out (and dead-letters) undecodable messages."""

    def __init__(self, *, poison_sink: PoisonSink | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.poison_sink = poison_sink

    def do_fetch(self, queue_name: str, count: int) -> list[bytes]:
        fetch = self._dispatch("fetch")  # type: ignore[no-untyped-call]
        bodies: list[bytes | None] = fetch(queue_name, count)
        actors = frozenset(self.actors)
        good: list[tuple[bytes, str]] = []
        bad: list[tuple[bytes | None, str]] = []
        for data in bodies:
            problem = message_problem(data, actors)
            if problem is None and data is not None:
                good.append((data, json.loads(data)["options"]["redis_message_id"]))
            else:
                bad.append((data, problem or "empty"))
        if good:
            # A body stored under another id than its options.redis_message_id could
            # never be acknowledged: it would come back after every restart.
            held = self.client.smismember(self._acks_key(queue_name), [i for _, i in good])
            for (data, _), ok in zip(good, held, strict=True):
                if not ok:
                    bad.append(
                        (
                            data,
                            "options.redis_message_id does not match the id the message was pushed under",
                        )
                    )
            good = [g for g, ok in zip(good, held, strict=True) if ok]
        if bad:
            self._quarantine(queue_name, bad)
        return [data for data, _ in good]

    def _acks_key(self, queue_name: str) -> str:
        return f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"

    def _quarantine(self, queue_name: str, bad: list[tuple[bytes | None, str]]) -> None:
        """Dead-letter and acknowledge the given bodies, found by value in our acks set."""
        acks_key = self._acks_key(queue_name)
        msgs_key = f"{self.namespace}:{queue_name}.msgs"
        ids = [
            i.decode() if isinstance(i, bytes) else str(i) for i in self.client.smembers(acks_key)
        ]
        stored = dict(zip(ids, self.client.hmget(msgs_key, ids), strict=True)) if ids else {}
        for data, reason in bad:
            matched = [i for i, body in stored.items() if body == data]
            log.warning("dead-lettering an undecodable message on %s: %s", queue_name, reason)
            if self.poison_sink is not None:
                try:
                    self.poison_sink(queue_name, data or b"", reason)
                except Exception:  # the sink must not stop the consumer
                    log.exception("could not record an undecodable message")
            for message_id in matched:
                self.do_ack(queue_name, message_id)
                stored.pop(message_id, None)


def build_broker(
    redis_url: str,
    *,
    poison_sink: PoisonSink | None = None,
    middleware: list[dramatiq.Middleware] | None = None,
    heartbeat_timeout: int = 60_000,
    maintenance_chance: int = 1000,
) -> SafeRedisBroker:
    """A SafeRedisBroker with Dramatiq's default middleware plus AsyncIO and ``middleware``."""
    broker = SafeRedisBroker(
        url=redis_url,
        poison_sink=poison_sink,
        heartbeat_timeout=heartbeat_timeout,
        maintenance_chance=maintenance_chance,
    )
    broker.add_middleware(AsyncIO())
    for m in middleware or []:
        broker.add_middleware(m)
    return broker
