"""A fake IntelliSoftware gateway, faithful to the HTTP interface page.

Routes (GET and POST alike, as the doc says; the kit's request log and fault injection
apply, keyed by the path's last segment, e.g. ``sendmsg.aspx``):

- ``/smsgateway/sendmsg.aspx``: type 1 text (``maxconcat`` enforced), 2 Unicode
  (``hex``), 3 binary (``udh``/``ud``), 4 WAP push (``href``), 6 Voice-SMS;
  ``usercontext`` kept with the message;
- ``/smsgateway/default.aspx``: MMS (multipart/form-data, type=5);
- ``/smsgateway/getbalance.aspx``, ``/smsgateway/retrievemms.aspx``,
  ``/smsgateway/updatesubscriptionlist.aspx``;
- admin (not logged, no faults): ``POST /__sandbox/intellisoftware/inbound-sms`` and
  ``.../inbound-mms`` (JSON) make the gateway "receive" a message and forward it.

Behaviour: auth errors (``NO_USERNAME``, ``NO_PASSWORD``, ``LOGIN_INVALID``); numbers
normalised as the doc says the gateway does ("international dialling codes added,
duplicate numbers removed": ``00`` dropped, a national ``0`` becomes ``44``) and answered
one line per remaining number (``number,ID:..`` / ``number,ERR:INVALID_NUMBER``) when
``to`` named more than one, else a single line; one ``ID`` per submission, the same for
every recipient; credits go down per part per recipient and ``ERR:INSUFFICIENT_CREDIT``
refuses a submission that costs more than the balance; each accepted recipient becomes a
kit message (``state.new_message``, keyed by :func:`.codes.message_key`) whose status
advances over time, and a status report is POSTed to ``status_report_url`` when it
becomes final (retried on non-200, as the gateway does, every ``push_retry_interval``).

Primary and backup: the gateway's state (credentials, balance, id counter, received MMS,
subscription lists) is a :class:`SandboxAccount`; pass the same one to two apps, each
with its *own* :class:`~worker.providers.sandbox_kit.SandboxState`, and serve them on two
ports: one account behind two gateways, with separate request logs and faults::

    account = SandboxAccount()
    primary = await serve(create_sandbox(SandboxState(), account=account))
    backup = await serve(create_sandbox(SandboxState(), account=account))

Sandbox choices where the doc is silent (documented, not the gateway's word): a number
is valid when it has 10 to 15 digits after normalisation; an MMS costs
:data:`MMS_CREDITS` per recipient and a Voice-SMS 1; a missing ``to`` / ``text`` answers
``ERR:NO_RECIPIENTS`` / ``ERR:NO_TEXT`` (the doc only gives the ``NO_XXXXXXXXXXX``
pattern); a text needing more parts than ``maxconcat`` answers ``ERR:INVALID_REQUEST``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
from aiohttp import web

from producers.segments import UCS2_PART, UCS2_SINGLE, count_segments
from worker.providers.intellisoftware.codes import (
    BALANCE_PREFIX,
    DEFAULT_COUNTRY_CODE,
    ERR_PREFIX,
    GETBALANCE_PATH,
    ID_PREFIX,
    MAX_NUMBERS_PER_REQUEST,
    MMS_PATH,
    OK_ANSWER,
    RETRIEVEMMS_PATH,
    SENDMSG_PATH,
    UPDATESUBLIST_PATH,
    MessageType,
    SubscriptionAction,
    SubscriptionListType,
    SubscriptionSource,
    canonical_number,
    message_key,
)
from worker.providers.sandbox_kit import ADMIN_PREFIX, SandboxState, make_app, request_params

DEFAULT_USERNAME = "testuser"
DEFAULT_PASSWORD = "testpass"
DEFAULT_BALANCE = 100  # credits, as in the doc's "BALANCE:100"
MMS_CREDITS = 1  # sandbox choice: the doc does not price MMS
MAX_UNICODE_OCTETS = 140  # type=2 hex: "140 octets max, 70 unicode characters"
MAX_BINARY_OCTETS = 140  # udh + ud in one SMS (the doc's example uses exactly 7 + 133)
WAP_PUSH_MAX_CHARS = 114  # the doc's guide for text + href (with an 'http://www.' href)

# How a kit outcome is reported in the status-report 'status' field.
_REPORT_VALUE = {"delivered": 4, "undeliverable": 6, "expired": 8}
_VOICE_REPORT_VALUE = {"delivered": 11, "undeliverable": 12, "expired": 8}


@dataclass(frozen=True)
class MmsContent:
    """One part of an MMS the sandbox holds (sent or received)."""

    filename: str
    content_type: str
    content: bytes


@dataclass
class ReceivedMms:
    """An MMS the gateway "received" for the account (what retrievemms.aspx serves)."""

    msgid: str
    sender: str
    subject: str
    parts: list[MmsContent]


@dataclass
class PushAttempt:
    """One POST the sandbox made to a configured forwarding URL."""

    kind: str  # 'status_report', 'sms', 'mms', 'subscription'
    url: str
    fields: dict[str, str]
    status: int | None  # HTTP status, None when the POST itself failed
    at: float


@dataclass(order=True)
class _Push:
    due: float
    kind: str = field(compare=False)
    url: str = field(compare=False)
    fields: dict[str, str] = field(compare=False)


class SandboxAccount:
    """The account behind one or more sandbox gateways (share it for primary + backup)."""

    def __init__(
        self,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        balance: int = DEFAULT_BALANCE,
        subscription_lists: Iterable[str] = (),
    ) -> None:
        self.username = username
        self.password = password
        self.balance = balance
        self._last_id = 10011000000000000000
        self._last_inbound_id = 500110000000000
        self.subscription_lists: dict[str, dict[str, SubscriptionAction]] = {
            name: {} for name in subscription_lists
        }
        self.received_mms: dict[str, ReceivedMms] = {}

    def next_id(self) -> str:
        """A submission id, 20 digits like the doc's ``ID:10011000000000000001``."""
        self._last_id += 1
        return str(self._last_id)

    def next_inbound_id(self) -> str:
        """A received-message id, 15 digits like the doc's ``msgid=500110000000001``."""
        self._last_inbound_id += 1
        return str(self._last_inbound_id)


