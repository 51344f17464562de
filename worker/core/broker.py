"""The Redis broker smsq runs on, hardened against messages it cannot decode.

Dramatiq's Redis consumer decodes each fetched body without knowing its Redis
id; a body that fails to decode raises in the consumer thread and stays
unacknowledged forever, and a body without ``options.redis_message_id`` cannot
be acknowledged at all. :class:`SafeRedisBroker` checks every fetched body
before the consumer sees it: one that is not a well-formed message for a
declared actor is handed to the poison sink (smsq dead-letters it with the
reason), acknowledged by the id found in this worker's own acks set, and never
reaches the consumer. Raw producers therefore cannot stall a worker.

Dramatiq's consumer sleeps on an empty queue, backing off up to ``worker_timeout`` (1 s):
a message arriving on an idle queue waits for that sleep to end. A queue named with
:meth:`SafeRedisBroker.wait_on` (the OTP queues) is consumed by :class:`WakingConsumer`
instead, which blocks on the queue's list until a message arrives, and :class:`SmsqWorker`
gives such queues threads of their own, so other queues' work cannot hold them up.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from queue import PriorityQueue
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import iter_queue, q_name
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import AsyncIO
from dramatiq.worker import WORKER_TIMEOUT, ConsumerThread, WorkerThread, _WorkQueueItem

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
    return checked_body(data, actors, queue_name, allowed_actors)[1]


def checked_body(
    data: bytes | None,
    actors: set[str] | frozenset[str],
    queue_name: str | None = None,
    allowed_actors: frozenset[str] | None = None,
) -> tuple[Any, str | None]:
    """(the decoded body, None) when ``data`` is a message this worker can process, else
    (the body or None, why not): :func:`message_problem` with the body it decoded once."""
    if data is None:
        return None, "message id with no body"
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "body is not UTF-8"
    except json.JSONDecodeError as exc:
        return None, f"body is not valid JSON ({exc.msg} at position {exc.pos})"
    except (RecursionError, ValueError, MemoryError) as exc:
        return None, f"body cannot be decoded ({type(exc).__name__})"
    return body, _body_problem(body, actors, queue_name, allowed_actors)


def _body_problem(
    body: Any,
    actors: set[str] | frozenset[str],
    queue_name: str | None,
    allowed_actors: frozenset[str] | None,
) -> str | None:
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


class DecodedOnce(JSONEncoder):
    """Dramatiq's JSON encoder, except that a body :meth:`SafeRedisBroker.do_fetch` has
    just decoded (to check it) is not decoded again by the consumer: each fetched message
    is parsed once. Bodies are kept until the consumer decodes them, at most ``limit``."""

    def __init__(self, limit: int = 10_000) -> None:
        self._kept: dict[bytes, dict[str, Any]] = {}
        self._limit = limit

    def keep(self, data: bytes, body: dict[str, Any]) -> None:
        if len(self._kept) >= self._limit:  # a consumer dropped its fetched messages
            self._kept.clear()
        self._kept[data] = body

    def decode(self, data: bytes) -> dict[str, Any]:
        body = self._kept.pop(data, None)
        if body is not None:
            return body
        decoded: dict[str, Any] = super().decode(data)
        return decoded


DECODED = DecodedOnce()


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
        self._waits: dict[str, float] = {}  # queue -> longest wait for a message, seconds

    def consumed_queues(self) -> set[str]:
        return set(self._consumed)

    def wait_on(self, queue_name: str, wait: float = 1.0, delayed_wait: float = 0.1) -> None:
        """Consume ``queue_name`` without idle latency: an empty fetch waits for the queue's
        next message (up to ``wait`` seconds at a time) instead of sleeping. Its delay queue
        is watched every ``delayed_wait`` seconds, so a delayed message is due on time."""
        self._waits[queue_name] = wait
        self._waits[f"{queue_name}.DQ"] = delayed_wait

    def waits_on(self, queue_name: str) -> bool:
        return q_name(queue_name) in self._waits

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        # Dramatiq makes a new consumer after a connection error and forgets what the old
        # one had fetched: those messages are put back (worker.recovery.dead_workers).
        if queue_name in self._consumed and self.on_consumer_restart is not None:
            self.on_consumer_restart(queue_name)
        self._consumed.add(queue_name)
        wait = self._waits.get(queue_name)
        if wait is not None:
            return WakingConsumer(self, queue_name, prefetch, timeout, wait)
        return super().consume(queue_name, prefetch, timeout)

    def wait_for_message(self, queue_name: str, wait: float) -> None:
        """Block until ``queue_name``'s list holds a message id, or ``wait`` seconds.

        ``BLMOVE`` of the list onto itself (head to tail): the id never leaves the list, so
        nothing can be lost here; Dramatiq's fetch script then takes it into this worker's
        acks set as usual. With several ids waiting the order may turn, as it may between
        several consumers anyway.
        """
        if self.stopping:
            time.sleep(wait)
            return
        key = f"{self.namespace}:{queue_name}"
        limit = self.client.connection_pool.connection_kwargs.get("socket_timeout")
        if isinstance(limit, int | float) and limit > 0:
            wait = min(wait, limit / 2)  # a blocking read must end before the socket's timeout
        with contextlib.suppress(redis.TimeoutError):  # nothing came: the consumer looks again
            self.client.blmove(key, key, wait, "LEFT", "RIGHT")  # type: ignore[arg-type]

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
        decoded: dict[bytes, dict[str, Any]] = {}
        for data in bodies:
            try:
                body, problem = checked_body(data, actors, queue_name, allowed)
                if problem is None and data is not None:
                    problem = self._arguments_problem(body)
            except Exception as exc:  # nothing a producer writes may stop the consumer
                problem = f"body cannot be checked ({type(exc).__name__})"
            if problem is None and data is not None:
                good.append((data, body["options"]["redis_message_id"]))
                decoded[data] = body
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
        for data, _ in good:
            DECODED.keep(data, decoded[data])
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


class WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer without the idle sleep.

    An empty fetch blocks on the queue (:meth:`SafeRedisBroker.wait_for_message`) until a
    message arrives; a consumer whose prefetched messages are all still in progress waits
    for one of them to be acknowledged rather than backing off. Every fetch, acknowledgement
    and requeue is Dramatiq's own (its dispatch script and acks sets), so recovery and
    maintenance see this consumer like any other.
    """

    def __init__(
        self, broker: SafeRedisBroker, queue_name: str, prefetch: int, timeout: int, wait: float
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.wait = wait
        self.settled = threading.Event()  # set whenever a message of this consumer ends

    def ack(self, message: Any) -> None:
        try:
            super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self.settled.set()

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self.settled.set()

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                self.settled.clear()
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:
                    # Everything prefetched is in progress: the next fetch follows its end.
                    self.settled.wait(self.wait)
                    return None
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
                if not self.message_cache:
                    self.broker.wait_for_message(self.queue_name, self.wait)
                    return (
                        None  # the consumer thread releases due delayed messages, then asks again
                    )
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]


