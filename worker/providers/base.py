"""The port every provider adapter implements, and the types it speaks.

The core (splitting, limiting, retrying, state, metrics) talks only to
:class:`ProviderAdapter`; everything provider specific (request building,
signing, response parsing, error classification) stays in one adapter module
per provider. :class:`HttpClient` is the base those adapters build on: it
owns the aiohttp call, records its timing and outcome, and turns transport
failures into classified :class:`ProviderError`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import (
    Any,
    ClassVar,
    Literal,
    Protocol,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
    runtime_checkable,
)
from urllib.parse import quote_plus

import aiohttp
import aiohttp.payload
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from producers.errors import PushError, SmsqError
from producers.segments import count_segments
from producers.status import Status
from worker.core import metrics

MAX_RETRY_AFTER = 3600.0  # a provider's Retry-After is honoured up to an hour

# What a send that timed out is taken for (``ambiguous_sends`` of an account, for providers
# that cannot look a send up by smsq's id): "unknown" (the default: reconciliation or an
# operator settles it), or "retry_unanswered": a request that timed out before any byte of
# the answer arrived is taken as not sent and retried. Risk: a provider that took the
# request and then never answered (a hung gateway, a lost answer) gets it twice.
AmbiguousSends = Literal["unknown", "retry_unanswered"]
AMBIGUOUS_SENDS: tuple[AmbiguousSends, ...] = ("unknown", "retry_unanswered")


# Set by the core around a limited call: awaited before each further request the call makes
# (a failover to a backup host), so every request takes its own rate permit and the
# in-flight lease is renewed to cover it. Raises ProviderError (TRANSIENT) when no permit
# comes soon enough: the earlier host did not take the request, so it is safe to retry.
NEXT_REQUEST: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "smsq_next_request", default=None
)


class ErrorClass(StrEnum):
    """How the core reacts to a failure (see docs/design.md)."""

    RECIPIENT = "recipient"  # this recipient is refused; the rest of the chunk goes on
    REQUEST = "request"  # the whole request is refused; do not retry
    ACCOUNT = "account"  # credentials / funds / blocked IP: pause the account
    THROTTLED = "throttled"  # slow down; does not count against the retry budget
    TRANSIENT = "transient"  # retry with backoff
    AMBIGUOUS = "ambiguous"  # the request may have been acted on: reconcile, never resend blindly


class ProviderError(SmsqError):
    """A whole request failed. Per-recipient refusals are outcomes, not errors."""

    def __init__(
        self,
        error_class: ErrorClass,
        reason: str,
        *,
        raw_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            f"{error_class.value}: {reason}" + (f" (code {raw_code})" if raw_code else "")
        )
        self.error_class = error_class
        self.reason = reason
        self.raw_code = raw_code
        self.retry_after = retry_after


def implements(target: object, capability: type) -> bool:
    """Whether an adapter, or an adapter class, has every member of a capability protocol
    (``isinstance`` answers for instances only)."""
    members = {n for n in vars(capability) if not n.startswith("_")}
    members |= set(getattr(capability, "__annotations__", {}))
    return all(hasattr(target, m) for m in members)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ProviderOptions:
    """``accounts.<name>.options``: typed per provider (a subclass), validated by the config
    loader with every bad option named. These are the options every provider takes."""

    webhook_ips: tuple[str, ...] = ()  # addresses or CIDR networks pushes may come from

    def problems(self) -> list[str]:
        """What is wrong with the values beyond their types (subclasses add their checks)."""
        return []


OptionsT = TypeVar("OptionsT", bound=ProviderOptions)


def _option_value(kind: Any, value: Any) -> tuple[bool, Any]:
    """(ok, value) of ``value`` read as the option type ``kind`` (bool, int, float, str,
    tuple[str, ...], or one of them | None)."""
    args = get_args(kind)
    if args and type(None) in args:
        if value is None:
            return True, None
        (kind,) = [a for a in args if a is not type(None)]
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    if get_origin(kind) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return ok, tuple(value) if ok else value
    return False, value


def _type_name(kind: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    args = get_args(kind)
    if args and type(None) in args:
        (kind,) = [a for a in args if a is not type(None)]
    if get_origin(kind) is tuple:
        return "a list of strings"
    return names.get(kind, str(kind))


def parse_options(
    cls: type[OptionsT], raw: Mapping[str, Any], where: str, problems: list[str]
) -> OptionsT:
    """``raw`` as ``cls``: every unknown option and every value of the wrong type or
    meaning is appended to ``problems`` (each naming ``<where>.<option>``)."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            problems.append(f"{where}.{key}: unknown option (known: {', '.join(sorted(known))})")
            continue
        ok, parsed = _option_value(hints[key], value)
        if not ok:
            problems.append(f"{where}.{key}: must be {_type_name(hints[key])}, got {value!r}")
            continue
        values[key] = parsed
    options = cls(**values)
    problems.extend(f"{where}.{p}" for p in options.problems())
    return options


