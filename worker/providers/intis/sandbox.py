"""A fake Intis Telecom gateway for tests and demos, faithful to the HTTP API v1.4 doc.

All 18 scripts answer under ``/external/get/<name>.php``, by GET or POST form.
Every signed request is checked like the real service does: ``signature``
(same md5 algorithm, over every parameter except ``signature``), ``login`` and
the ``timestamp`` window; failures answer ``{"error": N}`` with the documented
codes. ``return=xml`` is honoured with the doc's XML shapes wherever the doc
shows one (balance, base, senders, phone, status, send, find_on_stop, add2stop,
template, add_template, del_template, stat_by_month, incoming); the others
(hlr, hlr_stat, operator, prices) have no documented XML and answer JSON.

Messages accepted by ``send.php`` are recorded through
:meth:`SandboxState.new_message` and advance to their final state on the
state's :class:`~worker.providers.sandbox_kit.OutcomeMix` schedule. The
request log, fault injection and admin routes come from
:mod:`worker.providers.sandbox_kit`.

Delivery reports: with ``callback_url`` set, the sandbox GETs it when a message reaches
its final state, with the parameters the providers README lists (``message-id``,
``state`` 2 delivered / 5 undeliverable / 3 expired, ``price``, ``currency``, ``mcc``,
``mnc``) added to the URL's own query (so ``?key=<secret>`` stays). Anything but HTTP 200
(or no answer) is retried every ``callback_retry_interval`` seconds, at most
``callback_attempts`` times in all (Intis documents no retry policy: not documented).
``callback_repeat`` > 1 pushes each report that many times, as a gateway that never saw
the answer would. ``GET /__sandbox/intis/callbacks`` lists the attempts.

Where the doc is silent the sandbox has to choose; each such choice is marked
"(not documented)" below. Where the doc and Intis's own SDKs disagree on a
response shape, ``dialect="sdk"`` answers the SDKs' shape (see :data:`Dialect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import random
import re
import string
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from yarl import URL

from producers.segments import count_segments
from worker.providers.intis.adapter import ENDPOINTS
from worker.providers.intis.signing import TIMESTAMP_VALIDITY, verify
from worker.providers.sandbox_kit import (
    ADMIN_PREFIX,
    SandboxMessage,
    SandboxState,
    make_app,
    request_params,
)

__all__ = [
    "DEFAULT_API_KEY",
    "INTIS_KEY",
    "CallbackAttempt",
    "IntisSandbox",
    "SandboxList",
    "create_sandbox",
]

DEFAULT_API_KEY = "75a55c70c495a0ae8a7c512166b2bc6d7c9cc153"  # the doc's example key

StatusForm = Literal["flat", "nested"]
# "doc": the shapes the HTTP API doc shows. "sdk": the shapes Intis's own SDKs parse (the
# Python SDK intis 0.2 and the PHP SDK's test data), where they differ from the doc:
# status.php nested, find_on_stop.php keyed by entry id, template.php keyed by id with the
# name inside, stat_by_month.php as a list of days, operator.php without "error": 0.
Dialect = Literal["doc", "sdk"]

_STATUS_WORDS = {"delivered": "deliver", "undeliverable": "not_deliver", "expired": "expired"}
# The delivery report's ``state`` for each sandbox outcome (the README's 0–9 list).
_REPORT_STATES = {"delivered": "2", "undeliverable": "5", "expired": "3"}
_XML_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'
_ZERO = Decimal(0)
_PAGE_SIZE = 100  # phone.php: the doc's lists have count 3618 / pages 37, count 2255 / pages 23
_SENDER_TEXT = re.compile(r"^[A-Za-z0-9 ._&-]{1,11}$")


@dataclass
class CallbackAttempt:
    """One delivery-report GET the sandbox made."""

    message_id: str
    attempt: int
    http_status: int | None  # None: no answer (connection failed, timeout)
    at: float
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class SandboxList:
    """A contact list: a name and its subscribers (phone -> their fields)."""

    name: str
    numbers: dict[str, dict[str, str]] = field(default_factory=dict)
    time_birth: str = "12:00:00"
    day_before: str = "0"
    local_time: str = "1"
    birth_sender: str = ""
    birth_text: str = ""
    on_birth: str = "0"


def _default_lists() -> dict[str, SandboxList]:
    blank = {
        "name": "",
        "last_name": "",
        "middle_name": "",
        "date_birth": "0000-00-00",
        "male": "",
        "note1": "",
        "note2": "",
        "region": "",
        "operator": "",
    }
    return {
        "125448": SandboxList(
            "All qualified leads",
            {p: dict(blank) for p in ("79687931116", "79874617237", "79871846995")},
        ),
        "125452": SandboxList("Valuable clients"),
    }


def _default_prices() -> dict[str, dict[str, str]]:
    # The doc's example answer.
    return {
        mccmnc: {
            "NETWORK_NAME": name,
            "COUNTRY": "RUSSIAN FEDERATION",
            "PRICE": "0.65",
            "CURRENCY": "RUB",
        }
        for mccmnc, name in (
            ("25099", "BEELINE"),
            ("25001", "MTS"),
            ("25002", "MEGAFON"),
            ("25020", "TELE2"),
        )
    }


# Plausible networks for HLR / operator answers, by number prefix (longest first).
_NETWORKS: tuple[tuple[str, str, str, str, str], ...] = (
    # prefix, mcc, mnc, operator, country
    ("4420", "234", "10", "O2 (UK)", "United Kingdom"),
    ("447400", "234", "30", "EE", "United Kingdom"),
    ("44", "234", "15", "Vodafone UK", "United Kingdom"),
    ("7903", "250", "99", "Beeline", "Russian Federation"),
    ("7926", "250", "02", "MegaFon", "Russian Federation"),
    ("7977", "250", "20", "Tele2", "Russian Federation"),
    ("7", "250", "01", "MTS (Mobile TeleSystems)", "Russian Federation"),
    ("1", "310", "410", "AT&T", "United States"),
    ("49", "262", "01", "Telekom Deutschland", "Germany"),
)


def _network(phone: str) -> tuple[str, str, str, str]:
    for prefix, mcc, mnc, name, country in _NETWORKS:
        if phone.startswith(prefix):
            return mcc, mnc, name, country
    return "000", "00", "Unknown", "Unknown"


class _Refusal(Exception):
    """A whole-request error: answered as ``{"error": code}``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class _Answer:
    """What an endpoint answers: JSON data (or a pre-rendered body) and its XML form."""

    data: Any = None
    body: str | None = None  # overrides data (the doc's non-JSON quirks)
    # None: no documented XML form, JSON is answered. A callable renders it only when
    # ``return=xml`` asks for it (the busy endpoints, whose answers are mostly JSON).
    xml: str | Callable[[], str] | None = None

    def xml_text(self) -> str | None:
        return self.xml() if callable(self.xml) else self.xml


