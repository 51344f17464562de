"""The IntelliSoftware adapter: ``sendmsg.aspx`` and friends, with backup-gateway failover.

Endpoints (paths from the doc, all called with POST form fields, as the vendor's SDKs do,
so that the password never appears in a URL):

- ``/smsgateway/sendmsg.aspx``: :meth:`~IntelliSoftwareAdapter.send_text`,
  :meth:`~IntelliSoftwareAdapter.send_unicode`, :meth:`~IntelliSoftwareAdapter.send_binary`,
  :meth:`~IntelliSoftwareAdapter.send_wap_push`, :meth:`~IntelliSoftwareAdapter.send_voice_sms`
  and the port's :meth:`~IntelliSoftwareAdapter.send`;
- ``/smsgateway/default.aspx`` (MMS): :meth:`~IntelliSoftwareAdapter.send_mms`;
- ``/smsgateway/getbalance.aspx``: :meth:`~IntelliSoftwareAdapter.get_balance`,
  :meth:`~IntelliSoftwareAdapter.balance`;
- ``/smsgateway/retrievemms.aspx``: :meth:`~IntelliSoftwareAdapter.retrieve_mms`;
- ``/smsgateway/updatesubscriptionlist.aspx``:
  :meth:`~IntelliSoftwareAdapter.update_subscription_list`.

What the API does not have, and what the port methods do about it:

- **No status polling.** Delivery comes only through status-report forwarding (the
  gateway POSTs ``msgid``/``status``/``toaddr`` to a URL configured in the account's
  Preferences; see :mod:`.receivers`). :meth:`status` deliberately returns ``[]``:
  "nothing new", so reconciliation leaves the messages waiting for their reports.
- **No HLR lookup.** :meth:`hlr` raises ``ProviderError(REQUEST, "not supported by this
  provider")``.
- **No scheduled sending, no validity period.** :meth:`send` refuses a chunk scheduled
  more than a minute ahead (REQUEST) instead of sending it early; ``validity`` is ignored.

Message ids: the gateway's ``ID:`` is one per *submission* ("identical for each
recipient"); smsq's ``provider_message_id`` is :func:`.codes.message_key` of that id and
the recipient's number, which the receivers rebuild from a status report's ``msgid`` and
``toaddr``. :func:`.codes.gateway_id_of` recovers the gateway's id.

Failover (the doc's "Resilient Service", the README's rule): the request goes to
``account.base_url``, then to each of ``account.backup_urls`` in turn, but only after a
*transport* failure. An ``ERR:`` answer is the gateway's final word and is never failed
over. Sends are not idempotent, so which transport failures allow it matters:

- connect failure (nothing left this process): always failed over;
- HTTP 5xx: failed over. :class:`HttpClient` classes a 5xx as TRANSIENT ("the gateway
  answered that it did not take the request"), and the README and the vendor's SDKs treat
  it as "the primary failed". (A gateway that acted and then answered 500 would give a
  duplicate; that is the provider's documented trade-off. Should a 5xx ever be classed
  AMBIGUOUS, it is still failed over, and an all-gateways failure then ends AMBIGUOUS);
- read timeout / connection dropped after the request left: **not** failed over for a
  send. The primary may have accepted it, and the id that would identify it is in the
  lost answer. The send ends AMBIGUOUS: the core marks the recipients ``unknown`` and must
  not resend them blindly. As there is no status polling, only forwarded status reports
  (matched by number, since the id is unknown) or an operator can settle them.
  Idempotent calls (balance, retrievemms, subscription updates) fail over on any
  transport failure.

When every gateway failed, the error is AMBIGUOUS if any attempt may have been acted on,
otherwise TRANSIENT (the core retries with backoff, trying the primary first again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import aiohttp

from producers.segments import UCS2_PART, UCS2_SINGLE, count_segments, ucs2_hex
from producers.status import Status
from worker.providers.base import (
    AccountConfig,
    Balance,
    ErrorClass,
    HttpClient,
    HttpResponse,
    ProviderError,
    RecipientOutcome,
    SendRequest,
    options_of,
)
from worker.providers.failover import HostFailover, raise_all_failed
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
    ResultCode,
    SubscriptionAction,
    canonical_number,
    classify_error,
    message_key,
)
from worker.providers.intellisoftware.options import IntelliSoftwareOptions

log = logging.getLogger(__name__)

# A chunk scheduled further ahead than this is refused rather than sent early.
SCHEDULE_TOLERANCE = timedelta(seconds=60)

FormFactory = Callable[[], Mapping[str, str] | aiohttp.FormData]


@dataclass(frozen=True)
class ResponseLine:
    """One line of a send answer: ``[number,]ID:<id>`` or ``[number,]ERR:<code>``."""

    number: str | None  # None on a single-line answer
    gateway_id: str | None = None
    error: str | None = None  # the code without "ERR:"


@dataclass(frozen=True)
class MmsFile:
    """One part of an MMS to send."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class MmsPart:
    """One part of a received MMS, as retrievemms.aspx returns it."""

    msgid: str
    msgpart: str
    content: bytes
    content_type: str | None


