"""SMSC callbacks to the client's handler: decoding, signature check, typed parsing.

SMSC POSTs three kinds of callbacks to the handler URL set in the account:
message statuses, incoming SMS, and "number confirmation by call" notices
(``smsc-callbacks.txt``; the Russian page ``smsc-callbacks-ru.txt`` adds GET
parameters via ``!`` in the handler URL and bits 9–10 of ``flag``).

Wire format, as the pages describe it:

- Parameters are form-encoded in the POST body, in the charset named by the
  handler URL's ``charset`` (``utf-8``, ``koi8-r``, default ``windows-1251``).
  With ``fmt=2`` (XML) or ``fmt=3`` (JSON) they come as the body instead; koi8-r is
  not used then (this module falls back to the windows-1251 default).
- Parameters written in the handler URL after ``?`` are POSTed along with the
  standard ones; those between ``!`` and ``?`` (``https://site/!a&b?c&d``) stay in the
  URL and arrive as GET parameters (Russian page only).
- Integrity: ``md5``/``sha1``/``crc32`` in the URL name the algorithm and carry the
  secret; SMSC replaces the secret with the hash of ``id:phone:status:<secret>``
  (status), ``phone:mes:to:<secret>`` (incoming SMS) or ``phone:ts:<secret>``
  (call confirmation). Only those fields are covered: ``err``, ``cost``, ``time``
  etc. are not authenticated, and a captured callback can be replayed.

Not specified by the pages, and decided here: the hash is taken over the string's
bytes in the transmission charset (windows-1251 and utf-8 are also accepted, which
matters only for non-ASCII ``mes``); md5/sha1 are lowercase hex; crc32 is accepted
as PHP's ``crc32()`` unsigned decimal or as 8 hex digits. All comparisons use
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit, urlunsplit
from xml.etree import ElementTree

from producers.errors import PushError
from producers.status import Status
from worker.providers.base import HlrResult, StatusReport
from worker.providers.smsc import codes
from worker.providers.smsc.adapter import HLR_FIELDS, hlr_from_status, make_message_id
from worker.providers.smsc.options import SIGNATURE_PARAMS

DEFAULT_CHARSET = "windows-1251"

# Charset names SMSC uses → Python codec names.
_CODECS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "koi8-r": "koi8_r",
    "koi8r": "koi8_r",
    "windows-1251": "cp1251",
    "cp1251": "cp1251",
    "win-1251": "cp1251",
}


class CallbackError(PushError, ValueError):
    """A callback body that cannot be decoded or lacks what its kind needs."""


class SignatureError(CallbackError):
    """A callback whose signature is missing or does not match: reject it."""


def codec_for(charset: str | None) -> str:
    """The Python codec for an SMSC charset name (default windows-1251)."""
    if not charset:
        return _CODECS[DEFAULT_CHARSET]
    try:
        return _CODECS[charset.strip().lower()]
    except KeyError:
        raise CallbackError(f"unsupported charset {charset!r}") from None


# --------------------------------------------------------------------------- handler URL


@dataclass(frozen=True)
class HandlerUrl:
    """How SMSC calls a handler URL configured in the account.

    ``url`` is what is requested (with the ``!`` part as its query string);
    ``post_params`` are the ``?`` part, sent in the body with the standard fields.
    """

    url: str
    get_params: tuple[tuple[str, str], ...]
    post_params: tuple[tuple[str, str], ...]
    charset: str
    fmt: int  # 0 form, 2 XML, 3 JSON
    algorithm: str | None  # md5 / sha1 / crc32
    secret: str | None


_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def split_handler_url(handler_url: str) -> HandlerUrl:
    """Read a handler URL the way SMSC does (``https://site/!a=1&b?c&md5=secret``)."""
    parts = urlsplit(handler_url)
    path, post_query = parts.path, parts.query
    get_query = ""
    bang = path.find("!")
    if bang >= 0:
        path, get_query = path[:bang], path[bang + 1 :]
    get_params = tuple(parse_qsl(get_query, keep_blank_values=True))
    post_params = tuple(parse_qsl(post_query, keep_blank_values=True))
    settings = dict(get_params) | dict(post_params)
    algorithm = next((a for a in SIGNATURE_PARAMS if a in settings), None)
    secret = settings.get(algorithm) if algorithm else None
    if secret is not None and not _SECRET_RE.match(secret):
        # The page: Latin letters, digits, minus and underscore only.
        raise ValueError("SMSC handler secrets may hold only letters, digits, '-' and '_'")
    fmt_text = settings.get("fmt", "0")
    fmt = int(fmt_text) if fmt_text in ("0", "1", "2", "3") else 0
    charset = settings.get("charset", DEFAULT_CHARSET).lower()
    if fmt in (2, 3) and codec_for(charset) == "koi8_r":
        charset = DEFAULT_CHARSET  # "with fmt, koi8-r is not used"
    url = urlunsplit((parts.scheme, parts.netloc, path, get_query, ""))
    return HandlerUrl(url, get_params, post_params, charset, fmt, algorithm, secret)


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class CallbackParams:
    """A decoded callback: all parameters as text, and how they came."""

    params: Mapping[str, str]
    charset: str  # the SMSC charset name used to decode
    fmt: int  # 0 form, 2 XML, 3 JSON
    get_params: Mapping[str, str] = field(default_factory=dict)


def _form_pairs(body: bytes) -> list[tuple[bytes, bytes]]:
    pairs: list[tuple[bytes, bytes]] = []
    for piece in body.split(b"&"):
        if not piece:
            continue
        key, _, value = piece.partition(b"=")
        pairs.append(
            (unquote_to_bytes(key.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" ")))
        )
    return pairs


