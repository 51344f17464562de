"""A fake SMSC server for tests, benchmarks and demos.

Routes (GET and POST, parameters in the query or a form body):

- ``/sys/send.php``: SMS (``phones``, ``mes``, ``sender``, ``id``, ``time``, ``valid``,
  ``flash``, ``translit``, ``tinyurl``), HLR (``hlr=1``), cost (``cost=0..3``),
  per-phone details (``op=1``) and refused phones (``err=1``).
- ``/sys/status.php``: single and list (``id``/``phone`` lists, trailing comma) statuses,
  ``all=0/1/2``, ``del=1``.
- ``/sys/balance.php`` (``cur=1``).
- ``/sys/get.php``: ``get_messages`` (``prev_id`` paging), ``get_answers`` (``after_id``),
  ``get_stat``, ``get_price``.
- ``/sys/info.php?get_operator=1``, ``/sys/tinyurls.php?get=1``.

Answers follow ``fmt`` (0 text, 1 comma list, 2 XML, 3 JSON; JSON is the complete one,
the others follow the shapes on SMSC's pages where they show them) in ``charset``
(default windows-1251). Auth: ``login`` + ``psw`` (the password or its lowercase md5)
or ``apikey``; error 2 otherwise, and 5 failed logins within the login window block the
client IP (error 4), as SMSC's help describes.

Caps (error 9; :class:`SmscCaps`, windows scalable, can be disabled): a second identical
send within a minute; more than 5 identical cost requests a minute; more than 5 status
requests for one message or more than one bulk status request a minute; more than 3
identical ``get_messages`` a minute or 30 an hour; more than 3 identical requests a
minute to the other data calls (``get_stat``: any 3), ``info.php`` also 100 a minute;
fifteen or more requests at once under one login (``concurrent``, get.php's error 9:
"fifteen or more requests simultaneously from different connections under the same
username"). ``request_seconds`` is how long the gateway takes to answer a request, so
that requests overlap as they do on the real gateway.

Statuses advance with the shared :class:`~worker.providers.sandbox_kit.OutcomeMix`:
-1 for the first half of the wait, then 0, then 1 (delivered), 20 (undeliverable,
err 1) or 3 (expired, err 6). When ``callback_url`` is set, final statuses (and incoming
SMS added through the admin route) are POSTed to it the way SMSC does: form or
``fmt=2/3`` body in the URL's ``charset``, md5/sha1/crc32 signature, ``!`` GET
parameters, retried every 4 minutes up to 50 times unless the handler answers 200 or
404 (both scalable).

Extra admin routes (besides sandbox_kit's): ``POST /__sandbox/smsc/incoming``
(``{"phone", "mes", "to_phone"?, "sms_id"?}``), ``POST /__sandbox/smsc/call``
(``{"phone"}``), ``GET /__sandbox/smsc/callbacks`` (delivery attempts),
``PUT /__sandbox/smsc/balance`` (``{"balance"}``), ``POST /__sandbox/smsc/click``
(``{"id"}``: a short-link click).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import re
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

from producers.segments import count_segments
from worker.providers.sandbox_kit import (
    ADMIN_PREFIX,
    SandboxMessage,
    SandboxState,
    make_app,
    request_params,
)
from worker.providers.smsc.push_formats import HandlerUrl, codec_for, split_handler_url

MOSCOW = timezone(timedelta(hours=3))  # SMSC's default zone for dates (no DST since 2014)

# Russian status names, as SMSC's ``status_name`` carries them.
STATUS_NAMES: Mapping[int, str] = {
    -3: "Сообщение не найдено",
    -2: "Остановлено",
    -1: "Ожидает отправки",
    0: "Передано оператору",
    1: "Доставлено",
    2: "Прочитано",
    3: "Просрочено",
    4: "Нажата ссылка",
    20: "Невозможно доставить",
    22: "Неверный номер",
    23: "Запрещено",
    24: "Недостаточно средств",
    25: "Недоступный номер",
}

ERROR_TEXTS: Mapping[int, str] = {
    1: "parameters error",
    2: "authorise error",
    3: "no money",
    4: "IP is blocked",
    5: "wrong date format",
    6: "message is denied",
    7: "invalid number",
    8: "can't send message",
    9: "duplicate request, wait a minute",
}

# prefix -> country, operator, region, mcc, mnc, tz (hours from UTC)
OPERATORS: Mapping[str, tuple[str, str, str, str, str, str]] = {
    "7903": ("Россия", "Билайн", "Москва", "250", "99", "3"),
    "7926": ("Россия", "МегаФон", "Москва", "250", "02", "3"),
    "7977": ("Россия", "Tele2", "Москва", "250", "20", "3"),
    "79": ("Россия", "МТС", "Москва", "250", "01", "3"),
    "7": ("Россия", "МегаФон", "Санкт-Петербург", "250", "02", "3"),
    "375": ("Беларусь", "МТС", "Минск", "257", "02", "3"),
    "447400": ("United Kingdom", "EE", "", "234", "30", "0"),
    "44": ("United Kingdom", "Vodafone", "", "234", "15", "0"),
    "49": ("Germany", "Telekom", "", "262", "01", "1"),
    "1": ("USA", "T-Mobile", "", "310", "260", "-5"),
}

DEFAULT_LOGIN = "testuser"
DEFAULT_PASSWORD = "testpass"

PHONE_RE = re.compile(r"^\+?\d{10,15}$")
URL_RE = re.compile(r"https?://\S+")
AUTH_PARAMS = frozenset({"login", "psw", "apikey"})


@dataclass(frozen=True)
class SmscCaps:
    """SMSC's request caps, with windows a test can shrink (``scaled``) or switch off."""

    enabled: bool = True
    minute: float = 60.0
    hour: float = 3600.0
    send_identical: int = 1
    cost_identical: int = 5
    status_per_message: int = 5
    status_bulk: int = 1
    history_identical: int = 3
    history_per_hour: int = 30
    data_identical: int = 3
    stat_per_minute: int = 3
    info_per_minute: int = 100
    concurrent: int = 15  # requests at once under one login that get error 9
    login_errors: int = 5
    login_window: float = 1800.0
    block_for: float = 1800.0

    def scaled(self, factor: float) -> SmscCaps:
        """The same caps with every window multiplied by ``factor``."""
        return replace(
            self,
            minute=self.minute * factor,
            hour=self.hour * factor,
            login_window=self.login_window * factor,
            block_for=self.block_for * factor,
        )


@dataclass
class CallbackConfig:
    """Where and how the sandbox pushes callbacks."""

    handler: HandlerUrl
    retry_interval: float = 240.0  # SMSC: one attempt every 4 minutes
    attempts: int = 50  # SMSC: 50 attempts in all


