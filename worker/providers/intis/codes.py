"""Intis error codes and status values, mapped onto smsq's model.

Three tables, each decided deliberately and tested in tests/providers/intis/test_adapter.py:

- :data:`ERRORS`: the error table (doc codes 0–32, plus 33–35 from Intis's own PHP
  SDK) with the doc's text and the :class:`ErrorClass` smsq reacts with.
- :data:`STATUS_MAP`: the ``status.php`` words (``deliver`` …) onto :class:`Status`.
- :data:`CALLBACK_STATES`: the delivery-report callback ``state`` 0–9 onto :class:`Status`.

Intis sends ``error`` both as a string (``"0"``, ``"000"``) and as an integer
(``31``); :func:`parse_code` accepts either.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.status import Status
from worker.providers.base import ErrorClass, Side

__all__ = [
    "CALLBACK_STATES",
    "ERRORS",
    "STATUS_MAP",
    "IntisCode",
    "callback_status",
    "error_class",
    "error_text",
    "map_status",
    "parse_code",
]


@dataclass(frozen=True)
class IntisCode:
    """One row of the error table."""

    code: int
    text: str
    error_class: ErrorClass


def _row(code: int, text: str, cls: ErrorClass) -> tuple[int, IntisCode]:
    return code, IntisCode(code, text, cls)


_RCP, _REQ, _ACC, _TRN = (
    ErrorClass.RECIPIENT,
    ErrorClass.REQUEST,
    ErrorClass.ACCOUNT,
    ErrorClass.TRANSIENT,
)

ERRORS: dict[int, IntisCode] = dict(
    [
        # The doc writes this one "000"; the SDKs call code 0 "Service is disabled". As a
        # per-phone send field "error":"0" means success, so 0 is only an error when it is
        # the whole answer ({"error":"000"}). The gateway says it did nothing: retry later.
        _row(0, "Service unavailable", _TRN),
        # 1–5: a parameter our request lacked. A bug or an empty account setting: never
        # fixed by retrying. A missing login is the account's configuration, so ACCOUNT.
        _row(1, "Signature not specified", _REQ),
        _row(2, "Login not specified", _ACC),
        _row(3, "Text not specified", _REQ),
        _row(4, "Phone number not specified", _REQ),
        _row(5, "Sender not specified", _REQ),
        # Our signing is pinned by test vectors, so a bad signature means a wrong API key:
        # the account's credentials, like a bad login. Pause the account, alert.
        _row(6, "Invalid signature", _ACC),
        _row(7, "Invalid login", _ACC),
        # 8–11: the chunk's sender or text is refused; every recipient would get the same.
        _row(8, "Invalid sender name", _REQ),
        _row(9, "Sender name not registered", _REQ),
        _row(10, "Sender name not approved", _REQ),
        _row(11, "There are forbidden words in the text", _REQ),
        # "Error in SMS sending": the gateway failed without saying why and did not send.
        # Transient (bounded retries); per phone it becomes FAILED, not REJECTED.
        _row(12, "Error in SMS sending", _TRN),
        _row(13, "Phone number is in the stop list", _RCP),
        # The batch cap (send.php says 100, this code says 50): our chunking bug.
        _row(14, "There are more than 50 numbers in the request", _REQ),
        _row(15, "List not specified", _REQ),
        _row(16, "Invalid phone number", _RCP),
        _row(17, "SMS ID not specified", _REQ),
        # Status lookups that failed on the gateway's side: ask again later.
        _row(18, "Status not obtained", _TRN),
        _row(19, "Empty response", _TRN),
        _row(20, "The number already exists", _REQ),
        _row(21, "No name", _REQ),
        _row(22, "Template already exists", _REQ),
        _row(23, "Month not specified (format: YYYY-MM)", _REQ),
        # The doc has no separate code for a stale timestamp; ours is generated fresh for
        # every request, so this is a request bug, not something to retry.
        _row(24, "Timestamp not specified", _REQ),
        _row(25, "Error in access to the list", _REQ),
        _row(26, "There are no numbers in the list", _REQ),
        # Every number of the request was invalid: a per-recipient refusal for all of them.
        _row(27, "No valid numbers", _RCP),
        _row(28, "Date of start not specified (format: YYYY-MM-DD)", _REQ),
        _row(29, "Date of end not specified (format: YYYY-MM-DD)", _REQ),
        _row(30, "No date (format: YYYY-MM-DD)", _REQ),
        # "Closing direction to the user" (SDK: "Unavailable direction"): the route to that
        # number's country/network is closed for this account. Intis returns it per phone
        # next to successful phones (SDK sample), so it must not pause the whole account:
        # the recipient is refused here (raw code kept, so routing elsewhere stays possible).
        _row(31, "Closing direction to the user", _RCP),
        _row(32, "Not enough money", _ACC),
        # 33–35 are not in the doc; Intis's PHP SDK lists them.
        _row(33, "Wrong phone number", _RCP),
        _row(34, "Phone number is in the global stop list", _RCP),
        # Billing failed: grouped with money (account), as the SDKs do.
        _row(35, "Billing failed", _ACC),
    ]
)

# An error code outside the table: refused, but we do not know why. Never retried blindly.
UNKNOWN_CODE_CLASS = ErrorClass.REQUEST


def parse_code(value: object) -> int | None:
    """The integer code of an ``error`` field (``"0"``, ``"000"``, ``31``), or None.

    None means the field is not a code at all (missing, empty, not a number).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
    return None