def _content_type_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    match = re.search(r"charset=\"?([A-Za-z0-9_-]+)", content_type)
    return match.group(1) if match else None


def _flatten_xml(text: str) -> dict[str, str]:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise CallbackError("XML callbacks with a DTD are refused")
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise CallbackError(f"malformed XML callback: {exc}") from None
    node = root
    # A wrapper holding one record element (<result><sms>…</sms></result>): descend.
    while len(node) == 1 and len(node[0]) > 0:
        node = node[0]
    return {child.tag: (child.text or "").strip() for child in node}


def decode_callback(
    body: bytes,
    *,
    content_type: str | None = None,
    query: Mapping[str, str] | None = None,
    charset: str | None = None,
) -> CallbackParams:
    """Decode a callback body (form, ``fmt=2`` XML or ``fmt=3`` JSON) to text parameters.

    The charset is, in order: ``charset`` (what the handler URL was configured
    with), the ``charset`` parameter SMSC sends back (the URL's ``?`` part is
    echoed in the body), the query, the Content-Type, windows-1251.
    ``query``: the GET parameters (the URL's ``!`` part); merged under the body's.
    """
    get_params = {str(k): str(v) for k, v in (query or {}).items()}
    stripped = body.lstrip()
    latin = body.decode("latin-1")
    fmt = 0
    if stripped.startswith(b"{"):
        fmt = 3
        try:
            probe = json.loads(latin)
        except ValueError as exc:
            raise CallbackError(f"malformed JSON callback: {exc}") from None
        if not isinstance(probe, dict):
            raise CallbackError("JSON callback is not an object")
        declared = probe.get("charset")
    elif stripped.startswith(b"<"):
        fmt = 2
        found = re.search(r"<charset>\s*([A-Za-z0-9_-]+)\s*</charset>", latin)
        declared = found.group(1) if found else None
    else:
        raw_pairs = _form_pairs(body)
        declared = next((v.decode("latin-1") for k, v in raw_pairs if k == b"charset"), None)
    name = (
        charset
        or (str(declared) if declared else None)
        or get_params.get("charset")
        or _content_type_charset(content_type)
        or DEFAULT_CHARSET
    )
    codec = codec_for(name)
    if fmt in (2, 3) and codec == "koi8_r":
        name, codec = DEFAULT_CHARSET, codec_for(DEFAULT_CHARSET)
    try:
        if fmt == 3:
            data = json.loads(body.decode(codec))
            params = {str(k): "" if v is None else str(v) for k, v in data.items()}
        elif fmt == 2:
            params = _flatten_xml(body.decode(codec))
        else:
            params = {k.decode(codec): v.decode(codec) for k, v in _form_pairs(body)}
    except UnicodeDecodeError as exc:
        raise CallbackError(f"callback is not valid {name}: {exc.reason}") from None
    except ValueError as exc:
        raise CallbackError(f"malformed callback: {exc}") from None
    return CallbackParams({**get_params, **params}, name.lower(), fmt, get_params)


# --------------------------------------------------------------------------- signatures

STATUS_KIND = "status"
INCOMING_KIND = "incoming"
CALL_KIND = "call"

# Fields hashed, in order, per kind (the secret is appended after the last ':').
SIGNED_FIELDS: Mapping[str, tuple[str, ...]] = {
    STATUS_KIND: ("id", "phone", "status"),
    INCOMING_KIND: ("phone", "mes", "to"),
    CALL_KIND: ("phone", "ts"),
}


def callback_kind(params: Mapping[str, str]) -> str:
    """As the page says: ``mes`` → incoming SMS, ``waitcall`` → call confirmation, else status."""
    if "mes" in params:
        return INCOMING_KIND
    if "waitcall" in params:
        return CALL_KIND
    return STATUS_KIND