def parse_result(text: str) -> tuple[str | None, str | None]:
    """``ID:<id>`` -> (id, None); ``ERR:<code>`` -> (None, code); ValueError otherwise."""
    text = text.strip()
    if text.startswith(ID_PREFIX):
        gateway_id = text[len(ID_PREFIX) :].strip()
        if gateway_id:
            return gateway_id, None
    elif text.startswith(ERR_PREFIX):
        code = text[len(ERR_PREFIX) :].strip()
        if code:
            return None, code
    raise ValueError("not an ID: or ERR: result")


def parse_send_response(body: str) -> list[ResponseLine]:
    """The lines of a sendmsg.aspx / MMS answer, single- or multi-line.

    Raises ValueError when any non-blank line is neither form (an HTML error page, a
    truncated body): a partly understood answer is not trusted.
    """
    lines: list[ResponseLine] = []
    for raw in body.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        number: str | None = None
        result = raw
        if not raw.startswith((ID_PREFIX, ERR_PREFIX)) and "," in raw:
            head, _, tail = raw.partition(",")
            number, result = head.strip(), tail.strip()
            if not number:
                raise ValueError("response line with an empty number")
        gateway_id, error = parse_result(result)
        lines.append(ResponseLine(number, gateway_id, error))
    if not lines:
        raise ValueError("empty response")
    return lines


def _error_outcome(phone: str, rc: ResultCode) -> RecipientOutcome:
    status = (
        Status.REJECTED
        if rc.error_class in (ErrorClass.RECIPIENT, ErrorClass.REQUEST)
        else Status.FAILED
    )
    return RecipientOutcome(
        phone=phone, status=status, raw_code=rc.code, reason=rc.text, error_class=rc.error_class
    )


def _severity(cls: ErrorClass) -> int:
    order = (ErrorClass.ACCOUNT, ErrorClass.THROTTLED, ErrorClass.TRANSIENT, ErrorClass.REQUEST)
    return order.index(cls) if cls in order else len(order)


