"""Status polls: the messages due for a check, asked for in batches within the account's
``status`` rate rules; next check with backoff; settled at the message's validity or the
horizon (the ``reconcile_account`` run)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from producers.status import Status
from worker.core.runtime import Runtime
from worker.pipeline.dispatch import Reschedule, limited_call
from worker.pipeline.resend import Resender
from worker.providers.base import (
    ErrorClass,
    HlrResult,
    HlrResults,
    ProviderAdapter,
    ProviderError,
    SentHistory,
    StatusPolling,
    StatusReport,
)
from worker.state.lease import AsyncLease
from worker.state.status_apply import StatusApplier, canonical_id
from worker.tracking.inbound import Inbound
from worker.tracking.runs import (
    DUE_SLACK,
    FINAL,
    MAX_REQUESTS_PER_RUN,
    MAX_RUN_SECONDS,
    RUN_LEASE_SECONDS,
    TrackingKeys,
    as_text,
    status_batch,
    untracked,
)

log = logging.getLogger("smsq.tracking")

# --------------------------------------------------------------------------- scripts

# Unknown recipients reconciliation stops looking for: the reason goes into the record
# (the status stays unknown: nothing says what happened), the id leaves the given sets.
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


def job_info(raw: Sequence[Any], horizon: float) -> JobInfo | None:
    """What sets a job's deadlines: start, validity, horizon (None without a job record)."""
    kind, created, validity, scheduled = (as_text(v) for v in raw)
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
        d.job, _, d.phone = as_text(ref).partition("|")
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
        page = [
            Due(as_text(pid), float(score)) for pid, score in raw if as_text(pid) not in exclude
        ]
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