class _Refused(Exception):
    """A whole-submission ``ERR:`` answer."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _w3cdtf_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _whole(value: int | str) -> int:
    """An integer option, also from text such as "1e6" (CLI options arrive as strings)."""
    try:
        return int(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a whole number: {value!r}") from None


def _hex_bytes(value: str) -> bytes:
    if len(value) % 2:
        raise ValueError("odd-length hex")
    return binascii.unhexlify(value)


class IntelliSoftwareSandbox:
    """The handlers and push machinery of one sandbox gateway."""

    def __init__(
        self,
        state: SandboxState,
        account: SandboxAccount,
        *,
        max_batch: int = MAX_NUMBERS_PER_REQUEST,
        status_report_url: str | None = None,
        forward_url: str | None = None,
        mms_forward_url: str | None = None,
        subscription_event_url: str | None = None,
        country_code: str = DEFAULT_COUNTRY_CODE,
        push_retry_interval: float = 1.0,
    ) -> None:
        self.state = state
        self.account = account
        self.max_batch = max_batch
        self.status_report_url = status_report_url
        self.forward_url = forward_url
        self.mms_forward_url = mms_forward_url or forward_url
        self.subscription_event_url = subscription_event_url
        self.country_code = country_code
        self.push_retry_interval = push_retry_interval
        self.pushes: list[PushAttempt] = []
        self._queue: list[_Push] = []
        # Set to a code (e.g. "GATEWAY_ERROR") to answer it to every authenticated request.
        self.forced_error: str | None = None

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _answer(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/plain")

    def _err(self, code: str) -> web.Response:
        return self._answer(ERR_PREFIX + code)

    def _check_auth(self, p: Mapping[str, str]) -> None:
        username, password = p.get("username", ""), p.get("password", "")
        if not username:
            raise _Refused("NO_USERNAME")
        if not password:
            raise _Refused("NO_PASSWORD")
        ok_user = hmac.compare_digest(username.encode(), self.account.username.encode())
        ok_pass = hmac.compare_digest(password.encode(), self.account.password.encode())
        if not (ok_user and ok_pass):
            raise _Refused("LOGIN_INVALID")
        if self.forced_error:
            raise _Refused(self.forced_error)

    def normalise(self, entry: str) -> str | None:
        """The gateway's form of one ``to`` entry, or None when it cannot be routed."""
        if not entry:
            return None
        if not entry.isdigit() and any(not (c.isdigit() or c in "+ -()") for c in entry):
            return None
        number = canonical_number(entry, self.country_code)
        return number if 10 <= len(number) <= 15 else None

    def _recipients(self, p: Mapping[str, str]) -> list[str]:
        entries = [e.strip() for e in p.get("to", "").split(",") if e.strip()]
        if not entries:
            raise _Refused("NO_RECIPIENTS")
        if len(entries) > self.max_batch:
            raise _Refused("TOO_MANY_NUMBERS")
        return entries

    @staticmethod
    def _maxconcat(p: Mapping[str, str]) -> int:
        raw = p.get("maxconcat", "").strip() or "1"
        if not raw.isdigit() or int(raw) < 1:
            raise _Refused("INVALID_REQUEST")
        return int(raw)

    def _submit(
        self,
        entries: Sequence[str],
        *,
        kind: MessageType,
        text: str,
        sender: str,
        parts: int,
        credits_each: int,
        extra: Mapping[str, Any],
    ) -> web.Response:
        """Normalise, de-duplicate, charge, accept; answer one line or one per number."""
        seen: dict[str, str | None] = {}  # shown number -> normalised (None: invalid)
        for entry in entries:
            number = self.normalise(entry)
            shown = number if number is not None else entry
            seen.setdefault(shown, number)
        valid = [n for n in seen.values() if n is not None]
        cost = credits_each * len(valid)
        if valid and cost > self.account.balance:
            return self._err("INSUFFICIENT_CREDIT")
        gateway_id = self.account.next_id() if valid else ""
        self.account.balance -= cost
        credits_text = str(credits_each)
        now = time.time()  # one reading for every number of the submission
        for number in valid:
            msg = self.state.new_message(
                message_key(gateway_id, number), number, text, sender, parts, credits_text, now
            )
            msg.extra.update(extra, type=int(kind), gateway_id=gateway_id)
            if self.status_report_url:
                values = _VOICE_REPORT_VALUE if kind is MessageType.VOICE_SMS else _REPORT_VALUE
                self._schedule(
                    msg.final_at,
                    "status_report",
                    self.status_report_url,
                    {
                        "msgid": gateway_id,
                        "status": str(values[msg.outcome]),
                        "toaddr": number,
                    },
                )
        ok, bad = ID_PREFIX + gateway_id, ERR_PREFIX + "INVALID_NUMBER"
        if len(entries) == 1:
            return self._answer(ok if valid else bad)
        lines = [f"{shown},{ok if number else bad}" for shown, number in seen.items()]
        return self._answer("\r\n".join(lines))

    # --- sendmsg.aspx -------------------------------------------------------------------------

    async def sendmsg(self, request: web.Request) -> web.StreamResponse:
        p = await request_params(request)
        try:
            self._check_auth(p)
            raw_type = p.get("type", "").strip() or "1"
            if not raw_type.isdigit() or int(raw_type) not in (1, 2, 3, 4, 6):
                raise _Refused("INVALID_REQUEST")  # type 5 (MMS) goes to default.aspx
            kind = MessageType(int(raw_type))
            entries = self._recipients(p)
            sender = p.get("from", "")
            extra: dict[str, Any] = {"usercontext": p.get("usercontext") or None}
            if kind in (MessageType.TEXT, MessageType.VOICE_SMS):
                text = p.get("text", "")
                if not text:
                    raise _Refused("NO_TEXT")
                maxconcat = self._maxconcat(p)
                parts = count_segments(text).parts
                if kind is MessageType.VOICE_SMS:
                    parts = 1  # one call; sandbox choice: 1 credit
                elif parts > maxconcat:
                    raise _Refused("INVALID_REQUEST")
                extra["maxconcat"] = maxconcat
            elif kind is MessageType.UNICODE:
                text, parts = self._unicode(p)
            elif kind is MessageType.BINARY:
                text, parts = self._binary(p, extra)
            else:
                text, parts = self._wap_push(p, extra)
        except _Refused as refused:
            return self._err(refused.code)
        return self._submit(
            entries,
            kind=kind,
            text=text,
            sender=sender,
            parts=parts,
            credits_each=parts,
            extra=extra,
        )

    def _unicode(self, p: Mapping[str, str]) -> tuple[str, int]:
        hex_text = p.get("hex", "").strip()
        if not hex_text:
            raise _Refused("PARAMETER_MISSING")
        try:
            if len(hex_text) % 4:
                raise ValueError("not whole UCS-2 units")
            units = _hex_bytes(hex_text)
            text = units.decode("utf-16-be")  # strict: lone surrogates are refused
        except (ValueError, binascii.Error):
            raise _Refused("PARAMETER_INVALID") from None
        if any(ord(c) > 0xFFFF for c in text):
            raise _Refused("PARAMETER_INVALID")  # UCS-2: BMP only (the README)
        n = len(text)
        parts = 1 if n <= UCS2_SINGLE else -(-n // UCS2_PART)
        # The doc: "hex ... 140 octets max" and no maxconcat for type=2 (the vendor's PHP SDK
        # sends maxconcat with type=2 all the same): more than one SMS is refused.
        if parts > 1 or len(units) > MAX_UNICODE_OCTETS:
            raise _Refused("INVALID_REQUEST")
        return text, parts

    def _binary(self, p: Mapping[str, str], extra: dict[str, Any]) -> tuple[str, int]:
        ud_hex, udh_hex = p.get("ud", "").strip(), p.get("udh", "").strip()
        if not ud_hex:
            raise _Refused("PARAMETER_MISSING")
        try:
            ud, udh = _hex_bytes(ud_hex), _hex_bytes(udh_hex)
        except (ValueError, binascii.Error):
            raise _Refused("PARAMETER_INVALID") from None
        if len(ud) + len(udh) > MAX_BINARY_OCTETS:
            raise _Refused("PARAMETER_INVALID")
        extra.update(udh=udh_hex.upper(), ud=ud_hex.upper())
        return ud_hex.upper(), 1

    def _wap_push(self, p: Mapping[str, str], extra: dict[str, Any]) -> tuple[str, int]:
        text, href = p.get("text", ""), p.get("href", "").strip()
        if not text:
            raise _Refused("NO_TEXT")
        if not href:
            raise _Refused("PARAMETER_MISSING")
        if not href.startswith(("http://", "https://")):
            raise _Refused("INVALID_REQUEST")
        if len(text) + len(href) > WAP_PUSH_MAX_CHARS:
            raise _Refused("INVALID_REQUEST")  # would need two SMS
        extra["href"] = href
        return text, 1

    # --- default.aspx (MMS) -------------------------------------------------------------------

    async def mms(self, request: web.Request) -> web.StreamResponse:
        p = await request_params(request)
        files: list[MmsContent] = []
        if request.method == "POST" and request.content_type == "multipart/form-data":
            form = await request.post()  # cached by the kit's middleware
            for value in form.values():
                if isinstance(value, web.FileField):
                    files.append(MmsContent(value.filename, value.content_type, value.file.read()))
        try:
            self._check_auth(p)
            if p.get("type", "").strip() != str(MessageType.MMS.value):
                raise _Refused("INVALID_REQUEST")
            entries = self._recipients(p)
            sender = p.get("from", "").strip()
            if sender and not sender.isdigit():
                raise _Refused("INVALID_REQUEST")  # alphanumeric senders not supported
            if "text" not in p:
                raise _Refused("NO_TEXT")
            if not files:
                raise _Refused("INVALID_REQUEST")
        except _Refused as refused:
            return self._err(refused.code)
        return self._submit(
            entries,
            kind=MessageType.MMS,
            text=p["text"],
            sender=sender,
            parts=1,
            credits_each=MMS_CREDITS,
            extra={"files": files},
        )

    # --- getbalance / retrievemms / updatesubscriptionlist --------------------------------------

    async def getbalance(self, request: web.Request) -> web.StreamResponse:
        p = await request_params(request)
        try:
            self._check_auth(p)
        except _Refused as refused:
            return self._err(refused.code)
        return self._answer(f"{BALANCE_PREFIX}{self.account.balance}")

    async def retrievemms(self, request: web.Request) -> web.StreamResponse:
        p = await request_params(request)
        try:
            self._check_auth(p)
            msgid, msgpart = p.get("msgid", "").strip(), p.get("msgpart", "").strip()
            if not msgid:
                raise _Refused("NO_MSGID")
            if not msgpart:
                raise _Refused("PARAMETER_MISSING")
            mms = self.account.received_mms.get(msgid)
            if mms is None:
                raise _Refused("MSGID_INVALID")
            part = self._find_part(mms, msgpart)
        except _Refused as refused:
            return self._err(refused.code)
        # A StreamResponse: the kit's log keeps the text of web.Response bodies, and these
        # bytes are not text.
        resp = web.StreamResponse(headers={"Content-Type": part.content_type})
        resp.content_length = len(part.content)
        await resp.prepare(request)
        await resp.write(part.content)
        await resp.write_eof()
        return resp

    @staticmethod
    def _find_part(mms: ReceivedMms, msgpart: str) -> MmsContent:
        if msgpart.isdigit():
            index = int(msgpart)
            if 1 <= index <= len(mms.parts):
                return mms.parts[index - 1]
        for part in mms.parts:
            if part.filename == msgpart:
                return part
        raise _Refused("PARAMETER_INVALID")

    async def updatesubscriptionlist(self, request: web.Request) -> web.StreamResponse:
        p = await request_params(request)
        try:
            self._check_auth(p)
            name = p.get("sublistname", "").strip()
            msisdn, action = p.get("msisdn", "").strip(), p.get("action", "").strip()
            if not (name and msisdn and action):
                raise _Refused("PARAMETER_MISSING")
            if not action.isdigit() or int(action) not in (1, 2, 3):
                raise _Refused("PARAMETER_INVALID")  # the doc spells it PPARAMETER_INVALID
            members = self.account.subscription_lists.get(name)
            if members is None:
                raise _Refused("PARAMETER_INVALID")
            number = self.normalise(msisdn)
            if number is None:
                raise _Refused("INVALID_REQUEST")
        except _Refused as refused:
            return self._err(refused.code)
        act = SubscriptionAction(int(action))
        if act is SubscriptionAction.DELETE:
            members.pop(number, None)
        else:
            members[number] = act
        if self.subscription_event_url:
            self._schedule(
                time.time(),
                "subscription",
                self.subscription_event_url,
                {
                    "sublistname": name,
                    "sublisttype": str(SubscriptionListType.USER.value),
                    "msisdn": number,
                    "action": str(act.value),
                    "source": str(SubscriptionSource.API.value),
                    "timestamp": _w3cdtf_now(),
                },
            )
        return self._answer(OK_ANSWER)

    # --- inbound (the gateway "receives" something and forwards it) -------------------------------

    def receive_sms(
        self,
        sender: str,
        text: str,
        *,
        usercontext: str | None = None,
        networkcode: str | None = None,
    ) -> str:
        """Forward a received SMS to ``forward_url`` (if set); returns its msgid."""
        msgid = self.account.next_inbound_id()
        if self.forward_url:
            fields = {"from": sender, "text": text, "msgid": msgid, "sent": _w3cdtf_now()}
            if networkcode:
                fields["networkcode"] = networkcode
            if usercontext:
                fields["usercontext"] = usercontext
            self._schedule(time.time(), "sms", self.forward_url, fields)
        return msgid

    def receive_mms(
        self, sender: str, subject: str, parts: Sequence[MmsContent], *, msgid: str | None = None
    ) -> str:
        """Store a received MMS (for retrievemms) and forward its notification; its msgid."""
        msgid = msgid or self.account.next_inbound_id()
        self.account.received_mms[msgid] = ReceivedMms(msgid, sender, subject, list(parts))
        if self.mms_forward_url:
            fields = {
                "from": sender,
                "text": subject,
                "msgid": msgid,
                "type": str(MessageType.MMS.value),
                "filelist": ",".join(p.filename for p in parts),
            }
            self._schedule(time.time(), "mms", self.mms_forward_url, fields)
        return msgid

    async def admin_inbound_sms(self, request: web.Request) -> web.Response:
        body = await request.json()
        msgid = self.receive_sms(
            str(body["from"]),
            str(body["text"]),
            usercontext=body.get("usercontext"),
            networkcode=body.get("networkcode"),
        )
        return web.json_response({"msgid": msgid})

    async def admin_inbound_mms(self, request: web.Request) -> web.Response:
        body = await request.json()
        parts = [
            MmsContent(
                str(p["filename"]),
                str(p.get("content_type", "application/octet-stream")),
                base64.b64decode(p.get("content_base64", "")),
            )
            for p in body.get("parts", [])
        ]
        msgid = self.receive_mms(
            str(body["from"]), str(body.get("subject", "")), parts, msgid=body.get("msgid")
        )
        return web.json_response({"msgid": msgid})

    # --- pushes -------------------------------------------------------------------------------

    def _schedule(self, due: float, kind: str, url: str, fields: dict[str, str]) -> None:
        self._queue.append(_Push(due, kind, url, fields))

    async def _push_one(self, session: aiohttp.ClientSession, push: _Push) -> None:
        status: int | None = None
        try:
            async with session.post(push.url, data=push.fields) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self.pushes.append(PushAttempt(push.kind, push.url, dict(push.fields), status, time.time()))
        if status != 200:  # the gateway retries until it gets a 200
            self._schedule(time.time() + self.push_retry_interval, push.kind, push.url, push.fields)

    async def push_loop(self) -> None:
        """POST due pushes (status reports, forwards, events) until cancelled."""
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                now = time.time()
                due = sorted(p for p in self._queue if p.due <= now)
                if due:
                    self._queue = [p for p in self._queue if p.due > now]
                    await asyncio.gather(*(self._push_one(session, p) for p in due))
                await asyncio.sleep(0.05)

    @property
    def pending_pushes(self) -> int:
        """How many pushes are waiting (not yet due, or to be retried)."""
        return len(self._queue)


SANDBOX_KEY = web.AppKey("intellisoftware_sandbox", IntelliSoftwareSandbox)


def sandbox_of(app: web.Application) -> IntelliSoftwareSandbox:
    """The :class:`IntelliSoftwareSandbox` behind an app made by :func:`create_sandbox`."""
    return app[SANDBOX_KEY]


def create_sandbox(
    state: SandboxState,
    *,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    balance: int | str = DEFAULT_BALANCE,
    max_batch: int | str = MAX_NUMBERS_PER_REQUEST,
    status_report_url: str | None = None,
    forward_url: str | None = None,
    mms_forward_url: str | None = None,
    subscription_event_url: str | None = None,
    subscription_lists: Iterable[str] | str = (),
    account: SandboxAccount | None = None,
    country_code: str = DEFAULT_COUNTRY_CODE,
    push_retry_interval: float | str = 1.0,
) -> web.Application:
    """An IntelliSoftware sandbox application on ``state`` (serve with ``sandbox_kit.serve``).

    ``account`` shares one gateway backend between apps (primary + backup); when given,
    ``username``, ``password``, ``balance`` and ``subscription_lists`` are ignored.
    ``forward_url`` receives forwarded SMS (and MMS unless ``mms_forward_url`` is set).
    Numeric options may be strings (``smsq sandbox --option intellisoftware.balance=1e6``);
    ``subscription_lists`` may be one comma-separated string.
    """
    if account is None:
        if isinstance(subscription_lists, str):
            subscription_lists = [n.strip() for n in subscription_lists.split(",") if n.strip()]
        account = SandboxAccount(username, password, _whole(balance), subscription_lists)
    sandbox = IntelliSoftwareSandbox(
        state,
        account,
        max_batch=_whole(max_batch),
        status_report_url=status_report_url,
        forward_url=forward_url,
        mms_forward_url=mms_forward_url,
        subscription_event_url=subscription_event_url,
        country_code=country_code,
        push_retry_interval=float(push_retry_interval),
    )
    app = make_app(state)
    app[SANDBOX_KEY] = sandbox
    routes = {
        SENDMSG_PATH: sandbox.sendmsg,
        MMS_PATH: sandbox.mms,
        GETBALANCE_PATH: sandbox.getbalance,
        RETRIEVEMMS_PATH: sandbox.retrievemms,
        UPDATESUBLIST_PATH: sandbox.updatesubscriptionlist,
    }
    for path, handler in routes.items():
        app.router.add_get(path, handler)
        app.router.add_post(path, handler)
    app.router.add_post(ADMIN_PREFIX + "intellisoftware/inbound-sms", sandbox.admin_inbound_sms)
    app.router.add_post(ADMIN_PREFIX + "intellisoftware/inbound-mms", sandbox.admin_inbound_mms)

    async def pusher(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sandbox.push_loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(pusher)
    return app
