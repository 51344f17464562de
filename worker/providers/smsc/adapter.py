"""The SMSC (smsc.ru / smscentre.com) HTTP adapter.

Speaks ``/sys/send.php``, ``status.php``, ``balance.php``, ``get.php``
(history, incoming, statistics, prices), ``info.php`` (operator) and
``tinyurls.php`` (short links), always with ``fmt=3`` (JSON) and
``charset=utf-8``. Authenticates with ``login`` + ``psw`` or, when the account
has one, ``apikey``.

Provider message ids: SMSC gives one id per send request (the client's ``id``
when one was passed) and identifies each recipient's message by that id *and*
the phone: ``status.php`` needs both. smsq's provider message id for SMSC is
therefore ``"<id>:<phone>"`` (digits only, no ``+``), see :func:`make_message_id`.
Callbacks carry ``id`` and ``phone`` separately and build the same string.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp

from producers.status import Status
from worker.providers.base import (
    AccountConfig,
    Balance,
    ErrorClass,
    HlrResult,
    HttpClient,
    HttpResponse,
    NetworkInfo,
    OperatorPrice,
    ProviderError,
    RecipientOutcome,
    SendRequest,
    StatusReport,
    form_urlencode,
    frozen_from_state,
    options_of,
)
from worker.providers.base import IncomingMessage as Incoming
from worker.providers.failover import HostFailover, raise_last
from worker.providers.smsc import codes
from worker.providers.smsc.options import SmscOptions

# Phones per info.php?get_operator request (a comma-separated list; the request goes as a
# POST past ~2000 characters). The 100-a-minute cap is the "operator" limiter rule.
OPERATOR_BATCH = 100

# Tariff zones (get_price) named after one country, billed alike for all its operators.
ZONE_REGIONS: Mapping[str, str] = {
    "россия": "RU",
    "russia": "RU",
    "беларусь": "BY",
    "казахстан": "KZ",
    "украина": "UA",
    "узбекистан": "UZ",
    "армения": "AM",
    "грузия": "GE",
    "азербайджан": "AZ",
    "кыргызстан": "KG",
    "таджикистан": "TJ",
    "молдова": "MD",
    "великобритания": "GB",
    "united kingdom": "GB",
    "германия": "DE",
    "germany": "DE",
}


def _decimal_text(value: str) -> bool:
    try:
        return float(value) >= 0
    except ValueError:
        return False


# Recipients per send request. SMSC documents no cap on the number of phones in one
# send.php call; what it documents is that a GET query must stay under ~2000
# characters (POST beyond that). 100 numbers of at most 15 digits plus commas take
# ≤ 1600 characters, so a default chunk with a short text still goes as a GET, and a
# whole-request refusal (error 3 funds, 6 forbidden text, 9 cap) touches at most 100
# recipients. Accounts may raise it (batch_size); MAX_BATCH is smsq's own ceiling
# (the op=1 answer lists every phone), not an SMSC limit.
DEFAULT_BATCH = 100
MAX_BATCH = 1000

# Switch from GET to POST when the encoded query would exceed this (README: ~2000).
GET_QUERY_LIMIT = 2000

# Hosts treated as "the real SMSC": default backups apply only to these.
_SMSC_HOSTS = frozenset({"smsc.ru", "www.smsc.ru"})
_SMSCENTRE_HOSTS = frozenset({"smscentre.com", "www.smscentre.com"})
DEFAULT_BACKUP_URLS: tuple[str, ...] = tuple(f"https://www{n}.smsc.ru" for n in range(2, 6))

# How long a backup host that answered stays preferred before the primary is tried again.
FAILBACK_AFTER = 300.0

# Retry-After hint for error 9: SMSC's caps are per minute, so one clears within one.
_CAP_RETRY_AFTER = 60.0

# SMSC writes its dates (get_answers' ``received``) in Moscow time, UTC+3 all year.
MOSCOW = timezone(timedelta(hours=3))
# Incoming messages asked for per get_answers call (SMSC's maximum is 10000).
INCOMING_PAGE = 1000
# How far back the first incoming poll of an account looks (hours; SMSC allows 168).
INCOMING_FIRST_HOURS = 24


def make_message_id(sms_id: int | str, phone: str) -> str:
    """smsq's provider message id for one recipient of an SMSC send: ``"<id>:<phone>"``."""
    return f"{sms_id}:{phone.strip().lstrip('+')}"


def split_message_id(provider_message_id: str) -> tuple[str, str]:
    """``"<id>:<phone>"`` → (id, phone). Raises ValueError for anything else."""
    sms_id, sep, phone = provider_message_id.partition(":")
    if not sep or not sms_id.strip() or not phone.strip() or ":" in phone:
        raise ValueError("not an SMSC provider message id (expected '<id>:<phone>')")
    return sms_id.strip(), phone.strip().lstrip("+")


def expected_message_ids(request: SendRequest) -> list[str] | None:
    """The provider message ids a send of ``request`` gets, known before any answer.

    SMSC uses the client ``id`` as the message id, so with ``client_id`` set a send
    whose answer was lost (AMBIGUOUS) can be reconciled with status(): status -3
    (not found) means it never went out. ``None`` without a client id.
    """
    if request.client_id is None:
        return None
    return [make_message_id(request.client_id, phone) for phone in request.recipients]


# --------------------------------------------------------------------------- value helpers


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text != "" else None


def _int(value: Any) -> int | None:
    if type(value) is str and value.isascii() and value.isdigit():  # the usual case
        return int(value)
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        try:
            return int(float(str(value)))
        except ValueError:
            return None


def _ts(value: Any) -> datetime | None:
    seconds = _int(value)
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _ddmmyyyy(value: date | str) -> str:
    return value.strftime("%d.%m.%Y") if isinstance(value, date) else value


