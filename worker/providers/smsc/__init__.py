"""SMSC (smsc.ru / smscentre.com): adapter, code tables, callback parsing, sandbox.

The registry (:mod:`worker.providers`) reads ``SPEC``, this provider's typed
:class:`~worker.providers.base.ProviderSpec`.
"""

from __future__ import annotations

from worker.providers.base import MessageLimits, ProviderSpec
from worker.providers.smsc.adapter import SmscAdapter
from worker.providers.smsc.codes import failure_side
from worker.providers.smsc.options import SmscOptions
from worker.providers.smsc.push_formats import SIGNATURE_PARAMS
from worker.providers.smsc.pushes import parse_push, verify_push

# Rate rules per endpoint class, [(requests, per_seconds)], as SMSC documents them (an
# account's ``limits`` replace them per endpoint). Each is what SMSC answers error 9 past.
# None for send (its cap is "no second identical send within a minute", which a rate
# cannot express; chunks never repeat), hlr, cost or balance: the pages give none.
_DEFAULT_LIMITS: dict[str, list[tuple[int, float]]] = {
    # status.php: "more than one bulk status request ... per minute" (providers/README.md;
    # also "more than 5 status requests for one message": the bulk rule is the stricter).
    "status": [(1, 60.0)],
    # get.php?get_messages: "more than three identical requests ... within a minute or
    # more than thirty requests within an hour" (smsc-data-api.txt, error 9).
    "history": [(3, 60.0), (30, 3600.0)],
    # get.php?get_answers: "more than three identical requests ... within a minute".
    "incoming": [(3, 60.0)],
    # get.php?get_stat: "not more than three requests per minute".
    "stat": [(3, 60.0)],
    # info.php?get_operator: "more than 100 requests per minute".
    "info": [(100, 60.0)],
    # The same info.php cap for smsq's own operator lookups (least-cost routing).
    "operator": [(100, 60.0)],
    # get.php?get_price: "more than three identical requests ... within a minute".
    "prices": [(3, 60.0)],
}

# Message limits: send.php's ``mes`` is at most 1000 characters (providers/README.md).
_MESSAGE_LIMITS = MessageLimits(max_chars=1000)

# Requests in flight at once (an account's ``max_in_flight`` replaces it): SMSC answers
# error 9 to "fifteen or more requests simultaneously from different connections under
# the same username" (smsc-data-api.txt, get.php), so at most 14.
_DEFAULT_MAX_IN_FLIGHT = 14


SPEC = ProviderSpec(
    kind="smsc",
    adapter=SmscAdapter,
    options=SmscOptions,
    verify_push=verify_push,
    parse_push=parse_push,
    push_secret_params=frozenset(SIGNATURE_PARAMS),
    default_limits=_DEFAULT_LIMITS,
    default_max_in_flight=_DEFAULT_MAX_IN_FLIGHT,
    message_limits=_MESSAGE_LIMITS,
    failure_side=failure_side,
    sandbox_module="worker.providers.smsc.dev",
)

__all__ = ["SPEC", "SmscAdapter", "SmscOptions"]
