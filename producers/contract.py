"""The job contract: what a producer may put on smsq's intake queue.

A job arrives as a JSON object (the *wire payload*)::

    {"kind": "send", "job_id": "order-1842", "provider": "smsc", "sender": "MyShop",
     "text": "Your code is 4711", "recipients": ["+7 916 123-45-67", 447946095800],
     "scheduled_at": "2024-05-01T12:00:00Z", "validity": 3600, "priority": "otp",
     "metadata": {"order": 1842}}

    {"kind": "hlr", "provider": "smsc", "recipients": ["79161234567"]}

:func:`validate_job` turns a payload into a :class:`SendJob` or :class:`HlrJob`,
or raises :class:`JobRejected` listing every job-level problem it found. A
recipient that is not a usable phone number does not sink the job: it is kept
in ``rejected`` with its index and reason while the others go on.
:func:`job_to_payload` gives the canonical payload back, and
``producers/schema/job.schema.json`` (see :func:`load_schema`) describes the
same payload as JSON Schema for producers written in other languages.

Optional fields may be omitted or sent as ``null``; both mean "use the
default". This module depends on the standard library only.
"""

from __future__ import annotations

import json
import re
import reprlib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal, TypeAlias

from producers.errors import InputError
from producers.phones import (
    AcceptNumbers,
    InvalidPhone,
    check_phone,
    normalize_phone,
    number_library,
)
from producers.segments import Segments, count_segments

__all__ = [
    "ALPHA_SENDER_PATTERN",
    "HLR_FIELDS",
    "JOB_ID_PATTERN",
    "KINDS",
    "MAX_JOB_ID_LEN",
    "MAX_METADATA_BYTES",
    "MAX_NUMERIC_SENDER_LEN",
    "MAX_PROVIDER_LEN",
    "MAX_RECIPIENTS",
    "MAX_SCHEDULE_AHEAD",
    "MAX_SCHEDULE_BEHIND",
    "MAX_SENDER_LEN",
    "MAX_TEXT_PARTS",
    "MAX_VALIDITY",
    "MIN_VALIDITY",
    "NUMERIC_SENDER_PATTERN",
    "PRIORITIES",
    "PROVIDER_PATTERN",
    "RAW_RECIPIENT_LEN",
    "SCHEDULED_AT_PATTERN",
    "SEND_FIELDS",
    "HlrJob",
    "Job",
    "JobRejected",
    "Kind",
    "Priority",
    "RejectedRecipient",
    "SendJob",
    "is_job_id",
    "job_to_payload",
    "load_schema",
    "new_job_id",
    "unpaired_surrogates",
    "validate_job",
]

# ---------------------------------------------------------------- limits

MAX_RECIPIENTS = 100_000
MAX_TEXT_PARTS = 10
MAX_SENDER_LEN = 11  # alphanumeric sender
MAX_NUMERIC_SENDER_LEN = 15  # numeric sender (digits, optional leading '+')
MAX_METADATA_BYTES = 4096  # UTF-8 bytes of the compact JSON encoding
MAX_JOB_ID_LEN = 128
MAX_PROVIDER_LEN = 64
MAX_SCHEDULE_AHEAD = timedelta(days=7)
MAX_SCHEDULE_BEHIND = timedelta(minutes=5)  # a slightly late scheduled_at still goes (now)
MIN_VALIDITY = 60  # seconds
MAX_VALIDITY = 72 * 3600  # seconds
RAW_RECIPIENT_LEN = 32  # how much of a rejected recipient's raw value is kept

Kind = Literal["send", "hlr"]
Priority = Literal["otp", "bulk"]
KINDS: tuple[Kind, ...] = ("send", "hlr")
PRIORITIES: tuple[Priority, ...] = ("otp", "bulk")

# The same pattern strings appear in job.schema.json; they are used here with
# fullmatch, so a trailing newline never slips through '$'.
# No ':' in a job id: it separates the parts of smsq's Redis keys (smsq:job:<id>:counts).
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
PROVIDER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
NUMERIC_SENDER_PATTERN = r"^\+?[0-9]{1,15}$"
ALPHA_SENDER_PATTERN = r"^[A-Za-z0-9._&-]+( [A-Za-z0-9._&-]+)*$"
SCHEDULED_AT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)

