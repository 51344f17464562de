"""The producer clients: validate a job, write it to Redis, follow it.

Depend on ``redis`` only. :class:`SmsqClient` is synchronous, :class:`AsyncSmsqClient`
(``redis.asyncio``) has the same methods as coroutines::

    from producers import SmsqClient
    with SmsqClient("redis://127.0.0.1:6379/0") as client:
        job_id = client.enqueue_send(provider="intis", sender="smstest", text="Hello",
                                     recipients=["+7 916 123-45-67"])
        print(client.wait(job_id, timeout=60).counts)

    async with AsyncSmsqClient("redis://127.0.0.1:6379/0") as client:
        ids = await client.enqueue_many([payload1, payload2])   # one round trip
        for event in await client.read_events("my-service", "worker-1"):
            ...
            await client.ack("my-service", event.id)

A job enqueued through a client is ``pending`` (a marker key) until a worker takes it;
:meth:`SmsqClient.status` tells that from "no such job" (None). :meth:`SmsqClient.cancel`
cancels a job none of whose chunks has been dispatched yet (a scheduled job, typically).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aredis

from producers import redis_conn
from producers.contract import is_job_id, new_job_id, validate_job
from producers.keys import DEFAULT_PREFIX, Keys
from producers.phones import AcceptNumbers, mask_numbers_in, mask_phone
from producers.status import FINAL_STATUSES, JobState
from producers.wire import INTAKE_OTP_QUEUE, INTAKE_QUEUE, NAMESPACE, write_job

EVENTS_MAXLEN = 1_000_000  # as the worker trims the events stream
CHUNK_STATE_TTL = 7 * 24 * 3600  # as the worker keeps chunk states
FINAL_VALUES = frozenset(s.value for s in FINAL_STATUSES)
CANCEL_REASON = "cancelled by the producer before dispatch"


@dataclass(frozen=True)
class RecipientRow:
    phone: str
    status: str
    provider_message_id: str | None = None
    account: str | None = None
    parts: int | None = None
    cost: str | None = None
    code: str | None = None
    reason: str | None = None
    at: float | None = None
    raw_status: str | None = None  # the provider's own status, once a report was applied
    raw_error: str | None = None
    source: str | None = None  # what set the status: dispatch, poll, history, webhook
    country: str | None = None  # region code from the number (ISO 3166-1 alpha-2)
    route_account: str | None = None  # the account routing chose (``account``: what sent it)
    operator: str | None = None  # MCC+MNC, when known
    price: str | None = None  # of one SMS part at route_account, when priced
    currency: str | None = None
    priced_by: str | None = None  # operator | country | order
    attempt: int | None = None  # 2 once sent a second time (second-chance resend)
    attempts: list[dict[str, Any]] | None = None  # earlier sends' outcomes

    @classmethod
    def from_record(cls, phone: str, record: dict[str, Any]) -> RecipientRow:
        """A row from the stored JSON; fields this version does not know are ignored."""
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__ and k != "phone"}
        known.setdefault("status", "unknown")
        return cls(phone=phone, **known)

    def masked(self) -> RecipientRow:
        """The row with its number hidden everywhere it appears: the number itself, a rejected
        raw value, and provider ids or texts that embed it (SMSC's ``<id>:<number>``)."""
        if self.phone.startswith("#"):
            phone = mask_numbers_in(self.phone)
        else:
            phone = mask_phone(self.phone)
        values: dict[str, Any] = {**self.__dict__, "phone": phone}
        for name, value in self.__dict__.items():
            if name != "phone" and isinstance(value, str):
                values[name] = mask_numbers_in(value, self.phone)
        return RecipientRow(**values)


@dataclass(frozen=True)
class CostLine:
    """What a job's sent messages cost at one account, in one currency."""

    account: str
    currency: str
    amount: float


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str
    record: Mapping[str, str]
    counts: Mapping[str, int]
    recipients: list[RecipientRow] = field(default_factory=list)
    hlr: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    costs: list[CostLine] = field(default_factory=list)  # per account and currency

    @property
    def reasons(self) -> list[str]:
        raw = self.record.get("reasons")
        return list(json.loads(raw)) if raw else []


@dataclass(frozen=True)
class AccountView:
    name: str
    state: str  # active | paused
    reason: str = ""
    since: float | None = None
    probe_at: float | None = None


@dataclass(frozen=True)
class LimiterView:
    account: str
    endpoint: str
    recent: int  # permits granted within the longest window of the key's rules
    paused_for: float  # seconds the provider asked us to wait, 0 when not paused


@dataclass(frozen=True)
class Overview:
    """Back-pressure as a producer sees it: queue depths, paused accounts, limiter use."""

    queues: Mapping[str, int]
    accounts: list[AccountView]
    limiters: list[LimiterView]
    dead_letters: int


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _count(value: bytes | str) -> int:
    """A count from the counts hash; 0 for anything that is not a number."""
    try:
        return int(value)
    except ValueError:
        return 0


def _check_job_id(job_id: str) -> None:
    """ValueError for a string that is not a job id (one with ``:`` could name another
    job's records)."""
    if not is_job_id(job_id):
        raise ValueError(f"{job_id[:140]!r} is not a job id (letters, digits and . _ -)")


# -- what both clients share: payloads, parsing, the cancel script --------------------------


# Race-safe against dispatch: a chunk is sent only after its state key was created with
# SET NX (the claim); this script cancels only when no chunk of the job has a state key, and
# gives every chunk the state "cancelled" in the same atomic step, so a later claim finds it
# and does not send. Its chunk keys come through KEYS, so the caller reads the job's number
# of chunks first; the script refuses ("retry") when the job's record says otherwise by then.
CANCEL_SCRIPT = """
-- smsq: cancel a job none of whose chunks a worker has taken yet.
--
-- KEYS[1] the job's hash   KEYS[2] its recipients   KEYS[3] its counts
-- KEYS[4] its pending marker (enqueued by a producer, taken by no worker yet)
-- KEYS[5] the events stream
-- KEYS[6..] the state keys of the job's chunks 0 .. n - 1 (n: ARGV[6])
-- ARGV[1] job id   ARGV[2] now   ARGV[3] events maxlen   ARGV[4] chunk state ttl (s)
-- ARGV[5] the recipients' reason   ARGV[6] n, the job's number of chunks as the caller read it
-- Returns {result, recipients cancelled}: "cancelled", "dispatching", "pending", "not_found",
-- the job's state when not "accepted", or "retry" when the job no longer has n chunks.
local job, now, maxlen = ARGV[1], ARGV[2], ARGV[3]
local base, rcpt, counts, events = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local state = redis.call("HGET", base, "state")
if not state then
  if redis.call("EXISTS", KEYS[4]) == 1 then return {"pending", 0} end
  return {"not_found", 0}
end
if state ~= "accepted" then return {state, 0} end
local chunks = tonumber(redis.call("HGET", base, "chunks") or "0") or 0
if chunks ~= tonumber(ARGV[6]) or #KEYS - 5 ~= chunks then return {"retry", 0} end
for i = 6, #KEYS do
  if redis.call("EXISTS", KEYS[i]) == 1 then
    return {"dispatching", 0}
  end
end
for i = 6, #KEYS do
  redis.call("SET", KEYS[i], "cancelled", "EX", ARGV[4])
end
local flat = redis.call("HGETALL", rcpt)
local updates, n = {}, 0
for i = 1, #flat, 2 do
  local rec = cjson.decode(flat[i + 1])
  if rec.status == "queued" then
    rec.status = "cancelled"
    rec.at = tonumber(now)
    rec.reason = ARGV[5]
    updates[#updates + 1] = flat[i]
    updates[#updates + 1] = cjson.encode(rec)
    n = n + 1
    redis.call("XADD", events, "MAXLEN", "~", maxlen, "*", "type", "status", "job_id", job,
               "phone", flat[i], "status", "cancelled", "previous", "queued", "account", "",
               "at", now, "source", "cancel", "reason", ARGV[5])
  end
end
for i = 1, #updates, 4000 do
  redis.call("HSET", rcpt, unpack(updates, i, math.min(i + 3999, #updates)))
end
if n > 0 then
  redis.call("HINCRBY", counts, "queued", -n)
  redis.call("HINCRBY", counts, "cancelled", n)
end
redis.call("HSET", base, "state", "cancelled", "finished_at", now, "cancelled_at", now)
return {"cancelled", n}
"""
CANCEL_TRIES = 3  # reads of the job's chunks a cancel makes at most before answering "pending"


@dataclass(frozen=True)
class CancelResult:
    """What :meth:`SmsqClient.cancel` did.

    ``result``: ``cancelled`` (every queued recipient is now ``cancelled``); ``dispatching``
    (a chunk was already taken by a worker: nothing was cancelled); ``pending`` (no worker
    has taken the job yet, or its record changed while the cancel read it: try again in a
    moment); ``not_found``; or the job's state when it
    cannot be cancelled any more (``done``, ``dead_lettered``, ``cancelled``).
    """

    job_id: str
    result: str
    recipients: int = 0

    @property
    def cancelled(self) -> bool:
        return self.result == "cancelled"


@dataclass(frozen=True)
class Event:
    """One entry of the events stream (docs/wire-format.md, "Events")."""

    id: str
    fields: Mapping[str, str]

    @property
    def type(self) -> str:
        return self.fields.get("type", "")

    @property
    def job_id(self) -> str | None:
        return self.fields.get("job_id")

    @property
    def phone(self) -> str | None:
        return self.fields.get("phone")

    @property
    def status(self) -> str | None:
        return self.fields.get("status")


def send_payload(
    *,
    provider: str,
    sender: str,
    text: str,
    recipients: Iterable[str | int],
    job_id: str | None = None,
    scheduled_at: datetime | str | None = None,
    validity: int | None = None,
    priority: str = "bulk",
    metadata: Mapping[str, Any] | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """The wire payload of a send job (docs/wire-format.md)."""
    payload: dict[str, Any] = {
        "kind": "send",
        "provider": provider,
        "sender": sender,
        "text": text,
        "recipients": list(recipients),
        "priority": priority,
    }
    if job_id is not None:
        payload["job_id"] = job_id
    if scheduled_at is not None:
        payload["scheduled_at"] = (
            scheduled_at.isoformat() if isinstance(scheduled_at, datetime) else scheduled_at
        )
    if validity is not None:
        payload["validity"] = validity
    if metadata:
        payload["metadata"] = dict(metadata)
    if callback_url:
        payload["callback_url"] = callback_url
    return payload


def hlr_payload(
    *,
    provider: str,
    recipients: Iterable[str | int],
    job_id: str | None = None,
    priority: str = "bulk",
    metadata: Mapping[str, Any] | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """The wire payload of an HLR job."""
    payload: dict[str, Any] = {
        "kind": "hlr",
        "provider": provider,
        "recipients": list(recipients),
        "priority": priority,
    }
    if job_id is not None:
        payload["job_id"] = job_id
    if metadata:
        payload["metadata"] = dict(metadata)
    if callback_url:
        payload["callback_url"] = callback_url
    return payload


def _prepared(
    payload: Mapping[str, Any],
    providers: Collection[str] | None,
    numbers: AcceptNumbers | None = "valid",
) -> tuple[str, dict[str, Any]]:
    """Validate a payload (raises JobRejected); returns (job id, the payload to enqueue).

    The payload goes as given (with a generated job id when it has none), so the worker
    records impossible numbers as rejected recipients.
    """
    body = dict(payload)
    if body.get("job_id") is None:  # "" or false is refused by validate_job, not replaced
        body["job_id"] = new_job_id()
    job = validate_job(body, providers=providers, numbers=numbers)
    return job.job_id, body


def _job_status(
    job_id: str, record_raw: Any, counts_raw: Any, cost_raw: Any, pending_raw: Any
) -> JobStatus | None:
    if not record_raw:
        if pending_raw:
            try:
                marker = {str(k): str(v) for k, v in json.loads(_decode(pending_raw)).items()}
            except (ValueError, AttributeError):
                marker = {}
            return JobStatus(job_id, JobState.PENDING.value, marker, {})
        return None
    record = {_decode(k): _decode(v) for k, v in record_raw.items()}
    counts = {_decode(k): n for k, v in counts_raw.items() if (n := _count(v))}
    costs = []
    for key, value in sorted(cost_raw.items()):
        account, _, currency = _decode(key).partition("|")
        costs.append(CostLine(account, currency, round(float(value), 6)))
    return JobStatus(job_id, record.get("state", "unknown"), record, counts, costs=costs)


def is_settled(status: JobStatus) -> bool:
    """Nothing more will happen to the job's recipients: dead-lettered, cancelled, or every
    chunk dispatched and every recipient in a final status (``unknown`` is not final)."""
    if status.state in (JobState.DEAD_LETTERED.value, JobState.CANCELLED.value):
        return True
    if status.state != JobState.DONE.value:
        return False
    return all(name in FINAL_VALUES for name, n in status.counts.items() if n)


def _events(raw: Any) -> list[Event]:
    out: list[Event] = []
    for _stream, entries in raw or []:
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending
                continue
            out.append(
                Event(_decode(entry_id), {_decode(k): _decode(v) for k, v in fields.items()})
            )
    return out


def _group_exists(exc: redis.ResponseError) -> bool:
    return "BUSYGROUP" in str(exc)


QUEUE_NAMES = (
    INTAKE_QUEUE,
    INTAKE_OTP_QUEUE,
    "smsq-dispatch",
    "smsq-dispatch-otp",
    "smsq-webhooks",
    "smsq-reconcile",
)


def _queue_depths(values: Sequence[Any]) -> dict[str, int]:
    out = {}
    for i, name in enumerate(QUEUE_NAMES):
        out[name] = int(values[2 * i])
        out[f"{name}.delayed"] = int(values[2 * i + 1])
    return out


class _Common:
    def __init__(
        self,
        prefix: str,
        providers: Collection[str] | None,
        namespace: str,
        numbers: AcceptNumbers | None,
    ) -> None:
        self.keys = Keys(prefix)
        self.providers = providers
        self.namespace = namespace
        self.numbers: AcceptNumbers | None = numbers
        self._groups: set[str] = set()
        self._caught_up: set[tuple[str, str]] = set()

    def _queue_jobs(self, pipe: Any, payloads: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate every payload first (nothing is written if one is rejected), then queue
        their writes on ``pipe``; returns their job ids."""
        prepared = [_prepared(p, self.providers, self.numbers) for p in payloads]
        for job_id, body in prepared:
            write_job(pipe, body, pending_key=self.keys.pending(job_id), namespace=self.namespace)
        return [job_id for job_id, _ in prepared]

    def _queue_status(self, pipe: Any, job_id: str) -> None:
        _check_job_id(job_id)
        pipe.hgetall(self.keys.job(job_id))
        pipe.hgetall(self.keys.counts(job_id))
        pipe.hgetall(self.keys.cost(job_id))
        pipe.get(self.keys.pending(job_id))

    def _cancel_call(self, job_id: str, chunks: Any) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the cancel script, for the job's ``chunks`` field as read."""
        try:
            n = max(0, int(_decode(chunks))) if chunks is not None else 0
        except ValueError:
            n = 0  # not a count: the script finds it differs and answers "retry"
        keys = self.keys
        return [
            keys.job(job_id),
            keys.recipients(job_id),
            keys.counts(job_id),
            keys.pending(job_id),
            keys.events,
            *(keys.chunk(job_id, i) for i in range(n)),
        ], [job_id, f"{time.time():.3f}", EVENTS_MAXLEN, CHUNK_STATE_TTL, CANCEL_REASON, n]

    def _queue_depth_reads(self, pipe: Any) -> None:
        for name in QUEUE_NAMES:
            pipe.llen(f"{self.namespace}:{name}")
            pipe.hlen(f"{self.namespace}:{name}.DQ.msgs")

    def _read_from(self, group: str, consumer: str) -> str:
        # A consumer first gets back what it was given and never acknowledged (it crashed),
        # then new entries.
        return ">" if (group, consumer) in self._caught_up else "0"


class SmsqClient(_Common):
    """The synchronous client (``redis``). Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: redis.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        providers: Collection[str] | None = None,
        namespace: str = NAMESPACE,
        numbers: AcceptNumbers | None = "valid",
    ) -> None:
        """``numbers``: what a recipient must be for the local check (with the
        ``phonenumbers`` package installed; the worker checks again with its own
        setting): "valid", "possible", or None for the form only."""
        super().__init__(prefix, providers, namespace, numbers)
        self._own = client is None
        if client is None:
            client = redis_conn.sync_client(redis_url or "redis://127.0.0.1:6379/0")
        self.redis = client
        self._cancel = client.register_script(CANCEL_SCRIPT)

    def __enter__(self) -> SmsqClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only one this client made)."""
        if self._own:
            self.redis.close()

    # -- enqueue ------------------------------------------------------------------

    def enqueue_payload(self, payload: Mapping[str, Any]) -> str:
        """Validate a wire payload (raises JobRejected) and enqueue it; returns the job id."""
        return self.enqueue_many([payload])[0]

    def enqueue_many(self, payloads: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate every payload, then enqueue them all in one transaction (one round trip).

        If any payload is rejected (JobRejected), nothing is enqueued.
        """
        pipe = self.redis.pipeline(transaction=True)
        ids = self._queue_jobs(pipe, payloads)
        if ids:
            pipe.execute()
        return ids

    def enqueue_send(self, **kwargs: Any) -> str:
        """Enqueue a send job (arguments of :func:`send_payload`); returns the job id."""
        return self.enqueue_payload(send_payload(**kwargs))

    def enqueue_hlr(self, **kwargs: Any) -> str:
        """Enqueue an HLR job (arguments of :func:`hlr_payload`); returns the job id."""
        return self.enqueue_payload(hlr_payload(**kwargs))

    # -- follow -------------------------------------------------------------------

    def status(
        self, job_id: str, *, recipients: bool = False, limit: int | None = None
    ) -> JobStatus | None:
        """The job's record and counts (and recipients' rows if asked).

        State ``pending`` for a job enqueued and not yet taken by a worker; None when
        there is no such job. ValueError for a string that is not a job id.
        """
        pipe = self.redis.pipeline(transaction=True)  # atomic against the intake's MULTI
        self._queue_status(pipe, job_id)
        status = _job_status(job_id, *pipe.execute())
        if status is None or not recipients or status.state == JobState.PENDING.value:
            return status
        rows: list[RecipientRow] = []
        hlr: dict[str, Mapping[str, Any]] = {}
        for phone, raw in self.redis.hscan_iter(self.keys.recipients(job_id), count=1000):
            rows.append(RecipientRow.from_record(_decode(phone), json.loads(raw)))
            if limit is not None and len(rows) >= limit:
                break
        for phone, raw in self.redis.hscan_iter(self.keys.hlr(job_id), count=1000):
            hlr[_decode(phone)] = json.loads(raw)
        return replace(status, recipients=rows, hlr=hlr)

    def wait(self, job_id: str, timeout: float, *, poll: float = 0.25) -> JobStatus:
        """Wait until the job is settled (:func:`is_settled`); returns its status.

        Raises TimeoutError when it is not settled within ``timeout`` seconds, and KeyError
        for a job that is neither recorded nor pending.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status is None:
                raise KeyError(f"no job {job_id!r}")
            if is_settled(status):
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {job_id!r} not settled within {timeout}s: {status.counts}")
            time.sleep(min(poll, left))

    def cancel(self, job_id: str) -> CancelResult:
        """Cancel a job none of whose chunks a worker has taken yet (see :class:`CancelResult`).

        Two round trips: the job's number of chunks, then the cancel script."""
        _check_job_id(job_id)
        for _ in range(CANCEL_TRIES):
            chunks = self.redis.hget(self.keys.job(job_id), "chunks")
            keys, args = self._cancel_call(job_id, chunks)
            result, n = self._cancel(keys=keys, args=args)
            if _decode(result) != "retry":
                return CancelResult(job_id, _decode(result), int(n))
        return CancelResult(job_id, "pending")

    # -- events -------------------------------------------------------------------

    def read_events(
        self, group: str, consumer: str, *, count: int = 100, block: float | None = 1.0
    ) -> list[Event]:
        """Events for ``consumer`` of ``group`` (created at the stream's end if new).

        A consumer first gets the events it was given before and never acknowledged (it
        crashed), then new ones, waiting up to ``block`` seconds (None: do not wait).
        Acknowledge each handled event with :meth:`ack`.
        """
        stream = self.keys.events
        if group not in self._groups:
            try:
                self.redis.xgroup_create(stream, group, id="$", mkstream=True)
            except redis.ResponseError as exc:
                if not _group_exists(exc):
                    raise
            self._groups.add(group)
        start = self._read_from(group, consumer)
        wait_ms = None if block is None or start == "0" else int(block * 1000)
        raw = self.redis.xreadgroup(group, consumer, {stream: start}, count=count, block=wait_ms)
        events = _events(raw)
        if start == "0" and not events:
            self._caught_up.add((group, consumer))
            return self.read_events(group, consumer, count=count, block=block)
        return events

    def ack(self, group: str, *event_ids: str) -> int:
        """Acknowledge handled events; returns how many were pending."""
        if not event_ids:
            return 0
        return int(self.redis.xack(self.keys.events, group, *event_ids))

    # -- back-pressure --------------------------------------------------------------

    def accounts(self) -> list[AccountView]:
        """Provider accounts the circuit breaker has seen (never-paused accounts have no record)."""
        out = []
        for key in self.redis.scan_iter(match=self.keys.accounts_pattern, count=200):
            name = _decode(key).split(":", 2)[2]
            if ":" in name:
                continue  # the probe lock
            raw = {_decode(k): _decode(v) for k, v in self.redis.hgetall(key).items()}
            out.append(_account_view(name, raw))
        return sorted(out, key=lambda a: a.name)

    def limiters(self) -> list[LimiterView]:
        """Permits recently granted per (account, endpoint class), and provider-requested pauses."""
        prefix = self.keys.rate_prefix
        out = []
        for key in self.redis.scan_iter(match=prefix + "*", count=200):
            rest = _decode(key)[len(prefix) :]
            if rest.endswith(":pause"):
                continue
            account, _, endpoint = rest.rpartition(":")
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(key)
            pipe.pttl(self.keys.rate_pause(account, endpoint))
            recent, pause_ms = pipe.execute()
            out.append(LimiterView(account, endpoint, int(recent), max(0, int(pause_ms)) / 1000))
        return sorted(out, key=lambda v: (v.account, v.endpoint))

    def overview(self) -> Overview:
        return Overview(
            queues=self.queue_depths(),
            accounts=self.accounts(),
            limiters=self.limiters(),
            dead_letters=int(self.redis.zcard(self.keys.dead_letter_index)),
        )

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each smsq queue (immediate and delayed)."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue_depth_reads(pipe)
        return _queue_depths(pipe.execute())


class AsyncSmsqClient(_Common):
    """The asyncio client (``redis.asyncio``): :class:`SmsqClient`'s methods as coroutines.

    Use it as an async context manager, or await :meth:`aclose`.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: aredis.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        providers: Collection[str] | None = None,
        namespace: str = NAMESPACE,
        numbers: AcceptNumbers | None = "valid",
    ) -> None:
        """``numbers``: what a recipient must be for the local check (with the
        ``phonenumbers`` package installed; the worker checks again with its own
        setting): "valid", "possible", or None for the form only."""
        super().__init__(prefix, providers, namespace, numbers)
        self._own = client is None
        if client is None:
            client = redis_conn.async_client(redis_url or "redis://127.0.0.1:6379/0")
        self.redis = client
        self._cancel = client.register_script(CANCEL_SCRIPT)

    async def __aenter__(self) -> AsyncSmsqClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (only one this client made)."""
        if self._own:
            await self.redis.aclose()

    async def enqueue_payload(self, payload: Mapping[str, Any]) -> str:
        return (await self.enqueue_many([payload]))[0]

    async def enqueue_many(self, payloads: Iterable[Mapping[str, Any]]) -> list[str]:
        """Validate every payload, then enqueue them all in one transaction (one round trip)."""
        pipe = self.redis.pipeline(transaction=True)
        ids = self._queue_jobs(pipe, payloads)
        if ids:
            await pipe.execute()
        return ids

    async def enqueue_send(self, **kwargs: Any) -> str:
        return await self.enqueue_payload(send_payload(**kwargs))

    async def enqueue_hlr(self, **kwargs: Any) -> str:
        return await self.enqueue_payload(hlr_payload(**kwargs))

    async def status(
        self, job_id: str, *, recipients: bool = False, limit: int | None = None
    ) -> JobStatus | None:
        pipe = self.redis.pipeline(transaction=True)
        self._queue_status(pipe, job_id)
        status = _job_status(job_id, *(await pipe.execute()))
        if status is None or not recipients or status.state == JobState.PENDING.value:
            return status
        rows: list[RecipientRow] = []
        hlr: dict[str, Mapping[str, Any]] = {}
        async for phone, raw in self.redis.hscan_iter(self.keys.recipients(job_id), count=1000):
            rows.append(RecipientRow.from_record(_decode(phone), json.loads(raw)))
            if limit is not None and len(rows) >= limit:
                break
        async for phone, raw in self.redis.hscan_iter(self.keys.hlr(job_id), count=1000):
            hlr[_decode(phone)] = json.loads(raw)
        return replace(status, recipients=rows, hlr=hlr)

    async def wait(self, job_id: str, timeout: float, *, poll: float = 0.25) -> JobStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(job_id)
            if status is None:
                raise KeyError(f"no job {job_id!r}")
            if is_settled(status):
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {job_id!r} not settled within {timeout}s: {status.counts}")
            await asyncio.sleep(min(poll, left))

    async def cancel(self, job_id: str) -> CancelResult:
        _check_job_id(job_id)
        for _ in range(CANCEL_TRIES):
            chunks = await self.redis.hget(self.keys.job(job_id), "chunks")
            keys, args = self._cancel_call(job_id, chunks)
            result, n = await self._cancel(keys=keys, args=args)
            if _decode(result) != "retry":
                return CancelResult(job_id, _decode(result), int(n))
        return CancelResult(job_id, "pending")

    async def read_events(
        self, group: str, consumer: str, *, count: int = 100, block: float | None = 1.0
    ) -> list[Event]:
        stream = self.keys.events
        if group not in self._groups:
            try:
                await self.redis.xgroup_create(stream, group, id="$", mkstream=True)
            except redis.ResponseError as exc:
                if not _group_exists(exc):
                    raise
            self._groups.add(group)
        start = self._read_from(group, consumer)
        wait_ms = None if block is None or start == "0" else int(block * 1000)
        raw = await self.redis.xreadgroup(
            group, consumer, {stream: start}, count=count, block=wait_ms
        )
        events = _events(raw)
        if start == "0" and not events:
            self._caught_up.add((group, consumer))
            return await self.read_events(group, consumer, count=count, block=block)
        return events

    async def ack(self, group: str, *event_ids: str) -> int:
        if not event_ids:
            return 0
        return int(await self.redis.xack(self.keys.events, group, *event_ids))

    async def accounts(self) -> list[AccountView]:
        out = []
        async for key in self.redis.scan_iter(match=self.keys.accounts_pattern, count=200):
            name = _decode(key).split(":", 2)[2]
            if ":" in name:
                continue
            raw = {_decode(k): _decode(v) for k, v in (await self.redis.hgetall(key)).items()}
            out.append(_account_view(name, raw))
        return sorted(out, key=lambda a: a.name)

    async def limiters(self) -> list[LimiterView]:
        prefix = self.keys.rate_prefix
        out = []
        async for key in self.redis.scan_iter(match=prefix + "*", count=200):
            rest = _decode(key)[len(prefix) :]
            if rest.endswith(":pause"):
                continue
            account, _, endpoint = rest.rpartition(":")
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(key)
            pipe.pttl(self.keys.rate_pause(account, endpoint))
            recent, pause_ms = await pipe.execute()
            out.append(LimiterView(account, endpoint, int(recent), max(0, int(pause_ms)) / 1000))
        return sorted(out, key=lambda v: (v.account, v.endpoint))

    async def overview(self) -> Overview:
        return Overview(
            queues=await self.queue_depths(),
            accounts=await self.accounts(),
            limiters=await self.limiters(),
            dead_letters=int(await self.redis.zcard(self.keys.dead_letter_index)),
        )

    async def queue_depths(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        self._queue_depth_reads(pipe)
        return _queue_depths(await pipe.execute())


def _account_view(name: str, raw: Mapping[str, str]) -> AccountView:
    return AccountView(
        name=name,
        state=raw.get("state", "active"),
        reason=raw.get("reason", ""),
        since=float(raw["since"]) if raw.get("since") else None,
        probe_at=float(raw["probe_at"])
        if raw.get("probe_at") and raw.get("state") == "paused"
        else None,
    )


def enqueue_send(redis_url: str, **kwargs: Any) -> str:
    """One-shot :meth:`SmsqClient.enqueue_send`."""
    client = SmsqClient(redis_url)
    try:
        return client.enqueue_send(**kwargs)
    finally:
        client.redis.close()


def enqueue_hlr(redis_url: str, **kwargs: Any) -> str:
    """One-shot :meth:`SmsqClient.enqueue_hlr`."""
    client = SmsqClient(redis_url)
    try:
        return client.enqueue_hlr(**kwargs)
    finally:
        client.redis.close()