class SmsqWorker(dramatiq.Worker):
    """Dramatiq's worker with a lane of its own for some queues.

    The consumers of ``lane_queues`` (and their delay queues) feed a work queue of their own,
    served by ``lane_threads`` threads that take nothing else; the other queues share the
    ``worker_threads`` as usual. So however much other work is queued or in progress (a bulk
    job filling every thread, each waiting for its provider), a lane's message waits only for
    the lane's own. Without lane threads or lane queues it is Dramatiq's worker.
    """

    def __init__(
        self,
        broker: dramatiq.Broker,
        *,
        queues: set[str] | None = None,
        worker_timeout: int = WORKER_TIMEOUT,
        worker_threads: int = 8,
        lane_queues: Iterable[str] = (),
        lane_threads: int = 0,
    ) -> None:
        super().__init__(
            broker, queues=queues, worker_timeout=worker_timeout, worker_threads=worker_threads
        )
        self.lane_queues = frozenset(lane_queues) if lane_threads > 0 else frozenset()
        self.lane_threads = lane_threads if self.lane_queues else 0
        self.lane_work_queue: PriorityQueue[_WorkQueueItem] = PriorityQueue()

    @property
    def work_queues(self) -> list[PriorityQueue[_WorkQueueItem]]:
        return [self.work_queue, self.lane_work_queue]

    def start(self) -> None:
        super().start()
        for _ in range(self.lane_threads):
            thread = WorkerThread(
                broker=self.broker,
                consumers=self.consumers,
                work_queue=self.lane_work_queue,
                worker_timeout=self.worker_timeout,
            )
            thread.start()
            self.workers.append(thread)

    def _add_consumer(self, queue_name: str, *, delay: bool = False) -> None:
        canonical = q_name(queue_name)
        if canonical not in self.lane_queues or queue_name in self.consumers:
            super()._add_consumer(queue_name, delay=delay)
            return
        if self.consumer_whitelist and canonical not in self.consumer_whitelist:
            return
        consumer = self.consumers[queue_name] = ConsumerThread(
            broker=self.broker,
            queue_name=queue_name,
            prefetch=self.delay_prefetch if delay else self.queue_prefetch,
            work_queue=self.lane_work_queue,
            worker_timeout=self.worker_timeout,
        )
        consumer.start()

    def stop(self, timeout: int = 600000) -> None:
        super().stop(timeout)
        # Dramatiq put back what was left in its own work queue; the lane's leftovers too.
        leftovers: dict[str, list[MessageProxy]] = {}
        for item in iter_queue(self.lane_work_queue):  # type: ignore[no-untyped-call]
            leftovers.setdefault(item.message.queue_name, []).append(item.message)
        for queue_name, messages in leftovers.items():
            try:
                self.consumers[queue_name].requeue_messages(messages)
            except (dramatiq.BrokerError, redis.RedisError):
                log.warning("could not put back %d messages of %s", len(messages), queue_name)

    def join(self) -> None:
        while True:
            super().join()
            self.lane_work_queue.join()
            if not self.work_queue.unfinished_tasks and not any(
                c.delay_queue.unfinished_tasks for c in self.consumers.values()
            ):
                return


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
    dramatiq.set_encoder(DECODED)
    broker.add_middleware(AsyncIO())
    for m in middleware or []:
        broker.add_middleware(m)
    return broker
