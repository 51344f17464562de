"""The Intis Telecom adapter: request building, signing, response parsing, error mapping.

Every endpoint of the Intis HTTP API v1.4 (``/external/get/<name>.php``, 18 of
them) has a typed async method on :class:`IntisAdapter`; the four the core
uses (``send``, ``status``, ``hlr``, ``balance``) implement the
:class:`~worker.providers.base.ProviderAdapter` port.

Parsing lives in module-level ``parse_*`` functions that take the response
body text, so the doc's own examples can be fed to them directly. They are
defensive on purpose, because the doc and the service disagree with JSON and
with each other:

- ``error`` arrives as a string (``"0"``, ``"000"``) or an integer (``31``).
- the templates example is not valid JSON (objects inside quoted strings);
- the incoming-SMS example has doubled outer braces ``{{...}}``;
- the monthly statistics example never closes its per-day objects;
- ``status.php`` answers ``{"<id>": "deliver"}`` (doc) or
  ``{"<id>": {"status": "deliver", "time": "..."}}`` (service, SDK);
- response keys of ``send.php`` may not be spelled exactly as the requested
  phone (a leading ``+``).

A body nothing can make sense of raises :class:`ProviderError` (TRANSIENT,
or AMBIGUOUS for calls that change something), never a bare exception.
Transport failures and HTTP statuses are classified by
:class:`~worker.providers.base.HttpClient` (e.g. HTTP 5xx is TRANSIENT).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
from yarl import URL

from producers.errors import SmsqError
from producers.status import Status
from worker.providers.base import (
    AccountConfig,
    Balance,
    ErrorClass,
    HlrResult,
    HttpClient,
    HttpResponse,
    IncomingMessage,
    NetworkInfo,
    OperatorPrice,
    ProviderError,
    RecipientOutcome,
    SendRequest,
    StatusReport,
    options_of,
)
from worker.providers.intis import codes
from worker.providers.intis.options import IntisOptions
from worker.providers.intis.signing import signed_params

__all__ = [
    "DEFAULT_BASE_URL",
    "ENDPOINTS",
    "MAX_BATCH",
    "DayStats",
    "IncomingSms",
    "IntisAdapter",
    "ListNumber",
    "MalformedResponse",
    "OperatorInfo",
    "PhoneList",
    "Price",
    "SenderName",
    "StatCell",
    "StopListEntry",
    "Template",
    "check_error",
    "load_json",
    "parse_balance",
    "parse_delete_template",
    "parse_hlr_response",
    "parse_hlr_stats",
    "parse_id",
    "parse_incoming",
    "parse_list_numbers",
    "parse_lists",
    "parse_operator",
    "parse_prices",
    "parse_send_response",
    "parse_senders",
    "parse_stats_by_month",
    "parse_status_response",
    "parse_stop_list_search",
    "parse_templates",
    "parse_timestamp",
]

DEFAULT_BASE_URL = "https://go.intistele.com"
API_PATH = "/external/get"

# Every documented script under /external/get/ (file names as the doc spells them).
ENDPOINTS: tuple[str, ...] = (
    "timestamp",
    "balance",
    "base",
    "senders",
    "phone",
    "status",
    "send",
    "find_on_stop",
    "add2stop",
    "template",
    "add_template",
    "del_template",
    "stat_by_month",
    "hlr",
    "hlr_stat",
    "operator",
    "incoming",
    "prices",
)

# Recipients per send.php request. The doc contradicts itself: send.php says "no more
# than 100 numbers", error 14 says "more than 50 numbers in the request". The lower
# figure is the one the gateway enforces with an error code, so 50 is both the default
# and the cap, whatever the account's batch_size says.
MAX_BATCH = 50
# Message ids per status.php request (not documented). 50 ids of 22 digits keep the GET
# URL well under MAX_URL, so the status poll never depends on POST being accepted.
STATUS_BATCH = 50
# Longer GET URLs are sent as a POST form instead (same parameters, same signature).
MAX_URL = 2000
# incoming.php is asked by period: each poll goes back this far before the previous one's
# end (messages are stored once per id, so the overlap only guards against clock skew).
INCOMING_OVERLAP = timedelta(minutes=5)
# How far back the first incoming poll of an account looks.
INCOMING_FIRST_LOOKBACK = timedelta(days=1)

T = TypeVar("T")


class MalformedResponse(SmsqError, ValueError):
    """A response body that none of the documented (or known undocumented) shapes fit."""


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class PhoneList:
    """One contact list (``base.php``)."""

    id: str
    name: str
    count: int | None
    pages: int | None
    time_birth: str = ""
    day_before: str = ""
    local_time: str = ""
    birth_sender: str = ""
    birth_text: str = ""
    on_birth: str = ""


@dataclass(frozen=True)
class SenderName:
    """One sender name of the account and its approval state (``senders.php``)."""

    name: str
    state: str  # e.g. "completed"; the SDKs also know "order" and "rejected"


@dataclass(frozen=True)
class ListNumber:
    """One subscriber of a contact list (``phone.php``)."""

    phone: str
    name: str = ""
    last_name: str = ""
    middle_name: str = ""
    date_birth: str = ""
    male: str = ""
    note1: str = ""
    note2: str = ""
    region: str = ""
    operator: str = ""


@dataclass(frozen=True)
class StopListEntry:
    """A number found on the stop list (``find_on_stop.php``)."""

    time_in: str
    description: str


@dataclass(frozen=True)
class Template:
    """One message template (``template.php``)."""

    name: str
    text: str
    up_time: str = ""
    id: str | None = None  # present only in the id-keyed form the SDKs show


@dataclass(frozen=True)
class StatCell:
    """Cost and parts of one status on one day."""

    cost: str
    parts: int


@dataclass(frozen=True)
class DayStats:
    """One day of ``stat_by_month.php``: per status word (deliver, not_deliver …)."""

    date: str
    statuses: Mapping[str, StatCell]


@dataclass(frozen=True)
class OperatorInfo:
    """The network of a number (``operator.php``)."""

    phone: str
    operator: str
    mcc: str
    mnc: str
    ported: bool | None
    price: str | None
    currency: str | None
    region_code: str | None = None
    time_zone: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IncomingSms:
    """One incoming SMS (``incoming.php``)."""

    id: str
    date: str
    sender: str
    prefix: str
    text: str
    phone: str = ""  # the receiving number, when the service gives it (SDKs know the field)


@dataclass(frozen=True)
class Price:
    """The price of one network (``prices.php``)."""

    mccmnc: str
    network: str
    country: str
    price: str
    currency: str


# --------------------------------------------------------------------------- coercion helpers


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _int(value: object) -> int | None:
    if type(value) is str:  # the usual case (send.php's "count_sms"), checked first
        digits = value.strip()
        return int(digits) if digits.isdigit() else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


_DECIMAL_TEXTS: dict[str, str | None] = {}  # a send answer repeats the same few costs


def _decimal(value: object) -> str | None:
    """Decimal text of a money field that may be a string or a number."""
    if type(value) is str:
        if value in _DECIMAL_TEXTS:
            return _DECIMAL_TEXTS[value]
        text = _decimal_of(value)
        if len(_DECIMAL_TEXTS) < 1024:
            _DECIMAL_TEXTS[value] = text
        return text
    return _decimal_of(value)


def _decimal_of(value: object) -> str | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return str(number) if number.is_finite() else None


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def _digits(value: str) -> str:
    if value.isdigit():  # the usual case (phone keys), without a per-character loop
        return value
    return "".join(c for c in value if c.isdigit())


def _safe_snippet(text: str, limit: int = 40) -> str:
    """The start of a body for an error message, digits masked (bodies hold numbers)."""
    snippet = re.sub(r"\d", "#", text.strip()[:limit])
    return repr(snippet) + ("…" if len(text.strip()) > limit else "")


# --------------------------------------------------------------------------- generic parsing


def load_json(text: str) -> Any:
    """The JSON value of a body, repairing the doubled outer braces of the doc's examples.

    Raises :class:`MalformedResponse` when it is not JSON even after that repair.
    """
    body = text.strip().lstrip("\ufeff")
    if not body:
        raise MalformedResponse("empty body")
    try:
        return json.loads(body)
    except ValueError:
        pass
    # incoming.php in the doc: {{"5597" : {...}}} — one pair of braces too many.
    while body.startswith("{{") and body.endswith("}}"):
        body = body[1:-1].strip()
        try:
            return json.loads(body)
        except ValueError:
            continue
    raise MalformedResponse(f"not JSON ({len(text)} chars, starts {_safe_snippet(text)})")


def _object(data: Any, what: str) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    # PHP's json_encode turns an empty array into [], where an object was meant.
    if isinstance(data, list) and not data:
        return {}
    raise MalformedResponse(f"{what}: expected a JSON object, got {type(data).__name__}")


def error_code_of(data: Any) -> tuple[int | None, str] | None:
    """``(code, raw)`` if ``data`` is a whole-request error ``{"error": N}``, else None.

    A top-level ``error`` of 0 is only an error when it is all there is (the doc's
    ``000`` "Service unavailable"); ``operator.php`` carries ``"error": 0`` beside its data.
    """
    if not isinstance(data, dict) or "error" not in data:
        return None
    raw = data["error"]
    if isinstance(raw, dict | list):
        return None  # a phone or id literally named "error" — not a code
    code = codes.parse_code(raw)
    if code == 0 and any(k not in ("error", "ok") for k in data):
        return None
    return code, _text(raw)


def check_error(data: Any, endpoint: str) -> None:
    """Raise :class:`ProviderError` if ``data`` is a whole-request error."""
    found = error_code_of(data)
    if found is None:
        return
    raise _error_for(found, endpoint)


def _error_for(found: tuple[int | None, str], endpoint: str) -> ProviderError:
    code, raw = found
    if code is None:
        return ProviderError(
            codes.UNKNOWN_CODE_CLASS, f"{endpoint}.php: error {_safe_snippet(raw)}", raw_code=raw
        )
    return ProviderError(
        codes.error_class(code), f"{endpoint}.php: {codes.error_text(code)}", raw_code=raw
    )


def _load(text: str, endpoint: str) -> Any:
    data = load_json(text)
    check_error(data, endpoint)
    return data


# --------------------------------------------------------------------------- send


def _match_index(keys: Iterable[str]) -> dict[str, str]:
    """Normalised response key -> response key (exact, digits only, no leading zeros)."""
    index: dict[str, str] = {}
    for key in keys:
        for form in (key, _digits(key), _digits(key).lstrip("0")):
            if form:
                index.setdefault(form, key)
    return index


def _lookup(index: Mapping[str, str], phone: str) -> str | None:
    for form in (phone, _digits(phone), _digits(phone).lstrip("0")):
        if form and form in index:
            return index[form]
    return None


def _lookup_plain(answers: Mapping[str, Any], phone: str) -> str | None:
    """_lookup() where every key of the answer is its own only normalised form."""
    for form in (phone, _digits(phone), _digits(phone).lstrip("0")):
        if form and form in answers:
            return form
    return None


def _rejection(phone: str, code: int | None, raw: str) -> RecipientOutcome:
    if code is None:
        cls = codes.UNKNOWN_CODE_CLASS
        reason = f"unrecognised error {_safe_snippet(raw)}"
    else:
        cls = codes.error_class(code)
        reason = codes.error_text(code)
    # Refusals of the number, sender or text are final (REJECTED); the gateway's own
    # failures and account problems (12, 32, 35) are FAILED: smsq may try again later.
    status = Status.REJECTED if cls in (ErrorClass.RECIPIENT, ErrorClass.REQUEST) else Status.FAILED
    return RecipientOutcome(
        phone=phone, status=status, raw_code=raw, reason=reason, error_class=cls
    )


def _phone_outcome(phone: str, entry: Any) -> RecipientOutcome:
    if not isinstance(entry, dict):
        # Not documented, but tolerated: a bare code in place of the object.
        return _rejection(phone, codes.parse_code(entry), _text(entry))
    raw_error = entry.get("error", "0")
    if raw_error == "0" and type(raw_error) is str:  # the usual answer, read directly
        raw_code = "0"
    else:
        code = codes.parse_code(raw_error)
        if code != 0:
            return _rejection(phone, code, _text(raw_error))
        raw_code = _text(raw_error)
    id_sms = entry.get("id_sms")
    message_id = (id_sms if type(id_sms) is str else _text(id_sms)).strip()
    if not message_id:
        return RecipientOutcome(
            phone=phone,
            status=Status.UNKNOWN,
            raw_code=raw_code,
            reason="accepted without an id_sms",
            error_class=ErrorClass.AMBIGUOUS,
        )
    return RecipientOutcome.submitted(
        phone,
        message_id,
        parts=_int(entry.get("count_sms")),
        cost=_decimal(entry.get("cost")),
        raw_code=raw_code,
    )


def parse_send_response(text: str, phones: Sequence[str]) -> list[RecipientOutcome]:
    """One outcome per requested phone (in order) from a ``send.php`` JSON body.

    ``{"<phone>": {"error": "0", "id_sms": …, "cost": …, "count_sms": …}}`` is
    SUBMITTED; a per-phone error code is REJECTED or FAILED by the error table; a
    phone the answer does not mention is UNKNOWN. A whole-request error raises
    :class:`ProviderError`, except the per-recipient ones (e.g. 27 "No valid
    numbers"), which refuse every phone of the request.
    """
    data = load_json(text)
    found = error_code_of(data)
    if found is not None:
        code, raw = found
        if code is not None and codes.error_class(code) is ErrorClass.RECIPIENT:
            return [_rejection(phone, code, raw) for phone in phones]
        raise _error_for(found, "send")
    answers = _object(data, "send.php")
    # Keys that are plain digits without leading zeros are their own normalised forms:
    # the answer is its own index (the usual case; _match_index builds the same mapping).
    plain = all(k.isdigit() and k[0] != "0" for k in answers)
    index = answers if plain else _match_index(answers)
    outcomes = []
    for phone in phones:
        if plain:
            key = phone if phone in answers else _lookup_plain(answers, phone)
        else:
            key = _lookup(index, phone)
        if key is None:
            outcomes.append(
                RecipientOutcome(
                    phone=phone,
                    status=Status.UNKNOWN,
                    reason="missing from the send.php response",
                    error_class=ErrorClass.AMBIGUOUS,
                )
            )
        else:
            outcomes.append(_phone_outcome(phone, answers[key]))
    return outcomes


# --------------------------------------------------------------------------- status


def _parse_time(value: str, zone: tzinfo = UTC) -> datetime | None:
    """An Intis date or date-time: a local time in the account's zone.

    The doc gives every time the gateway writes or reads (``sendingTime``, status
    ``time``, incoming ``date``, ``from``/``to``) as a bare local time and only the
    request ``timestamp`` as UTC: all of them are read in the account's one zone
    (``options.timezone``, default UTC).
    """
    text = value.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=zone)
        except ValueError:
            continue
    return None


def _status_report(message_id: str, value: Any, zone: tzinfo = UTC) -> StatusReport:
    raw_time = ""
    raw_error: str | None = None
    if isinstance(value, dict):
        raw_status = _text(value.get("status")).strip()
        raw_time = _text(value.get("time"))
        if "error" in value and codes.parse_code(value["error"]) != 0:
            raw_error = _text(value["error"])
    else:
        raw_status = _text(value).strip()
    extra: dict[str, Any] = {"time": raw_time} if raw_time else {}
    return StatusReport(
        provider_message_id=message_id,
        status=codes.map_status(raw_status),
        raw_status=raw_status,
        raw_error=raw_error,
        at=_parse_time(raw_time, zone) if raw_time else None,
        extra=extra,
    )


def parse_status_response(text: str, zone: tzinfo = UTC) -> list[StatusReport]:
    """Status reports from a ``status.php`` JSON body.

    Accepts the doc's flat ``{"<id>": "not_deliver"}``, the service's
    ``{"<id>": {"status": "deliver", "time": "2014-10-05"}}`` and the list the
    PHP SDK's tests use (``[{"messageId": …, "status": …, "time": …}]``). Ids the
    answer leaves out get no report (the reconciler asks again later).
    """
    data = _load(text, "status")
    if isinstance(data, list):
        reports = []
        for item in data:
            if not isinstance(item, dict):
                raise MalformedResponse("status.php: list items must be objects")
            message_id = _text(item.get("messageId", item.get("id_sms", item.get("id"))))
            if not message_id:
                raise MalformedResponse("status.php: list item without a message id")
            reports.append(_status_report(message_id, item, zone))
        return reports
    return [_status_report(str(k), v, zone) for k, v in _object(data, "status.php").items()]


# --------------------------------------------------------------------------- hlr


def _hlr_result(phone: str, item: Mapping[str, Any]) -> HlrResult:
    stat = _text(item.get("stat")).strip()
    # The README lists "error"; the Python SDK (intis 0.2) reads "err". Accept both.
    raw_error = item.get("error", item.get("err"))
    code = codes.parse_code(raw_error) if raw_error is not None else 0
    ok = stat.upper() == "DELIVRD" and code == 0
    mccmnc = _digits(_text(item.get("mccmnc")))
    ported = _bool(item.get("is_ported"))
    network_name = _text(item.get("pon") if ported else item.get("orn")) or _text(item.get("orn"))
    return HlrResult(
        phone=phone,
        ok=ok,
        provider_message_id=_text(item.get("id")) or None,
        imsi=_text(item.get("IMSI", item.get("imsi"))) or None,
        mcc=mccmnc[:3] or None,
        mnc=mccmnc[3:] or None,
        network=network_name or None,
        ported=ported,
        roaming=_bool(item.get("is_roaming")),
        error=None if ok else (_text(raw_error) if code != 0 else stat or "no result"),
        raw=dict(item),
    )


def _hlr_items(data: Any, what: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(phone, record) pairs from a list of records or an object keyed by phone."""
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list):
        pairs = [("", item) for item in data]
    else:
        raise MalformedResponse(f"{what}: expected a list or an object")
    out: list[tuple[str, Mapping[str, Any]]] = []
    for key, item in pairs:
        if not isinstance(item, dict):
            raise MalformedResponse(f"{what}: records must be objects")
        out.append((_text(item.get("destination")) or str(key), item))
    return out


