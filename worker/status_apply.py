"""The one code path that applies a status from any source (poll, history, webhook).

Rules, enforced atomically by ``apply_status.lua`` in one round trip per batch:

- a recipient moves only forward: queued < unknown < submitted < final, and
  among finals ``delivered`` outranks the others (a late delivery report
  upgrades an ``expired``; nothing downgrades a ``delivered``);
- a report that changes nothing (a provider's retry, an older or weaker
  status, a late out-of-order report) changes nothing and emits no event;
- every applied change appends exactly one event to ``<prefix>:events``;
- a final status takes the message out of the awaiting set, so it is not
  polled again.

Provider ids are matched in a canonical form (see :func:`canonical_id`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import redis.asyncio as aredis

from worker import metrics
from worker.providers.base import StatusReport

EVENTS_MAXLEN = 1_000_000


def canonical_id(provider_message_id: str) -> str:
    """Ids compared across formats: whitespace trimmed; numeric ids without leading zeros."""
    pid = provider_message_id.strip()
    if pid.isdigit():
        return pid.lstrip("0") or "0"
    return pid


@dataclass(frozen=True)
class Applied:
    applied: int
    unchanged: int
    unmatched: int


class StatusApplier:
    def __init__(
        self, client: aredis.Redis, prefix: str, events_maxlen: int = EVENTS_MAXLEN
    ) -> None:
        self._prefix = prefix
        self._maxlen = events_maxlen
        script = resources.files("worker").joinpath("apply_status.lua").read_text(encoding="utf-8")
        self._script = client.register_script(script)

    async def apply(self, account: str, reports: Sequence[StatusReport], source: str) -> Applied:
        if not reports:
            return Applied(0, 0, 0)
        args: list[str | int | float] = [self._prefix, account, f"{time.time():.3f}", self._maxlen]
        for r in reports:
            at = r.at.timestamp() if r.at is not None else time.time()
            extra = json.dumps(dict(r.extra), default=str, separators=(",", ":")) if r.extra else ""
            args += [
                canonical_id(r.provider_message_id),
                r.status.value,
                r.raw_status,
                r.raw_error or "",
                f"{at:.3f}",
                source,
                extra,
            ]
        applied, unchanged, unmatched = await self._script(keys=[], args=args)
        result = Applied(int(applied), int(unchanged), int(unmatched))
        metrics.STATUS_REPORTS.labels(source, "applied").inc(result.applied)
        metrics.STATUS_REPORTS.labels(source, "unchanged").inc(result.unchanged)
        metrics.STATUS_REPORTS.labels(source, "unmatched").inc(result.unmatched)
        return result
