"""Reconciliation and polling: what the providers did not push, asked for.

The scheduler (:mod:`worker.scheduler`) enqueues one message per task, account and
time slot on the ``smsq-reconcile`` queue; these actors do the work. Every run is
safe to repeat: statuses go through :class:`~worker.status_apply.StatusApplier`
(monotonic, one event per change), incoming messages through
:meth:`~worker.inbound.Inbound.store_incoming` (once per provider id), and two
runs of the same task for the same account never overlap (a lease per task and
account). A run skips itself when the scheduler has already queued a newer slot.

| actor | every | what it does |
|---|---|---|
| ``reconcile_account`` | ``reconcile_interval`` | status polls for the messages due, in batches as large as the provider takes, within the account's ``status`` rate rules; next check with backoff; settles at the message's validity or the horizon |
| ``sweep_history`` | ``history_interval`` | pages of the sent history (``history`` rules) to settle ``unknown`` recipients by the id the adapter sent |
| ``poll_incoming`` | ``incoming_interval`` | incoming messages after a cursor kept per account |
| ``poll_balance`` | ``balance_interval`` | the balance into ``smsq_account_balance`` and ``<prefix>:account:<name>`` |
| ``sweep_retention`` | see the scheduler | finished jobs expire after ``retention``; their index entries go with them |

What a provider can do is read from its adapter, never from its name: the capability
protocols of worker/providers/base.py (``StatusPolling`` with ``max_status_batch``,
``HlrResults``, ``SentHistory``, ``IncomingPolling``, ``BalanceQuery``).

Keys (besides the public ones in producers/keys.py):
``<prefix>:job:<id>:polls`` (phone -> status polls made; expires with the job),
``<prefix>:unknown:<account>`` (sorted set: unknown ids -> dispatch time, for the history
sweep), ``<prefix>:history:<account>`` / ``<prefix>:incoming:<account>`` (cursors),
``<prefix>:reconcile:<account>`` (the last run's figures), ``<prefix>:retention`` (sorted
set: finished job -> purge time) with ``<prefix>:retention:scan`` (the finder's position),
``<prefix>:lock:<task>:<account>`` (run leases).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import dramatiq

from producers.keys import Keys
from producers.status import FINAL_STATUSES, JobState, Status
from worker import accounts, metrics, routing
from worker.dispatch import Reschedule, limited_call
from worker.inbound import Inbound
from worker.lease import AsyncLease
from worker.messages import decode_run
from worker.providers.base import (
    BalanceQuery,
    ErrorClass,
    HlrResult,
    HlrResults,
    IncomingPolling,
    ProviderAdapter,
    ProviderError,
    SentHistory,
    StatusPolling,
    StatusReport,
    implements,
)
from worker.resend import Resender
from worker.runtime import Runtime
from worker.status_apply import StatusApplier, canonical_id
from worker.stranded import sweep_stranded

log = logging.getLogger("smsq.reconcile")

RECONCILE_QUEUE = "smsq-reconcile"
RECONCILE_ACTOR = "reconcile_account"
HISTORY_ACTOR = "sweep_history"
INCOMING_ACTOR = "poll_incoming"
BALANCE_ACTOR = "poll_balance"
PRICES_ACTOR = "refresh_prices"
OPERATORS_ACTOR = "lookup_operators"
RETENTION_ACTOR = "sweep_retention"
STRANDED_ACTOR = "sweep_stranded"

MAX_RUN_SECONDS = 60.0  # one run stops after this long; the next slot goes on
# A run's lease renews itself while the run lives; one whose worker died lapses after this
# long, so reconciliation goes on within seconds of a crash.
RUN_LEASE_SECONDS = 15.0
MAX_REQUESTS_PER_RUN = 200
MAX_HISTORY_PAGES = 5  # history pages per sweep (SMSC: 30 an hour in all)
HISTORY_SLACK = 600.0  # seconds of history before a message's dispatch still worth reading
UNKNOWN_SCAN = 5000  # unknown ids one history sweep looks for
RETENTION_PAGE = 500
RETENTION_PAGES = 20  # job pages one retention sweep examines
RETENTION_RESCAN = 300.0  # seconds of the newest jobs every retention pass reads again
DUE_SLACK = 0.01  # seconds: times are stored to the millisecond
FINAL = frozenset(s.value for s in FINAL_STATUSES)

# --------------------------------------------------------------------------- capabilities


def polls_status(adapter: object) -> bool:
    """The provider answers status polls (adapter or adapter class; one that only pushes
    does not)."""
    return implements(adapter, StatusPolling)


def offers_history(adapter: object) -> bool:
    return implements(adapter, SentHistory)


def polls_incoming(adapter: object) -> bool:
    return implements(adapter, IncomingPolling)


UNTRACKED = "~"  # awaiting ids "~<job>|<phone>": unknown messages without a provider id


def untracked(pid: str) -> bool:
    """An awaiting id smsq made up for a message the provider gave no id (see record_chunk.lua)."""
    return pid.startswith(UNTRACKED)


def status_batch(adapter: StatusPolling) -> int:
    return max(1, adapter.max_status_batch)


# --------------------------------------------------------------------------- keys


# The keys of reconciliation and polling are Keys' (producers/keys.py); the old name stays.
TrackingKeys = Keys


def job_keys(keys: Keys, job_id: str) -> list[str]:
    """Every key of one job's records (chunk states expire on their own)."""
    return [
        keys.job(job_id),
        keys.recipients(job_id),
        keys.counts(job_id),
        keys.hlr(job_id),
        keys.cost(job_id),
        TrackingKeys(keys.prefix).polls(job_id),
    ]


