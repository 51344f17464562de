"""SMSC's code tables: message status codes, delivery error (``err``) codes and
request error codes, each with its text and its place in smsq's status model.

The raw code is always kept beside the mapped one (see :class:`StatusCode`,
:class:`DeliveryError`, :class:`RequestError`). Sources: the SMSC section of
the provider reference (``providers/README.md``) and SMSC's ``status_messages`` /
``get.php`` pages; where an interpretation was needed, a comment says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from producers.status import Status
from worker.providers.base import ErrorClass, Side


@dataclass(frozen=True)
class StatusCode:
    """One SMSC message status code and what it means in smsq's model."""

    code: int
    text: str
    status: Status


def _table(*rows: StatusCode) -> Mapping[int, StatusCode]:
    return MappingProxyType({r.code: r for r in rows})


STATUS_CODES: Mapping[int, StatusCode] = _table(
    # -3: SMSC has no message for this id+phone. Not final: the id may be wrong,
    # or the message may be too old; reconciliation decides (UNKNOWN is not final).
    StatusCode(-3, "message not found", Status.UNKNOWN),
    # -2: stopped (cancelled by the client or by SMSC before sending). It will not
    # be sent; smsq records it as refused by the provider.
    StatusCode(-2, "stopped", Status.REJECTED),
    StatusCode(-1, "waiting to be sent", Status.SUBMITTED),
    StatusCode(0, "handed to operator", Status.SUBMITTED),
    StatusCode(1, "delivered", Status.DELIVERED),
    StatusCode(2, "read", Status.DELIVERED),  # read implies delivered
    StatusCode(3, "expired", Status.EXPIRED),
    StatusCode(4, "link clicked", Status.DELIVERED),  # a click implies delivery
    StatusCode(20, "cannot be delivered", Status.UNDELIVERABLE),
    StatusCode(22, "wrong number", Status.REJECTED),
    StatusCode(23, "prohibited", Status.REJECTED),
    # 24: SMSC dropped it for lack of funds: an account problem, not the recipient's.
    StatusCode(24, "insufficient funds", Status.FAILED),
    StatusCode(25, "number unavailable", Status.UNDELIVERABLE),
)


# Statuses that say the account, not the recipient, is the problem: at send time they
# pause the account (an account failure), as the request error for no funds does.
ACCOUNT_STATUSES = frozenset({24})


def status_code(code: int | str) -> StatusCode:
    """The table row for ``code``; unknown codes map to UNKNOWN (never guessed final)."""
    try:
        value = int(code)
    except (TypeError, ValueError):
        return StatusCode(0, f"unparsable status {code!r}", Status.UNKNOWN)
    return STATUS_CODES.get(value) or StatusCode(value, f"unknown status {value}", Status.UNKNOWN)


def map_status(code: int | str) -> Status:
    """smsq status for an SMSC status code."""
    return status_code(code).status


@dataclass(frozen=True)
class DeliveryError:
    """One SMSC delivery error (``err`` in status answers and callbacks).

    ``permanent`` is smsq's reading: retrying the same message to the same
    number later cannot help (the number or the content is refused) — as
    opposed to conditions that pass (offline, queue overflow, time window).
    """

    code: int
    text: str
    permanent: bool


def _err_table(*rows: DeliveryError) -> Mapping[int, DeliveryError]:
    return MappingProxyType({r.code: r for r in rows})


# The README lists these as examples of SMSC's ``err`` table; only documented codes
# are named here, anything else is reported as "unknown delivery error N".
DELIVERY_ERRORS: Mapping[int, DeliveryError] = _err_table(
    DeliveryError(0, "no error", False),
    DeliveryError(1, "subscriber does not exist", True),
    DeliveryError(6, "subscriber offline", False),
    DeliveryError(11, "no SMS service", True),
    DeliveryError(13, "subscriber blocked", True),
    DeliveryError(200, "virtual (test) sending", False),
    DeliveryError(219, "SIM card replaced", False),
    DeliveryError(220, "operator queue overflow", False),
    DeliveryError(242, "answering machine detected", False),
    DeliveryError(246, "time restriction", False),
    DeliveryError(247, "message limit exceeded", False),
    DeliveryError(248, "no route", True),
    DeliveryError(249, "bad number format", True),
    DeliveryError(253, "rejected by spam filter", True),
    DeliveryError(254, "unregistered sender id", True),
    DeliveryError(255, "rejected by operator", True),
)


def delivery_error(code: int | str | None) -> DeliveryError | None:
    """The row for a delivery error code; ``None`` for absent / zero codes."""
    if code is None or code == "":
        return None
    try:
        value = int(code)
    except (TypeError, ValueError):
        return DeliveryError(-1, f"unparsable delivery error {code!r}", False)
    if value == 0:
        return None
    return DELIVERY_ERRORS.get(value) or DeliveryError(
        value, f"unknown delivery error {value}", False
    )


@dataclass(frozen=True)
class RequestError:
    """An SMSC error answer code (``{"error": ..., "error_code": N}``) on one endpoint."""

    code: int
    text: str
    error_class: ErrorClass


# Endpoint groups whose error tables differ.
SEND = "send"  # send.php (SMS, HLR, cost)
STATUS = "status"  # status.php
BALANCE = "balance"  # balance.php
DATA = "data"  # get.php, info.php, tinyurls.php