def parse_hlr_response(text: str, phones: Sequence[str]) -> list[HlrResult]:
    """One result per requested phone from an ``hlr.php`` body (a JSON array).

    Records are matched to phones by ``destination``; a phone without a record
    is ``ok=False`` with error "missing from the response".
    """
    data = _load(text, "hlr")
    if isinstance(data, dict) and not data:
        data = []
    items = _hlr_items(data, "hlr.php")
    index = _match_index(p for p, _ in items)
    records = {p: item for p, item in items}
    results = []
    for phone in phones:
        key = _lookup(index, phone)
        if key is None:
            results.append(HlrResult(phone=phone, ok=False, error="missing from the response"))
        else:
            results.append(_hlr_result(phone, records[key]))
    return results


def parse_hlr_stats(text: str) -> list[HlrResult]:
    """The HLR lookups of a period (``hlr_stat.php``: an object keyed by phone, or a list)."""
    data = _load(text, "hlr_stat")
    return [_hlr_result(phone, item) for phone, item in _hlr_items(data, "hlr_stat.php")]


# --------------------------------------------------------------------------- the other endpoints


def parse_balance(text: str) -> Balance:
    """``{"money": "69573.1", "currency": "RUR"}`` (money may also be a number)."""
    data = _object(_load(text, "balance"), "balance.php")
    amount = _decimal(data.get("money"))
    if amount is None:
        raise MalformedResponse("balance.php: no numeric 'money'")
    return Balance(amount=amount, currency=_text(data.get("currency")) or None)


