"""Intis Telecom (go.intistele.com): adapter, signing, error table, callbacks, sandbox.

The registry (:mod:`worker.providers`) reads ``SPEC``, this provider's typed
:class:`~worker.providers.base.ProviderSpec`.
"""

from __future__ import annotations

from worker.providers.base import MessageLimits, ProviderSpec
from worker.providers.intis.adapter import IntisAdapter
from worker.providers.intis.codes import failure_side
from worker.providers.intis.options import IntisOptions
from worker.providers.intis.pushes import parse_push, verify_push
from worker.providers.intis.sandbox import DEFAULT_API_KEY, create_sandbox
from worker.providers.push_auth import KEY_PARAM

# What the sandbox accepts by default (for configs that point at it).
_SANDBOX_ACCOUNT = {"login": "testuser", "api_key": DEFAULT_API_KEY, "sender": "smstest"}

# Rate rules per endpoint class, [(requests, per_seconds)]: the Intis HTTP API v1.4 doc
# gives no request rate for any endpoint, so none (an account's ``limits`` may add some).
_DEFAULT_LIMITS: dict[str, list[tuple[int, float]]] = {}

# Message limits: the Intis doc gives none.
_MESSAGE_LIMITS = MessageLimits()

# Requests in flight at once: the Intis HTTP API v1.4 doc gives no cap, so none (0).
_DEFAULT_MAX_IN_FLIGHT = 0


def sandbox_push_options(hook_url: str, secret: str) -> dict[str, str]:
    """Sandbox options that send its delivery reports to ``hook_url`` with ``?key=secret``."""
    return {"callback_url": f"{hook_url}?key={secret}", "callback_retry_interval": "2"}


SPEC = ProviderSpec(
    kind="intis",
    adapter=IntisAdapter,
    options=IntisOptions,
    verify_push=verify_push,
    parse_push=parse_push,
    push_secret_params=frozenset({KEY_PARAM}),
    default_limits=_DEFAULT_LIMITS,
    default_max_in_flight=_DEFAULT_MAX_IN_FLIGHT,
    message_limits=_MESSAGE_LIMITS,
    failure_side=failure_side,
    sandbox_account=_SANDBOX_ACCOUNT,
    create_sandbox=create_sandbox,
    sandbox_push_options=sandbox_push_options,
)

__all__ = ["SPEC", "IntisAdapter", "IntisOptions", "create_sandbox"]