def error_class(code: int) -> ErrorClass:
    """How smsq reacts to error ``code``."""
    row = ERRORS.get(code)
    return row.error_class if row else UNKNOWN_CODE_CLASS


def error_text(code: int) -> str:
    """The doc's text for ``code``."""
    row = ERRORS.get(code)
    return row.text if row else f"unknown Intis error {code}"


# status.php words. Anything else (e.g. "send", "enroute", "pending", "unknown", or a word
# Intis adds later) is not final: SUBMITTED, and reconciliation asks again.
STATUS_MAP: dict[str, Status] = {
    "deliver": Status.DELIVERED,
    "not_deliver": Status.UNDELIVERABLE,
    "expired": Status.EXPIRED,
    # Decision: part of a concatenated message arrived, the rest not (yet). Intis's own PHP
    # SDK maps it to MessageState::ACCEPTED (6, in progress), and the remaining parts may
    # still arrive and turn it into deliver / not_deliver. Calling it delivered would hide a
    # truncated message; calling it undeliverable would be wrong if it completes. So it stays
    # non-final (raw status kept); the reconciler's age limit settles one that never moves.
    "partly_deliver": Status.SUBMITTED,
}


def map_status(raw: str) -> Status:
    """The smsq status of a ``status.php`` word (unknown words are not final)."""
    return STATUS_MAP.get(raw.strip().lower(), Status.SUBMITTED)


# Delivery-report callback ``state`` (the SMPP message states, as Intis's SDK names them).
CALLBACK_STATES: dict[int, tuple[str, Status]] = {
    0: ("scheduled", Status.SUBMITTED),
    1: ("enroute", Status.SUBMITTED),
    2: ("delivered", Status.DELIVERED),
    3: ("expired", Status.EXPIRED),
    # Deleted by the operator's SMSC before delivery: it will never arrive.
    4: ("deleted", Status.UNDELIVERABLE),
    5: ("undeliverable", Status.UNDELIVERABLE),
    # Intis's SDK calls 6 "sent message" and maps partly_deliver onto it: in progress here,
    # not SMPP's final "accepted on behalf of the subscriber".
    6: ("accepted", Status.SUBMITTED),
    # Not final: status.php / a later report settles it.
    7: ("unknown", Status.SUBMITTED),
    # Rejected by the network *after* Intis accepted it (we already hold its id). smsq's
    # REJECTED means "refused at submit", so this is UNDELIVERABLE (raw state kept).
    8: ("rejected", Status.UNDELIVERABLE),
    # Skipped: never sent on, final, not delivered.
    9: ("skipped", Status.UNDELIVERABLE),
}


def callback_status(state: int) -> Status:
    """The smsq status of a callback ``state``; raises KeyError outside 0–9."""
    return CALLBACK_STATES[state][1]


# --------------------------------------------------------------------------- whose failure

# Send refusals of the route or the sender (another provider may carry the message):
# 8 invalid sender name, 9 not registered, 10 not approved, 11 forbidden words (this
# provider's filter), 12 error in sending, 31 direction closed for the account, 32 and
# 35 money / billing.
PROVIDER_SIDE_CODES = frozenset({8, 9, 10, 11, 12, 31, 32, 35})
# The number's: stop lists, invalid or wrong numbers.
RECIPIENT_SIDE_CODES = frozenset({13, 16, 27, 33, 34})


def failure_side(status: Status, raw_status: str, raw_error: str, *, at_send: bool = False) -> Side:
    """``provider``, ``recipient`` or ``unknown``: whose failure an Intis outcome is.

    At send, ``raw_status`` is the error code. Intis's reports (``not_deliver``, callback
    states 4/5/8) carry no reason, so a failure reported later is ``unknown``.
    """
    code = parse_code(raw_error if raw_error else raw_status) if at_send else None
    if code is None:
        return "unknown"
    if code in PROVIDER_SIDE_CODES:
        return "provider"
    return "recipient" if code in RECIPIENT_SIDE_CODES else "unknown"
