"""Retention: finished jobs expire after ``retention``; their index entries go with them
(the ``sweep_retention`` run)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from producers.status import JobState, Status
from worker.core.runtime import Runtime
from worker.state.lease import AsyncLease
from worker.state.status_apply import canonical_id
from worker.tracking.inbound import Inbound
from worker.tracking.runs import (
    MAX_RUN_SECONDS,
    RETENTION_PAGE,
    RETENTION_PAGES,
    RETENTION_RESCAN,
    RUN_LEASE_SECONDS,
    UNTRACKED,
    TrackingKeys,
    as_text,
    job_keys,
)

log = logging.getLogger("smsq.tracking")

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
    scan = {as_text(k): as_text(v) for k, v in (await r.hgetall(tk.retention_scan)).items()}
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
        ids = [as_text(job) for job, _ in rows]
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
            record = {"state": as_text(state), "created_at": as_text(created)}
            counts = {as_text(k): int(v) for k, v in raw_counts.items()}
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
            as_text(j) for j in await r.zrangebyscore(tk.retention, "-inf", now, 0, RETENTION_PAGE)
        ]
        if not due:
            break
        for job in due:
            pipe = r.pipeline(transaction=False)
            pipe.hmget(rt.keys.job(job), ["state", "created_at"])
            pipe.hgetall(rt.keys.counts(job))
            (state, created), raw_counts = await pipe.execute()
            record = {"state": as_text(state), "created_at": as_text(created)}
            counts = {as_text(k): int(v) for k, v in raw_counts.items()}
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
                    pid = f"{UNTRACKED}{job}|{as_text(phone)}"
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
