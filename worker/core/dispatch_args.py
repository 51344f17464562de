"""Checks of a dispatch message's arguments before any work is done with them.

Intake writes the dispatch messages, but anyone with access to Redis can push one: a
message whose arguments are not what intake writes (wrong count or types, a job id that
is not one, text Redis cannot store, a job with no record) is dead-lettered with the reason and acknowledged at once, instead of failing
through every Dramatiq retry or writing into another job's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from producers.contract import PRIORITIES, is_job_id, unpaired_surrogates
from worker.core.queues import HLR_ACTOR, SEND_ACTOR

# Positional arguments as intake writes them (worker/pipeline/intake.py).
SEND_ARGS = (
    "job_id",
    "index",
    "route",
    "sender",
    "text",
    "recipients",
    "scheduled_at",
    "validity",
    "priority",
    "client_id",
    "created_at",
)
HLR_ARGS = ("job_id", "index", "route", "recipients", "priority")
SEND_REQUIRED = 10  # created_at may be absent (messages written by older versions)
HLR_REQUIRED = 4


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def args_problem(actor: str, args: Sequence[Any]) -> str | None:
    """Why ``args`` cannot be a dispatch message of ``actor`` as intake writes them; None if
    they can. (An account that is not configured here is not a reason: a message written
    before a configuration change goes through dispatch, which records its recipients.)"""
    names, required = (SEND_ARGS, SEND_REQUIRED) if actor == SEND_ACTOR else (HLR_ARGS, 0)
    if actor == HLR_ACTOR:
        required = HLR_REQUIRED
    elif actor != SEND_ACTOR:
        return f"{actor[:64]!r} is not a dispatch actor"
    if not required <= len(args) <= len(names):
        return f"{actor} takes {required} to {len(names)} arguments, got {len(args)}"
    surrogates = unpaired_surrogates(list(args))
    if surrogates:
        return "an argument " + surrogates[0].removeprefix("the job ")
    given = dict(zip(names, args, strict=False))
    if not is_job_id(given["job_id"]):
        return f"job_id {str(given['job_id'])[:64]!r} is not a job id"
    if not _is_int(given["index"]) or given["index"] < 0:
        return "index must be a whole number >= 0"
    route = given["route"]
    route = [route] if isinstance(route, str) else route
    if not isinstance(route, list) or not route or not all(isinstance(a, str) for a in route):
        return "route must be an account name or a non-empty list of them"
    recipients = given["recipients"]
    if (
        not isinstance(recipients, list)
        or not recipients
        or not all(isinstance(p, str) and p.isdigit() and p.isascii() for p in recipients)
    ):
        return "recipients must be a non-empty list of numbers (international digits)"
    priority = given.get("priority", "bulk")
    if priority not in PRIORITIES:
        return f"priority must be one of {', '.join(PRIORITIES)}"
    if actor == HLR_ACTOR:
        return None
    for name in ("sender", "text"):
        if not isinstance(given[name], str) or not given[name]:
            return f"{name} must be a non-empty string"
    scheduled_at = given["scheduled_at"]
    if scheduled_at is not None:
        try:
            datetime.fromisoformat(scheduled_at)
        except (TypeError, ValueError):
            return "scheduled_at must be null or an ISO 8601 date-time"
    for name in ("validity", "client_id"):
        if given[name] is not None and not _is_int(given[name]):
            return f"{name} must be null or a whole number"
    created_at = given.get("created_at")
    if created_at is not None and (
        not isinstance(created_at, int | float) or isinstance(created_at, bool)
    ):
        return "created_at must be null or a number"
    return None