# --------------------------------------------------------------------------- scripts

# Unknown recipients reconciliation stops looking for: the reason goes into the record
# (the status stays unknown: nothing says what happened), the id leaves the given sets.
# ARGV: prefix, account, leave awaiting (1/0), then per id: job, phone, id, reason.
_NOTE_UNKNOWN = """
-- KEYS[1] unknown set, KEYS[2] awaiting set, KEYS[2 + i] the i-th item's recipients hash
-- ARGV[1] leave awaiting (1/0), then per item: phone, provider id, reason
local leave = ARGV[1] == "1"
local noted = 0
for i = 1, #KEYS - 2 do
  local rkey = KEYS[2 + i]
  local phone, pid, reason = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  redis.call("ZREM", KEYS[1], pid)
  local raw = redis.call("HGET", rkey, phone)
  local record = raw and cjson.decode(raw)
  -- Only a message still unknown is given up: a push may have moved it on meanwhile.
  if (not record) or record["status"] == "unknown" then
    if leave then redis.call("ZREM", KEYS[2], pid) end
    if record then
      record["reason"] = reason
      redis.call("HSET", rkey, phone, cjson.encode(record))
      noted = noted + 1
    end
  end
end
return noted
"""


# --------------------------------------------------------------------------- due messages


@dataclass(frozen=True)
class JobInfo:
    kind: str
    start: float  # created, or scheduled if later
    validity: int | None  # seconds
    horizon: float  # seconds from ``start``


@dataclass
class Due:
    """One provider message id from the awaiting set, with what is known about it."""

    pid: str
    score: float
    job: str | None = None
    phone: str | None = None
    status: str | None = None  # the recipient's current status (None: no record)
    polls: int | None = None  # status polls made (None: reconciliation never saw it)
    at: float | None = None  # the record's time: when it was sent, unless a report moved it
    info: JobInfo | None = None

    def deadline(self) -> tuple[float, str]:
        """When reconciliation settles this message, and why then.

        Its validity runs from when it was sent (a rate-limited bulk job sends late);
        the horizon from the job's start, so nothing is polled for ever.
        """
        assert self.info is not None
        info = self.info
        end = info.start + info.horizon
        why = f"no final status within the horizon ({info.horizon:.0f} s)"
        if info.validity:
            sent = max(info.start, self.at or info.start)
            if sent + info.validity < end:
                end = sent + info.validity
                why = f"no final status within the message's validity ({info.validity} s)"
        return end, why


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def job_info(raw: Sequence[Any], horizon: float) -> JobInfo | None:
    """What sets a job's deadlines: start, validity, horizon (None without a job record)."""
    kind, created, validity, scheduled = (_text(v) for v in raw)
    if not created:
        return None
    start = float(created)
    if scheduled:
        with contextlib.suppress(ValueError):
            start = max(start, datetime.fromisoformat(scheduled).timestamp())
    seconds = int(validity) if validity.isdigit() and int(validity) > 0 else None
    return JobInfo(kind or "send", start, seconds, horizon)


async def describe(
    rt: Runtime, account: str, dues: Sequence[Due], jobs: dict[str, JobInfo | None]
) -> None:
    """Fill in each id's job, number, record status, polls made and job deadline (2 trips)."""
    if not dues:
        return
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    refs = await r.hmget(rt.keys.message_index(account), [d.pid for d in dues])
    pipe = r.pipeline(transaction=False)
    known: list[Due] = []
    for d, ref in zip(dues, refs, strict=True):
        if ref is None:
            continue
        d.job, _, d.phone = _text(ref).partition("|")
        pipe.hget(rt.keys.recipients(d.job), d.phone)
        pipe.hget(tk.polls(d.job), d.phone)
        known.append(d)
    new_jobs = sorted({d.job for d in known if d.job is not None and d.job not in jobs})
    for job in new_jobs:
        pipe.hmget(rt.keys.job(job), ["kind", "created_at", "validity", "scheduled_at"])
    results = await pipe.execute()
    horizon = rt.settings.scheduler.horizon
    for job, raw in zip(new_jobs, results[2 * len(known) :], strict=True):
        jobs[job] = job_info(raw, horizon)
    for i, d in enumerate(known):
        record, polls = results[2 * i], results[2 * i + 1]
        if record is not None:
            data = json.loads(record)
            d.status = str(data.get("status", ""))
            d.at = float(data["at"]) if data.get("at") is not None else None
        d.polls = int(polls) if polls is not None else None
        d.info = jobs.get(d.job or "")