def parse_timestamp(text: str) -> int:
    """The server's UTC epoch second. ``timestamp.php`` answers bare digits (the SDK uses
    the body as is); a JSON number, string or ``{"timestamp": N}`` is accepted too."""
    body = text.strip()
    if body.isdigit():
        return int(body)
    data = _load(body, "timestamp")
    if isinstance(data, dict):
        data = data.get("timestamp")
    value = _int(data)
    if value is None:
        raise MalformedResponse("timestamp.php: no integer timestamp")
    return value


def parse_lists(text: str) -> list[PhoneList]:
    """Contact lists (``base.php``): an object keyed by list id."""
    data = _object(_load(text, "base"), "base.php")
    out = []
    for list_id, item in data.items():
        if not isinstance(item, dict):
            raise MalformedResponse("base.php: list entries must be objects")
        out.append(
            PhoneList(
                id=str(list_id),
                name=_text(item.get("name")),
                count=_int(item.get("count")),
                pages=_int(item.get("pages")),
                time_birth=_text(item.get("time_birth")),
                day_before=_text(item.get("day_before")),
                local_time=_text(item.get("local_time")),
                birth_sender=_text(item.get("birth_sender")),
                birth_text=_text(item.get("birth_text")),
                on_birth=_text(item.get("on_birth")),
            )
        )
    return out