def _xml(inner: str) -> str:
    return f"{_XML_HEAD}<response>\n{inner}\n</response>\n"


def _attrs(fields: Mapping[str, object]) -> str:
    return " ".join(f"{k}={quoteattr(str(v))}" for k, v in fields.items())


def _valid_phone(phone: str) -> bool:
    digits = phone[1:] if phone.startswith("+") else phone
    return digits.isascii() and digits.isdigit() and 8 <= len(digits) <= 15


def _money(value: Decimal) -> str:
    return format(value, "f")


class IntisSandbox:
    """The sandbox's Intis-specific state and handlers (reach it as ``app[INTIS_KEY]``).

    Tests may change the public attributes at any time: ``balance`` (a Decimal),
    ``stop_list`` (phone -> (id, time_in, description)), ``templates``,
    ``lists``, ``incoming`` (list of dicts: id, date, sender, prefix, text),
    ``senders`` (name -> state), ``forbidden_words``, ``dialect``, ``status_form``,
    ``pending_status``, ``doc_quirks``, ``unavailable``, ``callback_url``.
    """

    def __init__(
        self,
        state: SandboxState,
        *,
        login: str,
        api_key: str,
        balance: str,
        price: str,
        max_batch: int,
        timestamp_window: int,
        currency: str = "RUR",
        hlr_price: str = "0.2",
        hlr_max: int = 100,
        senders: Mapping[str, str] | None = None,
        stop_list: Iterable[str] = (),
        forbidden_words: Iterable[str] = (),
        dialect: Dialect = "doc",
        status_form: StatusForm | None = None,
        pending_status: str | None = "send",
        doc_quirks: bool = False,
        unavailable: bool = False,
        lists: Mapping[str, SandboxList] | None = None,
        incoming: Iterable[Mapping[str, str]] = (),
        prices: Mapping[str, Mapping[str, str]] | None = None,
        callback_url: str | None = None,
        callback_retry_interval: float | str = 60.0,
        callback_attempts: int | str = 10,
        callback_repeat: int | str = 1,
        charge_by_operator: bool | str = False,
        timezone: str = "UTC",
    ) -> None:
        self.state = state
        # Charge each number its network's prices.php price (the flat ``price`` for networks
        # without one) instead of the flat price for all.
        self.charge_by_operator = str(charge_by_operator).lower() in ("1", "true", "on", "yes")
        # The account's time zone: the times the gateway writes (status times, dates of
        # incoming messages, stop-list entries) are local times in it, like sendingTime.
        self.zone = ZoneInfo(timezone)
        self._rng = random.Random(state.mix.seed)
        self._seq = 0
        self._small_id = 4419372  # add2stop / add_template ids, like the doc's 4419373
        self.login = login
        self.api_key = api_key
        self.balance = Decimal(balance)
        self.price = Decimal(price)
        self.hlr_price = Decimal(hlr_price)
        self.currency = currency
        self.max_batch = max_batch
        self.hlr_max = hlr_max
        self.timestamp_window = timestamp_window
        self.senders: dict[str, str] = dict(
            senders if senders is not None else {"smstest": "completed", "smstest2": "completed"}
        )
        now = self._now_text()
        self.stop_list: dict[str, tuple[str, str, str]] = {
            p.strip().lstrip("+"): (self._next_small_id(), now, "sandbox") for p in stop_list
        }
        self.forbidden_words = [w.lower() for w in forbidden_words]
        # status.php: "flat" is the doc's {"<id>": "deliver"}; "nested" is
        # {"<id>": {"status": "deliver", "time": "…"}}, which the service also sends and the
        # only form the Python SDK (intis 0.2) can read. Default: by dialect.
        self.dialect: Dialect = dialect
        self.status_form: StatusForm = status_form or ("nested" if dialect == "sdk" else "flat")
        # The word for a message not final yet (not documented: the doc names only the four
        # final-ish words). None leaves such ids out of the answer.
        self.pending_status = pending_status
        # Answer templates / incoming / stat_by_month with the doc's literal, non-JSON bodies.
        self.doc_quirks = doc_quirks
        # Answer every signed request with the doc's {"error":"000"} "Service unavailable".
        self.unavailable = unavailable
        self.lists: dict[str, SandboxList] = dict(lists if lists is not None else _default_lists())
        self.incoming: list[dict[str, str]] = [dict(m) for m in incoming]
        self.prices: dict[str, dict[str, str]] = {
            k: dict(v) for k, v in (prices if prices is not None else _default_prices()).items()
        }
        self.templates: dict[str, tuple[str, str, str]] = {}  # name -> (id, text, up_time)
        self.hlr_records: list[dict[str, str]] = []
        # Delivery-report pushes.
        self.callback_url = callback_url or None
        self.callback_retry_interval = float(callback_retry_interval)
        self.callback_attempts = max(1, int(callback_attempts))
        self.callback_repeat = max(1, int(callback_repeat))
        self.callback_log: list[CallbackAttempt] = []
        self._due: list[tuple[float, int, str, int]] = []  # (due, seq, message id, attempt)
        self._push_seq = itertools.count()
        self._push_tasks: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- helpers

    def _now_text(self, at: float | None = None) -> str:
        moment = datetime.fromtimestamp(at if at is not None else time.time(), self.zone)
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    def _next_small_id(self) -> str:
        self._small_id += 1
        return str(self._small_id)

    def new_message_id(self) -> str:
        """A unique 22-digit id shaped like the doc's (``4092112510348380960001``)."""
        self._seq += 1
        millis = int(time.time() * 1000) % 10**13
        return f"4{millis:013d}{self._seq % 10**8:08d}"

    def _authenticate(self, params: Mapping[str, str]) -> None:
        if not params.get("signature"):
            raise _Refusal(1)
        if not params.get("login"):
            raise _Refusal(2)
        if not params.get("timestamp"):
            raise _Refusal(24)
        if params["login"] != self.login:
            raise _Refusal(7)
        if not verify(params, self.api_key):
            raise _Refusal(6)
        # A timestamp that is not a number or is outside the window: the doc has no code of
        # its own for this (not documented); 24 "Timestamp not specified" is the nearest.
        stamp = params["timestamp"].strip()
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > self.timestamp_window:
            raise _Refusal(24)

    # ----------------------------------------------------------------- routing

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ENDPOINTS:
            raise web.HTTPNotFound()
        if name == "timestamp":
            # Bare digits, no signature needed: the Python SDK uses this body as is.
            return web.Response(text=str(int(time.time())), content_type="text/plain")
        params = await request_params(request)
        fmt = params.get("return", "json").lower()
        if self.unavailable:
            return _json_response('{"error":"000"}')
        try:
            self._authenticate(params)
            answer: _Answer = getattr(self, f"_ep_{name}")(params)
        except _Refusal as refusal:
            if fmt == "xml":
                # (not documented) the doc shows no XML error; this mirrors the JSON one.
                return _xml_response(_xml(f"<error>{refusal.code}</error>"))
            return _json_response(json.dumps({"error": refusal.code}))
        xml = answer.xml_text() if fmt == "xml" else None
        if xml is not None:
            return _xml_response(xml)
        # "array" (stat_by_month) and any other value: JSON (not documented).
        body = (
            answer.body if answer.body is not None else json.dumps(answer.data, ensure_ascii=False)
        )
        return _json_response(body)

    # ----------------------------------------------------------------- the endpoints

    def _ep_balance(self, params: Mapping[str, str]) -> _Answer:
        money = _money(self.balance)
        return _Answer(
            {"money": money, "currency": self.currency},
            xml=_xml(f"<money>{money}</money>\n<currency>{escape(self.currency)}</currency>"),
        )

    def _ep_base(self, params: Mapping[str, str]) -> _Answer:
        data: dict[str, dict[str, str]] = {}
        rows = []
        for list_id, lst in self.lists.items():
            count = len(lst.numbers)
            fields = {
                "name": lst.name,
                "time_birth": lst.time_birth,
                "day_before": lst.day_before,
                "local_time": lst.local_time,
                "birth_sender": lst.birth_sender,
                "birth_text": lst.birth_text,
                "on_birth": lst.on_birth,
                "count": str(count),
                "pages": str((count + _PAGE_SIZE - 1) // _PAGE_SIZE),
            }
            data[list_id] = fields
            rows.append(f"<base {_attrs({'base': list_id, **fields})} />")
        return _Answer(data, xml=_xml("<bases>\n" + "\n".join(rows) + "\n</bases>"))

    def _ep_senders(self, params: Mapping[str, str]) -> _Answer:
        rows = [
            f"<sender {_attrs({'sender': s, 'state': st})} />" for s, st in self.senders.items()
        ]
        return _Answer(
            dict(self.senders), xml=_xml("<senders>\n" + "\n".join(rows) + "\n</senders>")
        )

    def _ep_phone(self, params: Mapping[str, str]) -> _Answer:
        base = params.get("base", "").strip()
        if not base:
            raise _Refusal(15)
        lst = self.lists.get(base)
        if lst is None:
            raise _Refusal(25)
        if not lst.numbers:
            raise _Refusal(26)
        page_text = params.get("page", "1").strip() or "1"  # missing page: 1 (not documented)
        page = int(page_text) if page_text.isdigit() and int(page_text) > 0 else 1
        phones = list(lst.numbers)[(page - 1) * _PAGE_SIZE : page * _PAGE_SIZE]
        data = {p: dict(lst.numbers[p]) for p in phones}
        # The doc's XML masks the last four digits of each number.
        rows = [f"<phone {_attrs({'phone': p[:-4] + '****', **data[p]})} />" for p in phones]
        return _Answer(data, xml=_xml("<phones>\n" + "\n".join(rows) + "\n</phones>"))

    def _status_value(self, message_id: str) -> str | None:
        msg = self.state.messages[message_id]
        current = msg.state()
        return _STATUS_WORDS.get(current, self.pending_status)

    def _ep_status(self, params: Mapping[str, str]) -> _Answer:
        ids = [i.strip() for i in params.get("state", "").split(",") if i.strip()]
        if not ids:
            raise _Refusal(17)
        data: dict[str, Any] = {}
        words: list[tuple[str, str]] = []
        for message_id in dict.fromkeys(ids):
            # Unknown ids are left out of the answer (not documented).
            if message_id not in self.state.messages:
                continue
            word = self._status_value(message_id)
            if word is None:
                continue
            msg = self.state.messages[message_id]
            final = word in _STATUS_WORDS.values()
            at = self._now_text(msg.final_at if final else msg.accepted_at)
            data[message_id] = word if self.status_form == "flat" else {"status": word, "time": at}
            words.append((message_id, word))

        def xml() -> str:
            rows = [f"<status {_attrs({'id_sms': i, 'status': w})} />" for i, w in words]
            return _xml("<statuses>\n" + "\n".join(rows) + "\n</statuses>")

        return _Answer(data, xml=xml)

    def _check_sender(self, sender: str) -> None:
        if not sender:
            raise _Refusal(5)
        if not (_SENDER_TEXT.match(sender) or (sender.isdigit() and len(sender) <= 15)):
            raise _Refusal(8)
        state = self.senders.get(sender)
        if state is None:
            raise _Refusal(9)
        if state != "completed":
            raise _Refusal(10)

    def _ep_send(self, params: Mapping[str, str]) -> _Answer:
        phones = list(
            dict.fromkeys(p.strip() for p in params.get("phone", "").split(",") if p.strip())
        )
        if not phones:
            raise _Refusal(4)
        text = params.get("text", "")
        if not text:
            raise _Refusal(3)
        self._check_sender(params.get("sender", "").strip())
        lowered = text.lower()
        if any(word in lowered for word in self.forbidden_words):
            raise _Refusal(11)
        # The doc's send.php says 100, its error 14 says 50: the sandbox enforces the
        # configured max_batch (50 by default) with error 14.
        if len(phones) > self.max_batch:
            raise _Refusal(14)
        sending_time = params.get("sendingTime", "").strip()
        if sending_time:
            try:
                datetime.strptime(sending_time, "%Y-%m-%d %H:%M")
            except ValueError:
                raise _Refusal(30) from None  # nearest documented code (not documented)
        parts = max(1, count_segments(text).parts)
        # One pass over the numbers: a refusal code, or what the number costs.
        flat = None if self.charge_by_operator else self.price * parts
        verdicts: list[tuple[str, int, Decimal]] = []  # (phone, error code, cost)
        total = _ZERO
        for phone in phones:
            if not _valid_phone(phone):
                verdicts.append((phone, 16, _ZERO))
            elif phone.lstrip("+") in self.stop_list:
                verdicts.append((phone, 13, _ZERO))
            else:
                cost = flat if flat is not None else self.unit_price(phone) * parts
                total += cost
                verdicts.append((phone, 0, cost))
        # The whole request is refused when the balance cannot pay for every accepted
        # number (not documented whether Intis sends part of a batch; the sandbox does not).
        if total > self.balance:
            raise _Refusal(32)
        sender = params["sender"].strip()
        parts_text = str(parts)
        last_cost, cost_text = _ZERO, _money(_ZERO)  # a flat price: one Decimal for all
        now = time.time()
        # Ids shaped like new_message_id()'s, from one clock reading for the whole request.
        id_head = f"4{int(now * 1000) % 10**13:013d}"
        # The answer is written as json.dumps(ensure_ascii=False) would write
        # {phone: {"error": "0", "id_sms": …, "cost": …, "count_sms": …}} (refused:
        # {"error": N}), without building a dict per number. An accepted phone, an id, a
        # cost and a count are digits (with a "+" or "."): nothing in them needs escaping.
        items: list[str] = []
        answered: list[tuple[str, int, str, str]] = []  # (phone, error, id_sms, cost)
        for phone, error, cost in verdicts:
            if error:
                items.append(f'{json.dumps(phone, ensure_ascii=False)}: {{"error": {error}}}')
                answered.append((phone, error, "", ""))
                continue
            if cost is not last_cost:
                last_cost, cost_text = cost, _money(cost)
            self._seq += 1
            message_id = f"{id_head}{self._seq % 10**8:08d}"
            msg = self.state.new_message(
                message_id, phone.lstrip("+"), text, sender, parts, cost_text, now
            )
            if sending_time:
                msg.extra["sending_time"] = sending_time
            if self.callback_url:
                for _ in range(self.callback_repeat):
                    self._schedule_report(msg.final_at, message_id, 1)
            # As in the doc: "error" and the numbers are strings here.
            items.append(
                f'"{phone}": {{"error": "0", "id_sms": "{message_id}", '
                f'"cost": "{cost_text}", "count_sms": "{parts_text}"}}'
            )
            answered.append((phone, 0, message_id, cost_text))
        self.balance -= total

        def xml() -> str:
            rows = []
            for phone, error, message_id, cost_text in answered:
                fields: dict[str, object] = {"phone": phone, "error": error}
                if not error:
                    fields.update(error="0", id_sms=message_id, cost=cost_text)
                    fields["count_sms"] = parts_text
                rows.append(f"<phone {_attrs(fields)} />")
            return _xml("<phones>\n" + "\n".join(rows) + "\n</phones>")

        return _Answer(body="{" + ", ".join(items) + "}", xml=xml)

    def _ep_find_on_stop(self, params: Mapping[str, str]) -> _Answer:
        phone = params.get("phone", "").strip()
        if not phone:
            raise _Refusal(4)
        entry = self.stop_list.get(phone.lstrip("+"))
        if entry is None:
            # Not listed: an empty answer (not documented; the SDKs treat {} as "empty").
            return _Answer({}, xml=_xml(""))
        entry_id, time_in, description = entry
        found = {"time_in": time_in, "description": description}
        return _Answer(
            {entry_id: found} if self.dialect == "sdk" else found,
            xml=_xml(
                f"<time_in>{escape(time_in)}</time_in>\n"
                f"<description>{escape(description)}</description>"
            ),
        )

    def _ep_add2stop(self, params: Mapping[str, str]) -> _Answer:
        phone = params.get("phone", "").strip()
        if not phone:
            raise _Refusal(4)
        if not _valid_phone(phone):
            raise _Refusal(16)
        if phone.lstrip("+") in self.stop_list:
            raise _Refusal(20)
        entry_id = self._next_small_id()
        self.stop_list[phone.lstrip("+")] = (entry_id, self._now_text(), "added via API")
        return _Answer({"id": entry_id}, xml=_xml(f"<id>{entry_id}</id>"))

    def _ep_template(self, params: Mapping[str, str]) -> _Answer:
        rows = [
            f"<template {_attrs({'name': n, 'template': t, 'up_time': u})} />"
            for n, (_, t, u) in self.templates.items()
        ]
        xml = _xml("<templates>\n" + "\n".join(rows) + "\n</templates>")
        if self.doc_quirks:
            # The doc's literal body: objects inside unescaped quotes (not JSON).
            items = [
                f'"{n}" : "{{"template":"{t}", "up_time":"{u}"}}"'
                for n, (_, t, u) in self.templates.items()
            ]
            return _Answer(body="{" + ",".join(items) + "}", xml=xml)
        if self.dialect == "sdk":
            by_id = {
                i: {"name": n, "template": t, "up_time": u}
                for n, (i, t, u) in self.templates.items()
            }
            return _Answer(by_id, xml=xml)
        data = {n: {"template": t, "up_time": u} for n, (_, t, u) in self.templates.items()}
        return _Answer(data, xml=xml)

    def _ep_add_template(self, params: Mapping[str, str]) -> _Answer:
        name = params.get("name", "").strip()
        if not name:
            raise _Refusal(21)
        text = params.get("text", "")
        if not text:
            raise _Refusal(3)
        existing = self.templates.get(name)
        if existing is not None and params.get("override", "0").strip() != "1":
            raise _Refusal(22)
        template_id = existing[0] if existing is not None else self._next_small_id()
        self.templates[name] = (template_id, text, self._now_text())
        return _Answer({"id": template_id}, xml=_xml(f"<id>{template_id}</id>"))

    def _ep_del_template(self, params: Mapping[str, str]) -> _Answer:
        name = params.get("name", "").strip()
        if not name:
            raise _Refusal(21)
        # An unknown name answers "not_found" (not documented).
        result = "deleted" if self.templates.pop(name, None) is not None else "not_found"
        return _Answer({"result": result}, xml=_xml(f"<result>{result}</result>"))

    def _ep_stat_by_month(self, params: Mapping[str, str]) -> _Answer:
        month = params.get("month", "").strip()
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise _Refusal(23)
        days: dict[str, dict[str, list[Decimal]]] = {}
        for msg in self.state.messages.values():
            word = _STATUS_WORDS.get(msg.state())
            day = self._now_text(msg.accepted_at)[:10]
            if word is None or not day.startswith(month):
                continue
            sums = days.setdefault(day, {}).setdefault(word, [Decimal(0), Decimal(0)])
            sums[0] += Decimal(msg.cost)
            sums[1] += msg.parts
        data = {
            day: {w: {"cost": f"{c[0]:.3f}", "parts": str(int(c[1]))} for w, c in cells.items()}
            for day, cells in sorted(days.items())
        }
        rows = []
        for day, cells in data.items():
            fields: dict[str, str] = {"date": day}
            for word, values in cells.items():
                fields[f"{word}_cost"] = values["cost"]
                fields[f"{word}_parts"] = values["parts"]
            rows.append(f"<date {_attrs(fields)} />")
        # "statiscics" is the doc's spelling of the XML element.
        xml = _xml("<statiscics>\n" + "\n".join(rows) + "\n</statiscics>")
        if self.doc_quirks and data:
            # The doc's literal body: no day's object is closed before the next one opens.
            days_text = [
                f'"{day}":{{' + ",".join(f'"{w}":{json.dumps(c)}' for w, c in cells.items())
                for day, cells in data.items()
            ]
            return _Answer(body="{" + ",".join(days_text) + "}}", xml=xml)
        if self.dialect == "sdk":
            listed = [
                {"date": day, "stats": [{"status": w, **c} for w, c in cells.items()]}
                for day, cells in data.items()
            ]
            return _Answer(listed, xml=xml)
        return _Answer(data, xml=xml)

    def _hlr_record(self, phone: str) -> dict[str, str]:
        digits = phone.lstrip("+")
        mcc, mnc, name, country = _network(digits)
        ported = self._rng.random() < 0.1
        if not _valid_phone(phone):
            stat, error = "REJECTD", "1"
        else:
            stat, error = "DELIVRD", "0"
        return {
            "id": self.new_message_id(),
            "destination": digits,
            "message_id": "".join(self._rng.choices(string.ascii_lowercase + string.digits, k=20)),
            "IMSI": f"{mcc}{mnc}{self._rng.randrange(10**9, 10**10)}" if error == "0" else "",
            "stat": stat,
            "error": error,
            "orn": name,
            "pon": "Megafon" if ported else name,
            "ron": name,
            "mccmnc": mcc + mnc,
            "rcn": country,
            "ppm": "932",
            "onp": digits[:5],
            "ocn": country,
            "ocp": digits[:1],
            "is_ported": "true" if ported else "false",
            "rnp": digits[1:4],
            "rcp": digits[:1],
            "is_roaming": "false",
            "pnp": digits[:5] if ported else "",
            "pcn": country,
            "pcp": digits[:1],
            "total_price": _money(self.hlr_price),
            "request_id": "".join(self._rng.choices("0123456789abcdef", k=32)),
            "request_time": self._now_text(),
        }

    def _ep_hlr(self, params: Mapping[str, str]) -> _Answer:
        phones = list(
            dict.fromkeys(p.strip() for p in params.get("phone", "").split(",") if p.strip())
        )
        if not phones:
            raise _Refusal(4)
        if len(phones) > self.hlr_max:  # the doc: "no more than 100 numbers" for hlr.php
            raise _Refusal(14)
        if self.hlr_price * len(phones) > self.balance:
            raise _Refusal(32)
        records = [self._hlr_record(p) for p in phones]
        self.balance -= self.hlr_price * len(phones)
        self.hlr_records.extend(records)
        return _Answer(records)

    def _ep_hlr_stat(self, params: Mapping[str, str]) -> _Answer:
        start = params.get("from", "").strip()
        end = params.get("to", "").strip()
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", start):
            raise _Refusal(28)
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", end):
            raise _Refusal(29)
        # Keyed by phone, as in Intis's SDK tests: a later lookup of a number replaces it.
        data = {
            r["destination"]: {"phone": r["destination"], **r}
            for r in self.hlr_records
            if start <= r["request_time"][:10] <= end
        }
        return _Answer(data)

    def unit_price(self, phone: str) -> Decimal:
        """The price of one part to ``phone``: its network's price with charge_by_operator."""
        if self.charge_by_operator:
            mcc, mnc, _, _ = _network(phone.lstrip("+"))
            listed = self.prices.get(mcc + mnc, {}).get("PRICE")
            if listed:
                return Decimal(listed)
        return self.price

    def _ep_operator(self, params: Mapping[str, str]) -> _Answer:
        phone = params.get("phone", "").strip()
        if not phone:
            raise _Refusal(4)
        if not _valid_phone(phone):
            raise _Refusal(16)
        mcc, mnc, name, _ = _network(phone.lstrip("+"))
        price = self.prices.get(mcc + mnc, {}).get("PRICE")
        data: dict[str, Any] = {
            "currency": self.currency,
            "error": 0,
            "mcc": mcc,
            "mnc": mnc,
            "ok": True,
            "operator": name,
            "phone": phone.lstrip("+"),
            "ported": 0,
            "price": float(price) if price else float(self.price),
            "regionCode": 0,
            "timeZone": 0,
        }
        if self.dialect == "sdk":
            # The SDKs raise on any "error" key, even the doc's "error": 0 beside the data.
            del data["error"]
        return _Answer(data)

    def _ep_incoming(self, params: Mapping[str, str]) -> _Answer:
        day = params.get("date", "").strip()
        start = params.get("from", "").strip()
        end = params.get("to", "").strip()
        if day:  # the doc: with date, from and to all given, date wins
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
                raise _Refusal(30)
            chosen = [m for m in self.incoming if m.get("date", "").startswith(day)]
        elif start or end:
            if not start:
                raise _Refusal(28)
            if not end:
                raise _Refusal(29)
            chosen = [m for m in self.incoming if start <= m.get("date", "") <= end]
        else:
            raise _Refusal(30)
        data = {
            m["id"]: {
                "date": m.get("date", ""),
                "sender": m.get("sender", ""),
                "prefix": m.get("prefix", ""),
                "text": m.get("text", ""),
            }
            for m in chosen
        }
        rows = [f"<sms {_attrs({'id_sms': k, **v})} />" for k, v in data.items()]
        xml = _xml("\n".join(rows))
        if self.doc_quirks:
            # The doc's literal body: one pair of braces too many.
            return _Answer(body="{" + json.dumps(data, ensure_ascii=False) + "}", xml=xml)
        return _Answer(data, xml=xml)

    def _ep_prices(self, params: Mapping[str, str]) -> _Answer:
        return _Answer({k: dict(v) for k, v in self.prices.items()})

    # ----------------------------------------------------------------- delivery reports

    def delivery_report(self, msg: SandboxMessage) -> dict[str, str]:
        """The delivery-report parameters of a message in its final state."""
        mcc, mnc, _, _ = _network(msg.phone)
        return {
            "message-id": msg.message_id,
            "state": _REPORT_STATES[msg.outcome],
            "price": msg.cost,
            "currency": self.currency,
            "mcc": mcc,
            "mnc": mnc,
        }

    def _schedule_report(self, due: float, message_id: str, attempt: int) -> None:
        heapq.heappush(self._due, (due, next(self._push_seq), message_id, attempt))

    async def _push_report(
        self, session: aiohttp.ClientSession, message_id: str, attempt: int
    ) -> None:
        msg = self.state.messages.get(message_id)
        if msg is None or not self.callback_url:
            return
        params = self.delivery_report(msg)
        status: int | None = None
        try:
            async with session.get(URL(self.callback_url).update_query(params)) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self.callback_log.append(CallbackAttempt(message_id, attempt, status, time.time(), params))
        if status != 200 and attempt < self.callback_attempts:
            self._schedule_report(
                time.time() + self.callback_retry_interval, message_id, attempt + 1
            )

    async def push_loop(self) -> None:
        """GET due delivery reports until cancelled."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                now = time.time()
                while self._due and self._due[0][0] <= now:
                    _, _, message_id, attempt = heapq.heappop(self._due)
                    task = asyncio.create_task(self._push_report(session, message_id, attempt))
                    self._push_tasks.add(task)
                    task.add_done_callback(self._push_tasks.discard)
                await asyncio.sleep(0.05)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the report pusher runs while the app is served."""
        runner = asyncio.create_task(self.push_loop())
        yield
        tasks = [runner, *self._push_tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def admin_callbacks(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "message_id": a.message_id,
                    "attempt": a.attempt,
                    "http_status": a.http_status,
                    "at": a.at,
                }
                for a in self.callback_log
            ]
        )


