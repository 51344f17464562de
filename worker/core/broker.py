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

import inspect
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from producers import redis_conn
from worker.entry.health import instance_id

log = logging.getLogger("smsq.broker")

MESSAGE_FIELDS = frozenset(
    {"queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp"}
)

PoisonSink = Callable[[str, bytes, str], None]
FailedSink = Callable[[str, Mapping[str, Any], str], None]


def message_problem(
    data: bytes | None,
    actors: set[str] | frozenset[str],
    queue_name: str | None = None,
    allowed_actors: frozenset[str] | None = None,
) -> str | None:
    """Why ``data``, fetched from ``queue_name``, is not a message this worker can process.

    None when it is. ``allowed_actors`` narrows the actors a queue may carry (the
    intake queues take ``accept_job`` only, so no raw producer can skip the contract).
    """
    if data is None:
        return "message id with no body"
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "body is not UTF-8"
    except json.JSONDecodeError as exc:
        return f"body is not valid JSON ({exc.msg} at position {exc.pos})"
    except (RecursionError, ValueError, MemoryError) as exc:
        return f"body cannot be decoded ({type(exc).__name__})"
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
    if queue_name is not None:
        if body["queue_name"] != queue_name:
            # Dramatiq routes acks and delays by this name: a wrong one would kill the
            # worker thread or move the message to a queue nobody consumes.
            return f"queue_name {body['queue_name'][:64]!r} does not match the queue {queue_name!r}"
        if queue_name.endswith(".DQ"):
            eta = body["options"].get("eta")
            if not isinstance(eta, int | float) or isinstance(eta, bool) or eta != eta:
                return "a delayed message needs a numeric options.eta (epoch milliseconds)"
    if allowed_actors is not None and body["actor_name"] not in allowed_actors:
        return f"actor {body['actor_name'][:64]!r} is not accepted on this queue"
    return None


class SafeRedisBroker(RedisBroker):
    """RedisBroker whose fetch filters out (and dead-letters) undecodable messages."""

    def __init__(self, *, poison_sink: PoisonSink | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        # <hostname>/<worker instance>/<uuid>: `smsq health` finds this host's heartbeats.
        self.broker_id = f"{instance_id()}/{uuid.uuid4()}"
        self.poison_sink = poison_sink
        self.queue_actors: dict[str, frozenset[str]] = {}
        self._signatures: dict[str, inspect.Signature] = {}
        self.stopping = False  # set on SIGTERM: nothing new is fetched
        self.on_consumer_restart: Callable[[str], Any] | None = None
        self._consumed: set[str] = set()

    def consumed_queues(self) -> set[str]:
        return set(self._consumed)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        # Dramatiq makes a new consumer after a connection error and forgets what the old
        # one had fetched: those messages are put back (worker.recovery.dead_workers).
        if queue_name in self._consumed and self.on_consumer_restart is not None:
            self.on_consumer_restart(queue_name)
        self._consumed.add(queue_name)
        return super().consume(queue_name, prefetch, timeout)

    def restrict_queue(self, queue_name: str, actors: frozenset[str]) -> None:
        """Accept only ``actors`` on ``queue_name`` (and its delay queue)."""
        self.queue_actors[queue_name] = actors
        self.queue_actors[f"{queue_name}.DQ"] = actors

    def do_fetch(self, queue_name: str, count: int) -> list[bytes]:
        if self.stopping:
            return []
        fetch = self._dispatch("fetch")  # type: ignore[no-untyped-call]
        bodies: list[bytes | None] = fetch(queue_name, count)
        actors = frozenset(self.actors)
        good: list[tuple[bytes, str]] = []
        bad: list[tuple[bytes | None, str]] = []
        allowed = self.queue_actors.get(queue_name)
        for data in bodies:
            try:
                problem = message_problem(data, actors, queue_name, allowed)
                if problem is None and data is not None:
                    problem = self._arguments_problem(json.loads(data))
            except Exception as exc:  # nothing a producer writes may stop the consumer
                problem = f"body cannot be checked ({type(exc).__name__})"
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

    def _arguments_problem(self, body: dict[str, Any]) -> str | None:
        """Why the message's args and kwargs cannot be passed to its actor (Dramatiq would
        raise TypeError on every retry), or None."""
        name = body["actor_name"]
        signature = self._signatures.get(name)
        if signature is None:
            signature = inspect.signature(self.actors[name].fn)
            self._signatures[name] = signature
        try:
            signature.bind(*body["args"], **body["kwargs"])
        except TypeError as exc:
            return f"arguments do not fit actor {name}: {exc}"
        return None

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


class DeadLetterFailed(dramatiq.Middleware):
    """Every message Dramatiq gives up on (retries exhausted: it goes to Dramatiq's own
    ``.XQ``) is also dead-lettered in smsq's ``dlq`` with the last error, so
    ``smsq dlq list`` shows it."""

    def __init__(self, sink: FailedSink) -> None:
        self.sink = sink

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        actor = broker.actors.get(message.actor_name)
        if actor is not None and actor.options.get("on_retry_exhausted"):
            return  # its on_retry_exhausted actor records it, with what it knows of the work
        trace = str(message.options.get("traceback") or "").strip()
        last = trace.splitlines()[-1] if trace else "no error recorded"
        retries = message.options.get("retries", 0)
        reason = f"failed on every try ({retries} retries): {last}"
        try:
            self.sink(message.queue_name, message.asdict(), reason)
        except Exception:  # never stop the consumer; Dramatiq's .XQ still has the message
            log.exception("could not dead-letter a failed message")


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
        client=redis_conn.sync_client(redis_url),
        poison_sink=poison_sink,
        heartbeat_timeout=heartbeat_timeout,
        maintenance_chance=maintenance_chance,
    )
    broker.add_middleware(AsyncIO())
    for m in middleware or []:
        broker.add_middleware(m)
    return broker
