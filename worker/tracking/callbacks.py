"""Producer callbacks: a job's events POSTed, signed, to the producer's URL.

A job may carry ``callback_url`` (or take its route's default from ``[callbacks.routes]``);
the intake checks it starts with the URLs of a configured ``[callbacks.producers.<name>]``
(whose secrets sign the requests) and records it in the job. From then on every event of
that job in ``<prefix>:events`` (status changes, HLR results) is delivered to that URL:

1. **Routing.** The events stream is written in the same Lua call / transaction as every
   status change, so it is the durable record of what is due. ``route_events`` reads it from a
   cursor (``<prefix>:cb:cursor``, the last routed entry id) and, in one MULTI guarded by WATCH
   on the cursor, appends the events of jobs with a callback to one outbox list per URL
   (``<prefix>:cb:outbox:<endpoint>``), marks those endpoints due and moves the cursor. A crash
   before EXEC routes nothing; after, everything: each event reaches its outbox exactly once,
   in stream order.
2. **Delivery.** ``deliver_due`` takes each due endpoint under a lock (one deliverer per URL at
   a time, so the order of its outbox is the order of delivery), POSTs the head of the outbox
   (up to ``batch_size`` events) signed with HMAC-SHA256 over ``"<t>.<raw body>"``, and on a 2xx
   answer trims exactly those events off. A failure (non-2xx, timeout, refused connection) keeps
   them at the head and schedules the next attempt with exponential backoff and full jitter; a
   batch that failed ``max_attempts`` times, or whose oldest event is older than ``max_age``, is
   dead-lettered with its events (source ``callback``) and the next batch goes on.

A crash between a POST the producer accepted and the trim makes the next attempt send the same
events again: delivery is at least once, and every event carries its stream id as ``id`` for the
producer to de-duplicate. Events of one recipient always go to the same URL, through the same
outbox, so their order is kept. Both steps run in the ``deliver_callbacks`` actor the scheduler
enqueues every ``[callbacks] interval`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis
import redis.asyncio as aredis

from producers.keys import Keys
from worker.core import metrics
from worker.core.config import CallbackProducer, CallbackSettings
from worker.core.runtime import Runtime
from worker.state import store

log = logging.getLogger("smsq.callbacks")

CALLBACK_ACTOR = "deliver_callbacks"
SIGNATURE_HEADER = "Smsq-Signature"
DELIVERY_HEADER = "Smsq-Delivery"
ROUTE_PAGE = 1000  # stream entries read per routing step
ROUTE_PAGES = 20  # routing steps per run at most
DUE_PER_RUN = 100  # endpoints delivered to per run at most
BATCHES_PER_RUN = 10  # batches one endpoint is sent per run at most
DELIVERED_TYPES = frozenset({"status", "hlr"})


@dataclass(frozen=True)
class CallbackKeys:
    """The callback keys of one prefix (their layout is in producers/keys.py)."""

    prefix: str

    @property
    def _keys(self) -> Keys:
        return Keys(self.prefix)

    @property
    def cursor(self) -> str:
        return self._keys.callback_cursor

    @property
    def endpoints(self) -> str:
        return self._keys.callback_endpoints

    @property
    def due(self) -> str:
        return self._keys.callback_due

    def outbox(self, endpoint: str) -> str:
        return self._keys.callback_outbox(endpoint)

    def state(self, endpoint: str) -> str:
        return self._keys.callback_state(endpoint)

    def lock(self, endpoint: str) -> str:
        return self._keys.callback_lock(endpoint)


def endpoint_id(url: str) -> str:
    """A short stable id of a callback URL (keys never carry the URL itself)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]