async def fetch_due(
    rt: Runtime,
    account: str,
    now: float,
    limit: int,
    exclude: set[str],
    jobs: dict[str, JobInfo | None],
) -> list[Due]:
    """Up to ``limit`` ids whose next check has come, oldest first, described.

    Dispatch files a new id at ``first_check`` after submission, so the awaiting set's
    score is always the next check time.
    """
    r = rt.async_redis()
    now += DUE_SLACK
    out: list[Due] = []
    offset = 0
    while len(out) < limit:
        raw: list[Any] = await r.zrangebyscore(
            rt.keys.awaiting(account), "-inf", now, start=offset, num=limit, withscores=True
        )
        if not raw:
            break
        offset += len(raw)
        page = [Due(_text(pid), float(score)) for pid, score in raw if _text(pid) not in exclude]
        await describe(rt, account, page, jobs)
        out.extend(page)
        if len(raw) < limit:
            break
    return out[:limit]


def next_delay(first_check: float, max_interval: float, polls: int) -> float:
    """Seconds until the next check after ``polls`` polls: first_check doubled per poll."""
    return float(min(max_interval, first_check * 2 ** min(polls, 40)))


def hlr_report(result: HlrResult) -> StatusReport:
    """A final HLR answer as the recipient's status (the same reading as at dispatch)."""
    raw = result.raw.get("status")
    return StatusReport(
        provider_message_id=result.provider_message_id or "",
        status=Status.DELIVERED if result.ok else Status.UNDELIVERABLE,
        raw_status=str(raw) if raw not in (None, "") else ("ok" if result.ok else "failed"),
        raw_error=result.error,
    )


# --------------------------------------------------------------------------- reconcile


async def reconcile_account(
    rt: Runtime, account: str, *, clock: Callable[[], float] = time.time
) -> dict[str, int]:
    """One reconciliation run for ``account``; returns its figures (``skipped`` if busy)."""
    tk = TrackingKeys(rt.keys.prefix)
    lease = AsyncLease(rt.async_redis(), tk.lock("reconcile", account), RUN_LEASE_SECONDS)
    if not await lease.acquire():
        return {"skipped": 1}
    try:
        # Second chances a crash left queued between their decision and their dispatch.
        await Resender(rt).enqueue_due()
        return await _reconcile(rt, account, clock)
    finally:
        await lease.release()


async def _reconcile(rt: Runtime, account: str, clock: Callable[[], float]) -> dict[str, int]:
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    adapter = rt.adapter(account)
    polling = isinstance(adapter, StatusPolling)
    has_hlr = isinstance(adapter, HlrResults)
    history = isinstance(adapter, SentHistory)
    batch = status_batch(adapter) if isinstance(adapter, StatusPolling) else 1000
    applier = StatusApplier(r, rt.keys.prefix, resender=Resender(rt), kinds=rt.account_kinds())
    inbound = Inbound(r, rt.keys)
    stats: Counter[str] = Counter()
    jobs: dict[str, JobInfo | None] = {}
    seen: set[str] = set()
    started = time.monotonic()
    while time.monotonic() - started < MAX_RUN_SECONDS and stats["requests"] < MAX_REQUESTS_PER_RUN:
        due = await fetch_due(rt, account, clock(), batch, seen, jobs)
        if not due:
            break
        seen.update(d.pid for d in due)
        stats["checked"] += len(due)
        gone: list[Due] = []
        live: list[Due] = []
        for d in due:
            over = d.info is None or d.status is None or d.status in FINAL
            (gone if over else live).append(d)
        if gone:  # settled elsewhere (a push) or no record left: nothing to ask
            await r.zrem(rt.keys.awaiting(account), *[d.pid for d in gone])
        unknown = {
            d.pid: d.at or clock()
            for d in live
            if d.status == Status.UNKNOWN.value and not untracked(d.pid)
        }
        if history and unknown:
            await r.zadd(tk.unknown(account), unknown, nx=True)
        # Ids the provider cannot be asked about (it has no status query, or smsq has no id
        # for the message) wait for their deadline.
        handled: list[Due] = [d for d in live if not polling or untracked(d.pid)]
        final: set[str] = set()
        stop = False
        if polling and live:
            lookups: list[Due] = []
            messages: list[Due] = []
            for d in live:
                if untracked(d.pid):
                    continue
                (lookups if has_hlr and d.info and d.info.kind == "hlr" else messages).append(d)
            # The group holding the oldest due id goes first: neither can starve the other.
            groups = sorted(
                ((g, g is lookups) for g in (lookups, messages) if g), key=lambda x: x[0][0].score
            )
            for group, is_hlr in groups:
                try:
                    reports = await _query(rt, adapter, account, group, is_hlr, inbound)
                except Reschedule as wait:
                    # The next permit is far away: these ids back off (and meet their
                    # deadlines) like polled ones; the next slot goes on.
                    stats["errors"] += 1 if wait.after else 0
                    handled.extend(group)
                    stop = True
                    break
                except ProviderError as exc:
                    stats["errors"] += 1
                    log.warning("status poll of %s failed: %s", account, exc)
                    # Back off (and settle at the deadline) even when the provider fails:
                    # a batch that keeps failing must neither block newer ids nor live forever.
                    handled.extend(group)
                    if exc.error_class is ErrorClass.REQUEST:
                        continue  # these ids are refused: go on with the others
                    stop = True
                    break
                stats["requests"] += 1
                handled.extend(group)
                result = await applier.apply(account, reports, "poll")
                stats["applied"] += result.applied
                by_pid = {d.pid: d for d in group}
                for rep in reports:
                    pid = canonical_id(rep.provider_message_id)
                    if rep.status.is_final:
                        final.add(pid)
                    elif rep.status is Status.SUBMITTED and pid in by_pid:
                        found = by_pid[pid]  # an unknown one the provider has: submitted now
                        if found.status == Status.UNKNOWN.value:
                            found.status = Status.SUBMITTED.value
        settled = await _schedule(rt, account, handled, final, polling, clock(), applier)
        stats.update(settled)
        if stop:
            break
    await _record_run(rt, account, stats, clock())
    return dict(stats)