def parse_senders(text: str) -> list[SenderName]:
    """Sender names (``senders.php``): ``{"smstest": "completed", …}``."""
    data = _object(_load(text, "senders"), "senders.php")
    return [SenderName(name=str(k), state=_text(v)) for k, v in data.items()]


_LIST_NUMBER_FIELDS = (
    "name",
    "last_name",
    "middle_name",
    "date_birth",
    "male",
    "note1",
    "note2",
    "region",
    "operator",
)


def parse_list_numbers(text: str) -> list[ListNumber]:
    """Subscribers of a list page (``phone.php``): an object keyed by phone."""
    data = _object(_load(text, "phone"), "phone.php")
    out = []
    for phone, item in data.items():
        if not isinstance(item, dict):
            raise MalformedResponse("phone.php: entries must be objects")
        fields = {name: _text(item.get(name)) for name in _LIST_NUMBER_FIELDS}
        out.append(ListNumber(phone=str(phone), **fields))
    return out


def parse_stop_list_search(text: str) -> StopListEntry | None:
    """``{"time_in": …, "description": …}``, or None when the number is not listed.

    The SDKs read the entry keyed by its id instead (``{"<id>": {"time_in": …}}``);
    both are accepted. The doc does not say what "not found" looks like; an empty
    answer (``{}``, ``[]``) or error 19 "Empty response" is taken to mean that.
    """
    data = load_json(text)
    found = error_code_of(data)
    if found is not None and found[0] == 19:
        return None
    check_error(data, "find_on_stop")
    entry = _object(data, "find_on_stop.php")
    if not entry:
        return None
    if "time_in" not in entry:
        keyed = [v for v in entry.values() if isinstance(v, dict) and "time_in" in v]
        if not keyed:
            raise MalformedResponse("find_on_stop.php: no 'time_in'")
        entry = keyed[0]
    return StopListEntry(
        time_in=_text(entry["time_in"]), description=_text(entry.get("description"))
    )