def sign(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``Smsq-Signature`` value: ``t=<unix seconds>,v1=<hex>`` (one ``v1`` per secret)."""
    signed = str(timestamp).encode("ascii") + b"." + body
    parts = [f"t={timestamp}"]
    for secret in secrets:
        digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
        parts.append(f"v1={digest}")
    return ",".join(parts)


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """What a receiver does (docs/wire-format.md): a ``v1`` matches and ``t`` is recent."""
    items = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in items if k.strip() == "t"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit():
        return False
    timestamp = int(stamps[0])
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign([secret], timestamp, body).split(",", 1)[1][len("v1=") :]
    return any(k.strip() == "v1" and hmac.compare_digest(v.strip(), expected) for k, v in items)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _event_time(event_id: str) -> float:
    """When the stream entry was written (its id's milliseconds)."""
    return int(event_id.split("-", 1)[0]) / 1000


# --------------------------------------------------------------------------- routing


async def route_events(rt: Runtime, *, pages: int = ROUTE_PAGES) -> int:
    """Move new events of jobs with a callback into their endpoints' outboxes; returns how many."""
    r = rt.async_redis()
    k = CallbackKeys(rt.keys.prefix)
    routed = 0
    for _ in range(pages):
        cursor = _text(await r.get(k.cursor) or b"0-0")
        page = await r.xrange(rt.keys.events, min=f"({cursor}", max="+", count=ROUTE_PAGE)
        raw: list[Any] = list(page or [])
        if not raw:
            break
        entries = [
            (_text(entry_id), {_text(a): _text(b) for a, b in (fields or {}).items()})
            for entry_id, fields in raw
        ]
        jobs = sorted(
            {
                data["job_id"]
                for _, data in entries
                if "job_id" in data and data.get("type") in DELIVERED_TYPES
            }
        )
        urls: dict[str, str] = {}
        if jobs:
            pipe = r.pipeline(transaction=False)
            for job in jobs:
                pipe.hget(rt.keys.job(job), "callback_url")
            for job, url in zip(jobs, await pipe.execute(), strict=True):
                if url:
                    urls[job] = _text(url)
        outboxes: dict[str, list[str]] = {}
        for entry_id, data in entries:
            url = urls.get(data.get("job_id", ""))
            if url is None or data.get("type") not in DELIVERED_TYPES:
                continue
            outboxes.setdefault(url, []).append(
                json.dumps({"id": entry_id, **data}, separators=(",", ":"), ensure_ascii=False)
            )
        last = entries[-1][0]
        now = time.time()
        async with r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(k.cursor)
                if _text(await pipe.get(k.cursor) or b"0-0") != cursor:
                    continue  # another run routed this page meanwhile
                pipe.multi()  # type: ignore[no-untyped-call]
                for url, items in outboxes.items():
                    ep = endpoint_id(url)
                    for i in range(0, len(items), 1000):
                        pipe.rpush(k.outbox(ep), *items[i : i + 1000])
                    pipe.hset(k.endpoints, ep, url)
                    pipe.zadd(k.due, {ep: now}, nx=True)  # a backoff already set stays
                pipe.set(k.cursor, last)
                await pipe.execute()
            except redis.WatchError:
                continue
        routed += sum(len(v) for v in outboxes.values())
        if len(entries) < ROUTE_PAGE:
            break
    return routed


# --------------------------------------------------------------------------- delivery

# Trims the delivered batch (only if the head is still the one sent) and reschedules.
_ACK = """
-- KEYS[1] the endpoint's outbox   KEYS[2] its state   KEYS[3] the due set
-- ARGV[1] endpoint   ARGV[2] number sent   ARGV[3] first item sent   ARGV[4] next time if more
if redis.call("LINDEX", KEYS[1], 0) ~= ARGV[3] then return 0 end
redis.call("LTRIM", KEYS[1], tonumber(ARGV[2]), -1)
redis.call("DEL", KEYS[2])
if redis.call("LLEN", KEYS[1]) == 0 then
  redis.call("ZREM", KEYS[3], ARGV[1])
else
  redis.call("ZADD", KEYS[3], ARGV[4], ARGV[1])
end
return 1
"""

# An empty outbox is no longer due (atomically: the router appends and marks due in one
# transaction).
_IDLE = """
-- KEYS[1] the endpoint's outbox   KEYS[2] the due set   ARGV[1] endpoint
if redis.call("LLEN", KEYS[1]) == 0 then redis.call("ZREM", KEYS[2], ARGV[1]) end
return 1
"""

_UNLOCK = """
-- KEYS[1] the endpoint's lock   ARGV[1] its holder's token
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""


def backoff(settings: CallbackSettings, attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after ``attempts`` failures: exponential, full jitter
    over its upper half (so attempts never bunch up at zero)."""
    ceiling = min(settings.backoff_max, settings.backoff_initial * 2.0 ** max(0, attempts - 1))
    return float(ceiling * (0.5 + 0.5 * (rng or random).random()))


@dataclass
class Outcome:
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0


class Deliverer:
    """Delivers the due outboxes of one process's runtime."""

    def __init__(self, rt: Runtime, session: aiohttp.ClientSession | None = None) -> None:
        self.rt = rt
        self.settings = rt.settings.callbacks
        self.keys = CallbackKeys(rt.keys.prefix)
        self.redis: aredis.Redis = rt.async_redis()
        self._session = session
        self._ack = self.redis.register_script(_ACK)
        self._unlock = self.redis.register_script(_UNLOCK)
        self._idle = self.redis.register_script(_IDLE)

    def session(self) -> aiohttp.ClientSession:
        session = self._session or self.rt.session
        if session is None:
            raise RuntimeError("the runtime has no HTTP session (not started)")
        return session

    async def deliver_due(self, now: float | None = None) -> Outcome:
        due = await self.redis.zrangebyscore(
            self.keys.due, "-inf", now or time.time(), start=0, num=DUE_PER_RUN
        )
        outcomes = await asyncio.gather(*(self.deliver_endpoint(_text(ep)) for ep in due))
        total = Outcome()
        for o in outcomes:
            total.delivered += o.delivered
            total.failed += o.failed
            total.dead_lettered += o.dead_lettered
        return total

    async def deliver_endpoint(self, endpoint: str) -> Outcome:
        """Send the endpoint's outbox, batch after batch, until it is empty, a POST fails, or
        BATCHES_PER_RUN were sent; only one deliverer per endpoint at a time."""
        outcome = Outcome()
        lock = self.keys.lock(endpoint)
        token = uuid.uuid4().hex
        ttl_ms = int((self.settings.timeout + 30) * 1000)
        if not await self.redis.set(lock, token, nx=True, px=ttl_ms):
            return outcome
        try:
            for _ in range(BATCHES_PER_RUN):
                if not await self._one_batch(endpoint, outcome):
                    break
        finally:
            await self._unlock(keys=[lock], args=[token])
        return outcome

    async def _one_batch(self, endpoint: str, outcome: Outcome) -> bool:
        """Deliver (or dead-letter) the head batch; True when the next one may follow now."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(k.endpoints, endpoint)
        pipe.lrange(k.outbox(endpoint), 0, self.settings.batch_size - 1)
        pipe.hgetall(k.state(endpoint))
        raw_url, raw_items, raw_state = await pipe.execute()
        items = [_text(i) for i in raw_items]
        if not items:
            await self._idle(keys=[k.outbox(endpoint), k.due], args=[endpoint])
            return False
        url = _text(raw_url) if raw_url else ""
        producer = self.settings.producer_for(url) if url else None
        attempts = int(raw_state.get(b"attempts", 0)) if raw_state else 0
        events = [json.loads(i) for i in items]
        if producer is None:
            reason = "no [callbacks.producers] entry covers this callback URL any more"
            await self._dead_letter(endpoint, items, events, [reason], attempts)
            outcome.dead_lettered += len(items)
            return True
        error = await self._post(producer, url, events)
        if error is None:
            await self._ack(
                keys=[k.outbox(endpoint), k.state(endpoint), k.due],
                args=[endpoint, len(items), items[0], f"{time.time():.3f}"],
            )
            outcome.delivered += len(items)
            metrics.CALLBACK_EVENTS.labels("delivered").inc(len(items))
            return True
        attempts += 1
        outcome.failed += 1
        metrics.CALLBACK_REQUESTS.labels("failed").inc()
        age = time.time() - _event_time(events[0]["id"])
        if attempts >= self.settings.max_attempts or age > self.settings.max_age:
            reasons = [
                f"callback not delivered after {attempts} attempts"
                f" (oldest event {age:.0f}s old): {error}"
            ]
            await self._dead_letter(endpoint, items, events, reasons, attempts)
            outcome.dead_lettered += len(items)
            return True
        delay = backoff(self.settings, attempts)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(k.state(endpoint), mapping={"attempts": attempts, "last_error": error[:300]})
        pipe.zadd(k.due, {endpoint: time.time() + delay})
        await pipe.execute()
        log.warning(
            "callback to producer %s failed (attempt %d, next in %.1fs): %s",
            producer.name,
            attempts,
            delay,
            error[:200],
        )
        return False

    async def _post(self, producer: CallbackProducer, url: str, events: list[Any]) -> str | None:
        """POST one batch; None when the producer answered 2xx, else what went wrong."""
        delivery = uuid.uuid4().hex
        body = json.dumps({"delivery_id": delivery, "events": events}, separators=(",", ":"))
        raw = body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(producer.secrets, int(time.time()), raw),
            DELIVERY_HEADER: delivery,
            "User-Agent": "smsq-callbacks/1",
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        try:
            async with self.session().post(
                url, data=raw, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    metrics.CALLBACK_REQUESTS.labels("delivered").inc()
                    return None
                return f"HTTP {resp.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}"

    async def _dead_letter(
        self,
        endpoint: str,
        items: list[str],
        events: list[Any],
        reasons: list[str],
        attempts: int,
    ) -> None:
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        dl_id = store.dead_letter(
            pipe,
            self.rt.keys,
            source="callback",
            reasons=reasons,
            payload={"endpoint": endpoint, "attempts": attempts, "events": events},
            job_id=events[0].get("job_id") if events else None,
        )
        await pipe.execute()
        # The dead letter is written; now drop the batch (only if it is still the head).
        await self._ack(
            keys=[k.outbox(endpoint), k.state(endpoint), k.due],
            args=[endpoint, len(items), items[0], f"{time.time():.3f}"],
        )
        metrics.DEAD_LETTERS.labels("callback").inc()
        metrics.CALLBACK_EVENTS.labels("dead_lettered").inc(len(items))
        log.warning(
            "callback batch of %d events dead-lettered (%s): %s", len(items), dl_id, reasons[0]
        )


async def deliver_callbacks(rt: Runtime) -> dict[str, int]:
    """One run: route new events, then deliver what is due."""
    routed = await route_events(rt)
    outcome = await Deliverer(rt).deliver_due()
    return {
        "routed": routed,
        "delivered": outcome.delivered,
        "failed": outcome.failed,
        "dead_lettered": outcome.dead_lettered,
    }


def register_actors(broker: Any, runtime: Runtime) -> dict[str, Any]:
    """Declare ``deliver_callbacks`` (on the scheduler's queue); returns it by name."""
    import dramatiq

    from worker.core.messages import decode_run
    from worker.tracking.runs import RECONCILE_QUEUE, superseded

    async def deliver_callbacks_actor(*args: Any) -> None:
        slot = decode_run(args, per_account=False).slot
        if await superseded(runtime, "callbacks", "all", slot):
            metrics.SCHEDULED_RUNS.labels("callbacks", "superseded").inc()
            return
        try:
            await deliver_callbacks(runtime)
        except Exception:
            metrics.SCHEDULED_RUNS.labels("callbacks", "error").inc()
            raise
        metrics.SCHEDULED_RUNS.labels("callbacks", "ok").inc()

    actor = dramatiq.actor(
        broker=broker, actor_name=CALLBACK_ACTOR, queue_name=RECONCILE_QUEUE, max_retries=0
    )(deliver_callbacks_actor)
    return {CALLBACK_ACTOR: actor}