def _json_response(body: str) -> web.Response:
    return web.Response(text=body, content_type="application/json", charset="utf-8")


def _xml_response(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/xml", charset="utf-8")


INTIS_KEY = web.AppKey("intis_sandbox", IntisSandbox)


def create_sandbox(
    state: SandboxState,
    *,
    login: str = "testuser",
    api_key: str = DEFAULT_API_KEY,
    balance: str = "1000.00",
    price: str = "0.5",
    max_batch: int = 50,
    timestamp_window: int = TIMESTAMP_VALIDITY,
    **options: Any,
) -> web.Application:
    """An Intis sandbox application on ``state`` (serve it with ``sandbox_kit.serve``).

    ``options`` are passed to :class:`IntisSandbox` (``stop_list``, ``senders``,
    ``forbidden_words``, ``dialect``, ``status_form``, ``pending_status``, ``doc_quirks``,
    ``unavailable``,
    ``currency``, ``hlr_price``, ``lists``, ``incoming``, ``prices``, ``callback_url``,
    ``callback_retry_interval``, ``callback_attempts``, ``callback_repeat``, ``timezone``
    (the account's zone, in which the gateway writes its times; default UTC) …).
    """
    sandbox = IntisSandbox(
        state,
        login=login,
        api_key=api_key,
        balance=balance,
        price=price,
        max_batch=max_batch,
        timestamp_window=timestamp_window,
        **options,
    )
    app = make_app(state)
    app[INTIS_KEY] = sandbox
    app.router.add_get("/external/get/{name}.php", sandbox.handle)
    app.router.add_post("/external/get/{name}.php", sandbox.handle)
    app.router.add_get(ADMIN_PREFIX + "intis/callbacks", sandbox.admin_callbacks)
    app.cleanup_ctx.append(sandbox.lifecycle)
    return app
