"""Intis delivery reports: the GET callback Intis makes to the client's handler URL.

Parameters (not in the HTTP API doc; from the providers README): ``message-id``
(the ``id_sms`` send.php returned), ``state`` (0 scheduled, 1 enroute,
2 delivered, 3 expired, 4 deleted, 5 undeliverable, 6 accepted, 7 unknown,
8 rejected, 9 skipped), ``price``, ``currency``, ``mcc``, ``mnc``. None of them
is a signature, so the web layer can only authenticate the callback by an
unguessable handler URL; reconciliation through ``status.php`` stays the source
of truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from producers.status import Status
from worker.providers.base import StatusReport
from worker.providers.intis.codes import CALLBACK_STATES

__all__ = ["parse_delivery_report"]

_MAX_ID_LENGTH = 64


def _optional_digits(query: Mapping[str, str], name: str, lengths: range) -> str | None:
    value = query.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) in lengths):
        raise ValueError(
            f"Intis delivery report: {name!r} must be {lengths.start}–{lengths.stop - 1} digits"
        )
    return value


def parse_delivery_report(query: Mapping[str, str]) -> StatusReport:
    """The :class:`StatusReport` of one delivery-report callback's query parameters.

    Raises ValueError (with a message safe to log: it never echoes values) when
    ``message-id`` or ``state`` is missing or malformed, or an optional field is
    present but malformed.
    """
    message_id = query.get("message-id", "").strip()
    if not message_id:
        raise ValueError("Intis delivery report: 'message-id' is missing")
    if len(message_id) > _MAX_ID_LENGTH or not message_id.isascii() or not message_id.isalnum():
        raise ValueError("Intis delivery report: 'message-id' must be up to 64 letters or digits")

    raw_state = query.get("state", "").strip()
    if not raw_state:
        raise ValueError("Intis delivery report: 'state' is missing")
    if not (raw_state.isascii() and raw_state.isdigit()) or int(raw_state) not in CALLBACK_STATES:
        raise ValueError(
            f"Intis delivery report: 'state' must be an integer 0–{max(CALLBACK_STATES)}"
        )
    state_name, status = CALLBACK_STATES[int(raw_state)]

    extra: dict[str, Any] = {"state_name": state_name}
    price = query.get("price", "").strip()
    if price:
        try:
            number = Decimal(price)
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite() or number < 0:
            raise ValueError("Intis delivery report: 'price' must be a non-negative decimal")
        extra["price"] = str(number)
    currency = query.get("currency", "").strip()
    if currency:
        if not (currency.isascii() and currency.isalpha() and len(currency) <= 8):
            raise ValueError("Intis delivery report: 'currency' must be a short code like 'RUB'")
        extra["currency"] = currency.upper()
    mcc = _optional_digits(query, "mcc", range(3, 4))
    if mcc is not None:
        extra["mcc"] = mcc
    mnc = _optional_digits(query, "mnc", range(1, 4))
    if mnc is not None:
        extra["mnc"] = mnc

    return StatusReport(
        provider_message_id=message_id,
        status=Status(status),
        raw_status=raw_state,
        extra=extra,
    )
