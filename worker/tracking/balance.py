"""Balances: each account's balance into ``smsq_account_balance`` and
``<prefix>:account:<name>`` (the ``poll_balance`` run)."""

from __future__ import annotations

import logging
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.core.runtime import Runtime
from worker.pipeline import accounts
from worker.pipeline.dispatch import Reschedule, limited_call
from worker.providers.base import (
    BalanceQuery,
    ProviderError,
)

log = logging.getLogger("smsq.tracking")


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