def parse_id(text: str, endpoint: str) -> str:
    """The ``{"id": "4419373"}`` answer of ``add2stop.php`` and ``add_template.php``."""
    data = _object(_load(text, endpoint), f"{endpoint}.php")
    value = _text(data.get("id")).strip()
    if not value:
        raise MalformedResponse(f"{endpoint}.php: no 'id'")
    return value


def parse_delete_template(text: str) -> str:
    """The ``{"result": "deleted"}`` answer of ``del_template.php``: the result word."""
    data = _object(_load(text, "del_template"), "del_template.php")
    if "result" not in data:
        raise MalformedResponse("del_template.php: no 'result'")
    return _text(data["result"])


# The doc's template list: {"test" : "{"template":"text", "up_time":"…"}", …} — objects
# inside unescaped quotes, so not JSON. Read it entry by entry.
_TEMPLATE_QUIRK = re.compile(
    r'"(?P<name>(?:[^"\\]|\\.)*)"\s*:\s*"\{\s*"template"\s*:\s*"(?P<text>.*?)"\s*,'
    r'\s*"up_time"\s*:\s*"(?P<up>[^"]*)"\s*\}"',
    re.DOTALL,
)


def parse_templates(text: str) -> list[Template]:
    """Templates (``template.php``) in any of the three shapes seen.

    - the doc's: name -> *quoted* object (invalid JSON; read with a pattern),
    - the same as valid JSON: name -> ``{"template", "up_time"}`` (or that object as a
      JSON string),
    - the SDKs': id -> ``{"name", "template", "up_time"}``.
    """
    try:
        data = _load(text, "template")
    except MalformedResponse:
        matches = list(_TEMPLATE_QUIRK.finditer(text))
        if not matches:
            raise
        return [Template(name=m["name"], text=m["text"], up_time=m["up"]) for m in matches]
    out = []
    for key, value in _object(data, "template.php").items():
        item = value
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError:
                raise MalformedResponse("template.php: entry is neither object nor JSON") from None
        if not isinstance(item, dict):
            raise MalformedResponse("template.php: entries must be objects")
        if "name" in item:
            out.append(
                Template(
                    name=_text(item["name"]),
                    text=_text(item.get("template")),
                    up_time=_text(item.get("up_time")),
                    id=str(key),
                )
            )
        else:
            out.append(
                Template(
                    name=str(key),
                    text=_text(item.get("template")),
                    up_time=_text(item.get("up_time")),
                )
            )
    return out


_DATE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# The doc's monthly statistics never close a day's object before the next day starts,
# so the body is not JSON. Read it token by token: a date key opens a day, each
# "<status>":{"cost":…,"parts":…} belongs to the last day opened.
_STATS_TOKEN = re.compile(
    r'"(?P<date>\d{4}-\d{2}-\d{2})"\s*:'
    r'|"(?P<status>[A-Za-z_]+)"\s*:\s*\{\s*"cost"\s*:\s*"?(?P<cost>[-\d.]+)"?\s*,'
    r'\s*"parts"\s*:\s*"?(?P<parts>\d+)"?\s*\}'
)


def _stat_cell(value: Any) -> StatCell | None:
    if not isinstance(value, dict):
        return None
    cost = _decimal(value.get("cost"))
    parts = _int(value.get("parts"))
    if cost is None or parts is None:
        return None
    return StatCell(cost=cost, parts=parts)


def _walk_days(data: Mapping[str, Any], days: dict[str, dict[str, StatCell]]) -> None:
    for key, value in data.items():
        if not _DATE_KEY.match(str(key)) or not isinstance(value, dict):
            raise MalformedResponse("stat_by_month.php: expected date keys")
        day = days.setdefault(str(key), {})
        for status, cell in value.items():
            if _DATE_KEY.match(str(status)) and isinstance(cell, dict):
                # The doc's unclosed objects, if they happen to balance, nest the next day.
                _walk_days({status: cell}, days)
                continue
            parsed = _stat_cell(cell)
            if parsed is None:
                raise MalformedResponse("stat_by_month.php: bad cost/parts")
            day[str(status)] = parsed


