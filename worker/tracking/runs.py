"""What every periodic tracking run shares: queue and actor names, run limits, the
capabilities that decide which runs an account gets, and the superseded-slot check.

The runs themselves: status polls (:mod:`worker.tracking.status_polls`), the sent-history
sweep (:mod:`worker.tracking.history`), incoming messages (:mod:`worker.tracking.incoming`),
balances (:mod:`worker.tracking.balance`) and retention (:mod:`worker.tracking.retention`);
their actors are declared in :mod:`worker.tracking.periodic`.
"""

from __future__ import annotations

import logging
from typing import Any

from producers.keys import Keys
from producers.status import FINAL_STATUSES
from worker.core.messages import decode_run
from worker.core.runtime import Runtime
from worker.providers.base import (
    IncomingPolling,
    SentHistory,
    StatusPolling,
    implements,
)

log = logging.getLogger("smsq.tracking")

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
    """(account, slot) of a periodic run's message (worker/core/messages.py)."""
    run = decode_run(args, per_account=True)
    return run.account or "", run.slot


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
