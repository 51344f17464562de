"""smsq's own actor messages: one frozen dataclass each, one dict on the wire.

``dispatch_chunk`` carries a :class:`SendChunk`, ``dispatch_hlr`` an :class:`HlrChunk`,
``apply_webhook`` a :class:`PushApply`, the periodic actors on ``smsq-reconcile`` a
:class:`PeriodicRun`.
Each is written as the message's one argument, a dict with the format version ``v``
(:data:`VERSION`) beside the fields, by :func:`message_args`; :func:`decode` is the one
place a message's arguments are read back and validated. Messages written by earlier
versions (the fields as positional arguments, in the order of the dataclass) are still
accepted, so chunks queued across an upgrade are sent (docs/wire-format.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from producers.errors import InputError
from worker.core.dispatch_args import args_problem
from worker.core.queues import HLR_ACTOR, SEND_ACTOR

VERSION = 1


class MessageInvalid(InputError):
    """A dispatch message that is not what intake writes; the message says why."""


@dataclass(frozen=True)
class SendChunk:
    """One chunk of a send job: one provider request."""

    actor: ClassVar[str] = SEND_ACTOR

    job_id: str
    index: int
    route: tuple[str, ...]  # accounts in order of preference
    sender: str
    text: str
    recipients: tuple[str, ...]  # international digits
    scheduled_at: str | None  # ISO 8601
    validity: int | None  # seconds
    priority: str
    client_id: int | None
    created_at: float | None = None  # intake time (an OTP's age)

    def positional(self) -> list[Any]:
        """The fields in order, as the dispatch function takes them."""
        return [_plain(getattr(self, f.name)) for f in fields(self)]


@dataclass(frozen=True)
class HlrChunk:
    """One chunk of an HLR job: one lookup request."""

    actor: ClassVar[str] = HLR_ACTOR

    job_id: str
    index: int
    route: tuple[str, ...]
    recipients: tuple[str, ...]
    priority: str = "bulk"

    def positional(self) -> list[Any]:
        return [_plain(getattr(self, f.name)) for f in fields(self)]


@dataclass(frozen=True)
class SendBatch:
    """Several chunks of one send job in one message (format version 2): the worker sends
    them concurrently, each with its own state, recording and in-flight entry, so one
    Dramatiq message (one fetch, one acknowledgement, one worker thread) serves them all."""

    actor: ClassVar[str] = SEND_ACTOR

    chunks: tuple[SendChunk, ...]

    @property
    def job_id(self) -> str:
        return self.chunks[0].job_id


Chunk = SendChunk | HlrChunk
DispatchMessage = SendChunk | HlrChunk | SendBatch
TYPES: dict[str, type[SendChunk] | type[HlrChunk]] = {SEND_ACTOR: SendChunk, HLR_ACTOR: HlrChunk}
BATCH_VERSION = 2  # the version of a SendBatch (a single chunk is still written as VERSION)
MAX_BATCH = 64  # chunks a batch may carry


def chunks_of(message: DispatchMessage) -> tuple[Chunk, ...]:
    """The chunks a message carries, in order."""
    return message.chunks if isinstance(message, SendBatch) else (message,)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _fields(chunk: Chunk) -> dict[str, Any]:
    return {f.name: _plain(getattr(chunk, f.name)) for f in fields(chunk)}


def encode(message: DispatchMessage) -> dict[str, Any]:
    """The message as its one wire argument: ``{"v": VERSION, <field>: <value>, ...}``, or
    for a batch ``{"v": 2, "chunks": [{<field>: <value>, ...}, ...]}``."""
    if isinstance(message, SendBatch):
        return {"v": BATCH_VERSION, "chunks": [_fields(c) for c in message.chunks]}
    return {"v": VERSION, **_fields(message)}


def batch(chunks: Sequence[SendChunk]) -> SendChunk | SendBatch:
    """One message for ``chunks`` (of one job): the chunk itself when alone."""
    if len(chunks) == 1:
        return chunks[0]
    if not 1 < len(chunks) <= MAX_BATCH or len({c.job_id for c in chunks}) != 1:
        raise ValueError(f"a batch holds 2 to {MAX_BATCH} chunks of one job")
    return SendBatch(tuple(chunks))


def message_args(message: DispatchMessage) -> list[Any]:
    """The Dramatiq ``args`` of ``message``."""
    return [encode(message)]


def decode(actor: str, args: Sequence[Any]) -> DispatchMessage:
    """The message of ``actor`` in ``args`` (this version's dict, or an earlier version's
    positional arguments), validated; MessageInvalid naming the problem otherwise."""
    kind = TYPES.get(actor)
    if kind is None:
        raise MessageInvalid(f"{actor[:64]!r} is not a dispatch actor")
    if len(args) == 1 and isinstance(args[0], dict):
        data = dict(args[0])
        version = data.pop("v", None)
        if version == BATCH_VERSION and kind is SendChunk:
            return _decode_batch(actor, data)
        if version != VERSION:
            raise MessageInvalid(f"{actor} message version {version!r} is not {VERSION}")
        return _decode_fields(actor, kind, data)
    return _decode_positional(actor, kind, list(args))


def _decode_batch(actor: str, data: dict[str, Any]) -> SendBatch:
    if set(data) != {"chunks"}:
        raise MessageInvalid(f"{actor} message version 2 holds exactly: chunks")
    raw = data["chunks"]
    if not isinstance(raw, list) or not 1 < len(raw) <= MAX_BATCH:
        raise MessageInvalid(f"{actor} message chunks must be a list of 2 to {MAX_BATCH}")
    chunks: list[SendChunk] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise MessageInvalid(f"{actor} message chunk {i} is not an object")
        try:
            chunk = _decode_fields(actor, SendChunk, dict(item))
        except MessageInvalid as exc:
            raise MessageInvalid(f"chunk {i}: {exc}") from None
        assert isinstance(chunk, SendChunk)
        chunks.append(chunk)
    if len({c.job_id for c in chunks}) != 1:
        raise MessageInvalid(f"{actor} message chunks belong to more than one job")
    if len({c.index for c in chunks}) != len(chunks):
        raise MessageInvalid(f"{actor} message holds a chunk twice")
    return SendBatch(tuple(chunks))


def _decode_fields(
    actor: str, kind: type[SendChunk] | type[HlrChunk], data: dict[str, Any]
) -> SendChunk | HlrChunk:
    names = [f.name for f in fields(kind)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise MessageInvalid(f"{actor} message has unknown fields: {', '.join(unknown)}")
    required = [f.name for f in fields(kind) if f.default is MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise MessageInvalid(f"{actor} message lacks fields: {', '.join(missing)}")
    positional = [data.get(n, getattr(kind, n, None)) for n in names]
    return _decode_positional(actor, kind, positional)


def _decode_positional(
    actor: str, kind: type[SendChunk] | type[HlrChunk], positional: list[Any]
) -> SendChunk | HlrChunk:
    problem = args_problem(actor, positional)
    if problem is not None:
        raise MessageInvalid(problem)
    values: list[Any] = [tuple(v) if isinstance(v, list) else v for v in positional]
    route = values[2]
    values[2] = (route,) if isinstance(route, str) else route
    return kind(*values)


@dataclass(frozen=True)
class PeriodicRun:
    """One run of a periodic task (reconciliation, history, incoming, balance, retention, ...)
    for one account (None: a task that runs once for all), in the scheduler's time slot."""

    account: str | None
    slot: int | None = None