async def _query(
    rt: Runtime,
    adapter: ProviderAdapter,
    account: str,
    group: Sequence[Due],
    is_hlr: bool,
    inbound: Inbound,
) -> list[StatusReport]:
    """One status request for ``group`` (HLR lookups through ``hlr_results``)."""
    ids = [d.pid for d in group]
    if is_hlr and isinstance(adapter, HlrResults):
        results: list[HlrResult] = await limited_call(
            rt, account, "status", "bulk", adapter.hlr_results, ids
        )
        await inbound.record_hlr(account, results, rt.settings.routing.operator_ttl)
        return [hlr_report(x) for x in results if x.provider_message_id and not x.pending]
    if not isinstance(adapter, StatusPolling):
        return []
    reports: list[StatusReport] = await limited_call(
        rt, account, "status", "bulk", adapter.status, ids
    )
    return reports


async def _schedule(
    rt: Runtime,
    account: str,
    handled: Sequence[Due],
    final: set[str],
    polled: bool,
    now: float,
    applier: StatusApplier,
) -> Counter[str]:
    """Next check (backoff, never past the deadline) for what is not final; settle at it.

    At its deadline a submitted message becomes ``expired``. An ``unknown`` one stays
    unknown with the reason (reconciliation stops looking) where the provider answers
    status polls; where it does not (it only pushes), nothing else can settle it, so it
    becomes ``expired`` with the reason: a late delivery report still upgrades it.
    """
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    cfg = rt.settings.scheduler
    out: Counter[str] = Counter()
    later: dict[str, float] = {}
    expire: list[StatusReport] = []
    give_up: list[Due] = []
    pipe = r.pipeline(transaction=False)
    writes = 0
    for d in handled:
        if d.pid in final or d.info is None or d.job is None or d.phone is None:
            continue
        deadline, why = d.deadline()
        if now + DUE_SLACK >= deadline:
            if d.status == Status.UNKNOWN.value and polled:
                give_up.append(d)
            else:
                if d.status == Status.UNKNOWN.value:
                    why += "; the provider has no status query, so the outcome is unknown"
                    out["expired_unknown"] += 1
                expire.append(
                    StatusReport(
                        provider_message_id=d.pid,
                        status=Status.EXPIRED,
                        raw_status=f"smsq: {why}",
                        at=datetime.fromtimestamp(now, UTC),
                    )
                )
            continue
        if polled and not untracked(d.pid):
            polls = (d.polls or 0) + 1
            pipe.hincrby(tk.polls(d.job), d.phone, 1)
            later[d.pid] = min(
                deadline, now + next_delay(cfg.first_check, cfg.max_check_interval, polls)
            )
        else:  # a provider that only pushes: look again at the deadline, to settle it
            pipe.hsetnx(tk.polls(d.job), d.phone, 0)
            later[d.pid] = deadline
        writes += 1
    if later:
        # XX: an id a push settled meanwhile has left the set and must not come back
        pipe.zadd(rt.keys.awaiting(account), later, xx=True)
    if writes:
        await pipe.execute()
    if expire:
        result = await applier.apply(account, expire, "reconcile")
        out["expired"] += result.applied
        await r.zrem(rt.keys.awaiting(account), *[x.provider_message_id for x in expire])
    if give_up:
        reasons = [(d, f"reconciliation gave up: {d.deadline()[1]}") for d in give_up]
        out["gave_up"] += await note_unknown(rt, account, reasons)
    return out


async def note_unknown(
    rt: Runtime, account: str, items: Sequence[tuple[Due, str]], *, leave_awaiting: bool = True
) -> int:
    """Record why unknown recipients stay unknown, and stop looking for them."""
    keys: list[str] = [rt.keys.unknown(account), rt.keys.awaiting(account)]
    args: list[Any] = ["1" if leave_awaiting else "0"]
    for d, reason in items:
        if d.job and d.phone:
            keys.append(rt.keys.recipients(d.job))
            args += [d.phone, d.pid, reason]
    if len(keys) == 2:
        return 0
    script = rt.async_redis().register_script(_NOTE_UNKNOWN)
    return int(await script(keys=keys, args=args))