def options_of(account: AccountConfig, cls: type[OptionsT]) -> OptionsT:
    """The account's options as ``cls`` (the config loader's typed options, or a plain
    mapping read the same way; ValueError naming every problem)."""
    if isinstance(account.options, cls):
        return account.options
    raw = account.options if isinstance(account.options, Mapping) else {}
    problems: list[str] = []
    options = parse_options(cls, raw, f"accounts.{account.name}.options", problems)
    if problems:
        raise ValueError("; ".join(problems))
    return options


@dataclass(frozen=True)
class AccountConfig:
    """One provider account, as the adapter needs it. Secrets are already resolved."""

    name: str
    kind: str
    base_url: str
    login: str = ""
    password: str = field(default="", repr=False)  # SMSC psw, IntelliSoftware password
    api_key: str = field(default="", repr=False)  # Intis API key, SMSC apikey
    batch_size: int = 0  # 0: the adapter's documented maximum
    timeout: float = 30.0
    backup_urls: tuple[str, ...] = ()
    options: ProviderOptions | Mapping[str, Any] = field(default_factory=ProviderOptions)
    webhook_secret: str = field(
        default="", repr=False
    )  # verifies pushes (signature key, URL token)
    ambiguous_sends: AmbiguousSends = "unknown"


@dataclass(frozen=True)
class MessageLimits:
    """What one message may be on a provider, as its documentation says (None: no limit).

    The core reads these at intake: a text some account of the route cannot carry is
    routed only to the accounts that can, or refused with the reason when none can.
    """

    max_chars: int | None = None  # characters in one message text
    gsm7_parts: int | None = None  # parts of a GSM-7 text
    ucs2_parts: int | None = None  # parts of a UCS-2 (Unicode) text
    ucs2_bmp_only: bool = False  # Unicode is UCS-2 proper: no characters outside the BMP

    def refusal(self, text: str) -> str | None:
        """Why ``text`` cannot be sent under these limits, or None when it can."""
        if self.max_chars is not None and len(text) > self.max_chars:
            return f"the text has {len(text)} characters; at most {self.max_chars} are accepted"
        seg = count_segments(text)
        if seg.encoding == "ucs2":
            if self.ucs2_bmp_only and any(ord(c) > 0xFFFF for c in text):
                return "the text has characters outside the BMP, which UCS-2 cannot carry"
            cap, name = self.ucs2_parts, "a Unicode (UCS-2)"
        else:
            cap, name = self.gsm7_parts, "a GSM-7"
        if cap is not None and seg.parts > cap:
            return (
                f"{name} text of {seg.chars} characters needs {seg.parts} parts; "
                f"at most {cap} are accepted"
            )
        return None


@dataclass(frozen=True)
class SendRequest:
    """One chunk: one HTTP request to the provider."""

    chunk_id: str  # stable across retries and redeliveries
    sender: str
    text: str
    recipients: Sequence[str]  # normalised international digits, no '+'
    scheduled_at: datetime | None = None  # aware UTC
    validity: int | None = None  # seconds
    priority: str = "bulk"
    client_id: int | None = None  # numeric id for providers that take one (stable per chunk)


FrozenT = TypeVar("FrozenT")


def frozen_from_state(cls: type[FrozenT], state: dict[str, Any]) -> FrozenT:
    """An instance of the frozen dataclass ``cls`` (no ``__post_init__``, no slots) whose
    fields are ``state``, which must name every field: what ``cls(**state)`` makes, without
    the generated ``__init__``'s one ``object.__setattr__`` per field. For types built per
    recipient on the bulk path; their tests compare it with the constructor.
    """
    instance = object.__new__(cls)
    instance.__dict__.update(state)
    return instance


