"""What IntelliSoftware pushes to smsq, parsed: forwarded SMS, status reports, MMS
notifications and subscription-list events. Library functions; the web layer calls them.

The gateway POSTs form fields (the doc's ASP examples read them with ``Request(...)``,
which takes query or form alike, and reply tracking says "'usercontext' POST/GET
parameter"), so every parser takes a mapping of field name to string: query and form
merged. It expects HTTP 200; anything else makes it retry every 5 minutes.

IntelliSoftware signs nothing. Two ways to know a push is theirs:

- a shared secret smsq puts in the forwarding URL configured in the account's
  Preferences (e.g. ``https://smsq.example/hooks/intellisoftware?key=<secret>``);
- the gateway's source addresses (addresses or CIDR networks).

Both are checked by :mod:`worker.providers.push_auth` (see ``webhooks.py``).

Malformed input raises ValueError naming the field (never echoing a number or secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from worker.providers.base import StatusReport
from worker.providers.intellisoftware.codes import (
    NETWORK_CODES,
    MessageType,
    SubscriptionAction,
    SubscriptionListType,
    SubscriptionSource,
    message_key,
    report_status,
)

Fields = Mapping[str, object]


@dataclass(frozen=True)
class InboundSms:
    """A received SMS forwarded by the gateway ("Receive SMS Message")."""

    sender: str  # 'from': the mobile number of the sender
    text: str
    msgid: str  # IntelliSoftware's id of the received message
    sent: datetime | None  # 'sent', W3CDTF
    networkcode: str | None = None  # shortcodes only; see codes.NETWORK_CODES
    network: str | None = None  # the network's name, when the code is known
    usercontext: str | None = None  # reply tracking: the usercontext of the message replied to
    raw: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundMms:
    """A received-MMS notification ("Receive MMS Message"); fetch parts with retrievemms."""

    sender: str  # 'from'
    subject: str  # 'text': the MMS subject
    msgid: str  # needed to retrieve the parts
    type: MessageType  # the doc: 1 (SMS text) or 5 (MMS)
    filelist: tuple[str, ...]  # component filenames
    usercontext: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SubscriptionEvent:
    """A change to a subscription list ("Subscription List Event")."""

    sublistname: str
    sublisttype: SubscriptionListType
    msisdn: str
    action: SubscriptionAction
    source: SubscriptionSource
    timestamp: datetime | None
    raw: Mapping[str, str] = field(default_factory=dict)


Push = InboundSms | InboundMms | StatusReport | SubscriptionEvent


# --- field helpers ---------------------------------------------------------------------------


def _strings(fields: Fields) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise ValueError(f"field {key!r} is not a text value")
        out[key] = value
    return out


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if value is None or value.strip() == "":
        raise ValueError(f"missing field {name!r}")
    return value.strip()


def _optional(fields: Mapping[str, str], name: str) -> str | None:
    value = fields.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _int_field(fields: Mapping[str, str], name: str) -> int:
    value = _required(fields, name)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"field {name!r} is not an integer") from None


_E = TypeVar("_E", MessageType, SubscriptionAction, SubscriptionListType, SubscriptionSource)


def _enum_field(fields: Mapping[str, str], name: str, enum: type[_E]) -> _E:
    value = _int_field(fields, name)
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"field {name!r} has an unknown value {value}") from None


# A '+' of the offset decoded as a space (a form value the sender did not percent-encode).
_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")


def parse_w3cdtf(value: str) -> datetime:
    """A W3CDTF date-time ("2010-06-10T14:45:12+01:00") as an aware datetime.

    Accepts ``Z``, ``-00:00`` (the doc's own GMT example), fractional seconds, times
    without seconds, and a bare date (midnight UTC). An offset whose '+' arrived as a
    space is repaired. A value without any offset is taken as UTC.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty date-time")
    text = _SPACE_OFFSET.sub(r"+\1", text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not a W3CDTF date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _datetime_field(fields: Mapping[str, str], name: str) -> datetime | None:
    value = _optional(fields, name)
    if value is None:
        return None
    try:
        return parse_w3cdtf(value)
    except ValueError as exc:
        raise ValueError(f"field {name!r}: {exc}") from None


# --- parsers ---------------------------------------------------------------------------------


def parse_inbound_sms(fields: Fields) -> InboundSms:
    """A forwarded SMS: ``from``, ``text``, ``msgid``, ``sent``, optional ``networkcode``
    and ``usercontext``. ``text`` may be empty (an empty SMS is still a message)."""
    f = _strings(fields)
    if "text" not in f:
        raise ValueError("missing field 'text'")
    code = _optional(f, "networkcode")
    return InboundSms(
        sender=_required(f, "from"),
        text=f["text"],
        msgid=_required(f, "msgid"),
        sent=_datetime_field(f, "sent"),
        networkcode=code,
        network=NETWORK_CODES.get(code) if code is not None else None,
        usercontext=_optional(f, "usercontext"),
        raw=f,
    )


def parse_status_report(fields: Fields) -> StatusReport:
    """A forwarded status report: ``msgid``, ``status`` (0-8, 11, 12) and ``toaddr``.

    ``provider_message_id`` is :func:`.codes.message_key` of ``msgid`` and ``toaddr``:
    the same id the adapter gave the recipient at send time (the gateway's own id is per
    submission, shared by all its recipients). ``raw_status`` keeps the value; unknown
    values map to SUBMITTED (not final) so the report is kept, not dropped. ``extra``
    holds ``gateway_msgid``, ``toaddr``, ``status_text`` and, when present, ``msgparts``
    (the README says the gateway reports the parts it billed as ``msgparts``; the doc's
    status-report fields do not list it).
    """
    f = _strings(fields)
    msgid = _required(f, "msgid")
    toaddr = _required(f, "toaddr")
    value = _int_field(f, "status")
    entry = report_status(value)
    extra: dict[str, object] = {
        "gateway_msgid": msgid,
        "toaddr": toaddr,
        "status_text": entry.text,
    }
    parts = _optional(f, "msgparts")
    if parts is not None:
        if not parts.isdigit():
            raise ValueError("field 'msgparts' is not an integer")
        extra["msgparts"] = int(parts)
    return StatusReport(
        provider_message_id=message_key(msgid, toaddr),
        status=entry.status,
        raw_status=str(value),
        raw_error=None,
        at=None,  # the gateway sends no time with a status report
        extra=extra,
    )


def parse_inbound_mms(fields: Fields) -> InboundMms:
    """A forwarded MMS notification: ``from``, ``text`` (subject), ``msgid``, ``type``
    (1 or 5) and ``filelist`` (comma-separated component filenames)."""
    f = _strings(fields)
    kind = _enum_field(f, "type", MessageType)
    if kind not in (MessageType.TEXT, MessageType.MMS):
        raise ValueError(f"field 'type' has an unexpected value {kind.value} for an MMS push")
    files = tuple(p.strip() for p in f.get("filelist", "").split(",") if p.strip())
    if kind is MessageType.MMS and not files:
        raise ValueError("missing field 'filelist'")
    return InboundMms(
        sender=_required(f, "from"),
        subject=f.get("text", ""),
        msgid=_required(f, "msgid"),
        type=kind,
        filelist=files,
        usercontext=_optional(f, "usercontext"),
        raw=f,
    )


def parse_subscription_event(fields: Fields) -> SubscriptionEvent:
    """A subscription-list event: ``sublistname``, ``sublisttype``, ``msisdn``,
    ``action``, ``source`` and ``timestamp`` (W3CDTF)."""
    f = _strings(fields)
    return SubscriptionEvent(
        sublistname=_required(f, "sublistname"),
        sublisttype=_enum_field(f, "sublisttype", SubscriptionListType),
        msisdn=_required(f, "msisdn"),
        action=_enum_field(f, "action", SubscriptionAction),
        source=_enum_field(f, "source", SubscriptionSource),
        timestamp=_datetime_field(f, "timestamp"),
        raw=f,
    )


def parse_push_fields(fields: Fields) -> Push:
    """Any push, recognised by its fields (for one forwarding URL serving all kinds).

    ``sublistname`` -> subscription event; ``status`` with ``toaddr`` -> status report;
    ``filelist`` or ``type`` -> MMS notification; ``from`` with ``text`` -> SMS.
    """
    keys = {k for k, v in fields.items() if v not in ("", None)}
    if "sublistname" in keys:
        return parse_subscription_event(fields)
    if {"status", "toaddr"} <= keys:
        return parse_status_report(fields)
    if "filelist" in keys or "type" in keys:
        return parse_inbound_mms(fields)
    if "from" in keys:
        return parse_inbound_sms(fields)
    raise ValueError("not a recognised IntelliSoftware push")