@dataclass
class CallbackAttempt:
    kind: str  # status / incoming / call
    key: str  # "<id>:<phone>" for statuses, the incoming id, or the phone
    attempt: int
    http_status: int | None  # None: the connection failed
    at: float
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Incoming:
    id: int
    phone: str
    mes: str
    to_phone: str
    received: float
    sent: float
    sms_id: str | None = None


class SmscError(Exception):
    """An SMSC error answer (``error_code`` N), with the id SMSC adds for 3/6/7/8."""

    def __init__(self, code: int, sms_id: int | None = None, text: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.sms_id = sms_id
        self.text = text or ERROR_TEXTS.get(code, "error")


_CENT = Decimal("0.01")


def money(value: Decimal) -> str:
    """SMSC's money text: a decimal string with two places."""
    return format(value.quantize(_CENT), "f")


class _CostTexts:
    """money() of the costs of one send, most of them the very same Decimal object."""

    def __init__(self) -> None:
        self._last: Decimal | None = None
        self._text = ""

    def __call__(self, value: Decimal) -> str:
        if value is not self._last:
            self._last, self._text = value, money(value)
        return self._text


def _moscow(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, MOSCOW)


def _date_full(ts: float) -> str:
    return _moscow(ts).strftime("%d.%m.%Y %H:%M:%S") if ts else ""


def _date_short(ts: float) -> str:
    return _moscow(ts).strftime("%d.%m.%y %H:%M:%S")


# The prefix lengths OPERATORS has, longest first: the only slices worth looking up.
_PREFIX_SIZES = sorted({len(prefix) for prefix in OPERATORS}, reverse=True)


def operator_of(phone: str) -> tuple[str, str, str, str, str, str] | None:
    digits = phone.lstrip("+")
    for size in _PREFIX_SIZES:
        if size <= len(digits):
            row = OPERATORS.get(digits[:size])
            if row is not None:
                return row
    return None


def _parse_time(value: str, tz_param: str | None, now: float) -> float:
    """SMSC's ``time``: ``0<unix ts>``, ``+minutes``, ``DDMMYYhhmm``, ``DD.MM.YY hh:mm``."""
    value = value.strip()
    if re.fullmatch(r"0\d+", value):
        return float(int(value[1:]))
    if re.fullmatch(r"\+\d+", value):
        return now + int(value[1:]) * 60
    offset = int(tz_param) if tz_param and re.fullmatch(r"-?\d{1,2}", tz_param) else 0
    zone = timezone(timedelta(hours=3 + offset))
    for fmt in ("%d%m%y%H%M", "%d.%m.%y %H:%M"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=zone).timestamp()
        except ValueError:
            continue
    raise SmscError(5)


def _parse_valid(value: str) -> int:
    value = value.strip()
    if re.fullmatch(r"\d{1,2}", value) and 1 <= int(value) <= 24:
        return int(value) * 3600
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if match:
        seconds = int(match.group(1)) * 3600 + int(match.group(2)) * 60
        if 60 <= seconds <= 24 * 3600:
            return seconds
    raise SmscError(1, text="bad validity")


class Windows:
    """Sliding-window counters: "at most N in any window of W seconds" per key."""

    def __init__(self) -> None:
        self._hits: dict[Any, deque[float]] = {}

    def count(self, key: Any, window: float, now: float) -> int:
        hits = self._hits.get(key)
        if hits is None:
            return 0
        while hits and hits[0] <= now - window:
            hits.popleft()
        return len(hits)

    def add(self, key: Any, now: float) -> None:
        self._hits.setdefault(key, deque()).append(now)

    def allow(self, key: Any, limit: int, window: float, now: float) -> bool:
        """Record and allow the hit unless ``limit`` hits are already in the window."""
        if self.count(key, window, now) >= limit:
            return False
        self.add(key, now)
        return True


class SmscSandbox:
    """The sandbox's own state and handlers (the kit's SandboxState holds the messages)."""

    def __init__(
        self,
        state: SandboxState,
        *,
        login: str,
        password: str,
        api_key: str | None,
        balance: str,
        price: str,
        max_batch: int | None,
        callback: CallbackConfig | None,
        caps: SmscCaps,
        currency: str = "RUB",
        blocked_phones: Sequence[str] = (),
        forbidden_words: Sequence[str] = ("FORBIDDEN",),
        forbidden_senders: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        operator_prices: Mapping[str, str] | None = None,
        delivery_errors: Mapping[str, int] | None = None,
        unfunded_phones: Sequence[str] = (),
        request_seconds: float = 0.0,
    ) -> None:
        self.state = state
        # number -> delivery error (``err``): its messages end "cannot be delivered" (20)
        # with that error, e.g. 248 no route or 1 subscriber does not exist.
        self.delivery_errors = {k.lstrip("+"): int(v) for k, v in (delivery_errors or {}).items()}
        # mccmnc -> price of one part: the get_price "codes" (individual tariffs), and what a
        # number of that network is charged. None: SMSC's one code, 25001 at the flat price.
        self.operator_prices = (
            {k: Decimal(v) for k, v in operator_prices.items()}
            if operator_prices is not None
            else None
        )
        self.request_seconds = request_seconds
        self.active: dict[str, int] = {}  # requests being answered, per login
        self.peak_active = 0
        self.login = login
        self.password = password
        self.api_key = api_key
        self.balance = Decimal(balance)
        self.price = Decimal(price)
        self.currency = currency
        self.max_batch = max_batch
        self.callback = callback
        self.caps = caps
        self.blocked_phones = {p.lstrip("+") for p in blocked_phones}
        self.unfunded_phones = {p.lstrip("+") for p in unfunded_phones}
        self.forbidden_words = [w.lower() for w in forbidden_words]
        self.forbidden_senders = {s.lower() for s in forbidden_senders}
        self.clock = clock
        self.spent = Decimal("0")
        self.windows = Windows()
        self.blocked_until: dict[str, float] = {}
        self._next_id = itertools.count(1)
        self._next_int_id = itertools.count(1000001)
        self._next_incoming = itertools.count(5000001)
        self.incoming: list[Incoming] = []
        self.short_links: dict[int, dict[str, Any]] = {}
        self._next_link = itertools.count(145142)
        self.callback_log: list[CallbackAttempt] = []
        self._due: list[tuple[float, int, str]] = []  # (when, seq, message key)
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- auth and caps --------------------------------------------------------------

    def _check_auth(self, params: Mapping[str, str], ip: str) -> str:
        """The caller's login, or SmscError 2 / 4."""
        now = self.clock()
        if self.caps.enabled and self.blocked_until.get(ip, 0.0) > now:
            raise SmscError(4)
        if self.api_key and params.get("apikey") == self.api_key:
            return self.login
        psw = params.get("psw", "")
        md5 = hashlib.md5(self.password.encode()).hexdigest()
        if params.get("login") == self.login and psw in (self.password, md5) and psw:
            return self.login
        if self.caps.enabled:
            self.windows.add(("login-error", ip), now)
            errors = self.windows.count(("login-error", ip), self.caps.login_window, now)
            if errors >= self.caps.login_errors:
                self.blocked_until[ip] = now + self.caps.block_for
        raise SmscError(2)

    def _cap(self, key: Any, limit: int, window: float) -> None:
        if self.caps.enabled and not self.windows.allow(key, limit, window, self.clock()):
            raise SmscError(9)

    def _identity(self, script: str, params: Mapping[str, str]) -> tuple[Any, ...]:
        return (script, tuple(sorted((k, v) for k, v in params.items() if k not in AUTH_PARAMS)))

    # -- message status ---------------------------------------------------------------

    def smsc_status(self, msg: SandboxMessage, now: float | None = None) -> tuple[int, int, float]:
        """(status, err, last change time) of a sandbox message at ``now``."""
        now = self.clock() if now is None else now
        if msg.extra.get("deleted"):
            return -3, 0, 0.0
        start = float(msg.extra.get("start", msg.accepted_at))
        state = msg.state(now)
        if state == "pending":
            middle = (start + msg.final_at) / 2
            if now < start or now < middle:
                return -1, 0, msg.accepted_at
            return 0, 0, middle
        if state == "delivered":
            return 1, 0, msg.final_at
        if state == "undeliverable":
            return 20, int(msg.extra.get("err", 1)), msg.final_at
        return (20, 6, msg.final_at) if msg.extra.get("hlr") else (3, 6, msg.final_at)

    def _flag(self, msg: SandboxMessage) -> int:
        return int(msg.extra.get("type", 0)) & 0x0F

    def hlr_fields(self, msg: SandboxMessage) -> dict[str, str]:
        op = operator_of(msg.phone) or ("", "", "", "", "", "")
        digits = msg.phone.lstrip("+")
        return {
            "imsi": (op[3] + op[4] + digits[-10:]).ljust(15, "0")[:15],
            "msc": op[3] and f"{digits[:4]}0000000"[:11],
            "mcc": op[3],
            "mnc": op[4],
            "cn": op[0],
            "net": op[1],
            "rcn": "",
            "rnet": "",
        }

    def status_record(
        self, sms_id: str, phone: str, all_level: int, listed: bool
    ) -> dict[str, Any]:
        msg = self.state.messages.get(f"{sms_id}:{phone.lstrip('+')}")
        if msg is None or msg.extra.get("deleted"):
            record: dict[str, Any] = {"status": -3, "last_date": "", "last_timestamp": 0}
            record |= {"flag": 0, "err": 0}
            if all_level >= 1:
                record |= {"send_date": "", "send_timestamp": 0, "phone": phone, "cost": "0.00"}
                record |= {"sender_id": "", "status_name": STATUS_NAMES[-3], "message": ""}
                record |= {"comment": "", "type": 0, "sms_cnt": 0}
            return ({"id": sms_id, "phone": phone} | record) if listed else record
        status, err, changed = self.smsc_status(msg)
        record = {
            "status": status,
            "last_date": _date_full(changed),
            "last_timestamp": int(changed),
            "flag": self._flag(msg),
            "err": err,
        }
        if msg.extra.get("hlr") and status == 1:
            record |= self.hlr_fields(msg)
        if all_level >= 1:
            record |= {
                "send_date": _date_full(msg.accepted_at),
                "send_timestamp": int(msg.accepted_at),
                "phone": msg.phone,
                "cost": msg.cost,
                "sender_id": msg.sender,
                "status_name": STATUS_NAMES.get(status, ""),
                "message": msg.text,
                "comment": "",
                "type": int(msg.extra.get("type", 0)),
                "sms_cnt": msg.parts,
            }
        if all_level >= 2:
            op = operator_of(msg.phone) or ("", "", "", "", "", "")
            record |= {"country": op[0], "operator": op[1], "region": op[2]}
        if listed:
            return {"id": int(sms_id) if sms_id.isdigit() else sms_id, "phone": msg.phone} | record
        return record

    # -- send.php ----------------------------------------------------------------------

    def do_send(self, params: Mapping[str, str], login: str) -> dict[str, Any]:
        now = self.clock()
        cost_mode = params.get("cost", "0")
        if cost_mode not in ("0", "1", "2", "3"):
            raise SmscError(1)
        is_hlr = params.get("hlr") == "1"
        is_ping = params.get("ping") == "1"
        mes = params.get("mes", "")
        sender = params.get("sender") or "SMSC.ru"
        raw_phones = [p.strip() for p in re.split(r"[,;]", params.get("phones", "")) if p.strip()]
        if not raw_phones:
            raise SmscError(1, text="no phones")
        if not mes and not (is_hlr or is_ping):
            raise SmscError(1, text="no message")
        if len(mes) > 1000:
            raise SmscError(1, text="message too long")
        if self.max_batch is not None and len(raw_phones) > self.max_batch:
            raise SmscError(1, text="too many phones")
        client_id: int | None = None
        if params.get("id"):
            try:
                client_id = int(params["id"])
            except ValueError:
                raise SmscError(1, text="bad id") from None
            if not 1 <= client_id <= 2147483647:
                raise SmscError(1, text="bad id")
        sms_id_hint = client_id
        identity = (login, *self._identity("send", params))
        if cost_mode == "1":
            self._cap(("cost", identity), self.caps.cost_identical, self.caps.minute)
        elif self.caps.enabled and self.windows.count(("send", identity), self.caps.minute, now):
            raise SmscError(9)
        if sender.lower() in self.forbidden_senders or any(
            w in mes.lower() for w in self.forbidden_words
        ):
            raise SmscError(6, sms_id_hint)
        start = now
        if params.get("time"):
            start = max(now, _parse_time(params["time"], params.get("tz"), now))
        if params.get("valid"):
            _parse_valid(params["valid"])
        # One entry per distinct phone: (phone, status, error) — error "0" when accepted.
        seen: dict[str, tuple[str, int, str]] = {}
        for raw in raw_phones:
            phone = raw.lstrip("+")
            if phone in seen:
                continue
            plain = raw.isascii() and raw.isdigit() and 10 <= len(raw) <= 15
            if not plain and not PHONE_RE.match(raw):
                seen[phone] = (raw, 22, "7")
            elif phone in self.blocked_phones:
                seen[phone] = (phone, 23, "8")
            elif phone in self.unfunded_phones:
                seen[phone] = (phone, 24, "0")  # dropped: status 24, insufficient funds
            else:
                seen[phone] = (phone, 0, "0")
        good = [p for p, s, e in seen.values() if e == "0" and s == 0]
        if not good:
            if any(s == 24 for _, s, _ in seen.values()):
                raise SmscError(3, sms_id_hint)
            codes_seen = {e for _, _, e in seen.values()}
            raise SmscError(8 if "8" in codes_seen else 7, sms_id_hint)
        parts = 1 if is_hlr or is_ping else max(1, count_segments(mes).parts)
        unit = self.price * parts
        if is_hlr or is_ping or not self.operator_prices:
            # One price for every number (unit_price() is the flat price): one Decimal.
            units = dict.fromkeys(good, unit)
            total = unit * len(good)
        else:
            units = {p: self.unit_price(p) * parts for p in good}
            total = sum(units.values(), Decimal("0"))
        cnt = parts * len(good)
        if cost_mode == "1":
            return {"cnt": cnt, "cost": money(total)}
        if total > self.balance:
            raise SmscError(3, sms_id_hint if sms_id_hint is not None else None)
        sms_id = client_id if client_id is not None else next(self._next_id)
        if self.caps.enabled:
            self.windows.add(("send", identity), now)
        self.balance -= total
        self.spent += total
        text = mes
        if params.get("tinyurl") == "1":
            text = URL_RE.sub(self._shorten, mes)
        msg_type = 4 if is_hlr else 5 if is_ping else 1 if params.get("flash") == "1" else 0
        crc = zlib.crc32(text.encode()) & 0xFFFF
        accepted_at = time.time()  # one reading for every number of the request
        cost_texts = _CostTexts()
        for phone in good:
            key = f"{sms_id}:{phone}"
            msg = self.state.new_message(
                key, phone, text, sender, parts, cost_texts(units[phone]), accepted_at
            )
            if phone in self.delivery_errors and not is_hlr:
                msg.outcome = "undeliverable"
                msg.extra["err"] = self.delivery_errors[phone]
            if start > now:
                msg.final_at = start + (msg.final_at - msg.accepted_at)
            extra = msg.extra
            extra["sms_id"] = sms_id
            extra["int_id"] = next(self._next_int_id)
            extra["start"] = start
            extra["hlr"] = is_hlr
            extra["type"] = msg_type
            extra["crc"] = crc
            if self.callback is not None:
                self._schedule(msg)
        answer: dict[str, Any] = {"id": sms_id, "cnt": cnt}
        if cost_mode in ("2", "3"):
            answer["cost"] = money(total)
        if cost_mode == "3":
            answer["balance"] = money(self.balance)
        listed: list[tuple[str, int, str]] = []
        if params.get("op") == "1":
            listed = list(seen.values())
        elif params.get("err") == "1":
            listed = [x for x in seen.values() if x[2] != "0" or x[1] != 0]
        if listed:
            answer["phones"] = [
                {
                    "phone": phone,
                    "mccmnc": "".join((operator_of(phone) or ("",) * 6)[3:5]) if e == "0" else "",
                    "cost": cost_texts(units.get(phone, unit)) if e == "0" else "0.00",
                    "status": str(s),
                    "error": e,
                }
                for phone, s, e in listed
            ]
        return answer

    def _shorten(self, match: re.Match[str]) -> str:
        link_id = next(self._next_link)
        self.short_links[link_id] = {"link": match.group(0), "clicks": []}
        return f"https://smsc.ru/~{link_id:x}"

    # -- status.php --------------------------------------------------------------------

    def do_status(self, params: Mapping[str, str], login: str) -> Any:
        id_text, phone_text = params.get("id", ""), params.get("phone", "")
        listed = "," in id_text or "," in phone_text
        ids = [x.strip() for x in id_text.split(",") if x.strip()]
        phones = [x.strip().lstrip("+") for x in phone_text.split(",") if x.strip()]
        if not ids or len(ids) != len(phones):
            raise SmscError(1)
        if params.get("del") == "1":
            for sms_id, phone in zip(ids, phones, strict=True):
                msg = self.state.messages.get(f"{sms_id}:{phone}")
                if msg is None or msg.extra.get("deleted"):
                    raise SmscError(5, text="error deleting the message")
                msg.extra["deleted"] = True
            return {"result": "OK"} if not listed else [{"result": "OK"}]
        if len(ids) > 1:
            self._cap(("status-bulk", login), self.caps.status_bulk, self.caps.minute)
        else:
            key = ("status-one", login, ids[0], phones[0])
            self._cap(key, self.caps.status_per_message, self.caps.minute)
        try:
            level = int(params.get("all", "0"))
        except ValueError:
            raise SmscError(1) from None
        records = [
            self.status_record(i, p, level, listed) for i, p in zip(ids, phones, strict=True)
        ]
        return records if listed else records[0]

    # -- get.php -----------------------------------------------------------------------

    def do_get(self, params: Mapping[str, str], login: str) -> Any:
        identity = (login, *self._identity("get", params))
        if params.get("get_messages") == "1":
            self._cap(
                ("history-identical", identity), self.caps.history_identical, self.caps.minute
            )
            self._cap(("history-hour", login), self.caps.history_per_hour, self.caps.hour)
            return self._history(params)
        if params.get("get_answers") == "1":
            self._cap(("data", identity), self.caps.data_identical, self.caps.minute)
            return self._answers(params)
        if params.get("get_stat") == "1":
            self._cap(("stat", login), self.caps.stat_per_minute, self.caps.minute)
            return self._stat(params)
        if params.get("get_price") == "1":
            self._cap(("data", identity), self.caps.data_identical, self.caps.minute)
            return self._prices()
        raise SmscError(1)

    @staticmethod
    def _day(value: str) -> datetime:
        try:
            return datetime.strptime(value.strip(), "%d.%m.%Y").replace(tzinfo=MOSCOW)
        except ValueError:
            raise SmscError(1, text="bad date") from None

    def _history(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        try:
            cnt = min(1000, max(1, int(params.get("cnt", "100"))))
            prev_id = int(params["prev_id"]) if params.get("prev_id") else None
        except ValueError:
            raise SmscError(1) from None
        phones = {p.strip().lstrip("+") for p in params.get("phone", "").split(",") if p.strip()}
        start = self._day(params["start"]).timestamp() if params.get("start") else None
        end: float | None = None
        if params.get("end"):
            end = (self._day(params["end"]) + timedelta(days=1)).timestamp()
        elif start is not None:
            end = start + 86400  # "if omitted, data from the start date is returned"
        rows = []
        for msg in self.state.messages.values():
            int_id = msg.extra.get("int_id")
            if int_id is None or msg.extra.get("deleted"):
                continue
            if prev_id is not None and int_id >= prev_id:
                continue
            if phones and msg.phone not in phones:
                continue
            if start is not None and msg.accepted_at < start:
                continue
            if end is not None and msg.accepted_at >= end:
                continue
            rows.append(msg)
        rows.sort(key=lambda m: m.extra["int_id"], reverse=True)
        if not rows:
            raise SmscError(3, text="message not found")
        out = []
        for msg in rows[:cnt]:
            status, err, changed = self.smsc_status(msg)
            op = operator_of(msg.phone) or ("", "", "", "", "", "")
            out.append(
                {
                    "status": status,
                    "last_date": _date_full(changed),
                    "last_timestamp": int(changed),
                    "err": err,
                    "send_date": _date_full(msg.accepted_at),
                    "send_timestamp": int(msg.accepted_at),
                    "phone": msg.phone,
                    "cost": msg.cost,
                    "sender_id": msg.sender,
                    "status_name": STATUS_NAMES.get(status, ""),
                    "message": msg.text,
                    "mccmnc": op[3] + op[4],
                    "country": op[0],
                    "operator": op[1],
                    "region": op[2],
                    "type": int(msg.extra.get("type", 0)),
                    "id": msg.extra["sms_id"],
                    "int_id": str(msg.extra["int_id"]),
                    "sms_cnt": msg.parts,
                    "format": 0,
                    "crc": msg.extra.get("crc", 0),
                }
            )
        return out

    def add_incoming(
        self, phone: str, mes: str, to_phone: str = "79990000000", sms_id: str | None = None
    ) -> Incoming:
        now = self.clock()
        item = Incoming(
            next(self._next_incoming), phone.lstrip("+"), mes, to_phone, now, now, sms_id
        )
        self.incoming.append(item)
        if self.callback is not None:
            params = {
                "id": str(item.id),
                "phone": item.phone,
                "mes": item.mes,
                "to": item.to_phone,
                "smsc": "",
                "sent": str(int(item.sent)),
                "time": str(int(item.received)),
            }
            if sms_id:
                params["sms_id"] = sms_id
            self._spawn(self._deliver("incoming", str(item.id), params))
        return item

    def confirm_call(self, phone: str) -> None:
        if self.callback is not None:
            params = {"waitcall": "1", "phone": phone.lstrip("+"), "ts": str(int(self.clock()))}
            self._spawn(self._deliver("call", phone, params))

    def _answers(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        try:
            after_id = int(params["after_id"]) if params.get("after_id") else None
            hour = min(168, max(1, int(params.get("hour", "24"))))
            cnt = min(10000, max(1, int(params.get("cnt", "100"))))
        except ValueError:
            raise SmscError(1) from None
        since = self.clock() - hour * 3600
        to_phone = params.get("to_phone", "").lstrip("+")
        rows = [
            i
            for i in self.incoming
            if (after_id is None or i.id > after_id)
            and (after_id is not None or i.received >= since)
            and (not to_phone or i.to_phone == to_phone)
        ]
        rows.sort(key=lambda i: i.id)
        return [
            {
                "id": i.id,
                "received": _date_full(i.received),
                "phone": i.phone,
                "message": i.mes,
                "to_phone": i.to_phone,
                "sent": _date_full(i.sent),
            }
            for i in rows[:cnt]
        ]

    def _stat(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        if not params.get("start"):
            raise SmscError(1)
        start = self._day(params["start"]).timestamp()
        end = (self._day(params.get("end") or params["start"]) + timedelta(days=1)).timestamp()
        msgs = [
            m
            for m in self.state.messages.values()
            if "int_id" in m.extra and start <= m.accepted_at < end
        ]
        spent = sum((Decimal(m.cost) for m in msgs), Decimal("0"))
        # The page's legend swaps credit and debit; "credit" here is what was spent.
        return [
            {
                "login": self.login,
                "sms": str(sum(m.parts for m in msgs)),
                "credit": money(spent),
                "debit": "0.00",
                "currency": self.currency,
            }
        ]

    def unit_price(self, phone: str) -> Decimal:
        """The price of one part to ``phone``: its network's individual tariff, if any."""
        if self.operator_prices:
            op = operator_of(phone)
            if op is not None and op[3] + op[4] in self.operator_prices:
                return self.operator_prices[op[3] + op[4]]
        return self.price

    def _prices(self) -> dict[str, Any]:
        p = money(self.price)
        return {
            "zones": [
                {
                    "zone": "1",
                    "name": "Россия",
                    "api": p,
                    "mass": p,
                    "mms": "5.00",
                    "hlr": p,
                    "call": "2.00",
                },
                {
                    "zone": "2",
                    "name": "СНГ",
                    "api": "3.00",
                    "mass": "3.00",
                    "mms": "9.00",
                    "hlr": "1.00",
                    "call": "5.00",
                },
            ],
            "codes": (
                [{"mccmnc": "25001", "cost": p}]
                if self.operator_prices is None
                else [{"mccmnc": k, "cost": money(v)} for k, v in self.operator_prices.items()]
            ),
            "mail": "0.10",
        }

    # -- info.php / tinyurls.php -----------------------------------------------------

    def do_info(self, params: Mapping[str, str], login: str) -> Any:
        if params.get("get_operator") != "1":
            raise SmscError(1)
        identity = (login, *self._identity("info", params))
        self._cap(("data", identity), self.caps.data_identical, self.caps.minute)
        self._cap(("info-minute", login), self.caps.info_per_minute, self.caps.minute)
        phones = [p.strip().lstrip("+") for p in params.get("phone", "").split(",") if p.strip()]
        if not phones:
            raise SmscError(1)
        rows = []
        for phone in phones:
            op = operator_of(phone)
            if op is None:
                continue
            rows.append(
                {
                    "phone": phone,
                    "country": op[0],
                    "operator": op[1],
                    "region": op[2],
                    "mcc": op[3],
                    "mnc": op[4],
                    "tz": op[5],
                }
            )
        if not rows:
            raise SmscError(3, text="operator not found")
        if len(phones) == 1:
            return {k: v for k, v in rows[0].items() if k != "phone"}
        return rows

    def do_tinyurl(self, params: Mapping[str, str], login: str) -> Any:
        if params.get("get") != "1":
            raise SmscError(1)
        identity = (login, *self._identity("tinyurls", params))
        self._cap(("data", identity), self.caps.data_identical, self.caps.minute)
        found: tuple[int, dict[str, Any]] | None = None
        if params.get("id"):
            try:
                link_id = int(params["id"])
            except ValueError:
                raise SmscError(1) from None
            if link_id in self.short_links:
                found = (link_id, self.short_links[link_id])
        elif params.get("link"):
            found = next(
                ((i, d) for i, d in self.short_links.items() if d["link"] == params["link"]), None
            )
        else:
            raise SmscError(1)
        if found is None:
            raise SmscError(3, text="link not found")
        link_id, data = found
        now = _moscow(self.clock())
        clicks = [_moscow(t) for t in data["clicks"]]
        month = (now.year, now.month)
        prev_month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
        yesterday = (now - timedelta(days=1)).date()
        return {
            "id": str(link_id),
            "cnt": str(len(clicks)),
            "cnt_mon": str(sum((c.year, c.month) == month for c in clicks)),
            "cnt_day": str(sum(c.date() == now.date() for c in clicks)),
            "cnt_yes": str(sum(c.date() == yesterday for c in clicks)),
            "cnt_pmon": str(sum((c.year, c.month) == prev_month for c in clicks)),
            "link": f"https://smsc.ru/~{link_id:x}",
        }

    # -- callbacks -----------------------------------------------------------------

    def _schedule(self, msg: SandboxMessage) -> None:
        if self.callback is None:
            return
        heapq.heappush(self._due, (msg.final_at, next(self._seq), msg.message_id))
        self._wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def status_callback_params(self, msg: SandboxMessage) -> dict[str, str]:
        status, err, changed = self.smsc_status(msg, msg.final_at + 1e-6)
        params = {
            "id": str(msg.extra["sms_id"]),
            "phone": msg.phone,
            "status": str(status),
            "time": _date_short(changed),
            "ts": str(int(changed)),
            "cnt": str(msg.parts),
            "type": str(msg.extra.get("type", 0)),
            "cost": msg.cost,
            "flag": str(self._flag(msg)),
            "sender": msg.sender,
        }
        if err:
            params["err"] = str(err)
        if msg.extra.get("hlr") and status == 1:
            params |= self.hlr_fields(msg)
        return params

    async def run_callbacks(self) -> None:
        """Push a status callback for each message when it reaches its final status."""
        while True:
            now = self.clock()
            while self._due and self._due[0][0] <= now:
                _, _, key = heapq.heappop(self._due)
                msg = self.state.messages.get(key)
                if msg is None or msg.extra.get("deleted") or msg.extra.get("pushed"):
                    continue
                if msg.final_at > now:  # rescheduled meanwhile
                    heapq.heappush(self._due, (msg.final_at, next(self._seq), key))
                    continue
                msg.extra["pushed"] = True
                self._spawn(self._deliver("status", key, self.status_callback_params(msg)))
            self._wake.clear()
            delay = max(0.0, self._due[0][0] - self.clock()) if self._due else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 3600.0))

    def encode_callback(self, params: Mapping[str, str]) -> tuple[str, bytes, str]:
        """(url, body, content type) of one callback, signed, as SMSC would send it."""
        assert self.callback is not None
        handler = self.callback.handler
        codec = codec_for(handler.charset)
        fields = dict(params)
        for key, value in handler.post_params:
            fields.setdefault(key, value)
        if handler.algorithm and handler.secret is not None:
            if "mes" in fields:
                signed = [fields.get("phone", ""), fields.get("mes", ""), fields.get("to", "")]
            elif "waitcall" in fields:
                signed = [fields.get("phone", ""), fields.get("ts", "")]
            else:
                signed = [fields.get("id", ""), fields.get("phone", ""), fields.get("status", "")]
            data = ":".join([*signed, handler.secret]).encode(codec, "replace")
            if handler.algorithm == "md5":
                digest = hashlib.md5(data).hexdigest()
            elif handler.algorithm == "sha1":
                digest = hashlib.sha1(data).hexdigest()
            else:
                digest = str(zlib.crc32(data) & 0xFFFFFFFF)  # PHP crc32(): unsigned decimal
            fields[handler.algorithm] = digest
        if handler.fmt == 3:
            body = json.dumps(fields, ensure_ascii=False).encode(codec, "replace")
            return handler.url, body, f"application/json; charset={handler.charset}"
        if handler.fmt == 2:
            items = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
            text = f'<?xml version="1.0" encoding="{handler.charset}"?>\n<data>{items}</data>'
            return (
                handler.url,
                text.encode(codec, "replace"),
                f"text/xml; charset={handler.charset}",
            )
        body = urlencode(list(fields.items()), encoding=codec, errors="replace").encode("ascii")
        return handler.url, body, "application/x-www-form-urlencoded"

    async def _deliver(self, kind: str, key: str, params: dict[str, str]) -> None:
        assert self.callback is not None and self._session is not None
        url, body, content_type = self.encode_callback(params)
        for attempt in range(1, self.callback.attempts + 1):
            status: int | None = None
            try:
                async with self._session.post(
                    url, data=body, headers={"Content-Type": content_type}
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = None
            self.callback_log.append(
                CallbackAttempt(kind, key, attempt, status, self.clock(), dict(params))
            )
            if status in (200, 404):
                return
            await asyncio.sleep(self.callback.retry_interval)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the callback pusher runs while the app is served."""
        runner: asyncio.Task[None] | None = None
        if self.callback is not None:
            self._wake = asyncio.Event()
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            runner = asyncio.get_running_loop().create_task(self.run_callbacks())
            if self._due:
                self._wake.set()
        yield
        for task in [*self._tasks, *([runner] if runner else [])]:
            task.cancel()
        for task in [*self._tasks, *([runner] if runner else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()


SMSC_KEY = web.AppKey("smsc_sandbox", SmscSandbox)


def sandbox_of(app: web.Application) -> SmscSandbox:
    """The SMSC sandbox state of an application made by create_sandbox()."""
    return app[SMSC_KEY]


# --------------------------------------------------------------------------- rendering


def _text_codec(params: Mapping[str, str]) -> tuple[str, str]:
    name = params.get("charset", "windows-1251").lower()
    try:
        return name, codec_for(name)
    except ValueError:
        return "windows-1251", "cp1251"


def _respond(params: Mapping[str, str], text: str, fmt: int) -> web.Response:
    name, codec = _text_codec(params)
    content = {3: "application/json", 2: "text/xml"}.get(fmt, "text/plain")
    return web.Response(body=text.encode(codec, "replace"), content_type=content, charset=name)


def _fmt(params: Mapping[str, str]) -> int:
    value = params.get("fmt", "0")
    return int(value) if value in ("0", "1", "2", "3") else 0


def _xml(tag: str, value: Any) -> str:
    if isinstance(value, list):
        inner = "".join(_xml(tag[:-1] if tag.endswith("s") else "item", v) for v in value)
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(value, dict):
        return f"<{tag}>{''.join(_xml(k, v) for k, v in value.items())}</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def render_error(params: Mapping[str, str], err: SmscError) -> web.Response:
    fmt = _fmt(params)
    if fmt == 3:
        body: dict[str, Any] = {"error": err.text, "error_code": err.code}
        if err.sms_id is not None:
            body["id"] = err.sms_id
        return _respond(params, json.dumps(body, ensure_ascii=False), 3)
    if fmt == 2:
        extra = f"<id>{err.sms_id}</id>" if err.sms_id is not None else ""
        text = f"<result><error>{escape(err.text)}</error><error_code>{err.code}</error_code>"
        return _respond(params, f"{text}{extra}</result>", 2)
    if fmt == 1:
        return _respond(params, f"0,-{err.code}", 1)
    suffix = f", ID - {err.sms_id}" if err.sms_id is not None else ""
    return _respond(params, f"ERROR = {err.code} ({err.text}){suffix}", 0)


def render(
    params: Mapping[str, str], data: Any, *, root: str = "result", item: str = "sms"
) -> web.Response:
    """A generic answer: JSON (fmt=3), XML (2), comma lines (1), ``k = v`` lines (0)."""
    fmt = _fmt(params)
    if fmt == 3:
        return _respond(params, json.dumps(data, ensure_ascii=False), 3)
    rows = data if isinstance(data, list) else [data]
    if fmt == 2:
        if isinstance(data, list):
            inner = "".join(_xml(item, r) for r in rows)
            return _respond(params, f"<list>{inner}</list>", 2)
        return _respond(params, _xml(root, data), 2)
    if fmt == 1:
        lines = [",".join(str(v) for v in r.values() if not isinstance(v, list)) for r in rows]
        return _respond(params, "\n".join(lines), 1)
    lines = [", ".join(f"{k} = {v}" for k, v in r.items() if not isinstance(v, list)) for r in rows]
    return _respond(params, "\n".join(lines), 0)


def _json_text(value: str) -> str:
    """A JSON string literal, as json.dumps(value, ensure_ascii=False) writes it."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'  # nothing to escape
    return json.dumps(value, ensure_ascii=False)


def _send_json(data: Mapping[str, Any]) -> str:
    """json.dumps(data, ensure_ascii=False) of a send answer, its per-phone list (one
    object per number, the bulk of the answer) written without the generic encoder."""
    phones = data.get("phones")
    if not phones:
        return json.dumps(data, ensure_ascii=False)
    head = json.dumps({k: v for k, v in data.items() if k != "phones"}, ensure_ascii=False)
    rows = ", ".join(
        f'{{"phone": {_json_text(row["phone"])}, "mccmnc": {_json_text(row["mccmnc"])}, '
        f'"cost": {_json_text(row["cost"])}, "status": {_json_text(row["status"])}, '
        f'"error": {_json_text(row["error"])}}}'
        for row in phones
    )
    # "phones" is the answer's last key (see do_send).
    return f'{head[:-1]}, "phones": [{rows}]}}'


def render_send(params: Mapping[str, str], data: dict[str, Any]) -> web.Response:
    fmt = _fmt(params)
    if fmt == 3:
        return _respond(params, _send_json(data), 3)
    if fmt == 2:
        return render(params, data)
    if "id" not in data:  # cost=1
        if fmt == 1:
            return _respond(params, f"{data['cost']},{data['cnt']}", 1)
        return _respond(params, f"COST - {data['cost']}, CNT - {data['cnt']}", 0)
    if fmt == 1:
        values = [str(data["id"]), str(data["cnt"])]
        values += [str(data[k]) for k in ("cost", "balance") if k in data]
        return _respond(params, ",".join(values), 1)
    text = f"OK - {data['cnt']} SMS, ID - {data['id']}"
    if "cost" in data:
        text += f", COST - {data['cost']}"
    if "balance" in data:
        text += f", BALANCE - {data['balance']}"
    for phone in data.get("phones", []):
        text += f"\n{phone['phone']} - {phone['cost']}, {phone['status']}, {phone['error']}"
    return _respond(params, text, 0)


def render_status(params: Mapping[str, str], data: Any) -> web.Response:
    fmt = _fmt(params)
    if fmt == 3:
        return render(params, data)
    rows = data if isinstance(data, list) else [data]
    if fmt == 2:
        inner = "".join(_xml("sms", r) for r in rows)
        return _respond(params, f"<list>{inner}</list>" if isinstance(data, list) else inner, 2)
    if fmt == 1:
        first = ("status", "last_timestamp", "err")
        skip = {*first, "last_date", "flag"}
        lines = [
            ",".join(str(r.get(k, "")) for k in [*first, *(k for k in r if k not in skip)])
            for r in rows
        ]
        return _respond(params, "\n".join(lines), 1)
    lines = []
    for r in rows:
        head = f"Status = {r['status']}, check_time = {r['last_date']}, err = {r['err']}"
        rest = [
            f"{k} = {v}"
            for k, v in r.items()
            if k not in ("status", "last_date", "last_timestamp", "err", "flag")
        ]
        lines.append(", ".join([head, *rest]))
    return _respond(params, "\n".join(lines), 0)


def render_balance(params: Mapping[str, str], data: dict[str, Any]) -> web.Response:
    fmt = _fmt(params)
    if fmt in (2, 3):
        return render(params, data)
    values = [data["balance"]] + ([data["currency"]] if "currency" in data else [])
    return _respond(params, ",".join(values) if fmt == 1 else ", ".join(values), fmt)


# --------------------------------------------------------------------------- the app


def _handler(
    sandbox: SmscSandbox,
    action: Callable[[Mapping[str, str], str], Any],
    renderer: Callable[[Mapping[str, str], Any], web.Response],
) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        params = await request_params(request)
        try:
            login = sandbox._check_auth(params, request.remote or "")
        except SmscError as err:
            return render_error(params, err)
        active = sandbox.active.get(login, 0) + 1
        sandbox.active[login] = active
        sandbox.peak_active = max(sandbox.peak_active, active)
        try:
            if sandbox.caps.enabled and active >= sandbox.caps.concurrent:
                raise SmscError(9)
            if sandbox.request_seconds:
                await asyncio.sleep(sandbox.request_seconds)
            return renderer(params, action(params, login))
        except SmscError as err:
            return render_error(params, err)
        finally:
            sandbox.active[login] -= 1

    return handle


def _items(value: Sequence[str] | str) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def create_sandbox(
    state: SandboxState,
    *,
    login: str = DEFAULT_LOGIN,
    password: str = DEFAULT_PASSWORD,
    api_key: str | None = None,
    balance: str = "1000.00",
    price: str = "1.5",
    max_batch: int | str | None = None,
    callback_url: str | None = None,
    callback_secret: str | None = None,
    callback_algorithm: str = "md5",
    callback_retry_interval: float | str = 240.0,
    callback_attempts: int | str = 50,
    caps: bool | str | float | SmscCaps = True,
    blocked_phones: Sequence[str] | str = (),
    forbidden_words: Sequence[str] | str = ("FORBIDDEN",),
    forbidden_senders: Sequence[str] | str = (),
    currency: str = "RUB",
    operator_prices: Mapping[str, str] | str | None = None,
    delivery_errors: Mapping[str, int] | str | None = None,
    unfunded_phones: Sequence[str] | str = (),
    request_seconds: float | str = 0.0,
) -> web.Application:
    """The SMSC sandbox application (serve it with ``sandbox_kit.serve``).

    ``max_batch``: phones per send (None: no cap, as SMSC documents none; more →
    error 1). ``callback_url``: SMSC's handler URL syntax (``!`` GET part, ``?charset``,
    ``?fmt``, ``?md5|sha1|crc32=<secret>``); ``callback_secret`` adds
    ``callback_algorithm=<secret>`` when the URL names none. ``caps``: True (SMSC's
    windows), False (off), a number (SMSC's windows scaled by it) or an
    :class:`SmscCaps`. ``blocked_phones``: numbers SMSC refuses (error 8 / per-phone
    error 8); ``unfunded_phones``: numbers SMSC drops for lack of funds (per-phone status
    24); ``forbidden_words`` / ``forbidden_senders``: error 6. ``operator_prices``:
    mccmnc -> price of a part (text: ``25001:0.5,25002:1.1``), the individual tariffs
    ``get_price`` lists and what numbers of those networks are charged. ``delivery_errors``:
    number -> ``err`` (text: ``79161234567:248``): its messages end status 20 with that error.
    ``request_seconds``: how long each request takes to answer (fifteen at once under one
    login get error 9).
    Every option also takes text (``smsq sandbox --option smsc.caps=off``); lists are
    comma separated.
    """
    if isinstance(caps, SmscCaps):
        cap_config = caps
    elif isinstance(caps, str):
        flag = caps.strip().lower()
        if flag in ("1", "true", "on", "yes"):
            cap_config = SmscCaps()
        elif flag in ("0", "false", "off", "no"):
            cap_config = SmscCaps(enabled=False)
        else:
            cap_config = SmscCaps().scaled(float(flag))
    elif isinstance(caps, bool):
        cap_config = SmscCaps(enabled=caps)
    else:
        cap_config = SmscCaps().scaled(float(caps))
    batch = int(max_batch) if max_batch not in (None, "") else None
    callback: CallbackConfig | None = None
    if callback_url:
        handler = split_handler_url(callback_url)
        if handler.algorithm is None and callback_secret:
            handler = replace(handler, algorithm=callback_algorithm, secret=callback_secret)
            handler = replace(
                handler, post_params=(*handler.post_params, (callback_algorithm, callback_secret))
            )
        callback = CallbackConfig(handler, float(callback_retry_interval), int(callback_attempts))
    sandbox = SmscSandbox(
        state,
        login=login,
        password=password,
        api_key=api_key,
        balance=balance,
        price=price,
        max_batch=batch,
        callback=callback,
        caps=cap_config,
        currency=currency,
        blocked_phones=_items(blocked_phones),
        unfunded_phones=_items(unfunded_phones),
        request_seconds=float(request_seconds),
        forbidden_words=_items(forbidden_words),
        forbidden_senders=_items(forbidden_senders),
        operator_prices=(
            dict(item.split(":", 1) for item in _items(operator_prices))
            if isinstance(operator_prices, str)
            else operator_prices
        ),
        delivery_errors=(
            {k: int(v) for k, v in (item.split(":", 1) for item in _items(delivery_errors))}
            if isinstance(delivery_errors, str)
            else delivery_errors
        ),
    )
    app = make_app(state)
    app[SMSC_KEY] = sandbox
    app.cleanup_ctx.append(sandbox.lifecycle)

    def balance_action(params: Mapping[str, str], login_: str) -> dict[str, Any]:
        data: dict[str, Any] = {"balance": money(sandbox.balance)}
        if params.get("cur") == "1":
            data["currency"] = sandbox.currency
        return data

    routes: list[tuple[str, Callable[[web.Request], Any]]] = [
        ("send.php", _handler(sandbox, sandbox.do_send, render_send)),
        ("status.php", _handler(sandbox, sandbox.do_status, render_status)),
        ("balance.php", _handler(sandbox, balance_action, render_balance)),
        ("get.php", _handler(sandbox, sandbox.do_get, render)),
        ("info.php", _handler(sandbox, sandbox.do_info, render)),
        ("tinyurls.php", _handler(sandbox, sandbox.do_tinyurl, render)),
    ]
    for script, handle in routes:
        app.router.add_route("GET", f"/sys/{script}", handle)
        app.router.add_route("POST", f"/sys/{script}", handle)

    async def admin_incoming(request: web.Request) -> web.Response:
        body = await request.json()
        item = sandbox.add_incoming(
            str(body["phone"]),
            str(body["mes"]),
            str(body.get("to_phone", "79990000000")),
            body.get("sms_id"),
        )
        return web.json_response({"id": item.id})

    async def admin_call(request: web.Request) -> web.Response:
        body = await request.json()
        sandbox.confirm_call(str(body["phone"]))
        return web.json_response({"ok": True})

    async def admin_callbacks(request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "kind": a.kind,
                    "key": a.key,
                    "attempt": a.attempt,
                    "http_status": a.http_status,
                    "at": a.at,
                }
                for a in sandbox.callback_log
            ]
        )

    async def admin_balance(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            sandbox.balance = Decimal(str(body["balance"]))
        except (KeyError, InvalidOperation):
            return web.json_response({"error": "balance required"}, status=400)
        return web.json_response({"balance": money(sandbox.balance)})

    async def admin_click(request: web.Request) -> web.Response:
        body = await request.json()
        link = sandbox.short_links.get(int(body["id"]))
        if link is None:
            return web.json_response({"error": "no such link"}, status=404)
        link["clicks"].append(sandbox.clock())
        return web.json_response({"clicks": len(link["clicks"])})

    prefix = ADMIN_PREFIX + "smsc/"
    app.router.add_post(prefix + "incoming", admin_incoming)
    app.router.add_post(prefix + "call", admin_call)
    app.router.add_get(prefix + "callbacks", admin_callbacks)
    app.router.add_put(prefix + "balance", admin_balance)
    app.router.add_post(prefix + "click", admin_click)
    return app


__all__ = [
    "DEFAULT_LOGIN",
    "DEFAULT_PASSWORD",
    "MOSCOW",
    "SMSC_KEY",
    "CallbackAttempt",
    "CallbackConfig",
    "SmscCaps",
    "SmscError",
    "SmscSandbox",
    "create_sandbox",
    "money",
    "operator_of",
    "sandbox_of",
]