@dataclass(frozen=True)
class RecipientOutcome:
    """What the provider said about one recipient of a send."""

    phone: str
    status: Status  # SUBMITTED, REJECTED, FAILED or UNKNOWN at send time
    provider_message_id: str | None = None
    parts: int | None = None
    cost: str | None = None  # decimal as text, the provider's currency
    raw_code: str | None = None
    reason: str | None = None
    error_class: ErrorClass | None = None

    @classmethod
    def submitted(
        cls,
        phone: str,
        provider_message_id: str,
        *,
        parts: int | None = None,
        cost: str | None = None,
        raw_code: str | None = None,
    ) -> RecipientOutcome:
        """A SUBMITTED outcome: equal to ``RecipientOutcome(phone, Status.SUBMITTED, …)``.

        A bulk send makes one per recipient; the frozen dataclass ``__init__`` sets each
        of the eight fields through ``object.__setattr__``, which costs more than parsing
        the recipient's answer (see :func:`frozen_from_state`).
        """
        state = _OUTCOME_DEFAULTS.copy()
        state["phone"] = phone
        state["status"] = Status.SUBMITTED
        state["provider_message_id"] = provider_message_id
        state["parts"] = parts
        state["cost"] = cost
        state["raw_code"] = raw_code
        return frozen_from_state(cls, state)


# Every field of RecipientOutcome but phone and status has a plain default (no factory):
# what RecipientOutcome.submitted() starts from.
_OUTCOME_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(RecipientOutcome) if f.name not in ("phone", "status")
}
if any(v is MISSING for v in _OUTCOME_DEFAULTS.values()):
    raise TypeError("RecipientOutcome.submitted() needs a plain default for every other field")


@dataclass(frozen=True)
class StatusReport:
    """A status answer for one provider message id."""

    provider_message_id: str
    status: Status
    raw_status: str
    raw_error: str | None = None
    at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HlrResult:
    """One number's HLR lookup (or the acceptance of an asynchronous lookup)."""

    phone: str
    ok: bool
    provider_message_id: str | None = None  # asynchronous lookups: the id to poll
    pending: bool = False  # the result arrives later (status / callback)
    imsi: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    network: str | None = None
    ported: bool | None = None
    roaming: bool | None = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IncomingMessage:
    """A message a subscriber sent to us (MO), from a webhook or a poll."""

    provider_message_id: str  # the provider's id: incoming messages are stored once per id
    sender: str  # the subscriber's number, digits
    text: str
    recipient: str | None = None  # our number or short code
    received_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundRequest:
    """A provider's push as the web process received it; stored raw before it is parsed."""

    method: str
    path: str  # the part of the path after /hooks/<account>/ (may be empty)
    query: Mapping[str, str]
    content_type: str
    body: bytes
    remote: str  # the peer address
    received_at: float


@dataclass(frozen=True)
class PushAnswer:
    """What the provider expects to hear once its push is safely stored."""

    status: int = 200
    body: str = "OK"
    content_type: str = "text/plain"


@dataclass(frozen=True)
class PushContent:
    """What a push carried, parsed."""

    reports: list[StatusReport] = field(default_factory=list)
    incoming: list[IncomingMessage] = field(default_factory=list)
    hlr: list[HlrResult] = field(default_factory=list)  # keyed by provider_message_id
    events: list[Mapping[str, str]] = field(default_factory=list)  # anything else, for the stream


