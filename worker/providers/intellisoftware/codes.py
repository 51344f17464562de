"""IntelliSoftware's result codes, status-report values and enumerations, as tables.

Sources: the HTTP interface page (``intellisoftware-http-api.txt`` in the provider docs)
and the README's "IntelliSoftware: extras" (codes gathered from the SDKs). Every
``ERR:`` code carries the :class:`ErrorClass` the core reacts to; every status-report
value carries the :class:`Status` it maps onto (the raw value is always kept beside it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import IntEnum

from producers.status import Status
from worker.providers.base import ErrorClass, Side

# Response prefixes (every answer is one of these, per line).
ID_PREFIX = "ID:"
ERR_PREFIX = "ERR:"
BALANCE_PREFIX = "BALANCE:"
OK_ANSWER = "OK"  # updatesubscriptionlist.aspx

# "A maximum of 100 numbers can be specified, separated by commas." (every send endpoint)
MAX_NUMBERS_PER_REQUEST = 100

# Default hosts. The backup is the README's / the doc's "Resilient Service" gateway.
PRIMARY_GATEWAY = "https://www.intellisoftware.co.uk"
BACKUP_GATEWAY = "https://www.intellisoftware2.co.uk"

# Paths, as the doc names them.
SENDMSG_PATH = "/smsgateway/sendmsg.aspx"
MMS_PATH = "/smsgateway/default.aspx"  # the doc's "Submission URL" for MMS
GETBALANCE_PATH = "/smsgateway/getbalance.aspx"
RETRIEVEMMS_PATH = "/smsgateway/retrievemms.aspx"
UPDATESUBLIST_PATH = "/smsgateway/updatesubscriptionlist.aspx"


@dataclass(frozen=True)
class ResultCode:
    """One ``ERR:`` code: what the gateway says it means and how smsq reacts."""

    code: str
    text: str
    error_class: ErrorClass


def _rc(code: str, text: str, error_class: ErrorClass) -> tuple[str, ResultCode]:
    return code, ResultCode(code, text, error_class)


ERROR_CODES: dict[str, ResultCode] = dict(
    [
        # --- from the HTTP interface page ---
        _rc("LOGIN_INVALID", "Username or Password is invalid", ErrorClass.ACCOUNT),
        _rc(
            "INSUFFICIENT_CREDIT",
            "Insufficient credit balance to fulfil request",
            ErrorClass.ACCOUNT,
        ),
        _rc(
            "INVALID_NUMBER",
            "Unable to route to the destination phone number",
            ErrorClass.RECIPIENT,
        ),
        _rc("INVALID_REQUEST", "The request was not valid", ErrorClass.REQUEST),
        _rc("GATEWAY_ERROR", "Unable to process request at this time", ErrorClass.TRANSIENT),
        _rc("INTERNAL_ERROR", "Unable to process request at this time", ErrorClass.TRANSIENT),
        _rc(
            "MSGID_INVALID", "Message id does not match a received MMS message", ErrorClass.REQUEST
        ),
        # "ERR:NO_XXXXXXXXXXX A mandatory parameter is missing": the named ones the doc lists.
        # Missing credentials are a configuration fault of the account, not of one request.
        _rc("NO_USERNAME", "The username parameter is missing", ErrorClass.ACCOUNT),
        _rc("NO_PASSWORD", "The password parameter is missing", ErrorClass.ACCOUNT),
        _rc("NO_MSGID", "The msgid parameter is missing", ErrorClass.REQUEST),
        # The doc only gives the NO_XXXXXXXXXXX pattern for the send parameters; these two are
        # the names smsq expects (and its sandbox answers) for a missing 'to' / 'text'.
        _rc("NO_RECIPIENTS", "The to parameter is missing", ErrorClass.REQUEST),
        _rc("NO_TEXT", "The text parameter is missing", ErrorClass.REQUEST),
        # --- the README's extras (also on the unicode/binary/WAP/MMS/subscription pages) ---
        _rc("PARAMETER_MISSING", "A mandatory parameter is missing", ErrorClass.REQUEST),
        _rc("PARAMETER_INVALID", "A parameter is invalid", ErrorClass.REQUEST),
        # The subscription-list page spells it "PPARAMETER_INVALID"; almost certainly a typo in
        # the doc (the README and every other page say PARAMETER_INVALID). Accept both.
        _rc("PPARAMETER_INVALID", "sublistname or action parameter is invalid", ErrorClass.REQUEST),
        _rc("TOO_MANY_NUMBERS", "More than 100 numbers in one request", ErrorClass.REQUEST),
    ]
)

_NO_PARAM = re.compile(r"^NO_[A-Z0-9_]+$")


def classify_error(code: str) -> ResultCode:
    """The table entry for an ``ERR:`` code (without the prefix).

    Codes of the documented ``NO_XXXXXXXXXXX`` pattern not in the table are
    REQUEST errors ("a mandatory parameter is missing"). Anything else unknown
    is a REQUEST error too: the gateway answered and refused, so nothing was
    sent, and retrying an unexplained refusal would only repeat it.
    """
    code = code.strip().upper()
    known = ERROR_CODES.get(code)
    if known is not None:
        return known
    if _NO_PARAM.match(code):
        return ResultCode(code, "A mandatory parameter is missing", ErrorClass.REQUEST)
    return ResultCode(code, "Unrecognised IntelliSoftware error", ErrorClass.REQUEST)


@dataclass(frozen=True)
class ReportStatus:
    """One value of the status-report ``status`` field."""

    value: int
    text: str
    status: Status


def _rs(value: int, text: str, status: Status) -> tuple[int, ReportStatus]:
    return value, ReportStatus(value, text, status)


# Message Status Report, "status" POST field. Non-final values map to SUBMITTED: the message
# is with the gateway and smsq has nothing better to record until a final value arrives.
REPORT_STATUSES: dict[int, ReportStatus] = dict(
    [
        # "Unknown" says nothing new about the message: it stays SUBMITTED (smsq's UNKNOWN
        # means an ambiguous submit, which this is not).
        _rs(0, "Unknown", Status.SUBMITTED),
        _rs(1, "OK", Status.SUBMITTED),
        _rs(2, "Message Queued", Status.SUBMITTED),
        _rs(3, "Message Sent", Status.SUBMITTED),
        _rs(4, "Message Delivered", Status.DELIVERED),
        _rs(5, "Error With Request", Status.REJECTED),
        _rs(6, "Unable To Deliver", Status.UNDELIVERABLE),
        # The same words as ERR:INVALID_NUMBER ("unable to route"): the number is refused.
        _rs(7, "Routing Error", Status.REJECTED),
        _rs(8, "Message Expired", Status.EXPIRED),
        _rs(11, "Acknowledged By Recipient (Voice-SMS Only)", Status.DELIVERED),
        _rs(12, "Rejected By Recipient (Voice-SMS Only)", Status.UNDELIVERABLE),
    ]
)


def report_status(value: int) -> ReportStatus:
    """The table entry for a status-report value; unknown values stay SUBMITTED (not final)."""
    known = REPORT_STATUSES.get(value)
    if known is not None:
        return known
    return ReportStatus(value, "Unrecognised status", Status.SUBMITTED)


class MessageType(IntEnum):
    """The ``type`` parameter of a submission (and of a forwarded message)."""

    TEXT = 1
    UNICODE = 2
    BINARY = 3
    WAP_PUSH = 4
    MMS = 5
    VOICE_SMS = 6


class SubscriptionAction(IntEnum):
    """``action`` of updatesubscriptionlist.aspx and of a subscription-list event."""

    SUBSCRIBE = 1  # opt-in
    UNSUBSCRIBE = 2  # opt-out
    DELETE = 3  # removed from the list


class SubscriptionListType(IntEnum):
    """``sublisttype`` of a subscription-list event."""

    PREMIUM_RATE = 1  # Premium Rate Subscription List (ARB)
    USER = 2  # User Subscription List (set up in SMSWeb)


class SubscriptionSource(IntEnum):
    """``source`` of a subscription-list event: what made the change."""

    INBOUND_SMS = 1
    INBOUND_MMS = 2
    OUTGOING_SMS = 3
    OUTGOING_MMS = 4
    WEB_PORTAL = 5
    SUPPORT = 6
    API = 7
    PLATFORM_EVENT = 8
    STATUS_REPORT = 9
    HELPDESK_PHONE = 10
    HELPDESK_EMAIL = 11
    HELPDESK_WEB_FORM = 12


SUBSCRIPTION_ACTION_TEXT: dict[SubscriptionAction, str] = {
    SubscriptionAction.SUBSCRIBE: "Subscribed phone number (Opt-in)",
    SubscriptionAction.UNSUBSCRIBE: "Unsubscribed phone number (Opt-out)",
    SubscriptionAction.DELETE: "Deleted phone number from subscription list",
}

SUBSCRIPTION_LIST_TYPE_TEXT: dict[SubscriptionListType, str] = {
    SubscriptionListType.PREMIUM_RATE: "Premium Rate Subscription List (ARB)",
    SubscriptionListType.USER: "User Subscription List (Setup in SMSWeb)",
}

SUBSCRIPTION_SOURCE_TEXT: dict[SubscriptionSource, str] = {
    SubscriptionSource.INBOUND_SMS: "Inbound SMS Message (MO)",
    SubscriptionSource.INBOUND_MMS: "Inbound MMS Message (MO)",
    SubscriptionSource.OUTGOING_SMS: "Outgoing SMS Message (MT)",
    SubscriptionSource.OUTGOING_MMS: "Outgoing MMS Message (MT)",
    SubscriptionSource.WEB_PORTAL: "Web Portal (WebSMS)",
    SubscriptionSource.SUPPORT: "Change made by IntelliSoftware Support",
    SubscriptionSource.API: "Change made via API",
    SubscriptionSource.PLATFORM_EVENT: "Platform Level Event (e.g. STOP to 86688)",
    SubscriptionSource.STATUS_REPORT: "Message Delivery Status Report",
    SubscriptionSource.HELPDESK_PHONE: "IntelliSoftware Help Desk (via Phone Call)",
    SubscriptionSource.HELPDESK_EMAIL: "IntelliSoftware Help Desk (via Email)",
    SubscriptionSource.HELPDESK_WEB_FORM: "IntelliSoftware Help Desk (via Web Form)",
}

# "networkcode" of a forwarded SMS (shortcodes only).
NETWORK_CODES: dict[str, str] = {
    "234010": "O2 (UK)",
    "234015": "Vodafone (UK)",
    "234020": "Three (UK)",
    "234030": "T-Mobile (UK)",
    "234033": "Orange (UK)",
    "0": "Network Unknown",
}


# --- numbers and ids -------------------------------------------------------------------------

DEFAULT_COUNTRY_CODE = "44"  # the gateway is British: national numbers are UK numbers


def canonical_number(number: str, country_code: str = DEFAULT_COUNTRY_CODE) -> str:
    """A number the way the gateway reports it: international digits, no '+' or '00'.

    The doc: numbers in responses "may not be identical to the numbers submitted ...
    e.g. international dialling codes added". A leading ``00`` is the international
    prefix; a single leading ``0`` is a national number, to which ``country_code`` is
    added. Non-digits (spaces, '+', dashes) are dropped.
    """
    # Plain digits (the usual case) need no per-character filtering.
    digits = number if number.isdigit() else "".join(c for c in number if c.isdigit())
    if digits.startswith("00"):
        return digits[2:]
    if digits.startswith("0"):
        return country_code + digits[1:]
    return digits


def message_key(gateway_id: str, number: str) -> str:
    """smsq's provider message id for one recipient of one IntelliSoftware submission.

    The gateway's ``ID:`` "applies to the whole submission and is identical for each
    recipient", and its status reports name the recipient in ``toaddr``; smsq needs one
    id per recipient, so it appends a short digest of the recipient's canonical number
    (a digest, not the number, so ids can be logged). The adapter builds it from the
    number on the response line; the receivers from ``msgid`` and ``toaddr``.
    """
    digest = hashlib.sha256(canonical_number(number).encode("ascii")).hexdigest()[:16]
    return f"{gateway_id}-{digest}"


def gateway_id_of(provider_message_id: str) -> str:
    """The gateway's own ``ID:`` inside a :func:`message_key`."""
    return provider_message_id.split("-", 1)[0]