def parse_stats_by_month(text: str) -> list[DayStats]:
    """Per-day cost/parts by status (``stat_by_month.php``), sorted by date.

    Accepts the doc's shape (date -> status -> {cost, parts}, also in its broken,
    never-closed form), and the SDKs' list ``[{"date", "stats": [{"status", …}]}]``.
    """
    days: dict[str, dict[str, StatCell]] = {}
    try:
        data = _load(text, "stat_by_month")
    except MalformedResponse:
        day: dict[str, StatCell] | None = None
        for m in _STATS_TOKEN.finditer(text):
            if m["date"]:
                day = days.setdefault(m["date"], {})
            elif day is not None:
                day[m["status"]] = StatCell(cost=str(Decimal(m["cost"])), parts=int(m["parts"]))
        if not days:
            raise
        return [DayStats(date=d, statuses=s) for d, s in sorted(days.items())]
    if isinstance(data, list):
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("stats"), list):
                raise MalformedResponse("stat_by_month.php: list items need 'date' and 'stats'")
            day = days.setdefault(_text(item.get("date")), {})
            for cell in item["stats"]:
                parsed = _stat_cell(cell)
                if parsed is None:
                    raise MalformedResponse("stat_by_month.php: bad cost/parts")
                day[_text(cell.get("status"))] = parsed
    else:
        _walk_days(_object(data, "stat_by_month.php"), days)
    return [DayStats(date=d, statuses=s) for d, s in sorted(days.items())]


def parse_operator(text: str) -> OperatorInfo:
    """The network of a number (``operator.php``); ``"error": 0`` beside the data is fine."""
    data = _object(_load(text, "operator"), "operator.php")
    if "operator" not in data:
        raise MalformedResponse("operator.php: no 'operator'")
    region = data.get("regionCode")
    zone = data.get("timeZone")
    return OperatorInfo(
        phone=_text(data.get("phone")),
        operator=_text(data["operator"]),
        mcc=_text(data.get("mcc")),
        mnc=_text(data.get("mnc")),
        ported=_bool(data.get("ported")),
        price=_decimal(data.get("price")),
        currency=_text(data.get("currency")) or None,
        region_code=None if region is None else _text(region),
        time_zone=None if zone is None else _text(zone),
        raw=dict(data),
    )


def parse_incoming(text: str) -> list[IncomingSms]:
    """Incoming SMS (``incoming.php``): an object keyed by id (the doc wraps it in a second
    pair of braces), or a list of objects carrying ``id_sms``."""
    data = _load(text, "incoming")
    if isinstance(data, list):
        pairs = [
            (_text(item.get("id_sms", item.get("id"))), item)
            for item in data
            if isinstance(item, dict)
        ]
        if len(pairs) != len(data):
            raise MalformedResponse("incoming.php: list items must be objects")
    else:
        pairs = [(str(k), v) for k, v in _object(data, "incoming.php").items()]
    out = []
    for sms_id, item in pairs:
        if not isinstance(item, dict):
            raise MalformedResponse("incoming.php: entries must be objects")
        out.append(
            IncomingSms(
                id=sms_id,
                date=_text(item.get("date")),
                sender=_text(item.get("sender")),
                prefix=_text(item.get("prefix")),
                text=_text(item.get("text")),
                phone=_text(item.get("phone")),
            )
        )
    return out


def parse_prices(text: str) -> list[Price]:
    """Prices per network (``prices.php``): mccmnc -> {NETWORK_NAME, COUNTRY, PRICE, CURRENCY}."""
    data = _object(_load(text, "prices"), "prices.php")
    out = []
    for mccmnc, item in data.items():
        if not isinstance(item, dict):
            raise MalformedResponse("prices.php: entries must be objects")
        fields = {str(k).lower(): v for k, v in item.items()}
        price = _decimal(fields.get("price"))
        if price is None:
            raise MalformedResponse("prices.php: entry without a numeric PRICE")
        out.append(
            Price(
                mccmnc=str(mccmnc),
                network=_text(fields.get("network_name")),
                country=_text(fields.get("country")),
                price=price,
                currency=_text(fields.get("currency")),
            )
        )
    return out