CALLBACK_URL_PATTERN = r"^https?://[^\s/?#@]+([/?#][^\s]*)?$"
MAX_CALLBACK_URL_LEN = 2048
_CALLBACK_URL_RE = re.compile(CALLBACK_URL_PATTERN)
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)
_PROVIDER_RE = re.compile(PROVIDER_PATTERN)
_NUMERIC_SENDER_RE = re.compile(NUMERIC_SENDER_PATTERN)
_ALPHA_SENDER_RE = re.compile(ALPHA_SENDER_PATTERN)
# As SCHEDULED_AT_PATTERN but with the offset optional, to tell "no offset"
# apart from "not a date-time at all".
_SCHEDULED_AT_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?"
)

_COMMON_FIELDS = frozenset(
    {"kind", "job_id", "provider", "recipients", "priority", "metadata", "callback_url"}
)
SEND_FIELDS = _COMMON_FIELDS | {"sender", "text", "scheduled_at", "validity"}
HLR_FIELDS = _COMMON_FIELDS

# A text this long cannot fit MAX_TEXT_PARTS parts in any encoding; it is
# refused without counting its parts.
_TEXT_COUNT_LIMIT = 20_000
_MAX_LISTED_FIELDS = 10
_MAX_SURROGATE_REASONS = 5

# ---------------------------------------------------------------- types


class JobRejected(InputError, ValueError):
    """The job as a whole is refused.

    ``reasons`` lists every job-level problem found, each a sentence naming
    the field; ``job_id`` is the payload's job id when it had a valid one.
    """

    def __init__(self, reasons: Sequence[str] | str, job_id: str | None = None) -> None:
        self.reasons: list[str] = [reasons] if isinstance(reasons, str) else list(reasons)
        self.job_id = job_id
        super().__init__("; ".join(self.reasons))

    def __str__(self) -> str:
        return "; ".join(self.reasons)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reasons, self.job_id))


@dataclass(frozen=True)
class RejectedRecipient:
    """A recipient refused before sending; the rest of the job goes on.

    ``index`` is its position in the payload's ``recipients``; ``raw`` is the
    value as the producer sent it, as a string cut to 32 characters.
    """

    index: int
    raw: str
    reason: str


@dataclass(frozen=True)
class SendJob:
    """A validated SMS send: one text from one sender to many recipients.

    ``recipients`` are normalised international digits, de-duplicated in the
    order they first appear; ``duplicates`` counts the entries dropped as
    repeats. ``scheduled_at`` is aware UTC; ``validity`` is in seconds.
    """

    job_id: str
    provider: str
    sender: str
    text: str
    recipients: tuple[str, ...]
    rejected: tuple[RejectedRecipient, ...]
    duplicates: int
    segments: Segments
    scheduled_at: datetime | None
    validity: int | None
    priority: Priority = "bulk"
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    countries: tuple[str, ...] = ()  # region code per recipient ("" unknown); () unchecked
    callback_url: str | None = None
    kind: Literal["send"] = "send"


@dataclass(frozen=True)
class HlrJob:
    """A validated HLR lookup of many numbers (no text is sent)."""

    job_id: str
    provider: str
    recipients: tuple[str, ...]
    rejected: tuple[RejectedRecipient, ...]
    duplicates: int
    priority: Priority = "bulk"
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    countries: tuple[str, ...] = ()  # region code per recipient ("" unknown); () unchecked
    callback_url: str | None = None
    kind: Literal["hlr"] = "hlr"


Job: TypeAlias = SendJob | HlrJob


def new_job_id() -> str:
    """A fresh job id (32 hex digits) for a payload that brought none."""
    return uuid.uuid4().hex


# ---------------------------------------------------------------- validation