# Error 7 on send depends on how many phones were asked: see classify_error().
_COMMON: dict[int, RequestError] = {
    1: RequestError(1, "bad parameters", ErrorClass.REQUEST),
    2: RequestError(2, "bad login or password, or IP not allowed", ErrorClass.ACCOUNT),
    4: RequestError(4, "IP address temporarily blocked", ErrorClass.ACCOUNT),
    9: RequestError(
        9, "request cap reached (too many identical or concurrent requests)", ErrorClass.THROTTLED
    ),
}

REQUEST_ERRORS: Mapping[str, Mapping[int, RequestError]] = MappingProxyType(
    {
        SEND: MappingProxyType(
            {
                **_COMMON,
                3: RequestError(3, "insufficient funds", ErrorClass.ACCOUNT),
                5: RequestError(5, "bad date format", ErrorClass.REQUEST),
                6: RequestError(6, "message forbidden (text or sender)", ErrorClass.REQUEST),
                7: RequestError(7, "bad phone number format", ErrorClass.RECIPIENT),
                8: RequestError(8, "cannot deliver to this number", ErrorClass.RECIPIENT),
            }
        ),
        STATUS: MappingProxyType(
            {**_COMMON, 5: RequestError(5, "error deleting the message", ErrorClass.REQUEST)}
        ),
        # balance.php: no page of ours lists its codes; the common ones apply.
        BALANCE: MappingProxyType(dict(_COMMON)),
        # get.php / info.php / tinyurls.php: 3 is "not found" (message, operator, link).
        DATA: MappingProxyType({**_COMMON, 3: RequestError(3, "not found", ErrorClass.REQUEST)}),
    }
)


def classify_error(group: str, code: int | str, *, recipients: int = 1) -> RequestError:
    """The class of an error answer on an endpoint group.

    Error 7 (bad phone format) on a send: with one phone it is that recipient's
    fault (RECIPIENT). With several, SMSC drops malformed numbers from a list and
    reports them per phone (op=1 / err=1); it answers 7 for the whole request only
    when the ``phones`` value as a whole is unusable, which is a request bug (REQUEST).
    Unknown codes are REQUEST: SMSC answered and refused, so nothing was done.
    """
    try:
        value = int(code)
    except (TypeError, ValueError):
        return RequestError(-1, f"unparsable error code {code!r}", ErrorClass.REQUEST)
    table = REQUEST_ERRORS.get(group, REQUEST_ERRORS[DATA])
    row = table.get(value)
    if row is None:
        return RequestError(value, f"unknown error {value}", ErrorClass.REQUEST)
    if group == SEND and value == 7 and recipients > 1:
        return RequestError(7, row.text, ErrorClass.REQUEST)
    return row


# Message types (``type`` in callbacks, bits 0-3 of ``flag``).
MESSAGE_TYPES: Mapping[int, str] = MappingProxyType(
    {
        0: "sms",
        1: "flash",
        2: "binary",
        3: "wap-push",
        4: "hlr",
        5: "ping",
        6: "mms",
        7: "call",
        8: "email",
        10: "viber",
        12: "social",
    }
)

# Bits 10,9 of ``flag`` (template kind; Russian page only).
TEMPLATE_KINDS: Mapping[int, str] = MappingProxyType(
    {0: "service", 1: "transactional", 2: "authorization", 3: "advertising"}
)


# --------------------------------------------------------------------------- whose failure

# Final message statuses that say whose failure it is on their own.
_PROVIDER_STATUSES = frozenset({23, 24})  # prohibited (text/sender), insufficient funds
_RECIPIENT_STATUSES = frozenset({22, 25})  # wrong number, number unavailable
# Delivery errors (``err``) on status 20 "cannot be delivered": the route, the sender or
# the operator refused, or the network was saturated — another provider's route may pass.
PROVIDER_SIDE_ERRORS = frozenset({220, 246, 247, 248, 253, 254, 255})
# The number itself: absent, without service, blocked, replaced, malformed, a machine.
RECIPIENT_SIDE_ERRORS = frozenset({1, 6, 11, 13, 219, 242, 249})
# Send refusals: 6 message forbidden (text or sender), 3 insufficient funds: the account's
# or the route's problem; 7 bad number and 8 cannot deliver to it: the recipient's.
_PROVIDER_SEND_ERRORS = frozenset({3, 6})
_RECIPIENT_SEND_ERRORS = frozenset({7, 8})


def failure_side(status: Status, raw_status: str, raw_error: str, *, at_send: bool = False) -> Side:
    """``provider``, ``recipient`` or ``unknown``: whose failure an SMSC outcome is.

    Reports: ``raw_status`` is the status code, ``raw_error`` the ``err`` code.
    ``at_send``: ``raw_status`` is the send error code (or a per-phone error).
    """
    try:
        code = int(raw_status)
    except (TypeError, ValueError):
        return "unknown"
    if at_send:
        if code in _PROVIDER_SEND_ERRORS:
            return "provider"
        return "recipient" if code in _RECIPIENT_SEND_ERRORS else "unknown"
    if code in _PROVIDER_STATUSES:
        return "provider"
    if code in _RECIPIENT_STATUSES:
        return "recipient"
    try:
        err = int(raw_error)
    except (TypeError, ValueError):
        return "unknown"
    if err in PROVIDER_SIDE_ERRORS:
        return "provider"
    return "recipient" if err in RECIPIENT_SIDE_ERRORS else "unknown"
