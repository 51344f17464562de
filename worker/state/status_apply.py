"""The one code path that applies a status from any source (poll, history, webhook).

Rules, enforced atomically by ``apply_status.lua`` in one call per batch:

- a recipient moves only forward: queued < unknown < submitted < final, and
  among finals ``delivered`` outranks the others (a late delivery report
  upgrades an ``expired``; nothing downgrades a ``delivered``);
- a report that changes nothing (a provider's retry, an older or weaker
  status, a late out-of-order report) changes nothing and emits no event;
- every applied change appends exactly one event to ``<prefix>:events``;
- a final status takes the message out of the awaiting set, so it is not
  polled again.

Provider ids are matched in a canonical form (see :func:`canonical_id`).

A script receives its keys through KEYS only, so the job of each report is looked up before
the script runs: one ``HMGET`` on the account's message-id index per batch (a tracking id
``~<job>|<phone>`` names its job and needs none), then the script with those jobs' keys:
two round trips per batch. The script checks the index again and leaves untouched a report
whose id came to map to another job in between (typically a push that overtook the
recording of its send, recorded meanwhile); those are looked up and applied in another
call, at most :data:`LOOKUPS` times in all, so each report is applied once or counted
unmatched (the status paths treat unmatched reports as before: a push is applied again
later, a poll asks again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import redis.asyncio as aredis

from producers.keys import EVENTS_MAXLEN, Keys
from producers.status import FINAL_STATUSES, Status
from worker.core import metrics
from worker.providers.base import StatusReport

LOOKUPS = 3  # lookups (and script calls) per batch at most; a report still moving is unmatched


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
    resent: int = 0  # of the applied: queued for a second chance instead of final


class ResendHook(Protocol):
    """Second-chance resend, as the status paths need it (``worker.pipeline.resend.Resender``)."""

    otp_max_age: float

    def candidate(
        self,
        account: str,
        status: Status,
        raw_status: str,
        raw_error: str,
        *,
        at_send: bool = False,
    ) -> bool:
        """Whether the provider's codes call this failure provider-side (``at_send``: a
        refusal of the send itself, ``raw_status`` its error code)."""
        ...

    async def enqueue_due(self) -> int:
        """Turn the recipients queued for a second chance into dispatch messages."""
        ...


def lua_script(name: str) -> str:
    """A Lua script of ``worker/state/scripts``, with the shared limit decisions and the
    second-chance function before it."""
    folder = resources.files("worker.state").joinpath("scripts")
    shared = [folder.joinpath(f).read_text(encoding="utf-8") for f in ("limits.lua", "resend.lua")]
    return "\n".join([*shared, folder.joinpath(name).read_text(encoding="utf-8")])


class StatusApplier:
    def __init__(
        self,
        client: aredis.Redis,
        prefix: str,
        events_maxlen: int = EVENTS_MAXLEN,
        *,
        resender: ResendHook | None = None,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        """``kinds``: account -> provider kind, for the metrics' ``provider`` label."""
        self._kinds = dict(kinds or {})
        self._client = client
        self._keys = Keys(prefix)
        self._maxlen = events_maxlen
        self._resender = resender
        self._script = client.register_script(lua_script("apply_status.lua"))

    async def apply(self, account: str, reports: Sequence[StatusReport], source: str) -> Applied:
        if not reports:
            return Applied(0, 0, 0)
        resender = self._resender
        otp_max_age = resender.otp_max_age if resender is not None else 0.0
        items: list[tuple[str, list[str]]] = []  # (canonical id, the report's other values)
        for r in reports:
            at = r.at.timestamp() if r.at is not None else time.time()
            extra = json.dumps(dict(r.extra), default=str, separators=(",", ":")) if r.extra else ""
            candidate = (
                resender is not None
                and r.status in FINAL_STATUSES
                and r.status is not Status.DELIVERED
                and resender.candidate(account, r.status, r.raw_status, r.raw_error or "")
            )
            values = [
                r.status.value,
                r.raw_status,
                r.raw_error or "",
                f"{at:.3f}",
                source,
                extra,
                "1" if candidate else "",
            ]
            items.append((canonical_id(r.provider_message_id), values))
        applied = unchanged = unmatched = resent = 0
        finals: list[Any] = []
        for _ in range(LOOKUPS):
            jobs = await self._jobs_of(account, [pid for pid, _ in items])
            keys, args = self._call(account, otp_max_age, items, jobs)
            done = await self._script(keys=keys, args=args)
            applied += int(done[0])
            unchanged += int(done[1])
            unmatched += int(done[2])
            resent += int(done[3])
            finals += done[4]
            items = [items[int(i) - 1] for i in done[5]]
            if not items:
                break
        unmatched += len(items)  # still moving after every lookup: as if not found yet
        result = Applied(applied, unchanged, unmatched, resent)
        if result.resent and resender is not None:
            await resender.enqueue_due()
        metrics.STATUS_REPORTS.labels(source, "applied").inc(result.applied)
        metrics.STATUS_REPORTS.labels(source, "unchanged").inc(result.unchanged)
        metrics.STATUS_REPORTS.labels(source, "unmatched").inc(result.unmatched)
        metrics.EVENTS_PUBLISHED.labels("status").inc(result.applied)
        provider = self._kinds.get(account, "unknown")
        tally: dict[str, int] = {}
        for i in range(0, len(finals), 2):
            status = finals[i].decode() if isinstance(finals[i], bytes) else str(finals[i])
            tally[status] = tally.get(status, 0) + 1
            since = finals[i + 1].decode() if isinstance(finals[i + 1], bytes) else finals[i + 1]
            if since:
                metrics.TIME_TO_FINAL.labels(provider).observe(max(0.0, float(since)))
        metrics.count_finals(provider, account, tally)
        return result

    async def _jobs_of(self, account: str, pids: Sequence[str]) -> list[str | None]:
        """The job each provider id maps to now (None: not indexed), in one round trip; a
        tracking id ``~<job>|<phone>`` names its job (no lookup)."""
        jobs: list[str | None] = [
            pid[1:].partition("|")[0] if pid.startswith("~") else None for pid in pids
        ]
        wanted = sorted({pid for pid in pids if not pid.startswith("~")})
        if wanted:
            refs = await self._client.hmget(self._keys.message_index(account), wanted)
            found = {
                pid: _text(ref).partition("|")[0]
                for pid, ref in zip(wanted, refs, strict=True)
                if ref
            }
            jobs = [
                job if job is not None else found.get(pid)
                for pid, job in zip(pids, jobs, strict=True)
            ]
        return jobs

    def _call(
        self,
        account: str,
        otp_max_age: float,
        items: Sequence[tuple[str, Sequence[str]]],
        jobs: Sequence[str | None],
    ) -> tuple[list[str], list[str | int | float]]:
        """KEYS and ARGV of ``apply_status.lua`` for ``items`` whose jobs are ``jobs``."""
        k = self._keys
        account_keys = [k.message_index(account), k.awaiting(account), k.events, k.resend]
        slots: dict[str, int] = {}
        job_keys: list[str] = []
        reports: list[str | int | float] = []
        for (pid, values), job in zip(items, jobs, strict=True):
            slot = 0
            if job:
                slot = slots.get(job, 0)
                if not slot:
                    slot = slots[job] = len(slots) + 1
                    job_keys += [k.job(job), k.recipients(job), k.counts(job)]
            reports += [pid, slot, *values]
        args: list[str | int | float] = [
            account,
            f"{time.time():.3f}",
            self._maxlen,
            f"{otp_max_age:.3f}",
            len(slots),
            *slots,
            *reports,
        ]
        return account_keys + job_keys, args


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