def validate_job(
    payload: object,
    *,
    providers: Collection[str] | None = None,
    now: datetime | None = None,
    numbers: AcceptNumbers | None = "valid",
) -> Job:
    """Check a wire payload and return the job it describes.

    ``providers``, when given, holds the provider kinds and route names this
    deployment knows; any other ``provider`` is refused. ``now`` (aware) is
    the time ``scheduled_at`` is judged against; it defaults to the clock.
    ``numbers`` is what libphonenumber must say of each recipient (see
    :func:`producers.phones.check_phone`): ``"valid"`` (the default) or
    ``"possible"``; ``None``, or the library not installed, checks the form
    only (the worker always checks). The region of every checked recipient is
    in the job's ``countries``.

    Raises :class:`JobRejected` listing every job-level problem. Recipients
    that are not usable phone numbers go to the job's ``rejected`` instead.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if isinstance(providers, str):  # one name, not a collection of its letters
        providers = (providers,)

    if not isinstance(payload, Mapping):
        raise JobRejected([f"the job must be a JSON object, not {_type_name(payload)}"])

    errors: list[str] = unpaired_surrogates(payload, skip=("text",))
    job_id = _job_id(payload.get("job_id"), errors)
    kind = _kind(payload.get("kind"), errors)
    _unknown_fields(payload, kind, errors)

    provider = _provider(payload.get("provider"), providers, errors)
    sender = text = ""
    segments: Segments | None = None
    scheduled_at: datetime | None = None
    validity: int | None = None
    if kind != "hlr":
        sender = _sender(payload.get("sender"), errors)
        text, segments = _text(payload.get("text"), errors)
        scheduled_at = _scheduled_at(payload.get("scheduled_at"), now, errors)
        validity = _validity(payload.get("validity"), errors)
    if numbers is not None and number_library() is None:
        numbers = None
    recipients, rejected, duplicates, countries = _recipients(
        payload.get("recipients"), errors, numbers
    )
    priority = _priority(payload.get("priority"), errors)
    metadata = _metadata(payload.get("metadata"), errors)
    callback_url = _callback_url(payload.get("callback_url"), errors)

    if errors:
        raise JobRejected(errors, job_id)
    if job_id is None:
        job_id = new_job_id()
    if kind == "hlr":
        return HlrJob(
            job_id=job_id,
            provider=provider,
            recipients=recipients,
            rejected=rejected,
            duplicates=duplicates,
            priority=priority,
            metadata=metadata,
            countries=countries,
            callback_url=callback_url,
        )
    assert segments is not None
    return SendJob(
        job_id=job_id,
        provider=provider,
        sender=sender,
        text=text,
        recipients=recipients,
        rejected=rejected,
        duplicates=duplicates,
        segments=segments,
        scheduled_at=scheduled_at,
        validity=validity,
        priority=priority,
        metadata=metadata,
        countries=countries,
        callback_url=callback_url,
    )


def is_job_id(value: object) -> bool:
    """True when ``value`` is a job id smsq accepts (and may therefore put in a Redis key)."""
    return isinstance(value, str) and _JOB_ID_RE.fullmatch(value) is not None


def unpaired_surrogates(value: object, *, skip: Collection[str] = ()) -> list[str]:
    """One reason per string in ``value`` (keys included) holding an unpaired UTF-16 surrogate.

    JSON lets ``"\\ud800"`` through, Python decodes it to a string that cannot be
    written as UTF-8 (to Redis, to a log). ``skip`` names top-level fields checked
    elsewhere. At most a few reasons are listed; the walk does not recurse.
    """
    reasons: list[str] = []
    stack: list[tuple[str, object]] = [("", value)]
    while stack and len(reasons) < _MAX_SURROGATE_REASONS:
        path, item = stack.pop()
        if isinstance(item, str):
            where = _bad_surrogate(item)
            if where is not None:
                reasons.append(
                    f"{path or 'the job'} holds an unpaired UTF-16 surrogate"
                    f" (U+{ord(item[where]):04X}) at character {where}"
                )
        elif isinstance(item, Mapping):
            for key, sub in reversed(list(item.items())):
                name = key if isinstance(key, str) else str(key)
                if _bad_surrogate(name) is not None:
                    reasons.append(
                        f"a field name in {path or 'the job'} holds an unpaired UTF-16 surrogate"
                    )
                    continue
                if not path and name in skip:
                    continue
                stack.append((f"{path}.{name}" if path else name, sub))
        elif isinstance(item, list | tuple):
            for i in range(len(item) - 1, -1, -1):
                stack.append((f"{path}[{i}]", item[i]))
    return reasons[:_MAX_SURROGATE_REASONS]


def _bad_surrogate(text: str) -> int | None:
    """The index of the first unpaired surrogate in ``text``, or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return int(exc.start)
    return None


