"""The sent-history sweep: pages of the provider's sent history (``history`` rules) to
settle ``unknown`` recipients by the id the adapter sent (the ``sweep_history`` run)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from producers.status import Status
from worker.core.runtime import Runtime
from worker.pipeline.dispatch import Reschedule, limited_call
from worker.pipeline.resend import Resender
from worker.providers.base import (
    ProviderError,
    SentHistory,
)
from worker.state.lease import AsyncLease
from worker.state.status_apply import StatusApplier, canonical_id
from worker.tracking.runs import (
    HISTORY_SLACK,
    MAX_HISTORY_PAGES,
    RUN_LEASE_SECONDS,
    UNKNOWN_SCAN,
    TrackingKeys,
    as_text,
)
from worker.tracking.status_polls import Due, describe, note_unknown

log = logging.getLogger("smsq.tracking")

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
    candidates = [Due(as_text(pid), float(score)) for pid, score in raw]
    await describe(rt, account, candidates, {})
    stale = [d.pid for d in candidates if d.status != Status.UNKNOWN.value]
    if stale:
        await r.zrem(tk.unknown(account), *stale)
    wanted = {d.pid: d for d in candidates if d.status == Status.UNKNOWN.value}
    if not wanted:
        await r.delete(tk.history(account))
        return dict(stats)
    oldest = min(d.score for d in wanted.values()) - HISTORY_SLACK
    walk = {as_text(k): as_text(v) for k, v in (await r.hgetall(tk.history(account))).items()}
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