def schedule_param(at: datetime) -> str:
    """``time`` for a scheduled send in SMSC's ``0<unix ts>`` form (zone independent)."""
    if at.tzinfo is None:
        raise ValueError("scheduled time must be timezone aware")
    return f"0{int(at.timestamp())}"


def validity_param(seconds: int) -> str:
    """``valid`` as ``hh:mm``, rounded up to a minute, clamped to SMSC's 00:01–24:00."""
    minutes = min(24 * 60, max(1, math.ceil(seconds / 60)))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class PhoneResult:
    """One phone of a send answer with ``op=1`` (or a bad phone listed with ``err=1``).

    SMSC's page names the fields (phone, mccmnc, cost, status, error) without
    defining status/error for this list; smsq reads ``error`` (non-empty, not 0) or
    a refusing status (see ``REFUSING_STATUSES``) as "this phone was not sent".
    """

    phone: str
    mccmnc: str | None = None
    cost: str | None = None
    status: int | None = None
    error: str | None = None

    REFUSING_STATUSES: ClassVar[frozenset[int]] = frozenset({-2, 20, 22, 23, 24, 25})

    @property
    def rejected(self) -> bool:
        """Not sent: refused for this phone, or dropped for the account (see account_failure)."""
        if self.error not in (None, "", "0"):
            return True
        return self.status in self.REFUSING_STATUSES

    @property
    def account_failure(self) -> bool:
        """Dropped because of the account (status 24, no funds), not because of the phone."""
        return self.error in (None, "", "0") and self.status in codes.ACCOUNT_STATUSES

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> PhoneResult:
        # One per recipient of a send: built without the frozen __init__ (same instance).
        state = {
            "phone": str(data.get("phone", "")).strip().lstrip("+"),
            "mccmnc": _str(data.get("mccmnc")),
            "cost": _str(data.get("cost")),
            "status": _int(data.get("status")),
            "error": _str(data.get("error")),
        }
        return frozen_from_state(cls, state)