def signature_base(params: Mapping[str, str], secret: str) -> str:
    """The string SMSC hashes: e.g. ``"id:phone:status:<secret>"`` for a status."""
    fields = SIGNED_FIELDS[callback_kind(params)]
    return ":".join([*(params.get(f, "") for f in fields), secret])


def compute_signature(algorithm: str, data: bytes) -> str:
    """md5 / sha1 lowercase hex; crc32 as PHP's ``crc32()`` unsigned decimal."""
    if algorithm == "md5":
        return hashlib.md5(data).hexdigest()
    if algorithm == "sha1":
        return hashlib.sha1(data).hexdigest()
    if algorithm == "crc32":
        return str(zlib.crc32(data) & 0xFFFFFFFF)
    raise ValueError(f"unknown signature algorithm {algorithm!r}")


def _candidates(algorithm: str, data: bytes) -> list[str]:
    if algorithm == "crc32":
        value = zlib.crc32(data) & 0xFFFFFFFF
        return [str(value), f"{value:08x}"]
    return [compute_signature(algorithm, data)]


def verify_signature(
    params: Mapping[str, str], secret: str, *, charset: str = DEFAULT_CHARSET
) -> bool:
    """True when every signature parameter present matches and at least one is present."""
    present = [a for a in SIGNATURE_PARAMS if params.get(a)]
    if not present or not secret:
        return False
    text = signature_base(params, secret)
    encodings: list[str] = []
    for name in (charset, DEFAULT_CHARSET, "utf-8"):
        codec = codec_for(name)
        if codec not in encodings:
            encodings.append(codec)
    ok_all = True
    for algorithm in present:
        received = params[algorithm].strip().lower().encode("ascii", "replace")
        matched = False
        for codec in encodings:
            try:
                data = text.encode(codec)
            except UnicodeEncodeError:
                continue
            for expected in _candidates(algorithm, data):
                matched |= hmac.compare_digest(received, expected.encode("ascii"))
        ok_all &= matched
    return ok_all


# --------------------------------------------------------------------------- typed callbacks


@dataclass(frozen=True)
class FlagInfo:
    """The 2-byte ``flag`` of a status callback.

    Bits 0–3 message type; bit 5 paid from the second balance; bit 8 template
    message; bits 10,9 template kind (Russian page only: 00 service,
    01 transactional, 10 authorization, 11 advertising).
    """

    value: int
    message_type: int
    message_type_name: str
    second_balance: bool
    template: bool
    template_kind: str | None

    @classmethod
    def from_int(cls, value: int) -> FlagInfo:
        message_type = value & 0x0F
        template = bool(value & (1 << 8))
        kind_bits = (value >> 9) & 0b11
        return cls(
            value=value,
            message_type=message_type,
            message_type_name=codes.MESSAGE_TYPES.get(message_type, f"type {message_type}"),
            second_balance=bool(value & (1 << 5)),
            template=template,
            template_kind=codes.TEMPLATE_KINDS[kind_bits] if template else None,
        )


