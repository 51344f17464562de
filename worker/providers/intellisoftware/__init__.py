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
from worker.providers.push_auth import KEY_PARAM

# Rate rules per endpoint class, [(requests, per_seconds)]: IntelliSoftware's HTTP API doc
# gives no request rate, so none (an account's ``limits`` may add some).
_DEFAULT_LIMITS: dict[str, list[tuple[int, float]]] = {}

# Message limits (intellisoftware-http-api.txt): Unicode (type=2) ``hex`` is "140 octets
# max, 70 unicode characters" with no ``maxconcat``, and UCS-2 only (no characters outside
# the BMP); text messages concatenate up to ``maxconcat``, for which the doc gives no cap.
_MESSAGE_LIMITS = MessageLimits(ucs2_parts=1, ucs2_bmp_only=True)

# Requests in flight at once: IntelliSoftware's HTTP API doc gives no cap, so none (0).
_DEFAULT_MAX_IN_FLIGHT = 0


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
    sandbox_module="worker.providers.intellisoftware.dev",
)

__all__ = ["SPEC", "IntelliSoftwareAdapter", "IntelliSoftwareOptions"]