async def _record_run(rt: Runtime, account: str, stats: Counter[str], now: float) -> None:
    r = rt.async_redis()
    pipe = r.pipeline(transaction=False)
    pipe.zcard(rt.keys.awaiting(account))
    pipe.zrange(rt.keys.awaiting(account), 0, 0, withscores=True)
    pending, first = await pipe.execute()
    record: dict[Any, Any] = {"last_run_at": round(now, 3), "awaiting": int(pending)}
    record["next_check_at"] = round(float(first[0][1]), 3) if first else ""
    for name in (
        "checked",
        "requests",
        "applied",
        "expired",
        "expired_unknown",
        "gave_up",
        "errors",
    ):
        record[name] = int(stats[name])
    await r.hset(TrackingKeys(rt.keys.prefix).last_run(account), mapping=record)


# --------------------------------------------------------------------------- history


async def sweep_history(
    rt: Runtime, account: str, *, clock: Callable[[], float] = time.time
) -> dict[str, int]:
    """Settle ``unknown`` recipients from the provider's sent history (if it offers one).

    Reads pages newest first (one request each, under the ``history`` rules) until every
    unknown id is found or the pages are older than the oldest of them; a walk cut short
    (page budget, rate limit) goes on from its cursor at the next sweep. An id the walk
    covered without finding is noted as not sent (it stays unknown).
    """
    adapter = rt.adapter(account)
    if not isinstance(adapter, SentHistory):
        return {}
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    lease = AsyncLease(r, tk.lock("history", account), RUN_LEASE_SECONDS)
    if not await lease.acquire():
        return {"skipped": 1}
    try:
        return await _sweep_history(rt, account, adapter, clock)
    finally:
        await lease.release()


async def _sweep_history(
    rt: Runtime, account: str, adapter: SentHistory, clock: Callable[[], float]
) -> dict[str, int]:
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    stats: Counter[str] = Counter()
    raw: list[Any] = await r.zrange(tk.unknown(account), 0, UNKNOWN_SCAN - 1, withscores=True)
    candidates = [Due(_text(pid), float(score)) for pid, score in raw]
    await describe(rt, account, candidates, {})
    stale = [d.pid for d in candidates if d.status != Status.UNKNOWN.value]
    if stale:
        await r.zrem(tk.unknown(account), *stale)
    wanted = {d.pid: d for d in candidates if d.status == Status.UNKNOWN.value}
    if not wanted:
        await r.delete(tk.history(account))
        return dict(stats)
    oldest = min(d.score for d in wanted.values()) - HISTORY_SLACK
    walk = {_text(k): _text(v) for k, v in (await r.hgetall(tk.history(account))).items()}
    cursor = walk.get("cursor") or None
    # When this walk read its first (newest) page: what was sent before it is covered.
    walk_started = float(walk["started_at"]) if cursor and walk.get("started_at") else clock()
    applier = StatusApplier(r, rt.keys.prefix, resender=Resender(rt), kinds=rt.account_kinds())
    walk_done = False
    while stats["requests"] < MAX_HISTORY_PAGES and wanted:
        try:
            reports, next_cursor, oldest_at = await limited_call(
                rt, account, "history", "bulk", adapter.history_page, cursor
            )
        except Reschedule as wait:
            stats["errors"] += 1 if wait.after else 0
            break
        except ProviderError as exc:
            stats["errors"] += 1
            log.warning("history sweep of %s failed: %s", account, exc)
            break
        stats["requests"] += 1
        matched = [x for x in reports if canonical_id(x.provider_message_id) in wanted]
        if matched:
            result = await applier.apply(account, matched, "history")
            stats["applied"] += result.applied
            found = {canonical_id(x.provider_message_id) for x in matched}
            await r.zrem(tk.unknown(account), *found)
            for pid in found:
                wanted.pop(pid, None)
        if next_cursor is None or (oldest_at is not None and oldest_at < oldest):
            walk_done = True
            cursor = None
            break
        cursor = next_cursor
    if walk_done and wanted:
        # The walk read everything sent from well before these until it began (allowing
        # HISTORY_SLACK for the history to show a message): those it did not find never
        # went out.
        missing = [d for d in wanted.values() if d.score < walk_started - HISTORY_SLACK]
        reason = "not in the provider's sent history: it was not sent"
        stats["not_sent"] += await note_unknown(
            rt, account, [(d, reason) for d in missing], leave_awaiting=False
        )
    if cursor:
        mapping: dict[Any, Any] = {"cursor": cursor, "started_at": f"{walk_started:.3f}"}
        await r.hset(tk.history(account), mapping=mapping)
    else:
        await r.delete(tk.history(account))
    return dict(stats)


# --------------------------------------------------------------------------- incoming, balance


async def poll_incoming(rt: Runtime, account: str) -> int:
    """Fetch incoming messages after the account's cursor and store each once; returns new."""
    return (await incoming_run(rt, account)).get("new", 0)