# --------------------------------------------------------------------------- whose failure

# Status report values: 7 "Routing Error" is the gateway's route; 12 "Rejected By
# Recipient" the person's. 5 "Error With Request" and 6 "Unable To Deliver" give no side.
PROVIDER_SIDE_REPORTS = frozenset({7})
RECIPIENT_SIDE_REPORTS = frozenset({12})


def failure_side(status: Status, raw_status: str, raw_error: str, *, at_send: bool = False) -> Side:
    """``provider``, ``recipient`` or ``unknown``: whose failure an IntelliSoftware outcome is.

    At send, ``raw_status`` is the ``ERR:`` code: account errors (credit, access) are the
    provider side, recipient errors (an invalid number) the recipient's.
    """
    if at_send:
        code = raw_status.removeprefix(ERR_PREFIX).strip()
        if not code:
            return "unknown"
        cls = classify_error(code).error_class
        if cls is ErrorClass.ACCOUNT:
            return "provider"
        return "recipient" if cls is ErrorClass.RECIPIENT else "unknown"
    try:
        value = int(raw_status)
    except (TypeError, ValueError):
        return "unknown"
    if value in PROVIDER_SIDE_REPORTS:
        return "provider"
    return "recipient" if value in RECIPIENT_SIDE_REPORTS else "unknown"