def _int(value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _opt(params: Mapping[str, str], key: str) -> str | None:
    value = params.get(key)
    return value if value not in (None, "") else None


def _stamp(value: str | None) -> datetime | None:
    seconds = _int(value)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


@dataclass(frozen=True)
class StatusCallback:
    """A message status pushed by SMSC; ``report`` is the common-model form."""

    id: str
    phone: str
    status: int
    report: StatusReport
    time: str | None  # DD.MM.YY hh:mm:ss in the account's zone
    ts: datetime | None
    err: int | None
    syserr: str | None
    cnt: int | None  # parts (SMS) or seconds (call)
    type: int | None
    cost: str | None
    flag: FlagInfo | None
    sender: str | None
    dtmf: str | None
    cmt: str | None
    calltime: str | None
    callmenu: str | None
    ringtime: str | None
    hlr: HlrResult | None  # set for HLR lookups
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def provider_message_id(self) -> str:
        return make_message_id(self.id, self.phone)

    @property
    def mapped(self) -> Status:
        return self.report.status


@dataclass(frozen=True)
class IncomingSms:
    """An SMS a subscriber sent to the account (a reply or to a dedicated number)."""

    id: str
    sms_id: str | None  # the message it answers, when SMSC knows it
    phone: str
    mes: str
    to: str | None
    smsc: str | None
    sent: datetime | None
    time: datetime | None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallConfirmation:
    """A "number confirmation by call" notice: the subscriber called."""

    phone: str
    ts: str | None
    at: datetime | None
    params: Mapping[str, str] = field(default_factory=dict)


Callback = StatusCallback | IncomingSms | CallConfirmation

_HIDDEN = frozenset(SIGNATURE_PARAMS)


def _require(params: Mapping[str, str], *keys: str) -> None:
    missing = [k for k in keys if not params.get(k)]
    if missing:
        raise CallbackError(f"callback lacks {', '.join(missing)}")


def parse_callback(params: Mapping[str, str]) -> Callback:
    """Typed form of decoded callback parameters (no signature check: see handle_callback)."""
    kept = {k: v for k, v in params.items() if k not in _HIDDEN}
    kind = callback_kind(params)
    if kind == INCOMING_KIND:
        _require(params, "phone")
        return IncomingSms(
            id=params.get("id", ""),
            sms_id=_opt(params, "sms_id"),
            phone=params["phone"].lstrip("+"),
            mes=params.get("mes", ""),
            to=_opt(params, "to"),
            smsc=_opt(params, "smsc"),
            sent=_stamp(params.get("sent")),
            time=_stamp(params.get("time")),
            params=kept,
        )
    if kind == CALL_KIND:
        _require(params, "phone")
        return CallConfirmation(
            phone=params["phone"].lstrip("+"),
            ts=_opt(params, "ts"),
            at=_stamp(params.get("ts")),
            params=kept,
        )
    _require(params, "id", "phone", "status")
    status = _int(params["status"])
    if status is None:
        raise CallbackError("status callback with a non-numeric status")
    phone = params["phone"].strip().lstrip("+")
    flag_value = _int(params.get("flag"))
    flag = FlagInfo.from_int(flag_value) if flag_value is not None else None
    msg_type = _int(params.get("type"))
    err = _int(params.get("err"))
    row = codes.status_code(status)
    err_row = codes.delivery_error(err)
    extra: dict[str, Any] = {"status_text": row.text}
    if err_row is not None:
        extra["err_text"] = err_row.text
        extra["err_permanent"] = err_row.permanent
    for key in ("time", "cnt", "cost", "type", "flag", "syserr", "sender", *HLR_FIELDS):
        if params.get(key):
            extra[key] = params[key]
    pmid = make_message_id(params["id"], phone)
    report = StatusReport(
        provider_message_id=pmid,
        status=row.status,
        raw_status=str(status),
        raw_error=str(err) if err else None,
        at=_stamp(params.get("ts")),
        extra=extra,
    )
    is_hlr = msg_type == 4 or (flag is not None and flag.message_type == 4)
    is_hlr = is_hlr or any(params.get(k) for k in HLR_FIELDS)
    return StatusCallback(
        id=params["id"],
        phone=phone,
        status=status,
        report=report,
        time=_opt(params, "time"),
        ts=_stamp(params.get("ts")),
        err=err,
        syserr=_opt(params, "syserr"),
        cnt=_int(params.get("cnt")),
        type=msg_type,
        cost=_opt(params, "cost"),
        flag=flag,
        sender=_opt(params, "sender"),
        dtmf=_opt(params, "dtmf"),
        cmt=_opt(params, "cmt"),
        calltime=_opt(params, "calltime"),
        callmenu=_opt(params, "callmenu"),
        ringtime=_opt(params, "ringtime"),
        hlr=hlr_from_status(phone, params, provider_message_id=pmid) if is_hlr else None,
        params=kept,
    )


def handle_callback(
    body: bytes,
    *,
    secret: str | None,
    content_type: str | None = None,
    query: Mapping[str, str] | None = None,
    charset: str | None = None,
) -> Callback:
    """Decode, verify and parse one callback.

    With a ``secret`` a callback must carry a matching md5/sha1/crc32 parameter,
    else :class:`SignatureError`; ``secret=None`` accepts unsigned callbacks
    (only for handlers deliberately configured without one).
    """
    decoded = decode_callback(body, content_type=content_type, query=query, charset=charset)
    if secret is not None and not verify_signature(decoded.params, secret, charset=decoded.charset):
        raise SignatureError("callback signature missing or wrong")
    return parse_callback(decoded.params)


__all__ = [
    "DEFAULT_CHARSET",
    "SIGNATURE_PARAMS",
    "SIGNED_FIELDS",
    "CallConfirmation",
    "Callback",
    "CallbackError",
    "CallbackParams",
    "FlagInfo",
    "HandlerUrl",
    "IncomingSms",
    "SignatureError",
    "StatusCallback",
    "callback_kind",
    "codec_for",
    "compute_signature",
    "decode_callback",
    "handle_callback",
    "parse_callback",
    "signature_base",
    "split_handler_url",
    "verify_signature",
]