async def incoming_run(rt: Runtime, account: str) -> dict[str, int]:
    """One incoming poll: ``{"new": n}``, or ``skipped`` (busy, rate-limited) or ``failed``."""
    adapter = rt.adapter(account)
    if not isinstance(adapter, IncomingPolling):
        return {}
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    lease = AsyncLease(r, tk.lock("incoming", account), RUN_LEASE_SECONDS)
    if not await lease.acquire():
        return {"skipped": 1}
    try:
        cursor_raw = await r.hget(tk.incoming(account), "cursor")
        cursor = _text(cursor_raw) if cursor_raw else None
        try:
            messages, new_cursor = await limited_call(
                rt, account, "incoming", "bulk", adapter.poll_incoming, cursor
            )
        except Reschedule as wait:
            return {"failed" if wait.after else "skipped": 1}
        except ProviderError as exc:
            log.warning("incoming poll of %s failed: %s", account, exc)
            return {"failed": 1}
        # Stored before the cursor moves: a crash in between fetches them again, stored once.
        new = await Inbound(r, rt.keys).store_incoming(account, messages, source="poll")
        mapping: dict[Any, Any] = {"polled_at": round(time.time(), 3), "last_new": new}
        if new_cursor:
            mapping["cursor"] = new_cursor
        await r.hset(tk.incoming(account), mapping=mapping)
        return {"new": new}
    finally:
        await lease.release()


async def poll_balance(rt: Runtime, account: str) -> str | None:
    """Ask for the balance: the gauge and ``<prefix>:account:<name>`` (balance, currency)."""
    amount, _ = await balance_run(rt, account)
    return amount


async def balance_run(rt: Runtime, account: str) -> tuple[str | None, dict[str, int]]:
    """One balance poll: (the amount, or None; ``skipped`` (rate-limited) or ``failed``)."""
    adapter = rt.adapter(account)
    if not isinstance(adapter, BalanceQuery):
        return None, {}
    try:
        balance = await limited_call(rt, account, "balance", "bulk", adapter.balance)
    except Reschedule as wait:
        return None, {"failed" if wait.after else "skipped": 1}
    except ProviderError as exc:
        log.warning("balance of %s: %s", account, exc)
        return None, {"failed": 1}
    mapping: dict[Any, Any] = {
        "balance": balance.amount,
        "currency": balance.currency or "",
        "balance_at": round(time.time(), 3),
    }
    try:
        Decimal(balance.amount)
    except (InvalidOperation, ValueError):
        log.warning("balance of %s is not a number", account)
    # smsq_account_balance{account,currency} is read from this hash at scrape time.
    await rt.async_redis().hset(accounts.account_key(rt, account), mapping=mapping)
    amount: str = balance.amount
    return amount, {}


# --------------------------------------------------------------------------- retention


def is_finished(record: dict[str, str], counts: dict[str, int], now: float, horizon: float) -> bool:
    """Nothing more will happen to the job: dispatched, and no recipient queued or submitted.

    Unknown recipients keep a job open until the horizon has passed since it was created;
    after that reconciliation has stopped looking for them, and the job is as settled as
    it will be.
    """
    state = record.get("state")
    if state in (JobState.DEAD_LETTERED.value, JobState.CANCELLED.value):
        return True
    if state != JobState.DONE.value:
        return False
    if counts.get(Status.QUEUED.value, 0) > 0 or counts.get(Status.SUBMITTED.value, 0) > 0:
        return False
    if counts.get(Status.UNKNOWN.value, 0) > 0:
        return now - float(record.get("created_at") or now) >= horizon
    return True


async def sweep_retention(rt: Runtime, *, clock: Callable[[], float] = time.time) -> dict[str, int]:
    """Find newly finished jobs (set their expiry) and purge those past ``retention``."""
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    lease = AsyncLease(r, tk.lock("retention", "all"), RUN_LEASE_SECONDS)
    if not await lease.acquire():
        return {"skipped": 1}
    try:
        now = clock()
        finished = await _find_finished(rt, now)
        purged = await _purge(rt, now)
        before = now - rt.settings.scheduler.retention
        inbound = Inbound(r, rt.keys)
        trimmed = 0
        for account in rt.settings.accounts:
            trimmed += await inbound.trim_incoming(r, account, before)
        letters = await _trim_dead_letters(rt, before)
        return {
            "finished": finished,
            "purged": purged,
            "incoming": trimmed,
            "dead_letters": letters,
        }
    finally:
        await lease.release()


async def _trim_dead_letters(rt: Runtime, before: float) -> int:
    """Dead letters older than the retention go (an operator had that long to replay them)."""
    r = rt.async_redis()
    old = await r.zrangebyscore(rt.keys.dead_letter_index, "-inf", before, 0, 10_000)
    if not old:
        return 0
    pipe = r.pipeline(transaction=True)
    pipe.hdel(rt.keys.dead_letters, *old)
    pipe.zrem(rt.keys.dead_letter_index, *old)
    await pipe.execute()
    return len(old)


def _grace(retention: float) -> float:
    """How long keys outlive their purge time, in case no scheduler purges them."""
    return max(60.0, min(86400.0, retention * 0.1))