@dataclass(frozen=True)
class PushApply:
    """A stored provider push (``<prefix>:inbox``) to apply."""

    push_id: str


def run_args(run: PeriodicRun) -> list[Any]:
    """The Dramatiq ``args`` of a periodic run."""
    return [{"v": VERSION, "account": run.account, "slot": run.slot}]


def push_args(push: PushApply) -> list[Any]:
    """The Dramatiq ``args`` of a push to apply."""
    return [{"v": VERSION, "push_id": push.push_id}]


def _versioned(args: Sequence[Any], what: str) -> dict[str, Any] | None:
    if len(args) == 1 and isinstance(args[0], dict):
        data = dict(args[0])
        version = data.pop("v", None)
        if version != VERSION:
            raise MessageInvalid(f"{what} message version {version!r} is not {VERSION}")
        return data
    return None


def _slot(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise MessageInvalid(f"slot must be null or a whole number, got {value!r}")


def decode_run(args: Sequence[Any], *, per_account: bool) -> PeriodicRun:
    """A periodic run from its ``args``: this version's dict, or the earlier positional
    ``(account, slot=None)`` (``(slot=None)`` for a task run once for all)."""
    data = _versioned(args, "periodic run")
    if data is not None:
        if set(data) - {"account", "slot"}:
            raise MessageInvalid(
                f"periodic run has unknown fields: {sorted(set(data) - {'account', 'slot'})}"
            )
        account, slot = data.get("account"), _slot(data.get("slot"))
    elif per_account:
        if not 1 <= len(args) <= 2:
            raise MessageInvalid(f"a periodic run takes (account, slot), got {len(args)} arguments")
        account, slot = args[0], _slot(args[1] if len(args) > 1 else None)
    else:
        if len(args) > 1:
            raise MessageInvalid(f"a periodic run takes (slot), got {len(args)} arguments")
        account, slot = None, _slot(args[0] if args else None)
    if per_account and not (isinstance(account, str) and account):
        raise MessageInvalid("a periodic run of an account names the account")
    return PeriodicRun(account if per_account else None, slot)


def decode_push(args: Sequence[Any]) -> PushApply:
    """A push to apply from its ``args``: this version's dict, or the earlier ``(push_id)``."""
    data = _versioned(args, "push")
    push_id = data.get("push_id") if data is not None else (args[0] if len(args) == 1 else None)
    if not isinstance(push_id, str) or not push_id:
        raise MessageInvalid("a push message carries its push id")
    return PushApply(push_id)


__all__ = [
    "BATCH_VERSION",
    "VERSION",
    "Chunk",
    "DispatchMessage",
    "HlrChunk",
    "MessageInvalid",
    "PeriodicRun",
    "PushApply",
    "SendBatch",
    "SendChunk",
    "batch",
    "chunks_of",
    "decode",
    "decode_push",
    "decode_run",
    "encode",
    "message_args",
    "push_args",
    "run_args",
]
