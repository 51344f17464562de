"""The dispatch actors' messages: one frozen dataclass each, one dict on the wire.

``dispatch_chunk`` carries a :class:`SendChunk`, ``dispatch_hlr`` an :class:`HlrChunk`.
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
from worker.dispatch_args import args_problem
from worker.queues import HLR_ACTOR, SEND_ACTOR

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


DispatchMessage = SendChunk | HlrChunk
TYPES: dict[str, type[SendChunk] | type[HlrChunk]] = {SEND_ACTOR: SendChunk, HLR_ACTOR: HlrChunk}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def encode(message: DispatchMessage) -> dict[str, Any]:
    """The message as its one wire argument: ``{"v": VERSION, <field>: <value>, ...}``."""
    return {"v": VERSION, **{f.name: _plain(getattr(message, f.name)) for f in fields(message)}}


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
        if version != VERSION:
            raise MessageInvalid(f"{actor} message version {version!r} is not {VERSION}")
        names = [f.name for f in fields(kind)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise MessageInvalid(f"{actor} message has unknown fields: {', '.join(unknown)}")
        required = [f.name for f in fields(kind) if f.default is MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise MessageInvalid(f"{actor} message lacks fields: {', '.join(missing)}")
        positional = [data.get(n, getattr(kind, n, None)) for n in names]
    else:
        positional = list(args)
    problem = args_problem(actor, positional)
    if problem is not None:
        raise MessageInvalid(problem)
    values: list[Any] = [tuple(v) if isinstance(v, list) else v for v in positional]
    route = values[2]
    values[2] = (route,) if isinstance(route, str) else route
    return kind(*values)


__all__ = [
    "VERSION",
    "DispatchMessage",
    "HlrChunk",
    "MessageInvalid",
    "SendChunk",
    "decode",
    "encode",
    "message_args",
]
