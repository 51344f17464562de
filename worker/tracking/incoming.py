"""Incoming messages (MO) polled after a cursor kept per account (the ``poll_incoming``
run); stored once per provider id by :class:`~worker.tracking.inbound.Inbound`."""

from __future__ import annotations

import logging
import time
from typing import Any

from worker.core.runtime import Runtime
from worker.pipeline.dispatch import Reschedule, limited_call
from worker.providers.base import (
    IncomingPolling,
    ProviderError,
)
from worker.state.lease import AsyncLease
from worker.tracking.inbound import Inbound
from worker.tracking.runs import RUN_LEASE_SECONDS, TrackingKeys, as_text

log = logging.getLogger("smsq.tracking")

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
        cursor = as_text(cursor_raw) if cursor_raw else None
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