def match_outcomes(
    requested: Sequence[str],
    lines: Sequence[ResponseLine],
    *,
    parts: int | None = None,
    cost: str | None = None,
    country_code: str = DEFAULT_COUNTRY_CODE,
) -> list[RecipientOutcome]:
    """One outcome per requested recipient (in request order) from the answer's lines.

    Numbers come back normalised ("international dialling codes added") and
    de-duplicated, so lines are matched on :func:`canonical_number` first, then on a
    unique suffix match (a number the gateway prefixed with a country code); duplicates
    in the request share their number's line. A single line without a number is the
    answer for the whole submission. A requested number left without a line is UNKNOWN
    (the gateway did not say). Per-line errors: RECIPIENT and REQUEST -> REJECTED;
    ACCOUNT / TRANSIENT -> FAILED carrying the class, so the core can requeue them.

    Raises ProviderError when nothing was submitted and some line carries a whole-request
    error (LOGIN_INVALID, INSUFFICIENT_CREDIT, GATEWAY_ERROR, ...): the submission failed
    as a whole and is safe to retry or pause on.
    """
    keys = [canonical_number(p, country_code) for p in requested]
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    assigned: dict[str, tuple[ResponseLine, str]] = {}  # requested key -> (line, its number)
    unmatched: list[ResponseLine] = []
    numbered = [ln for ln in lines if ln.number is not None]
    bare = [ln for ln in lines if ln.number is None]

    for ln in numbered:
        assert ln.number is not None
        k = canonical_number(ln.number, country_code)
        if k in by_key and k not in assigned:
            assigned[k] = (ln, ln.number)
        elif k not in by_key:
            unmatched.append(ln)
    still: list[ResponseLine] = []
    for ln in unmatched:
        assert ln.number is not None
        lk = canonical_number(ln.number, country_code)
        candidates = [
            k
            for k in by_key
            if k not in assigned
            and min(len(k), len(lk)) >= 7
            and (k.endswith(lk) or lk.endswith(k))
        ]
        if len(candidates) == 1:
            assigned[candidates[0]] = (ln, ln.number)
        else:
            still.append(ln)
    if still:
        # Never the numbers themselves: only how many.
        log.warning("intellisoftware: %d response line(s) matched no requested number", len(still))

    whole: ResponseLine | None = bare[0] if len(bare) == 1 else None
    outcomes: list[RecipientOutcome] = []
    request_errors: list[ResultCode] = []
    for phone, k in zip(requested, keys, strict=True):
        hit = assigned.get(k)
        line, number = hit if hit is not None else (whole, phone)
        if line is None:
            outcomes.append(
                RecipientOutcome(
                    phone=phone,
                    status=Status.UNKNOWN,
                    reason="the gateway's answer has no line for this number",
                    error_class=ErrorClass.AMBIGUOUS,
                )
            )
        elif line.gateway_id is not None:
            outcomes.append(
                RecipientOutcome.submitted(
                    phone, message_key(line.gateway_id, number), parts=parts, cost=cost
                )
            )
        else:
            assert line.error is not None
            rc = classify_error(line.error)
            if rc.error_class is not ErrorClass.RECIPIENT:
                request_errors.append(rc)
            outcomes.append(_error_outcome(phone, rc))

    nothing_left = all(o.status in (Status.REJECTED, Status.FAILED) for o in outcomes)
    if request_errors and nothing_left:
        worst = min(request_errors, key=lambda rc: _severity(rc.error_class))
        raise ProviderError(worst.error_class, worst.text, raw_code=worst.code)
    return outcomes