class PushRejected(PushError):
    """A push that failed verification (bad signature, unknown source) or cannot be read."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class WebhookHandler(Protocol):
    """Module-level functions a provider package exposes for its pushes."""

    def verify_push(self, account: AccountConfig, request: InboundRequest) -> PushAnswer:
        """Check what can be checked before the push is stored; raise PushRejected otherwise."""
        ...

    def parse_push(self, account: AccountConfig, request: InboundRequest) -> PushContent:
        """Parse a stored push (called later, by an actor)."""
        ...


@dataclass(frozen=True)
class Balance:
    amount: str  # decimal as text
    currency: str | None = None


class ProviderAdapter(Protocol):
    """The port. One implementation per provider kind."""

    kind: ClassVar[str]

    @property
    def account(self) -> AccountConfig: ...

    @property
    def max_batch(self) -> int:
        """Recipients per send request (the account's batch_size, capped by the provider)."""
        ...

    async def send(self, request: SendRequest) -> list[RecipientOutcome]:
        """Send one chunk. Returns one outcome per requested recipient.

        Raises ProviderError when the request as a whole failed.
        """
        ...

    # What else it can do is a capability of its own (StatusPolling, HlrLookup, BalanceQuery,
    # SentHistory, IncomingPolling, HlrResults, ExpectedIds, PriceSource, OperatorSource).


# --------------------------------------------------------------------------- capabilities
# Optional ports an adapter may also implement (least-cost routing). The core asks
# ``isinstance(adapter, PriceSource)`` and never names a provider.


@dataclass(frozen=True)
class OperatorPrice:
    """The price of one SMS part to one operator (MCC+MNC) or to a whole country."""

    price: str  # decimal as text
    currency: str | None = None
    mccmnc: str | None = None  # e.g. "25001"
    region: str | None = None  # ISO 3166-1 alpha-2, for a country-wide price


@dataclass(frozen=True)
class NetworkInfo:
    """The operator a number belongs to, from the provider's lookup."""

    phone: str  # normalised digits, as asked
    mccmnc: str  # MCC+MNC, e.g. "25001"
    name: str = ""


@runtime_checkable
class PriceSource(Protocol):
    """An adapter that can list its account's prices per operator or country."""

    async def price_list(self) -> list[OperatorPrice]: ...


@runtime_checkable
class OperatorSource(Protocol):
    """An adapter that can tell which operator (MCC+MNC) numbers belong to."""

    operator_batch: int  # numbers per lookup request

    async def lookup_operators(self, phones: Sequence[str]) -> list[NetworkInfo]:
        """One request; numbers the provider could not place are left out."""
        ...


# --------------------------------------------------------------------------- capabilities
# What an adapter can do besides sending, each a typed port. The core asks
# ``isinstance(adapter, StatusPolling)`` (never a provider's name, never getattr).


@runtime_checkable
class StatusPolling(Protocol):
    """The provider answers status queries for the ids it gave."""

    max_status_batch: int  # ids per status request

    async def status(self, provider_message_ids: Sequence[str]) -> list[StatusReport]:
        """Ids the provider does not mention get no report."""
        ...


@runtime_checkable
class HlrLookup(Protocol):
    """The provider looks numbers up in the HLR."""

    async def hlr(self, phones: Sequence[str]) -> list[HlrResult]: ...


@runtime_checkable
class HlrResults(Protocol):
    """HLR lookups answered later, polled by the ids the lookup gave."""

    async def hlr_results(self, provider_message_ids: Sequence[str]) -> list[HlrResult]: ...


@runtime_checkable
class SentHistory(Protocol):
    """The provider lists what was sent, newest first, a page at a time."""

    async def history_page(
        self, cursor: str | None
    ) -> tuple[list[StatusReport], str | None, float | None]:
        """(reports, the next page's cursor or None at the end, the page's oldest time)."""
        ...


@runtime_checkable
class IncomingPolling(Protocol):
    """Incoming messages fetched after a cursor."""

    async def poll_incoming(self, cursor: str | None) -> tuple[list[IncomingMessage], str | None]:
        """(new messages, the cursor to ask from next time)."""
        ...


@runtime_checkable
class BalanceQuery(Protocol):
    """The account's balance."""

    async def balance(self) -> Balance: ...


@runtime_checkable
class ExpectedIds(Protocol):
    """The ids the provider will give a send's messages are known before its answer."""

    def expected_message_ids(self, request: SendRequest) -> list[str] | None: ...


# --------------------------------------------------------------------------- the registry entry

Side = Literal["provider", "recipient", "unknown"]


def _no_side(status: Status, raw_status: str, raw_error: str, *, at_send: bool = False) -> Side:
    return "unknown"


@dataclass(frozen=True)
class SandboxKit:
    """A provider's development sandbox: ``create(state, **options)`` -> aiohttp application,
    the account it accepts, and the options that make it push reports to a URL with a secret."""

    create: Callable[..., Any]
    account: Mapping[str, str]
    push_options: Callable[[str, str], dict[str, str]]


@dataclass(frozen=True)
class ProviderSpec:
    """Everything the core knows about one provider kind, typed (``SPEC`` in its package).

    The provider's documented limits are data here: rate rules per endpoint class
    (``[(requests, per_seconds)]``, an account's ``limits`` replace them per endpoint), the
    in-flight cap (an account's ``max_in_flight`` replaces it; 0: none) and message limits.
    """

    kind: str
    adapter: Callable[[AccountConfig, aiohttp.ClientSession], ProviderAdapter]
    options: type[ProviderOptions]
    verify_push: Callable[[AccountConfig, InboundRequest], PushAnswer]
    parse_push: Callable[[AccountConfig, InboundRequest], PushContent]
    # parameters of a push (query or form body) that carry a secret or a signature made
    # with one: checked by verify_push, never stored (parse_push does without them)
    push_secret_params: frozenset[str] = frozenset()
    default_limits: Mapping[str, Sequence[tuple[int, float]]] = field(default_factory=dict)
    default_max_in_flight: int = 0
    message_limits: MessageLimits = field(default_factory=MessageLimits)
    # whose failure a final outcome is, by the provider's codes (second-chance resends)
    failure_side: Callable[..., Side] = _no_side
    # development tooling: the module of the sandbox that plays this provider, imported
    # only when a sandbox is asked for (never on the production path)
    sandbox_module: str | None = None

    def sandbox(self) -> SandboxKit:
        """The provider's development sandbox (imports its module now)."""
        if not self.sandbox_module:
            raise LookupError(f"provider {self.kind!r} has no sandbox")
        module = importlib.import_module(self.sandbox_module)
        return SandboxKit(
            create=module.create_sandbox,
            account=module.SANDBOX_ACCOUNT,
            push_options=module.sandbox_push_options,
        )


class AnswerProbe:
    """How many bytes of the answer to one request arrived (see :class:`ProbingConnector`)."""

    __slots__ = ("attached", "received")

    def __init__(self) -> None:
        self.attached = False  # the request's connection reported to this probe
        self.received = 0

    @property
    def unanswered(self) -> bool:
        """Known for certain that not one byte of an answer arrived."""
        return self.attached and self.received == 0


_PROBE: ContextVar[AnswerProbe | None] = ContextVar("smsq_answer_probe", default=None)


class _CountingHandler(ResponseHandler):
    """aiohttp's response protocol, counting the bytes it receives for the current request."""

    probe: AnswerProbe | None = None

    def data_received(self, data: bytes) -> None:
        probe = self.probe
        if probe is not None and data:
            probe.received += len(data)
        super().data_received(data)


class ProbingConnector(aiohttp.TCPConnector):
    """A TCPConnector whose connections tell :class:`HttpClient` whether any byte of an
    answer arrived: a timeout with none is distinguishable from a partial answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._factory = functools.partial(_CountingHandler, loop=self._loop)  # type: ignore[assignment]

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        probe = _PROBE.get()
        protocol = conn.protocol
        if probe is not None and isinstance(protocol, _CountingHandler):
            protocol.probe = probe  # this request's probe from now on (pooled connections too)
            probe.attached = True
        return conn


_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


# Characters quote_plus() leaves as they are, plus the comma (quoted as %2C).
_FORM_QUOTED = re.compile(r"[^A-Za-z0-9_.~,-]")


def _form_quote(text: str) -> str:
    if _FORM_QUOTED.search(text) is None:
        # quote_plus() would quote only the commas, byte by byte in Python.
        return text.replace(",", "%2C")
    return quote_plus(text)


def form_urlencode(fields: Mapping[str, str]) -> str:
    """``urllib.parse.urlencode(fields)`` (UTF-8, ``quote_plus``), with comma-separated
    lists of plain values (a chunk's numbers) quoted without a per-byte Python loop."""
    return "&".join([f"{_form_quote(k)}={_form_quote(v)}" for k, v in fields.items()])


@dataclass(frozen=True)
class HttpResponse:
    status: int
    text: str
    headers: Mapping[str, str]
    url: str


class HttpClient:
    """Base of the adapters: one place that performs, times and classifies HTTP calls.

    Every call is recorded in ``smsq_provider_requests_total`` and
    ``smsq_provider_request_duration_seconds`` labelled by provider kind,
    endpoint class and outcome (bounded label sets: never a number or an id).
    """

    kind: ClassVar[str] = "base"

    def __init__(self, account: AccountConfig, session: aiohttp.ClientSession) -> None:
        self._account = account
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=account.timeout, sock_connect=min(10.0, account.timeout)
        )

    @property
    def account(self) -> AccountConfig:
        return self._account

    async def request(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | aiohttp.FormData | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        encoding: str | None = None,
    ) -> HttpResponse:
        """Perform one HTTP request.

        Transport failures become ``ProviderError``: a failure to connect is
        TRANSIENT (nothing left this process); a failure after the request may
        have left is TRANSIENT for idempotent calls and AMBIGUOUS otherwise.
        HTTP 429 is THROTTLED (with Retry-After); 401/403 is ACCOUNT (credentials or
        an IP block); 500/503 are TRANSIENT (the gateway did not take the request);
        502/504 are AMBIGUOUS for non-idempotent calls (a proxy answered; the gateway
        behind it may have acted), TRANSIENT otherwise.
        """
        started = time.perf_counter()
        outcome = "error"
        body: Any = data
        if isinstance(data, dict) and all(
            type(k) is str and type(v) is str for k, v in data.items()
        ):
            # The body aiohttp's FormData makes of such a dict (urlencode, UTF-8), made by
            # form_urlencode() without quoting a list of numbers byte by byte.
            body = aiohttp.payload.BytesPayload(
                form_urlencode(data).encode("ascii"), content_type=_FORM_CONTENT_TYPE
            )
        probe = AnswerProbe()
        probe_token = _PROBE.set(probe)
        try:
            try:
                async with self._session.request(
                    method, url, params=params, data=body, headers=headers, timeout=self._timeout
                ) as resp:
                    body = await resp.read()
                    text = body.decode(encoding or resp.charset or "utf-8", errors="replace")
                    result = HttpResponse(resp.status, text, dict(resp.headers), str(resp.url))
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                outcome = "connect_error"
                raise ProviderError(
                    ErrorClass.TRANSIENT, f"cannot connect: {type(exc).__name__}"
                ) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                timed_out = isinstance(exc, TimeoutError | asyncio.TimeoutError)
                outcome = "timeout" if timed_out else "transport_error"
                if (
                    not idempotent
                    and timed_out
                    and probe.unanswered
                    and self._account.ambiguous_sends == "retry_unanswered"
                ):
                    outcome = "timeout_unanswered"
                    raise ProviderError(
                        ErrorClass.TRANSIENT,
                        "timed out before any byte of the answer arrived: taken as not sent"
                        " (ambiguous_sends = retry_unanswered)",
                    ) from exc
                cls = ErrorClass.TRANSIENT if idempotent else ErrorClass.AMBIGUOUS
                raise ProviderError(
                    cls, f"transport failure after sending: {type(exc).__name__}"
                ) from exc
            if result.status == 429:
                outcome = "throttled"
                raise ProviderError(
                    ErrorClass.THROTTLED,
                    "HTTP 429",
                    raw_code="429",
                    retry_after=_retry_after(result.headers),
                )
            if result.status >= 500:
                outcome = "server_error"
                # 500/503: the gateway says it failed, so it did not take the request. 502/504
                # come from a proxy in front of it and may follow an accepted request: for a
                # call that must not run twice they are ambiguous.
                proxied = result.status in (502, 504)
                cls = ErrorClass.AMBIGUOUS if proxied and not idempotent else ErrorClass.TRANSIENT
                raise ProviderError(cls, f"HTTP {result.status}", raw_code=str(result.status))
            if result.status in (401, 403):
                outcome = "client_error"
                raise ProviderError(
                    ErrorClass.ACCOUNT, f"HTTP {result.status}", raw_code=str(result.status)
                )
            if result.status >= 400:
                outcome = "client_error"
                raise ProviderError(
                    ErrorClass.REQUEST, f"HTTP {result.status}", raw_code=str(result.status)
                )
            outcome = "ok"
            return result
        finally:
            _PROBE.reset(probe_token)
            elapsed = time.perf_counter() - started
            metrics.PROVIDER_REQUESTS.labels(self.kind, self._account.name, endpoint, outcome).inc()
            metrics.PROVIDER_REQUEST_SECONDS.labels(self.kind, endpoint).observe(elapsed)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date, or garbage: the core's own pause applies
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)
