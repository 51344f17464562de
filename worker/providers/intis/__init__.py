"""Intis Telecom (go.intistele.com): adapter, signing, error table, callbacks, sandbox.

The registry (:mod:`worker.providers`) finds ``Adapter`` and ``create_sandbox`` here.
"""

from __future__ import annotations

from worker.providers.base import MessageLimits
from worker.providers.intis.adapter import IntisAdapter
from worker.providers.intis.codes import failure_side
from worker.providers.intis.sandbox import DEFAULT_API_KEY, create_sandbox
from worker.providers.intis.webhooks import parse_webhook, verify_webhook

Adapter = IntisAdapter

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": "testuser", "api_key": DEFAULT_API_KEY, "sender": "smstest"}

# Rate rules per endpoint class, [(requests, per_seconds)]: the Intis HTTP API v1.4 doc
# gives no request rate for any endpoint, so none (an account's ``limits`` may add some).
DEFAULT_LIMITS: dict[str, list[tuple[int, float]]] = {}

# Message limits: the Intis doc gives none.
MESSAGE_LIMITS = MessageLimits()

# Requests in flight at once: the Intis HTTP API v1.4 doc gives no cap, so none (0).
DEFAULT_MAX_IN_FLIGHT = 0

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "MESSAGE_LIMITS",
    "SANDBOX_ACCOUNT",
    "Adapter",
    "IntisAdapter",
    "create_sandbox",
    "failure_side",
    "parse_webhook",
    "sandbox_push_options",
    "verify_webhook",
]


def sandbox_push_options(hook_url: str, secret: str) -> dict[str, str]:
    """Sandbox options that send its delivery reports to ``hook_url`` with ``?key=secret``."""
    return {"callback_url": f"{hook_url}?key={secret}", "callback_retry_interval": "2"}
