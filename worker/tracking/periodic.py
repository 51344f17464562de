"""Periodic tracking: what the providers did not push, asked for.

The scheduler (:mod:`worker.tracking.scheduler`) enqueues one message per task, account and
time slot on the ``smsq-reconcile`` queue; these actors do the work. Every run is
safe to repeat: statuses go through :class:`~worker.state.status_apply.StatusApplier`
(monotonic, one event per change), incoming messages through
:meth:`~worker.tracking.inbound.Inbound.store_incoming` (once per provider id), and two
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

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq

from worker.core import metrics
from worker.core.messages import decode_run
from worker.core.runtime import Runtime
from worker.pipeline import routing
from worker.recovery.stranded import sweep_stranded
from worker.tracking.balance import balance_run
from worker.tracking.history import sweep_history
from worker.tracking.incoming import incoming_run
from worker.tracking.retention import sweep_retention
from worker.tracking.runs import (
    BALANCE_ACTOR,
    HISTORY_ACTOR,
    INCOMING_ACTOR,
    OPERATORS_ACTOR,
    PRICES_ACTOR,
    RECONCILE_ACTOR,
    RECONCILE_QUEUE,
    RETENTION_ACTOR,
    STRANDED_ACTOR,
    _run,
    run_result,
    superseded,
)
from worker.tracking.status_polls import reconcile_account

log = logging.getLogger("smsq.tracking")


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


__all__ = ["register_actors"]