def _job_id(value: object, errors: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(
            f"job_id must be a string, not {_type_name(value)}; omit it to have one generated"
        )
        return None
    if _JOB_ID_RE.fullmatch(value):
        return value
    if not value:
        errors.append("job_id is empty; omit it to have one generated")
    elif len(value) > MAX_JOB_ID_LEN:
        errors.append(f"job_id is {len(value)} characters long; at most {MAX_JOB_ID_LEN}")
    elif _bad_surrogate(value) is None:
        errors.append(
            f"job_id {_show(value)} must start with a letter or digit and hold only"
            " letters, digits and . _ - (no ':')"
        )
    return None


def _kind(value: object, errors: list[str]) -> Kind | None:
    if value is None or value == "send":
        return "send"
    if value == "hlr":
        return "hlr"
    errors.append(f"kind must be 'send' or 'hlr', not {_show(value)}")
    return None


def _unknown_fields(payload: Mapping[Any, Any], kind: Kind | None, errors: list[str]) -> None:
    allowed = HLR_FIELDS if kind == "hlr" else SEND_FIELDS  # an unknown kind: judged as send
    extra = [key for key in payload if key not in allowed]
    for key in extra[:_MAX_LISTED_FIELDS]:
        if kind == "hlr" and key in SEND_FIELDS:
            errors.append(f"field {_show(key)} does not belong in an hlr job")
        else:
            errors.append(f"unknown field {_show(key)}")
    if len(extra) > _MAX_LISTED_FIELDS:
        errors.append(f"... and {len(extra) - _MAX_LISTED_FIELDS} more unknown fields")


def _provider(value: object, providers: Collection[str] | None, errors: list[str]) -> str:
    if value is None:
        errors.append("provider is required: a provider kind or route name")
        return ""
    if not isinstance(value, str):
        errors.append(f"provider must be a string, not {_type_name(value)}")
        return ""
    if not _PROVIDER_RE.fullmatch(value):
        if not value:
            errors.append("provider is empty: a provider kind or route name is required")
        else:
            errors.append(
                f"provider {_show(value)} is not a valid name (letters, digits and . _ : -,"
                f" at most {MAX_PROVIDER_LEN} characters)"
            )
        return ""
    if providers is not None and value not in providers:
        known = sorted(providers)
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        errors.append(f"provider {_show(value)} is not configured here (known: {listed or 'none'})")
        return ""
    return value


def _sender(value: object, errors: list[str]) -> str:
    if value is None:
        errors.append("sender is required for a send job")
        return ""
    if not isinstance(value, str):
        errors.append(f"sender must be a string, not {_type_name(value)}")
        return ""
    if _NUMERIC_SENDER_RE.fullmatch(value):
        return value
    if not value:
        errors.append("sender is empty")
    elif value.lstrip("+").isdigit() and value.isascii():
        errors.append(
            f"sender {_show(value)} has {len(value.lstrip('+'))} digits; numeric senders take"
            f" at most {MAX_NUMERIC_SENDER_LEN}"
        )
    elif not _ALPHA_SENDER_RE.fullmatch(value):
        errors.append(
            f"sender {_show(value)} may hold only letters A-Z, digits, single inner spaces"
            " and . _ & - (or be a number of up to 15 digits)"
        )
    elif len(value) > MAX_SENDER_LEN:
        errors.append(
            f"sender {_show(value)} is {len(value)} characters long; alphanumeric senders take"
            f" at most {MAX_SENDER_LEN}"
        )
    else:
        return value
    return ""


def _text(value: object, errors: list[str]) -> tuple[str, Segments | None]:
    if value is None:
        errors.append("text is required for a send job")
        return "", None
    if not isinstance(value, str):
        errors.append(f"text must be a string, not {_type_name(value)}")
        return "", None
    if not value.strip():
        errors.append("text is empty" if not value else "text is blank (only whitespace)")
        return "", None
    if len(value) > _TEXT_COUNT_LIMIT:
        errors.append(
            f"text is too long: {len(value)} characters, far beyond {MAX_TEXT_PARTS} SMS parts"
        )
        return "", None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        errors.append(
            f"text holds an unpaired UTF-16 surrogate (U+{ord(value[exc.start]):04X})"
            f" at character {exc.start}"
        )
        return "", None
    segments = count_segments(value)
    if segments.parts > MAX_TEXT_PARTS:
        if segments.encoding == "gsm7":
            encoding, units = "GSM-7", f"{segments.units} septets"
        else:
            encoding, units = "UCS-2", f"{segments.units} UTF-16 units"
        errors.append(
            f"text is too long: {segments.parts} SMS parts in {encoding}"
            f" ({segments.chars} characters, {units}); at most {MAX_TEXT_PARTS} parts"
        )
        return "", None
    return value, segments


def _scheduled_at(value: object, now: datetime, errors: list[str]) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(
            f"scheduled_at must be an ISO 8601 date-time string or null, not {_type_name(value)}"
        )
        return None
    match = _SCHEDULED_AT_RE.fullmatch(value)
    if match is None:
        errors.append(
            f"scheduled_at {_show(value)} is not an ISO 8601 date-time"
            " like 2024-05-01T12:00:00Z or 2024-05-01T15:00:00+03:00"
        )
        return None
    if match.group(2) is None:
        errors.append(f"scheduled_at {_show(value)} has no UTC offset; add Z or one like +03:00")
        return None
    try:
        at = datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        errors.append(f"scheduled_at {_show(value)} is not a valid date-time: {exc}")
        return None
    if at < now - MAX_SCHEDULE_BEHIND:
        errors.append(
            f"scheduled_at {_show(value)} is {_duration(now - at)} in the past;"
            f" at most {_duration(MAX_SCHEDULE_BEHIND)} late is accepted"
        )
        return None
    if at > now + MAX_SCHEDULE_AHEAD:
        errors.append(
            f"scheduled_at {_show(value)} is {_duration(at - now)} ahead;"
            f" at most {_duration(MAX_SCHEDULE_AHEAD)} is allowed"
        )
        return None
    return at


def _validity(value: object, errors: list[str]) -> int | None:
    if value is None:
        return None
    seconds: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():  # JSON 3600.0: an integer in JSON Schema
        seconds = int(value)
    if seconds is None:
        shown = _type_name(value) if isinstance(value, bool) else _show(value)
        errors.append(f"validity must be a whole number of seconds, not {shown}")
        return None
    if not MIN_VALIDITY <= seconds <= MAX_VALIDITY:
        errors.append(
            f"validity must be between {MIN_VALIDITY} and {MAX_VALIDITY} seconds"
            f" (1 minute to 72 hours), not {seconds}"
        )
        return None
    return seconds


def _recipients(
    value: object, errors: list[str], numbers: AcceptNumbers | None
) -> tuple[tuple[str, ...], tuple[RejectedRecipient, ...], int, tuple[str, ...]]:
    nothing: tuple[tuple[str, ...], tuple[RejectedRecipient, ...], int, tuple[str, ...]] = (
        (),
        (),
        0,
        (),
    )
    if value is None:
        errors.append("recipients is required: a list of phone numbers")
        return nothing
    if not isinstance(value, (list, tuple)):
        errors.append(f"recipients must be a list of phone numbers, not {_type_name(value)}")
        return nothing
    count = len(value)
    if count == 0:
        errors.append("recipients is empty: at least one phone number is needed")
        return nothing
    if count > MAX_RECIPIENTS:
        errors.append(
            f"recipients has {count} numbers; at most {MAX_RECIPIENTS} are allowed in one job"
        )
        return nothing

    seen: set[str] = set()
    valid: list[str] = []
    regions: list[str] = []
    rejected: list[RejectedRecipient] = []
    add, keep, region_of = seen.add, valid.append, regions.append
    for index, raw in enumerate(value):
        try:
            phone = normalize_phone(raw)
            if phone in seen:
                continue
            if numbers is not None:
                written = phone
                phone, region = check_phone(phone, numbers)
                if phone in seen:  # the same number, written with a trunk prefix
                    add(written)
                    continue
                region_of(region)
                add(written)
        except InvalidPhone as exc:
            rejected.append(RejectedRecipient(index, _raw_text(raw), exc.reason))
            continue
        add(phone)
        keep(phone)
    if not valid:
        first = rejected[0]
        errors.append(
            f"recipients holds no valid phone number (all {count} refused;"
            f" recipients[{first.index}]: {first.reason})"
        )
        return nothing
    duplicates = count - len(rejected) - len(valid)
    return tuple(valid), tuple(rejected), duplicates, tuple(regions)


def _priority(value: object, errors: list[str]) -> Priority:
    if value is None or value == "bulk":
        return "bulk"
    if value == "otp":
        return "otp"
    errors.append(f"priority must be 'otp' or 'bulk', not {_show(value)}")
    return "bulk"


def _metadata(value: object, errors: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"metadata must be a JSON object, not {_type_name(value)}")
        return {}
    try:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        errors.append(f"metadata must hold only JSON values: {type(exc).__name__}: {exc}"[:300])
        return {}
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        return {}  # listed by unpaired_surrogates
    if size > MAX_METADATA_BYTES:
        errors.append(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")
        return {}
    # A private copy, exactly as the JSON wire carries it.
    copy: dict[str, Any] = json.loads(encoded)
    return copy


def _callback_url(value: object, errors: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(f"callback_url must be a string, not {_type_name(value)}")
        return None
    if len(value) > MAX_CALLBACK_URL_LEN:
        errors.append(
            f"callback_url is {len(value)} characters long; at most {MAX_CALLBACK_URL_LEN}"
        )
        return None
    if not _CALLBACK_URL_RE.fullmatch(value):
        errors.append(
            f"callback_url {_show(value)} must be an http:// or https:// URL without"
            " credentials or spaces"
        )
        return None
    return value


# ---------------------------------------------------------------- wire form


def job_to_payload(job: Job) -> dict[str, Any]:
    """The canonical wire payload of ``job``: valid recipients only, UTC times.

    ``validate_job(job_to_payload(job))`` gives back an equal job, except that
    ``rejected`` is empty and ``duplicates`` is 0.
    """
    if isinstance(job, HlrJob):
        return {
            "kind": "hlr",
            "job_id": job.job_id,
            "provider": job.provider,
            "recipients": list(job.recipients),
            "priority": job.priority,
            "metadata": json.loads(json.dumps(job.metadata)),
            "callback_url": job.callback_url,
        }
    return {
        "kind": "send",
        "job_id": job.job_id,
        "provider": job.provider,
        "sender": job.sender,
        "text": job.text,
        "recipients": list(job.recipients),
        "scheduled_at": None if job.scheduled_at is None else _format_utc(job.scheduled_at),
        "validity": job.validity,
        "priority": job.priority,
        "metadata": json.loads(json.dumps(job.metadata)),
        "callback_url": job.callback_url,
    }


def _format_utc(at: datetime) -> str:
    """``2024-05-01T12:00:00Z`` (with ``.ffffff`` when there are microseconds)."""
    u = at.astimezone(UTC)
    text = f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
    if u.microsecond:
        text += f".{u.microsecond:06d}"
    return text + "Z"


@cache
def _schema_text() -> str:
    resource = resources.files("producers") / "schema" / "job.schema.json"
    return resource.read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the wire payload, as a fresh dict."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


# ---------------------------------------------------------------- helpers

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40


def _show(value: object) -> str:
    """A short, safe rendering of a producer's value for an error message."""
    return _repr.repr(value)


def _type_name(value: object) -> str:
    """The JSON name of ``value``'s type, with an article."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _raw_text(raw: object) -> str:
    """A rejected recipient's raw value as a string of at most RAW_RECIPIENT_LEN."""
    if isinstance(raw, str):
        return raw[:RAW_RECIPIENT_LEN]
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        if raw.bit_length() > 128:  # str() of a huge int is slow, and capped
            return f"<integer of {raw.bit_length()} bits>"[:RAW_RECIPIENT_LEN]
        return str(raw)[:RAW_RECIPIENT_LEN]
    return _repr.repr(raw)[:RAW_RECIPIENT_LEN]


def _duration(delta: timedelta) -> str:
    """``delta`` in words, rounded down to whole minutes (seconds below one)."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = []
    if days:
        parts.append(f"{days} day" + ("s" if days != 1 else ""))
    if hours:
        parts.append(f"{hours} hour" + ("s" if hours != 1 else ""))
    if minutes:
        parts.append(f"{minutes} minute" + ("s" if minutes != 1 else ""))
    return " ".join(parts)