async def _find_finished(rt: Runtime, now: float) -> int:
    """Walk the jobs index from the oldest unfinished job; each finished one gets its expiry.

    The walk resumes where the last sweep stopped (``pos``) and, at the end of the index,
    restarts from the oldest job still unfinished (``mark``): finished jobs are never read
    again, and a job that stays open does not hold the rest back.
    """
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    cfg = rt.settings.scheduler
    scan = {_text(k): _text(v) for k, v in (await r.hgetall(tk.retention_scan)).items()}
    start = scan.get("pos") or scan.get("mark") or "-inf"
    pass_min = float(scan["pass_min"]) if scan.get("pass_min") else None
    found = 0
    last: float | None = None
    offset = 0
    at_end = False
    for _ in range(RETENTION_PAGES):
        rows: list[Any] = await r.zrangebyscore(
            rt.keys.jobs, start, "+inf", start=offset, num=RETENTION_PAGE, withscores=True
        )
        offset += len(rows)
        ids = [_text(job) for job, _ in rows]
        pipe = r.pipeline(transaction=False)
        for job in ids:
            pipe.zscore(tk.retention, job)
            pipe.hmget(rt.keys.job(job), ["state", "created_at"])
            pipe.hgetall(rt.keys.counts(job))
        results = await pipe.execute() if ids else []
        done: list[str] = []
        for i, (job, score) in enumerate(zip(ids, (float(s) for _, s in rows), strict=True)):
            listed, (state, created), raw_counts = results[3 * i : 3 * i + 3]
            last = score
            if listed is not None:
                continue
            record = {"state": _text(state), "created_at": _text(created)}
            counts = {_text(k): int(v) for k, v in raw_counts.items()}
            if is_finished(record, counts, now, cfg.horizon):
                done.append(job)
            elif pass_min is None or score < pass_min:
                pass_min = score
        if done:
            ttl = int(cfg.retention + _grace(cfg.retention))
            pipe = r.pipeline(transaction=True)
            for job in done:
                for key in job_keys(rt.keys, job):
                    pipe.expire(key, ttl)
            pipe.zadd(tk.retention, {job: now + cfg.retention for job in done})
            await pipe.execute()
            found += len(done)
        if len(rows) < RETENTION_PAGE:
            at_end = True
            break
    if at_end:
        # The next pass starts at the oldest job still open, and never later than a little
        # before the newest: a job recorded while this pass ran may carry an earlier time.
        newest = last if last is not None else float(start) if start != "-inf" else None
        candidates = [x for x in (pass_min, newest and newest - RETENTION_RESCAN) if x]
        mark: float | str = min(candidates) if candidates else "-inf"
        await r.delete(tk.retention_scan)
        await r.hset(tk.retention_scan, mapping={"mark": str(mark)})
    else:
        mapping: dict[Any, Any] = {"mark": scan.get("mark") or "-inf", "pos": str(last)}
        if pass_min is not None:
            mapping["pass_min"] = str(pass_min)
        await r.hset(tk.retention_scan, mapping=mapping)
    return found


PURGED_TOMBSTONE = 7 * 24 * 3600  # a purged job id is refused for this long


async def _purge(rt: Runtime, now: float) -> int:
    """Delete the records of jobs whose retention has passed, with their index entries.

    Each job is checked again first (a job id can be reused by a corrected resubmission,
    and a job can reopen): one not finished any more leaves the retention list and keeps
    its records. A purged id leaves a tombstone so a producer's late retry is not taken
    for a new job. Pages are purged until none is due or the run's time is up.
    """
    r = rt.async_redis()
    tk = TrackingKeys(rt.keys.prefix)
    horizon = rt.settings.scheduler.horizon
    purged = 0
    started = time.monotonic()
    while time.monotonic() - started < MAX_RUN_SECONDS:
        due = [
            _text(j) for j in await r.zrangebyscore(tk.retention, "-inf", now, 0, RETENTION_PAGE)
        ]
        if not due:
            break
        for job in due:
            pipe = r.pipeline(transaction=False)
            pipe.hmget(rt.keys.job(job), ["state", "created_at"])
            pipe.hgetall(rt.keys.counts(job))
            (state, created), raw_counts = await pipe.execute()
            record = {"state": _text(state), "created_at": _text(created)}
            counts = {_text(k): int(v) for k, v in raw_counts.items()}
            if state is not None and not is_finished(record, counts, now, horizon):
                reopen = r.pipeline(transaction=True)
                for key in job_keys(rt.keys, job):
                    reopen.persist(key)
                reopen.zrem(tk.retention, job)
                await reopen.execute()
                continue
            by_account: dict[str, list[str]] = {}
            async for phone, raw in r.hscan_iter(rt.keys.recipients(job), count=1000):
                data = json.loads(raw)
                pid, account = data.get("provider_message_id"), data.get("account")
                if account and not pid:  # its tracking id, if it had one
                    pid = f"{UNTRACKED}{job}|{_text(phone)}"
                if pid and account:
                    by_account.setdefault(str(account), []).append(canonical_id(str(pid)))
            pipe = r.pipeline(transaction=True)
            for account, pids in by_account.items():
                for start in range(0, len(pids), 1000):
                    part = pids[start : start + 1000]
                    pipe.hdel(rt.keys.message_index(account), *part)
                    pipe.zrem(rt.keys.awaiting(account), *part)
                    pipe.zrem(tk.unknown(account), *part)
            pipe.delete(*job_keys(rt.keys, job))
            pipe.set(rt.keys.purged(job), "1", ex=PURGED_TOMBSTONE)
            pipe.zrem(rt.keys.jobs, job)
            pipe.zrem(tk.retention, job)
            await pipe.execute()
            purged += 1
    return purged