# --------------------------------------------------------------------------- the adapter


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class IntisAdapter(HttpClient):
    """Intis Telecom (go.intistele.com) over its HTTP API v1.4.

    ``account.base_url`` is the host (``https://go.intistele.com``) or the API
    root (``…/external/get``). ``account.login`` and ``account.api_key`` sign
    every request. ``options.timezone`` (:class:`IntisOptions`, an IANA name, default UTC)
    is the account's zone: ``sendingTime`` is written in it and the times the
    gateway answers with (status times, incoming dates) are read in it.
    """

    kind: ClassVar[str] = "intis"
    # Ids per status.php request for reconciliation (see STATUS_BATCH).
    max_status_batch: ClassVar[int] = STATUS_BATCH

    def __init__(self, account: AccountConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(account, session)
        base = (account.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._api_root = base if base.endswith(API_PATH) else base + API_PATH
        self._zone = ZoneInfo(options_of(account, IntisOptions).timezone)

    @property
    def max_batch(self) -> int:
        """Recipients per send: the account's batch_size, at most 50 (see MAX_BATCH)."""
        size = self.account.batch_size
        return MAX_BATCH if size <= 0 else min(size, MAX_BATCH)

    def endpoint_url(self, name: str) -> str:
        return f"{self._api_root}/{name}.php"

    async def _call(
        self, name: str, params: Mapping[str, str], *, idempotent: bool = True, sign: bool = True
    ) -> HttpResponse:
        """One signed request to ``<name>.php``: GET, or a POST form past MAX_URL."""
        url = self.endpoint_url(name)
        query = dict(params)
        if sign:
            query["return"] = "json"
            query = signed_params(query, login=self.account.login, api_key=self.account.api_key)
        if len(str(URL(url).with_query(query))) > MAX_URL:
            return await self.request("POST", url, endpoint=name, data=query, idempotent=idempotent)
        return await self.request("GET", url, endpoint=name, params=query, idempotent=idempotent)

    async def _parsed(
        self,
        name: str,
        params: Mapping[str, str],
        parse: Callable[[str], T],
        *,
        idempotent: bool = True,
    ) -> T:
        response = await self._call(name, params, idempotent=idempotent)
        # A 200 nobody can read: for a call that changes something the gateway may have
        # acted on it, so it is AMBIGUOUS; otherwise just ask again.
        cls = ErrorClass.TRANSIENT if idempotent else ErrorClass.AMBIGUOUS
        try:
            return parse(response.text)
        except MalformedResponse as exc:
            raise ProviderError(cls, f"malformed response from {name}.php: {exc}") from exc
        except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
            # A shape the parsers did not foresee must not escape as a crash (after a
            # send the caller would not know the gateway accepted the chunk).
            reason = f"unexpected response shape from {name}.php: {type(exc).__name__}"
            raise ProviderError(cls, reason) from exc

    # ----------------------------------------------------------------- the port

    def _sending_time(self, when: datetime) -> str:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(self._zone).strftime("%Y-%m-%d %H:%M")

    async def send(self, request: SendRequest) -> list[RecipientOutcome]:
        """Send one chunk through ``send.php`` (never retried blindly: not idempotent).

        The chunk is sent as given (the core keeps it within :attr:`max_batch`;
        past 50 numbers the gateway answers error 14, a REQUEST error). A number
        repeated in the chunk is sent once and every occurrence gets its outcome:
        the answer is keyed by phone, so two messages could not be told apart.
        ``validity`` has no Intis parameter and is ignored.

        Intis takes no client message id and has no lookup by phone, so a send that
        ends AMBIGUOUS (timeout after sending, unreadable answer) cannot be settled
        through ``status.php``: its recipients stay UNKNOWN.
        """
        if not request.recipients:
            return []
        phones = _unique(request.recipients)
        params = {"phone": ",".join(phones), "text": request.text, "sender": request.sender}
        if request.scheduled_at is not None:
            params["sendingTime"] = self._sending_time(request.scheduled_at)
        by_phone = {
            o.phone: o
            for o in await self._parsed(
                "send", params, lambda t: parse_send_response(t, phones), idempotent=False
            )
        }
        return [by_phone[p] for p in request.recipients]

    async def status(self, provider_message_ids: Sequence[str]) -> list[StatusReport]:
        """Statuses via ``status.php`` (``state=id1,id2,…``, STATUS_BATCH ids a request).

        Ids the gateway does not mention get no report.
        """
        reports: list[StatusReport] = []
        for batch in _chunks(_unique(provider_message_ids), STATUS_BATCH):
            reports.extend(
                await self._parsed(
                    "status",
                    {"state": ",".join(batch)},
                    lambda text: parse_status_response(text, self._zone),
                )
            )
        return reports

    async def hlr(self, phones: Sequence[str]) -> list[HlrResult]:
        """Synchronous HLR lookups via ``hlr.php``, one result per phone.

        Treated as idempotent (a lookup changes nothing; a retry costs one more lookup).
        """
        results: dict[str, HlrResult] = {}
        unique = _unique(phones)
        for batch in _chunks(unique, self.max_batch):
            parse = functools.partial(parse_hlr_response, phones=batch)
            for result in await self._parsed("hlr", {"phone": ",".join(batch)}, parse):
                results[result.phone] = result
        return [results[p] for p in phones]

    async def balance(self) -> Balance:
        """The account balance (``balance.php``)."""
        return await self._parsed("balance", {}, parse_balance)

    # ----------------------------------------------------------------- everything else

    async def timestamp(self) -> int:
        """The gateway's clock (``timestamp.php``, unsigned). Requests do not need it:
        they carry a locally generated timestamp."""
        response = await self._call("timestamp", {}, sign=False)
        try:
            return parse_timestamp(response.text)
        except MalformedResponse as exc:
            raise ProviderError(ErrorClass.TRANSIENT, f"malformed timestamp.php: {exc}") from exc

    async def lists(self) -> list[PhoneList]:
        """The account's contact lists (``base.php``)."""
        return await self._parsed("base", {}, parse_lists)

    async def senders(self) -> list[SenderName]:
        """The account's sender names and their approval state (``senders.php``)."""
        return await self._parsed("senders", {}, parse_senders)

    async def list_numbers(self, list_id: str, page: int = 1) -> list[ListNumber]:
        """One page of a contact list's subscribers (``phone.php``)."""
        return await self._parsed(
            "phone", {"base": str(list_id), "page": str(page)}, parse_list_numbers
        )

    async def stop_list_search(self, phone: str) -> StopListEntry | None:
        """Whether ``phone`` is on the stop list (``find_on_stop.php``); None if not."""
        return await self._parsed("find_on_stop", {"phone": phone}, parse_stop_list_search)

    async def stop_list_add(self, phone: str) -> str:
        """Put ``phone`` on the stop list (``add2stop.php``); returns the entry id."""
        return await self._parsed(
            "add2stop", {"phone": phone}, lambda t: parse_id(t, "add2stop"), idempotent=False
        )

    async def templates(self) -> list[Template]:
        """The account's message templates (``template.php``)."""
        return await self._parsed("template", {}, parse_templates)

    async def add_template(self, name: str, text: str, *, override: bool = False) -> str:
        """Create a template, or replace one with ``override`` (``add_template.php``); its id."""
        params = {"name": name, "text": text}
        if override:
            params["override"] = "1"
        return await self._parsed(
            "add_template", params, lambda t: parse_id(t, "add_template"), idempotent=False
        )

    async def delete_template(self, name: str) -> str:
        """Delete a template (``del_template.php``); the gateway's result word ("deleted")."""
        return await self._parsed(
            "del_template", {"name": name}, parse_delete_template, idempotent=False
        )

    async def stats_by_month(self, month: str | date) -> list[DayStats]:
        """Per-day statistics of one month, ``YYYY-MM`` (``stat_by_month.php``)."""
        value = month.strftime("%Y-%m") if isinstance(month, date) else month
        return await self._parsed("stat_by_month", {"month": value}, parse_stats_by_month)

    async def hlr_stats(self, date_from: str | date, date_to: str | date) -> list[HlrResult]:
        """HLR lookups made between two dates, ``YYYY-MM-DD`` (``hlr_stat.php``)."""
        params = {"from": _day(date_from), "to": _day(date_to)}
        return await self._parsed("hlr_stat", params, parse_hlr_stats)

    async def operator(self, phone: str) -> OperatorInfo:
        """The network ``phone`` belongs to (``operator.php``)."""
        return await self._parsed("operator", {"phone": phone}, parse_operator)

    async def incoming(
        self,
        day: str | date | None = None,
        *,
        date_from: str | datetime | None = None,
        date_to: str | datetime | None = None,
    ) -> list[IncomingSms]:
        """Incoming SMS of one day, or of a period ``YYYY-MM-DD HH:MM:SS`` (``incoming.php``).

        The doc: when ``date`` and ``from``/``to`` are all given, ``date`` wins.
        """
        params: dict[str, str] = {}
        if day is not None:
            params["date"] = _day(day)
        if date_from is not None:
            params["from"] = _moment(date_from)
        if date_to is not None:
            params["to"] = _moment(date_to)
        if not params:
            raise ValueError("incoming() needs a day or date_from and date_to")
        return await self._parsed("incoming", params, parse_incoming)

    async def prices(self) -> list[Price]:
        """The account's prices per network (``prices.php``)."""
        return await self._parsed("prices", {}, parse_prices)

    # -- least-cost routing capabilities (PriceSource, OperatorSource) -------------------

    operator_batch: ClassVar[int] = 1  # operator.php takes one phone

    async def price_list(self) -> list[OperatorPrice]:
        """``prices.php`` as per-operator prices (keyed by MCC+MNC, as Intis gives them)."""
        return [
            OperatorPrice(price=p.price, currency=p.currency or None, mccmnc=p.mccmnc)
            for p in await self.prices()
            if p.mccmnc.isdigit() and len(p.mccmnc) in (5, 6)
        ]

    async def lookup_operators(self, phones: Sequence[str]) -> list[NetworkInfo]:
        """``operator.php`` for each phone (one request each); unplaced numbers left out."""
        out = []
        for phone in phones:
            info = await self.operator(phone)
            mccmnc = info.mcc + info.mnc
            if info.mcc.isdigit() and info.mnc.isdigit() and int(info.mcc):
                out.append(NetworkInfo(phone=phone, mccmnc=mccmnc, name=info.operator))
        return out

    async def poll_incoming(self, cursor: str | None) -> tuple[list[IncomingMessage], str | None]:
        """Incoming SMS since ``cursor`` (the end of the previous poll, ISO), and the new cursor.

        One ``incoming.php`` request by period (``from``/``to`` in the account's zone),
        reaching INCOMING_OVERLAP before the cursor; the first poll looks back
        INCOMING_FIRST_LOOKBACK.
        """
        now = datetime.now(self._zone)
        try:
            since = datetime.fromisoformat(cursor) if cursor else now - INCOMING_FIRST_LOOKBACK
        except ValueError:
            since = now - INCOMING_FIRST_LOOKBACK
        start = since.astimezone(self._zone) - INCOMING_OVERLAP
        rows = await self.incoming(
            date_from=start.replace(tzinfo=None), date_to=now.replace(tzinfo=None)
        )
        messages = [
            IncomingMessage(
                provider_message_id=row.id,
                sender=_digits(row.sender),
                text=row.text,
                recipient=row.phone or None,
                received_at=self._local_time(row.date),
                extra={"prefix": row.prefix} if row.prefix else {},
            )
            for row in rows
            if row.id
        ]
        return messages, now.isoformat()

    def _local_time(self, value: str) -> datetime | None:
        return _parse_time(value, self._zone)


def _day(value: str | date) -> str:
    return value.strftime("%Y-%m-%d") if isinstance(value, date) else value


def _moment(value: str | datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else value
