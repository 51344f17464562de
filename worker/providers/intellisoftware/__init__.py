"""IntelliSoftware (IntelliSMS, intellisoftware.co.uk): adapter, codes, receivers, sandbox.

The registry (:mod:`worker.providers`) reads ``SPEC``, this provider's typed
:class:`~worker.providers.base.ProviderSpec`.
"""

from __future__ import annotations

from worker.providers.base import MessageLimits, ProviderSpec
from worker.providers.intellisoftware.adapter import IntelliSoftwareAdapter
from worker.providers.intellisoftware.codes import failure_side
from worker.providers.intellisoftware.options import IntelliSoftwareOptions
from worker.providers.intellisoftware.pushes import parse_push, verify_push
from worker.providers.intellisoftware.sandbox import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    create_sandbox,
)
from worker.providers.push_auth import KEY_PARAM

# What the sandbox accepts by default (for configs that point at it).
_SANDBOX_ACCOUNT = {"login": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}

# Rate rules per endpoint class, [(requests, per_seconds)]: IntelliSoftware's HTTP API doc
# gives no request rate, so none (an account's ``limits`` may add some).
_DEFAULT_LIMITS: dict[str, list[tuple[int, float]]] = {}

# Message limits (intellisoftware-http-api.txt): Unicode (type=2) ``hex`` is "140 octets
# max, 70 unicode characters" with no ``maxconcat``, and UCS-2 only (no characters outside
# the BMP); text messages concatenate up to ``maxconcat``, for which the doc gives no cap.
_MESSAGE_LIMITS = MessageLimits(ucs2_parts=1, ucs2_bmp_only=True)

# Requests in flight at once: IntelliSoftware's HTTP API doc gives no cap, so none (0).
_DEFAULT_MAX_IN_FLIGHT = 0


def sandbox_push_options(hook_url: str, secret: str) -> dict[str, str]:
    """Sandbox options that forward its status reports to ``hook_url`` with ``?key=secret``."""
    return {"status_report_url": f"{hook_url}?key={secret}", "push_retry_interval": "1"}


SPEC = ProviderSpec(
    kind="intellisoftware",
    adapter=IntelliSoftwareAdapter,
    options=IntelliSoftwareOptions,
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

__all__ = ["SPEC", "IntelliSoftwareAdapter", "IntelliSoftwareOptions", "create_sandbox"]