# --------------------------------------------------------------------------- actors


async def superseded(rt: Runtime, task: str, account: str, slot: int | None) -> bool:
    """True when the scheduler has queued a newer slot of this task: that one will run."""
    if slot is None:
        return False
    latest = await rt.async_redis().get(TrackingKeys(rt.keys.prefix).latest(task, account))
    return latest is not None and int(latest) > slot


def run_result(figures: dict[str, int]) -> str:
    """A run's ``smsq_scheduled_runs_total`` result: ``skipped`` (the lease was busy or the
    next permit far away), ``failed`` (the provider failed it: nothing was done), or ``ok``."""
    if figures.get("skipped"):
        return "skipped"
    if figures.get("failed") or (figures.get("errors") and not figures.get("requests")):
        return "failed"
    return "ok"


def _run(args: tuple[Any, ...]) -> tuple[str, int | None]:
    """(account, slot) of a periodic run's message (worker/messages.py)."""
    run = decode_run(args, per_account=True)
    return run.account or "", run.slot


def register_actors(broker: Any, runtime: Runtime) -> dict[str, Any]:
    """Declare this module's actors on ``broker``; returns them by name.

    Each takes ``(account, slot=None)`` (``sweep_retention``: ``(slot=None)``); the
    scheduler passes the slot so that a backlog of queued runs collapses into the newest.
    """

    async def run(
        task: str, account: str, slot: int | None, work: Callable[[], Awaitable[dict[str, int]]]
    ) -> None:
        if await superseded(runtime, task, account, slot):
            metrics.SCHEDULED_RUNS.labels(task, "superseded").inc()
            return
        try:
            result = await work()
        except Exception:
            metrics.SCHEDULED_RUNS.labels(task, "error").inc()
            raise
        metrics.SCHEDULED_RUNS.labels(task, run_result(result)).inc()

    async def reconcile_account_actor(*args: Any) -> None:
        account, slot = _run(args)
        await run("reconcile", account, slot, lambda: reconcile_account(runtime, account))

    async def sweep_history_actor(*args: Any) -> None:
        account, slot = _run(args)
        await run("history", account, slot, lambda: sweep_history(runtime, account))

    async def poll_incoming_actor(*args: Any) -> None:
        account, slot = _run(args)
        await run("incoming", account, slot, lambda: incoming_run(runtime, account))

    async def poll_balance_actor(*args: Any) -> None:
        account, slot = _run(args)

        async def balance() -> dict[str, int]:
            return (await balance_run(runtime, account))[1]

        await run("balance", account, slot, balance)

    async def sweep_retention_actor(*args: Any) -> None:
        slot = decode_run(args, per_account=False).slot
        await run("retention", "all", slot, lambda: sweep_retention(runtime))

    async def sweep_stranded_actor(*args: Any) -> None:
        slot = decode_run(args, per_account=False).slot
        await run("stranded", "all", slot, lambda: sweep_stranded(runtime))

    async def refresh_prices_actor(*args: Any) -> None:
        account, slot = _run(args)

        async def prices() -> dict[str, int]:
            return {"entries": await routing.refresh_prices(runtime, account)}

        await run("prices", account, slot, prices)

    async def lookup_operators_actor(*args: Any) -> None:
        account, slot = _run(args)
        await run("operators", account, slot, lambda: routing.lookup_operators(runtime, account))

    functions: dict[str, Callable[..., Awaitable[None]]] = {
        RECONCILE_ACTOR: reconcile_account_actor,
        HISTORY_ACTOR: sweep_history_actor,
        INCOMING_ACTOR: poll_incoming_actor,
        BALANCE_ACTOR: poll_balance_actor,
        RETENTION_ACTOR: sweep_retention_actor,
        STRANDED_ACTOR: sweep_stranded_actor,
        PRICES_ACTOR: refresh_prices_actor,
        OPERATORS_ACTOR: lookup_operators_actor,
    }
    return {
        name: dramatiq.actor(
            broker=broker, actor_name=name, queue_name=RECONCILE_QUEUE, max_retries=0
        )(fn)
        for name, fn in functions.items()
    }


__all__ = [
    "BALANCE_ACTOR",
    "HISTORY_ACTOR",
    "INCOMING_ACTOR",
    "OPERATORS_ACTOR",
    "PRICES_ACTOR",
    "RECONCILE_ACTOR",
    "RECONCILE_QUEUE",
    "RETENTION_ACTOR",
    "STRANDED_ACTOR",
    "TrackingKeys",
    "balance_run",
    "incoming_run",
    "is_finished",
    "next_delay",
    "offers_history",
    "poll_balance",
    "poll_incoming",
    "polls_incoming",
    "polls_status",
    "reconcile_account",
    "register_actors",
    "run_result",
    "sweep_history",
    "sweep_retention",
]