def _ucs2_parts(text: str) -> int:
    units = len(text.encode("utf-16-be")) // 2
    if units == 0:
        return 0
    if units <= UCS2_SINGLE:
        return 1
    return -(-units // UCS2_PART)


def _raise_err(code: str) -> None:
    rc = classify_error(code)
    raise ProviderError(rc.error_class, rc.text, raw_code=rc.code)


class IntelliSoftwareAdapter(HttpClient):
    """:class:`~worker.providers.base.ProviderAdapter` for IntelliSoftware (IntelliSMS).

    ``account.login`` / ``account.password`` are the gateway's username / password;
    ``account.base_url`` is the primary host root (e.g. ``https://www.intellisoftware.co.uk``,
    without ``/smsgateway``) and ``account.backup_urls`` the backups
    (``https://www.intellisoftware2.co.uk``). ``options.default_country_code``
    (default ``"44"``) is what the gateway prefixes to national numbers, used only to
    match answer lines back to requested numbers.
    """

    kind: ClassVar[str] = "intellisoftware"
    # Capabilities: BalanceQuery only. No status query (delivery arrives only as forwarded
    # status reports) and no HLR lookup: it implements neither StatusPolling nor HlrLookup.

    def __init__(self, account: AccountConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(account, session)
        self._country_code = options_of(account, IntelliSoftwareOptions).default_country_code
        self._failover = HostFailover(
            self.kind,
            self.gateways,
            # The error's class already tells whether an attempt may have been acted on.
            may_fail_over=lambda exc, _idempotent: self._may_fail_over(exc),
            exhausted=raise_all_failed,  # no preferred gateway: the primary is always first
        )

    # --- the port -----------------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        """100 numbers per request (the doc), or the account's smaller batch_size."""
        size = self.account.batch_size
        return min(size, MAX_NUMBERS_PER_REQUEST) if size > 0 else MAX_NUMBERS_PER_REQUEST

    @property
    def gateways(self) -> tuple[str, ...]:
        """The primary, then the backups, in the order they are tried."""
        urls = (self.account.base_url, *self.account.backup_urls)
        return tuple(u.rstrip("/") for u in urls if u)

    async def send(self, request: SendRequest) -> list[RecipientOutcome]:
        """Send one chunk as text (GSM-7) or Unicode (type=2), chosen from the text.

        ``chunk_id`` goes as ``usercontext``, so replies forwarded by the gateway name the
        chunk they answer. ``validity`` is not supported by the API and is ignored.
        """
        if not request.recipients:
            return []
        if len(request.recipients) > self.max_batch:
            raise ProviderError(
                ErrorClass.REQUEST, f"chunk of {len(request.recipients)} exceeds max_batch"
            )
        due = request.scheduled_at
        if due is not None and due.tzinfo is None:
            due = due.replace(tzinfo=UTC)  # the contract says aware UTC; be lenient
        if due is not None and due > datetime.now(UTC) + SCHEDULE_TOLERANCE:
            raise ProviderError(
                ErrorClass.REQUEST,
                "scheduled sending is not supported by this provider; hold the chunk until due",
            )
        return await self.send_text(
            request.recipients,
            request.text,
            sender=request.sender or None,
            usercontext=request.chunk_id or None,
        )

    async def balance(self) -> Balance:
        """The account's remaining credits (currency ``"credits"``)."""
        amount = await self.get_balance()
        return Balance(amount=str(amount), currency="credits")

    # --- sendmsg.aspx ---------------------------------------------------------------------

    async def send_text(
        self,
        recipients: Sequence[str],
        text: str,
        *,
        sender: str | None = None,
        usercontext: str | None = None,
        maxconcat: int | None = None,
    ) -> list[RecipientOutcome]:
        """Text message (type=1), or :meth:`send_unicode` when ``text`` is not GSM-7.

        ``maxconcat`` defaults to the parts ``text`` needs (the gateway's default is 1,
        which would refuse anything longer than one SMS).
        """
        seg = count_segments(text)
        if seg.encoding == "ucs2":
            return await self.send_unicode(
                recipients, text, sender=sender, usercontext=usercontext, maxconcat=maxconcat
            )
        concat = maxconcat if maxconcat is not None else max(1, seg.parts)
        fields = {"type": str(MessageType.TEXT.value), "text": text, "maxconcat": str(concat)}
        return await self._submit(
            recipients, fields, sender=sender, usercontext=usercontext, parts=seg.parts
        )

    async def send_unicode(
        self,
        recipients: Sequence[str],
        text: str,
        *,
        sender: str | None = None,
        usercontext: str | None = None,
        maxconcat: int | None = None,
    ) -> list[RecipientOutcome]:
        """Unicode message: type=2, ``hex`` = UCS-2 big-endian hex of ``text``.

        The doc limits ``hex`` to "140 octets max, 70 unicode characters" and lists no
        ``maxconcat`` for type=2; the vendor's PHP SDK sends ``maxconcat`` with type=2 all
        the same, so longer texts go concatenated (67 characters per part) as it does.
        Characters outside the BMP cannot be sent (UCS-2 only, the README): REQUEST error,
        nothing is sent.
        """
        if any(ord(c) > 0xFFFF for c in text):
            raise ProviderError(
                ErrorClass.REQUEST,
                "text has characters outside the BMP; IntelliSoftware Unicode is UCS-2 only",
            )
        parts = _ucs2_parts(text)
        concat = maxconcat if maxconcat is not None else max(1, parts)
        fields = {
            "type": str(MessageType.UNICODE.value),
            "hex": ucs2_hex(text),
            "maxconcat": str(concat),
        }
        return await self._submit(
            recipients, fields, sender=sender, usercontext=usercontext, parts=parts
        )

    async def send_binary(
        self,
        recipients: Sequence[str],
        ud: bytes,
        *,
        udh: bytes | None = None,
        sender: str | None = None,
        usercontext: str | None = None,
    ) -> list[RecipientOutcome]:
        """Binary message: type=3, ``udh`` (optional) and ``ud`` sent as hex (one SMS)."""
        fields = {"type": str(MessageType.BINARY.value), "ud": ud.hex().upper()}
        if udh:
            fields["udh"] = udh.hex().upper()
        return await self._submit(
            recipients, fields, sender=sender, usercontext=usercontext, parts=1
        )

    async def send_wap_push(
        self,
        recipients: Sequence[str],
        text: str,
        href: str,
        *,
        sender: str | None = None,
        usercontext: str | None = None,
    ) -> list[RecipientOutcome]:
        """WAP push: type=4, display ``text`` and ``href``. Always one SMS, 1 credit.

        The gateway answers INVALID_REQUEST if text and href need two SMS (as a guide,
        together no more than 114 characters with an ``http://www.`` href).
        """
        fields = {"type": str(MessageType.WAP_PUSH.value), "text": text, "href": href}
        return await self._submit(
            recipients, fields, sender=sender, usercontext=usercontext, parts=1
        )

    async def send_voice_sms(
        self,
        recipients: Sequence[str],
        text: str,
        *,
        sender: str | None = None,
        usercontext: str | None = None,
    ) -> list[RecipientOutcome]:
        """Voice-SMS: type=6 (text read out by a call). Parts and cost are not known."""
        fields = {"type": str(MessageType.VOICE_SMS.value), "text": text}
        return await self._submit(
            recipients, fields, sender=sender, usercontext=usercontext, parts=None
        )

    async def _submit(
        self,
        recipients: Sequence[str],
        fields: Mapping[str, str],
        *,
        sender: str | None,
        usercontext: str | None,
        parts: int | None,
    ) -> list[RecipientOutcome]:
        self._check_recipients(recipients)
        if not recipients:
            return []
        data = {**self._auth(), "to": ",".join(recipients), **fields}
        if sender:
            data["from"] = sender
        if usercontext:
            data["usercontext"] = usercontext
        resp = await self._call(SENDMSG_PATH, endpoint="send", form=lambda: data, idempotent=False)
        return self._outcomes(recipients, resp, parts=parts)

    # --- default.aspx (MMS) ---------------------------------------------------------------

    async def send_mms(
        self,
        recipients: Sequence[str],
        subject: str,
        files: Sequence[MmsFile],
        *,
        sender: str | None = None,
    ) -> list[RecipientOutcome]:
        """MMS: multipart/form-data to default.aspx with type=5, ``text`` = the subject.

        ``from`` must be numeric (the doc: alphanumeric sender ids are not supported for
        MMS). The doc's multipart example gives its file parts only a ``filename``; RFC 7578
        requires a ``name`` too, so each file goes as ``name="file<n>"`` with its filename.
        """
        self._check_recipients(recipients)
        if not recipients:
            return []

        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            for key, value in self._auth().items():
                fd.add_field(key, value, content_type="text/plain")
            fd.add_field("to", ",".join(recipients), content_type="text/plain")
            if sender:
                fd.add_field("from", sender, content_type="text/plain")
            fd.add_field("type", str(MessageType.MMS.value), content_type="text/plain")
            fd.add_field("text", subject, content_type="text/plain; charset=utf-8")
            for n, f in enumerate(files, 1):
                fd.add_field(
                    f"file{n}", f.content, filename=f.filename, content_type=f.content_type
                )
            return fd

        resp = await self._call(MMS_PATH, endpoint="mms", form=form, idempotent=False)
        return self._outcomes(recipients, resp, parts=None)

    # --- getbalance.aspx / retrievemms.aspx / updatesubscriptionlist.aspx -------------------

    async def get_balance(self) -> Decimal:
        """Remaining credits (``BALANCE:<n>``)."""
        resp = await self._call(
            GETBALANCE_PATH, endpoint="balance", form=self._auth, idempotent=True
        )
        body = resp.text.strip()
        if body.startswith(BALANCE_PREFIX):
            try:
                return Decimal(body[len(BALANCE_PREFIX) :].strip())
            except InvalidOperation:
                pass
        elif body.startswith(ERR_PREFIX):
            _raise_err(body[len(ERR_PREFIX) :])
        raise ProviderError(
            ErrorClass.TRANSIENT, f"unparseable balance answer ({len(resp.text)} chars)"
        )

    async def retrieve_mms(self, msgid: str, msgpart: str | int) -> MmsPart:
        """One part of a received MMS, by filename or 1-based index (``msgpart``).

        The answer is the part's bytes; it is read as latin-1 (byte-preserving) and turned
        back into bytes, since the shared HTTP client hands out text.
        """
        part = str(msgpart)
        data = {**self._auth(), "msgid": msgid, "msgpart": part}
        resp = await self._call(
            RETRIEVEMMS_PATH,
            endpoint="retrievemms",
            form=lambda: data,
            idempotent=True,
            encoding="latin-1",
        )
        content = resp.text.encode("latin-1")
        ctype = next((v for k, v in resp.headers.items() if k.lower() == "content-type"), None)
        head = content[:64].strip()
        is_text = ctype is None or ctype.startswith("text/")
        if is_text and head.startswith(ERR_PREFIX.encode()) and b"\n" not in head:
            _raise_err(head[len(ERR_PREFIX) :].decode("ascii", "replace"))
        return MmsPart(msgid=msgid, msgpart=part, content=content, content_type=ctype)

    async def update_subscription_list(
        self, sublistname: str, msisdn: str, action: SubscriptionAction
    ) -> None:
        """Opt a number in (1), out (2) or delete it (3) from a subscription list.

        Treated as idempotent (it sets a state), so it fails over on any transport failure.
        """
        data = {
            **self._auth(),
            "sublistname": sublistname,
            "msisdn": msisdn,
            "action": str(SubscriptionAction(action).value),
        }
        resp = await self._call(
            UPDATESUBLIST_PATH, endpoint="subscription", form=lambda: data, idempotent=True
        )
        body = resp.text.strip()
        if body == OK_ANSWER:
            return
        if body.startswith(ERR_PREFIX):
            _raise_err(body[len(ERR_PREFIX) :])
        raise ProviderError(
            ErrorClass.TRANSIENT, f"unparseable subscription answer ({len(resp.text)} chars)"
        )

    # --- plumbing -------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"username": self.account.login, "password": self.account.password}

    def _check_recipients(self, recipients: Sequence[str]) -> None:
        if len(recipients) > MAX_NUMBERS_PER_REQUEST:
            raise ProviderError(
                ErrorClass.REQUEST,
                f"{len(recipients)} numbers; at most {MAX_NUMBERS_PER_REQUEST} per request",
                raw_code="TOO_MANY_NUMBERS",
            )

    def _outcomes(
        self, recipients: Sequence[str], resp: HttpResponse, *, parts: int | None
    ) -> list[RecipientOutcome]:
        try:
            lines = parse_send_response(resp.text)
        except ValueError as exc:
            # 200 but not understood: the gateway may have accepted it. Never resend blindly.
            raise ProviderError(
                ErrorClass.AMBIGUOUS,
                f"unparseable send answer ({len(resp.text)} chars): {exc}",
            ) from exc
        cost = str(parts) if parts else None  # credits: one per part per recipient
        return match_outcomes(
            recipients, lines, parts=parts or None, cost=cost, country_code=self._country_code
        )

    @staticmethod
    def _may_fail_over(exc: ProviderError) -> bool:
        """Whether an attempt's failure allows trying the next gateway (see module doc)."""
        # TRANSIENT: a connect failure, a 500/503 the gateway itself answered, or any
        # transport failure of an idempotent call (the provider's "fail over on 5xx").
        # AMBIGUOUS never fails over: a send that may have been taken (a proxy's 502/504 in
        # front of the gateway, a read timeout or a dropped connection after sending) could
        # go out twice through the backup.
        return exc.error_class is ErrorClass.TRANSIENT

    async def _call(
        self,
        path: str,
        *,
        endpoint: str,
        form: FormFactory,
        idempotent: bool,
        encoding: str | None = None,
    ) -> HttpResponse:
        """POST ``form()`` to ``path`` on the primary, failing over to the backups."""
        return await self._failover.call(
            lambda base: self.request(
                "POST",
                base + path,
                endpoint=endpoint,
                data=form(),  # a fresh body per attempt (FormData is single-use)
                idempotent=idempotent,
                encoding=encoding,
            ),
            endpoint=endpoint,
            idempotent=idempotent,
        )
