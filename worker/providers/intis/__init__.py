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
from worker.providers.push_auth import KEY_PARAM

# Rate rules per endpoint class, [(requests, per_seconds)]: the Intis HTTP API v1.4 doc
# gives no request rate for any endpoint, so none (an account's ``limits`` may add some).
_DEFAULT_LIMITS: dict[str, list[tuple[int, float]]] = {}

# Message limits: the Intis doc gives none.
_MESSAGE_LIMITS = MessageLimits()

# Requests in flight at once: the Intis HTTP API v1.4 doc gives no cap, so none (0).
_DEFAULT_MAX_IN_FLIGHT = 0


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
    sandbox_module="worker.providers.intis.dev",
)

__all__ = ["SPEC", "IntisAdapter", "IntisOptions"]