@dataclass(frozen=True)
class SendResult:
    """A send.php answer: ``{"id", "cnt", "cost"?, "balance"?, "phones"?}``."""

    id: int
    cnt: int
    cost: str | None = None
    balance: str | None = None
    phones: tuple[PhoneResult, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> SendResult:
        sms_id = _int(data.get("id"))
        if sms_id is None:
            raise ValueError("send answer without an id")
        phones = data.get("phones") or ()
        return cls(
            id=sms_id,
            cnt=_int(data.get("cnt")) or 0,
            cost=_str(data.get("cost")),
            balance=_str(data.get("balance")),
            phones=tuple(PhoneResult.parse(p) for p in phones if isinstance(p, Mapping)),
            raw=dict(data),
        )


@dataclass(frozen=True)
class CostEstimate:
    """A ``send.php?cost=1`` answer: what a send would cost, nothing sent."""

    cnt: int
    cost: str | None


@dataclass(frozen=True)
class MessageStatus:
    """One status.php answer for one message (id + phone)."""

    id: str
    phone: str
    status: int
    last_date: str | None = None
    last_timestamp: int | None = None
    flag: int | None = None
    err: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def provider_message_id(self) -> str:
        return make_message_id(self.id, self.phone)

    @property
    def mapped(self) -> Status:
        return codes.map_status(self.status)

    @classmethod
    def parse(cls, data: Mapping[str, Any], sms_id: str, phone: str) -> MessageStatus:
        status = _int(data.get("status"))
        return cls(
            id=str(data.get("id", sms_id)),
            phone=str(data.get("phone", phone)).strip().lstrip("+") or phone,
            status=status if status is not None else -3,
            last_date=_str(data.get("last_date")),
            last_timestamp=_int(data.get("last_timestamp")),
            flag=_int(data.get("flag")),
            err=_int(data.get("err")),
            raw=dict(data),
        )

    def report(self) -> StatusReport:
        """This answer in the common model (raw status and err kept beside the mapped one)."""
        row = codes.status_code(self.status)
        err = codes.delivery_error(self.err)
        extra: dict[str, Any] = {"status_text": row.text}
        if err is not None:
            extra["err_text"] = err.text
            extra["err_permanent"] = err.permanent
        for key in ("flag", "last_date", "cost", "sms_cnt", "type", "sender_id", *HLR_FIELDS):
            if self.raw.get(key) not in (None, ""):
                extra[key] = self.raw[key]
        return StatusReport(
            provider_message_id=self.provider_message_id,
            status=row.status,
            raw_status=str(self.status),
            raw_error=str(self.err) if self.err else None,
            at=_ts(self.last_timestamp),
            extra=extra,
        )


HLR_FIELDS = ("imsi", "msc", "mcc", "mnc", "cn", "net", "rcn", "rnet")


def hlr_from_status(
    phone: str, data: Mapping[str, Any], *, provider_message_id: str | None = None
) -> HlrResult:
    """An HLR lookup's result from its status (status.php answer or status callback).

    Status 1 (delivered) means the HLR answered and the subscriber is reachable;
    -1/0 mean the lookup is still running; anything else is a negative answer
    whose ``err`` says why (1 no such subscriber, 6 offline, …).
    """
    status = _int(data.get("status"))
    err = codes.delivery_error(data.get("err"))
    pending = status in (-1, 0)
    rcn, rnet, net = _str(data.get("rcn")), _str(data.get("rnet")), _str(data.get("net"))
    has_hlr = any(_str(data.get(k)) for k in HLR_FIELDS)
    error: str | None = None
    if not pending and status != 1:
        error = err.text if err is not None else codes.status_code(status or -3).text
    return HlrResult(
        phone=phone,
        ok=status == 1,
        provider_message_id=provider_message_id,
        pending=pending,
        imsi=_str(data.get("imsi")),
        mcc=_str(data.get("mcc")),
        mnc=_str(data.get("mnc")),
        network=net,
        ported=None,  # SMSC's HLR answer has no porting flag
        roaming=bool(rcn or rnet) if has_hlr else None,
        error=error,
        raw={k: v for k, v in data.items() if k not in ("md5", "sha1", "crc32")},
    )


@dataclass(frozen=True)
class HistoryMessage:
    """One sent message from ``get.php?get_messages=1``."""

    id: int | None
    int_id: int | None
    phone: str
    status: int
    err: int | None
    last_date: str | None
    last_timestamp: int | None
    send_date: str | None
    send_timestamp: int | None
    cost: str | None
    sender_id: str | None
    status_name: str | None
    message: str | None
    mccmnc: str | None
    country: str | None
    operator: str | None
    region: str | None
    type: int | None
    sms_cnt: int | None
    format: int | None
    crc: int | None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def provider_message_id(self) -> str | None:
        return make_message_id(self.id, self.phone) if self.id is not None and self.phone else None

    @property
    def mapped(self) -> Status:
        return codes.map_status(self.status)

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> HistoryMessage:
        return cls(
            id=_int(d.get("id")),
            int_id=_int(d.get("int_id")),
            phone=str(d.get("phone", "")).lstrip("+"),
            status=_int(d.get("status")) or 0,
            err=_int(d.get("err")),
            last_date=_str(d.get("last_date")),
            last_timestamp=_int(d.get("last_timestamp")),
            send_date=_str(d.get("send_date")),
            send_timestamp=_int(d.get("send_timestamp")),
            cost=_str(d.get("cost")),
            sender_id=_str(d.get("sender_id")),
            status_name=_str(d.get("status_name")),
            message=_str(d.get("message")),
            mccmnc=_str(d.get("mccmnc")),
            country=_str(d.get("country")),
            operator=_str(d.get("operator")),
            region=_str(d.get("region")),
            type=_int(d.get("type")),
            sms_cnt=_int(d.get("sms_cnt")),
            format=_int(d.get("format")),
            crc=_int(d.get("crc")),
            raw=dict(d),
        )


@dataclass(frozen=True)
class IncomingMessage:
    """One incoming SMS from ``get.php?get_answers=1``."""

    id: int
    received: str | None
    phone: str
    message: str
    to_phone: str | None
    sent: str | None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> IncomingMessage:
        return cls(
            id=_int(d.get("id")) or 0,
            received=_str(d.get("received")),
            phone=str(d.get("phone", "")).lstrip("+"),
            message=str(d.get("message", "")),
            to_phone=_str(d.get("to_phone")),
            sent=_str(d.get("sent")),
        )


@dataclass(frozen=True)
class StatRow:
    """One row of ``get.php?get_stat=1``.

    The page's legend swaps the words ("<credit> - debit. <debit> - credit.");
    the field names are kept as SMSC sends them.
    """

    login: str
    sms: int
    credit: str | None
    debit: str | None
    currency: str | None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> StatRow:
        return cls(
            login=str(d.get("login", "")),
            sms=_int(d.get("sms")) or 0,
            credit=_str(d.get("credit")),
            debit=_str(d.get("debit")),
            currency=_str(d.get("currency")),
        )


@dataclass(frozen=True)
class PriceZone:
    zone: str
    name: str | None
    api: str | None
    mass: str | None
    mms: str | None
    hlr: str | None
    call: str | None


@dataclass(frozen=True)
class PriceList:
    """``get.php?get_price=1``: tariff zones, per-operator prices, e-mail price."""

    zones: tuple[PriceZone, ...]
    codes: Mapping[str, str]  # mccmnc -> cost
    mail: str | None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> PriceList:
        zones = tuple(
            PriceZone(
                zone=str(z.get("zone", "")),
                name=_str(z.get("name")),
                api=_str(z.get("api")),
                mass=_str(z.get("mass")),
                mms=_str(z.get("mms")),
                hlr=_str(z.get("hlr")),
                call=_str(z.get("call")),
            )
            for z in d.get("zones") or ()
            if isinstance(z, Mapping)
        )
        price_codes = {
            str(c.get("mccmnc")): str(c.get("cost"))
            for c in d.get("codes") or ()
            if isinstance(c, Mapping) and c.get("mccmnc") is not None
        }
        return cls(zones=zones, codes=price_codes, mail=_str(d.get("mail")))


@dataclass(frozen=True)
class OperatorInfo:
    """``info.php?get_operator=1`` for one phone (``phone`` is set in list answers)."""

    phone: str | None
    country: str | None
    operator: str | None
    region: str | None
    mcc: str | None
    mnc: str | None
    tz: str | None

    @classmethod
    def parse(cls, d: Mapping[str, Any], phone: str | None = None) -> OperatorInfo:
        return cls(
            phone=_str(d.get("phone")) or phone,
            country=_str(d.get("country")),
            operator=_str(d.get("operator")),
            region=_str(d.get("region")),
            mcc=_str(d.get("mcc")),
            mnc=_str(d.get("mnc")),
            tz=_str(d.get("tz")),
        )


@dataclass(frozen=True)
class ShortLinkInfo:
    """``tinyurls.php?get=1``: click counters of one short link."""

    id: str
    cnt: int
    cnt_mon: int
    cnt_day: int
    cnt_yes: int
    cnt_pmon: int
    link: str | None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> ShortLinkInfo:
        return cls(
            id=str(d.get("id", "")),
            cnt=_int(d.get("cnt")) or 0,
            cnt_mon=_int(d.get("cnt_mon")) or 0,
            cnt_day=_int(d.get("cnt_day")) or 0,
            cnt_yes=_int(d.get("cnt_yes")) or 0,
            cnt_pmon=_int(d.get("cnt_pmon")) or 0,
            link=_str(d.get("link")),
        )


# --------------------------------------------------------------------------- the adapter


def error_from_answer(group: str, data: Mapping[str, Any], *, recipients: int = 1) -> ProviderError:
    """The ProviderError for an SMSC error answer ``{"error": ..., "error_code": N}``."""
    code = data.get("error_code")
    row = codes.classify_error(group, code if code is not None else "", recipients=recipients)
    described = _str(data.get("error"))
    reason = row.text if not described else f"{row.text}: {described}"
    retry_after = _CAP_RETRY_AFTER if row.error_class is ErrorClass.THROTTLED else None
    return ProviderError(row.error_class, reason, raw_code=str(code), retry_after=retry_after)


def _is_error_answer(data: Any) -> bool:
    return isinstance(data, Mapping) and ("error_code" in data or "error" in data)


def _connect_failure(exc: ProviderError) -> bool:
    """True when nothing left this process (the connection was never made)."""
    return isinstance(exc.__cause__, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _server_error(exc: ProviderError) -> bool:
    """HTTP 5xx: the gateway answered that it failed (base.py: it did not take the request)."""
    return (
        exc.__cause__ is None
        and exc.raw_code is not None
        and exc.raw_code.isdigit()
        and int(exc.raw_code) >= 500
    )


def _transport_failure(exc: ProviderError) -> bool:
    """Any transport failure: connect, timeout or reset after connecting, HTTP 5xx."""
    return _server_error(exc) or isinstance(exc.__cause__, aiohttp.ClientError | TimeoutError)


def _may_fail_over(exc: ProviderError, idempotent: bool) -> bool:
    """SMSC's failover rule (see :class:`SmscAdapter`).

    Never after an AMBIGUOUS failure (a send that may have been taken, e.g. a proxy's 502/504
    or a timeout after sending): trying another host could send it twice.
    """
    if exc.error_class is ErrorClass.AMBIGUOUS:
        return False
    return _connect_failure(exc) or _server_error(exc) or (idempotent and _transport_failure(exc))


class SmscAdapter(HttpClient):
    """SMSC over HTTP: the smsq port (send / status / hlr / balance) plus typed calls
    for every documented endpoint.

    Failover: the primary ``base_url`` first, then ``backup_urls`` (by default
    www2…www5.smsc.ru when the primary is SMSC's own host). A host is left only on
    a transport failure: a connect error or an HTTP 5xx for every call (nothing was
    taken), and for idempotent calls also a timeout or reset after sending. A send
    that timed out after leaving is AMBIGUOUS and is raised, never re-sent to
    another host (it could go out twice). An SMSC error answer (``error_code``) is
    final and never failed over. A backup that answered stays preferred for
    ``FAILBACK_AFTER`` seconds, then the primary is tried first again. When every
    host failed, the last one's failure is raised (:mod:`worker.providers.failover`).
    """

    kind: ClassVar[str] = "smsc"
    # Ids per status.php request for reconciliation. SMSC documents no cap on the id/phone
    # lists but allows one bulk status request a minute, so each carries many (POST past
    # GET_QUERY_LIMIT). smsq's own ceiling, not an SMSC limit.
    max_status_batch: ClassVar[int] = 1000

    def __init__(self, account: AccountConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(account, session)
        self._options = options_of(account, SmscOptions)
        self._failover = HostFailover(
            self.kind,
            self._host_list(account),
            may_fail_over=_may_fail_over,
            failback_after=FAILBACK_AFTER,
            exhausted=raise_last,
        )

    # -- configuration ------------------------------------------------------------

    @staticmethod
    def _host_list(account: AccountConfig) -> tuple[str, ...]:
        primary = account.base_url.rstrip("/")
        if primary.endswith("/sys"):
            primary = primary[: -len("/sys")]
        backups = tuple(u.rstrip("/").removesuffix("/sys") for u in account.backup_urls)
        if not backups:
            host = (urlsplit(primary).hostname or "").lower()
            if host in _SMSC_HOSTS:
                backups = DEFAULT_BACKUP_URLS
            elif host in _SMSCENTRE_HOSTS:
                # The English page names www2.smscentre.com; the README names www2-5.smsc.ru.
                backups = ("https://www2.smscentre.com", *DEFAULT_BACKUP_URLS)
        return (primary, *[b for b in backups if b != primary])

    @property
    def hosts(self) -> tuple[str, ...]:
        """Primary first, then the backups, in the order they are tried."""
        return self._failover.hosts

    @property
    def max_batch(self) -> int:
        size = self.account.batch_size or DEFAULT_BATCH
        return max(1, min(size, MAX_BATCH))

    def _auth(self) -> dict[str, str]:
        if self.account.api_key:
            return {"apikey": self.account.api_key}
        return {"login": self.account.login, "psw": self.account.password}

    @property
    def options(self) -> SmscOptions:
        return self._options

    # -- transport ----------------------------------------------------------------

    async def _call(
        self,
        script: str,
        params: Mapping[str, str],
        *,
        group: str,
        endpoint: str,
        idempotent: bool = True,
        recipients: int = 1,
    ) -> Any:
        """One SMSC call (with failover); returns the decoded JSON of a non-error answer."""
        query = {**self._auth(), **params, "fmt": "3", "charset": "utf-8"}
        # GET by default (as SMSC's examples); POST when long, or always when the account
        # sets options.always_post (keeps psw out of proxies' URL logs).
        use_post = self.options.always_post or len(form_urlencode(query)) > GET_QUERY_LIMIT

        async def attempt(host: str) -> HttpResponse:
            url = f"{host}/sys/{script}"
            if use_post:
                return await self.request(
                    "POST", url, endpoint=endpoint, data=query, idempotent=idempotent
                )
            return await self.request(
                "GET", url, endpoint=endpoint, params=query, idempotent=idempotent
            )

        response = await self._failover.call(attempt, endpoint=endpoint, idempotent=idempotent)
        try:
            data = json.loads(response.text)
        except ValueError:
            cls = ErrorClass.TRANSIENT if idempotent else ErrorClass.AMBIGUOUS
            raise ProviderError(cls, "unparsable answer (not JSON)") from None
        if _is_error_answer(data):
            raise error_from_answer(group, data, recipients=recipients)
        return data

    # -- send.php -----------------------------------------------------------------

    def _send_params(
        self,
        phones: Sequence[str],
        mes: str,
        *,
        sender: str | None,
        client_id: int | None,
        translit: int | None,
        at: datetime | str | None,
        valid: int | str | None,
        flash: bool,
        tinyurl: bool | None,
        maxsms: int | None,
        extra: Mapping[str, str] | None,
    ) -> dict[str, str]:
        params: dict[str, str] = {"phones": ",".join(p.strip() for p in phones), "mes": mes}
        if sender:
            params["sender"] = sender
        if client_id is not None:
            if not 1 <= client_id <= 2147483647:
                raise ValueError("SMSC client id must be 1..2147483647")
            params["id"] = str(client_id)
        if translit is not None:
            params["translit"] = str(translit)
        if at is not None:
            params["time"] = schedule_param(at) if isinstance(at, datetime) else at
        if valid is not None:
            params["valid"] = validity_param(valid) if isinstance(valid, int) else valid
        if flash:
            params["flash"] = "1"
        if tinyurl is not None:
            params["tinyurl"] = "1" if tinyurl else "0"
        if maxsms is not None:
            params["maxsms"] = str(maxsms)
        if extra:
            params.update(extra)
        return params

    async def send_sms(
        self,
        phones: Sequence[str],
        mes: str,
        *,
        sender: str | None = None,
        client_id: int | None = None,
        translit: int | None = None,
        at: datetime | str | None = None,
        valid: int | str | None = None,
        flash: bool = False,
        tinyurl: bool | None = None,
        maxsms: int | None = None,
        cost: int = 3,
        op: bool = True,
        err: bool = True,
        extra: Mapping[str, str] | None = None,
    ) -> SendResult:
        """``send.php``: send ``mes`` to ``phones``. Not idempotent (never retried blindly).

        ``at``: a datetime (sent as ``0<unix ts>``) or SMSC's own ``time`` text;
        ``valid``: seconds (sent as ``hh:mm``) or SMSC's text; ``cost``: 0 plain,
        2 with cost, 3 with cost and balance; ``op``: per-phone details;
        ``err``: list the phones that were refused.
        """
        if cost not in (0, 2, 3):
            raise ValueError("send cost must be 0, 2 or 3 (use get_cost for 1)")
        params = self._send_params(
            phones,
            mes,
            sender=sender,
            client_id=client_id,
            translit=translit,
            at=at,
            valid=valid,
            flash=flash,
            tinyurl=tinyurl,
            maxsms=maxsms,
            extra=extra,
        )
        if cost:
            params["cost"] = str(cost)
        if op:
            params["op"] = "1"
        if err:
            params["err"] = "1"
        data = await self._call(
            "send.php",
            params,
            group=codes.SEND,
            endpoint="send",
            idempotent=False,
            recipients=len(phones),
        )
        try:
            return SendResult.parse(data)
        except (ValueError, TypeError, AttributeError):
            raise ProviderError(ErrorClass.AMBIGUOUS, "send answer without an id") from None

    async def get_cost(
        self,
        phones: Sequence[str],
        mes: str,
        *,
        sender: str | None = None,
        translit: int | None = None,
    ) -> CostEstimate:
        """``send.php?cost=1``: the price of a send, nothing sent (idempotent)."""
        params = self._send_params(
            phones,
            mes,
            sender=sender,
            client_id=None,
            translit=translit,
            at=None,
            valid=None,
            flash=False,
            tinyurl=None,
            maxsms=None,
            extra=None,
        )
        params["cost"] = "1"
        data = await self._call(
            "send.php", params, group=codes.SEND, endpoint="cost", recipients=len(phones)
        )
        return CostEstimate(cnt=_int(data.get("cnt")) or 0, cost=_str(data.get("cost")))

    async def send_hlr(self, phones: Sequence[str]) -> SendResult:
        """``send.php?hlr=1``: start HLR lookups; the result comes as a status."""
        params = {"phones": ",".join(phones), "hlr": "1", "op": "1", "err": "1", "cost": "3"}
        data = await self._call(
            "send.php",
            params,
            group=codes.SEND,
            endpoint="hlr",
            idempotent=False,
            recipients=len(phones),
        )
        try:
            return SendResult.parse(data)
        except (ValueError, TypeError, AttributeError):
            raise ProviderError(ErrorClass.AMBIGUOUS, "hlr answer without an id") from None

    async def send(self, request: SendRequest) -> list[RecipientOutcome]:
        """Send one chunk; one outcome per requested recipient, in request order."""
        translit = self.options.translit
        flash = self.options.flash
        result = await self.send_sms(
            request.recipients,
            request.text,
            sender=request.sender or None,
            client_id=request.client_id,
            translit=int(translit) if translit is not None else None,
            at=request.scheduled_at,
            valid=request.validity,
            flash=flash,
        )
        return outcomes_from_send(result, request.recipients)

    async def hlr(self, phones: Sequence[str]) -> list[HlrResult]:
        """Start HLR lookups: pending results whose ids are polled with hlr_results()."""
        result = await self.send_hlr(phones)
        by_phone = {p.phone: p for p in result.phones}
        out: list[HlrResult] = []
        for phone in phones:
            entry = by_phone.get(phone.lstrip("+"))
            if entry is not None and entry.rejected:
                out.append(
                    HlrResult(
                        phone=phone,
                        ok=False,
                        error=_phone_error_text(entry),
                        raw={"status": entry.status, "error": entry.error},
                    )
                )
                continue
            out.append(
                HlrResult(
                    phone=phone,
                    ok=True,
                    pending=True,
                    provider_message_id=make_message_id(result.id, phone),
                )
            )
        return out

    # -- status.php ---------------------------------------------------------------

    async def get_status(
        self, messages: Sequence[tuple[str, str]], *, all: int = 1
    ) -> list[MessageStatus]:
        """``status.php`` for (id, phone) pairs in one request, answers in the same order.

        Always uses the list form (a trailing comma for one item) so the answer is a
        JSON array. SMSC allows one bulk status request per minute (error 9), so all
        pairs go in one call (POST when long); pace calls with the limiter.
        """
        if not messages:
            return []
        ids = ",".join(m[0] for m in messages)
        phones = ",".join(m[1] for m in messages)
        if len(messages) == 1:
            ids, phones = ids + ",", phones + ","
        params = {"id": ids, "phone": phones, "all": str(all)}
        data = await self._call("status.php", params, group=codes.STATUS, endpoint="status")
        items = data if isinstance(data, list) else [data]
        return _match_statuses(messages, items)

    async def status(self, provider_message_ids: Sequence[str]) -> list[StatusReport]:
        pairs = _pairs(provider_message_ids)
        return [s.report() for s in await self.get_status(pairs)]

    async def hlr_results(self, provider_message_ids: Sequence[str]) -> list[HlrResult]:
        """Poll HLR lookups started by hlr(); pending ones stay pending."""
        pairs = _pairs(provider_message_ids)
        statuses = await self.get_status(pairs, all=0)
        return [
            hlr_from_status(s.phone, s.raw, provider_message_id=s.provider_message_id)
            for s in statuses
        ]

    def expected_message_ids(self, request: SendRequest) -> list[str] | None:
        """The ids a send of ``request`` gets, known before any answer (see the function)."""
        return expected_message_ids(request)

    async def history_page(
        self, cursor: str | None, page_size: int = 1000
    ) -> tuple[list[StatusReport], str | None, float | None]:
        """One page of sent history (newest first) as status reports, for reconciliation.

        Returns (reports, the cursor of the next older page or None at the end, the send
        time of the oldest message on the page). One ``get_messages`` request: SMSC allows
        3 identical ones a minute and 30 an hour (endpoint class ``history``).
        """
        page = await self.get_messages(
            cnt=page_size, prev_id=int(cursor) if cursor and cursor.isdigit() else None
        )
        reports = [
            MessageStatus(
                id=str(m.id),
                phone=m.phone,
                status=m.status,
                last_date=m.last_date,
                last_timestamp=m.last_timestamp,
                err=m.err,
                raw={k: v for k, v in m.raw.items() if k != "message"},
            ).report()
            for m in page
            if m.id is not None and m.phone
        ]
        int_ids = [m.int_id for m in page if m.int_id is not None]
        next_cursor = str(min(int_ids)) if len(page) >= page_size and int_ids else None
        sent = [m.send_timestamp for m in page if m.send_timestamp]
        return reports, next_cursor, float(min(sent)) if sent else None

    async def poll_incoming(self, cursor: str | None) -> tuple[list[Incoming], str | None]:
        """Incoming SMS after ``cursor`` (the last incoming id seen), and the new cursor.

        The first poll (no cursor) asks for the last INCOMING_FIRST_HOURS hours. One
        ``get_answers`` request (endpoint class ``incoming``).
        """
        after = int(cursor) if cursor and cursor.isdigit() else None
        rows = await self.get_answers(
            after_id=after,
            hour=None if after is not None else INCOMING_FIRST_HOURS,
            cnt=INCOMING_PAGE,
        )
        messages = [
            Incoming(
                provider_message_id=str(r.id),
                sender=r.phone,
                text=r.message,
                recipient=r.to_phone,
                received_at=_smsc_time(r.received),
                extra={"sent": r.sent} if r.sent else {},
            )
            for r in rows
            if r.id
        ]
        highest = max([after or 0, *(r.id for r in rows)])
        return messages, str(highest) if highest else cursor

    async def delete_message(self, sms_id: str, phone: str) -> None:
        """``status.php?del=1``: delete a sent message (SMSC error 5 when it cannot)."""
        params = {"id": sms_id, "phone": phone, "del": "1"}
        await self._call("status.php", params, group=codes.STATUS, endpoint="status")

    # -- balance.php --------------------------------------------------------------

    async def balance(self) -> Balance:
        data = await self._call(
            "balance.php", {"cur": "1"}, group=codes.BALANCE, endpoint="balance"
        )
        if not isinstance(data, Mapping):
            raise ProviderError(ErrorClass.TRANSIENT, "balance answer is not a JSON object")
        amount = _str(data.get("balance"))
        if amount is None:
            raise ProviderError(ErrorClass.TRANSIENT, "balance answer without a balance")
        return Balance(amount=amount, currency=_str(data.get("currency")))

    # -- get.php ------------------------------------------------------------------

    async def get_messages(
        self,
        *,
        cnt: int = 1000,
        prev_id: int | None = None,
        start: date | str | None = None,
        end: date | str | None = None,
        phones: Sequence[str] | None = None,
    ) -> list[HistoryMessage]:
        """One page of sent-message history, newest first (``prev_id``: older than it).

        SMSC answers error 3 ("message not found") when nothing matches; that is an
        empty page here. Caps: 3 identical calls a minute, 30 an hour.
        """
        params: dict[str, str] = {"get_messages": "1", "cnt": str(min(max(cnt, 1), 1000))}
        if prev_id is not None:
            params["prev_id"] = str(prev_id)
        if start is not None:
            params["start"] = _ddmmyyyy(start)
        if end is not None:
            params["end"] = _ddmmyyyy(end)
        if phones:
            params["phone"] = ",".join(phones)
        try:
            data = await self._call("get.php", params, group=codes.DATA, endpoint="get_messages")
        except ProviderError as exc:
            if exc.raw_code == "3":
                return []
            raise
        return [HistoryMessage.parse(d) for d in _as_list(data)]

    async def iter_messages(
        self,
        *,
        page_size: int = 1000,
        prev_id: int | None = None,
        start: date | str | None = None,
        end: date | str | None = None,
        phones: Sequence[str] | None = None,
    ) -> AsyncIterator[HistoryMessage]:
        """All history, page by page with ``prev_id``. Each page is one request
        (SMSC allows 30 an hour): pace long walks."""
        while True:
            page = await self.get_messages(
                cnt=page_size, prev_id=prev_id, start=start, end=end, phones=phones
            )
            for message in page:
                yield message
            ids = [m.int_id for m in page if m.int_id is not None]
            if len(page) < page_size or not ids:
                return
            prev_id = min(ids)

    async def get_answers(
        self,
        *,
        after_id: int | None = None,
        hour: int | None = None,
        cnt: int | None = None,
        to_phone: str | None = None,
    ) -> list[IncomingMessage]:
        """Incoming SMS (``get_answers``), those after ``after_id`` when given."""
        params: dict[str, str] = {"get_answers": "1"}
        if after_id is not None:
            params["after_id"] = str(after_id)
        if hour is not None:
            params["hour"] = str(min(max(hour, 1), 168))
        if cnt is not None:
            params["cnt"] = str(min(max(cnt, 1), 10000))
        if to_phone:
            params["to_phone"] = to_phone
        data = await self._call("get.php", params, group=codes.DATA, endpoint="get_answers")
        return [IncomingMessage.parse(d) for d in _as_list(data)]

    async def get_stat(
        self,
        start: date | str,
        end: date | str | None = None,
        *,
        mycur: bool = False,
        balance2: bool = False,
    ) -> list[StatRow]:
        """Sending statistics for a period (``get_stat``)."""
        params: dict[str, str] = {"get_stat": "1", "start": _ddmmyyyy(start)}
        if end is not None:
            params["end"] = _ddmmyyyy(end)
        if mycur:
            params["mycur"] = "1"
        if balance2:
            params["balance2"] = "1"
        data = await self._call("get.php", params, group=codes.DATA, endpoint="get_stat")
        return [StatRow.parse(d) for d in _as_list(data)]

    async def get_prices(self) -> PriceList:
        """The account's tariffs (``get_price``)."""
        data = await self._call(
            "get.php", {"get_price": "1"}, group=codes.DATA, endpoint="get_price"
        )
        if not isinstance(data, Mapping):
            raise ProviderError(ErrorClass.TRANSIENT, "price answer is not an object")
        return PriceList.parse(data)

    # -- info.php / tinyurls.php --------------------------------------------------

    async def get_operator(self, phones: Sequence[str]) -> list[OperatorInfo]:
        """Operator of each phone (``info.php?get_operator=1``; ported numbers not covered)."""
        params = {"get_operator": "1", "phone": ",".join(phones)}
        data = await self._call("info.php", params, group=codes.DATA, endpoint="info")
        items = _as_list(data)
        if len(phones) == 1 and len(items) == 1:
            return [OperatorInfo.parse(items[0], phone=phones[0])]
        return [OperatorInfo.parse(d) for d in items]

    # -- least-cost routing capabilities (PriceSource, OperatorSource) -------------------

    operator_batch: ClassVar[int] = OPERATOR_BATCH

    async def price_list(self) -> list[OperatorPrice]:
        """``get_price``: the per-operator tariffs (``codes``, by MCC+MNC) and the tariff
        zones whose name is a country SMSC bills as one (``api``: the price via the API)."""
        prices = await self.get_prices()
        currency = self.options.currency or "RUB"
        out = [
            OperatorPrice(price=cost, currency=currency, mccmnc=mccmnc)
            for mccmnc, cost in prices.codes.items()
            if mccmnc.isdigit() and len(mccmnc) in (5, 6) and _decimal_text(cost)
        ]
        for zone in prices.zones:
            region = ZONE_REGIONS.get((zone.name or "").strip().lower())
            if region and zone.api and _decimal_text(zone.api):
                out.append(OperatorPrice(price=zone.api, currency=currency, region=region))
        return out

    async def lookup_operators(self, phones: Sequence[str]) -> list[NetworkInfo]:
        """``info.php?get_operator=1`` for up to OPERATOR_BATCH phones in one request."""
        try:
            infos = await self.get_operator(phones)
        except ProviderError as exc:
            if exc.raw_code == "3":  # "operator not found": none of them could be placed
                return []
            raise
        out = []
        for info in infos:
            phone = (info.phone or "").lstrip("+")
            if phone and info.mcc and info.mnc and info.mcc.isdigit() and info.mnc.isdigit():
                out.append(
                    NetworkInfo(phone=phone, mccmnc=info.mcc + info.mnc, name=info.operator or "")
                )
        return out

    async def get_short_link(
        self, *, link: str | None = None, link_id: str | int | None = None
    ) -> ShortLinkInfo:
        """Click counters of a short link, by original link or by id."""
        if (link is None) == (link_id is None):
            raise ValueError("give exactly one of link and link_id")
        params = {"get": "1"}
        if link is not None:
            params["link"] = link
        else:
            params["id"] = str(link_id)
        data = await self._call("tinyurls.php", params, group=codes.DATA, endpoint="tinyurl")
        return ShortLinkInfo.parse(data)


# --------------------------------------------------------------------------- helpers


def _as_list(data: Any) -> list[Mapping[str, Any]]:
    if isinstance(data, list):
        return [d for d in data if isinstance(d, Mapping)]
    if isinstance(data, Mapping):
        return [data]
    raise ProviderError(ErrorClass.TRANSIENT, "unexpected answer shape")


def _smsc_time(value: str | None) -> datetime | None:
    """An SMSC date ``DD.MM.YYYY hh:mm:ss`` (Moscow time) as an aware datetime."""
    if not value:
        return None
    try:
        return datetime.strptime(value.strip(), "%d.%m.%Y %H:%M:%S").replace(tzinfo=MOSCOW)
    except ValueError:
        return None


def _pairs(provider_message_ids: Sequence[str]) -> list[tuple[str, str]]:
    try:
        return [split_message_id(m) for m in provider_message_ids]
    except ValueError as exc:
        raise ProviderError(ErrorClass.REQUEST, str(exc)) from None


def _match_statuses(
    messages: Sequence[tuple[str, str]], items: Sequence[Any]
) -> list[MessageStatus]:
    """Pair answers with requests: by (id, phone) when the answer carries them,
    else by position (SMSC answers in request order)."""
    keyed: dict[tuple[str, str], Mapping[str, Any]] = {}
    for item in items:
        if isinstance(item, Mapping) and "id" in item and "phone" in item:
            keyed[(str(item["id"]), str(item["phone"]).lstrip("+"))] = item
    out: list[MessageStatus] = []
    for pos, (sms_id, phone) in enumerate(messages):
        item = keyed.get((sms_id, phone))
        if item is None and pos < len(items) and isinstance(items[pos], Mapping):
            item = items[pos]
        if item is None or _is_error_answer(item):
            out.append(MessageStatus(id=sms_id, phone=phone, status=-3, raw=dict(item or {})))
        else:
            out.append(MessageStatus.parse(item, sms_id, phone))
    return out


def _phone_error_text(entry: PhoneResult) -> str:
    code = _int(entry.error)
    if code:
        if code < 100:
            return codes.classify_error(codes.SEND, code).text
        err = codes.delivery_error(code)
        if err is not None:
            return err.text
    if entry.status is not None:
        return codes.status_code(entry.status).text
    return "refused"


def outcomes_from_send(result: SendResult, recipients: Sequence[str]) -> list[RecipientOutcome]:
    """One outcome per requested phone from a send answer.

    With per-phone details, each phone is SUBMITTED (id ``"<id>:<phone>"``) or
    REJECTED (raw code: the phone's error, else its status) or, dropped for lack of
    funds (status 24), FAILED classed ACCOUNT, so the core pauses the account; a phone missing from
    the details is UNKNOWN (reconciliation settles it). Without details every
    phone is SUBMITTED. ``parts`` is ``cnt`` divided by the accepted phones when it
    divides evenly (SMSC bills ``cnt`` = parts × recipients).
    """
    by_phone = {p.phone: p for p in result.phones}
    keys = [r.lstrip("+") for r in recipients]
    # Accepted: every recipient without details; with details, those listed and not refused.
    if result.phones:
        entries = [by_phone.get(k) for k in keys]
        accepted = sum(1 for e in entries if e is not None and not e.rejected)
    else:
        entries = [None] * len(keys)
        accepted = len(keys)
    parts: int | None = None
    if accepted and result.cnt and result.cnt % accepted == 0:
        parts = result.cnt // accepted
    outcomes: list[RecipientOutcome] = []
    for phone, entry in zip(recipients, entries, strict=True):
        if result.phones and entry is None:
            outcomes.append(
                RecipientOutcome(
                    phone=phone,
                    status=Status.UNKNOWN,
                    provider_message_id=make_message_id(result.id, phone),
                    reason="phone missing from the per-phone details",
                )
            )
        elif entry is not None and entry.account_failure:
            outcomes.append(
                RecipientOutcome(
                    phone=phone,
                    status=Status.FAILED,
                    raw_code=str(entry.status),
                    reason=f"account error: {_phone_error_text(entry)}",
                    error_class=ErrorClass.ACCOUNT,
                )
            )
        elif entry is not None and entry.rejected:
            outcomes.append(
                RecipientOutcome(
                    phone=phone,
                    status=Status.REJECTED,
                    raw_code=entry.error if entry.error not in (None, "0") else str(entry.status),
                    reason=_phone_error_text(entry),
                    error_class=ErrorClass.RECIPIENT,
                )
            )
        else:
            cost = entry.cost if entry is not None else None
            if cost is None and len(recipients) == 1:
                cost = result.cost
            outcomes.append(
                RecipientOutcome.submitted(
                    phone, make_message_id(result.id, phone), parts=parts, cost=cost
                )
            )
    return outcomes


__all__ = [
    "DEFAULT_BACKUP_URLS",
    "DEFAULT_BATCH",
    "HLR_FIELDS",
    "MAX_BATCH",
    "CostEstimate",
    "HistoryMessage",
    "IncomingMessage",
    "MessageStatus",
    "OperatorInfo",
    "PhoneResult",
    "PriceList",
    "PriceZone",
    "SendResult",
    "ShortLinkInfo",
    "SmscAdapter",
    "StatRow",
    "error_from_answer",
    "expected_message_ids",
    "hlr_from_status",
    "make_message_id",
    "outcomes_from_send",
    "schedule_param",
    "split_message_id",
    "validity_param",
]
