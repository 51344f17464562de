"""IntelliSoftware (IntelliSMS, intellisoftware.co.uk): adapter, codes, receivers, sandbox.

The registry (:mod:`worker.providers`) finds ``Adapter`` and ``create_sandbox`` here.
"""

from __future__ import annotations

from worker.providers.base import MessageLimits
from worker.providers.intellisoftware.adapter import IntelliSoftwareAdapter
from worker.providers.intellisoftware.codes import failure_side
from worker.providers.intellisoftware.sandbox import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    create_sandbox,
)
from worker.providers.intellisoftware.webhooks import parse_webhook, verify_webhook

Adapter = IntelliSoftwareAdapter

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}

# Rate rules per endpoint class, [(requests, per_seconds)]: IntelliSoftware's HTTP API doc
# gives no request rate, so none (an account's ``limits`` may add some).
DEFAULT_LIMITS: dict[str, list[tuple[int, float]]] = {}

# Message limits (intellisoftware-http-api.txt): Unicode (type=2) ``hex`` is "140 octets
# max, 70 unicode characters" with no ``maxconcat``, and UCS-2 only (no characters outside
# the BMP); text messages concatenate up to ``maxconcat``, for which the doc gives no cap.
MESSAGE_LIMITS = MessageLimits(ucs2_parts=1, ucs2_bmp_only=True)

# Requests in flight at once: IntelliSoftware's HTTP API doc gives no cap, so none (0).
DEFAULT_MAX_IN_FLIGHT = 0

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "MESSAGE_LIMITS",
    "SANDBOX_ACCOUNT",
    "Adapter",
    "IntelliSoftwareAdapter",
    "create_sandbox",
    "failure_side",
    "parse_webhook",
    "sandbox_push_options",
    "verify_webhook",
]


def sandbox_push_options(hook_url: str, secret: str) -> dict[str, str]:
    """Sandbox options that forward its status reports to ``hook_url`` with ``?key=secret``."""
    return {"status_report_url": f"{hook_url}?key={secret}", "push_retry_interval": "1"}
