"""Logging that never shows a phone number or a message's text.

:class:`RedactingFilter`, on every handler of a worker process:

- a Dramatiq message among a record's arguments (e.g. Dramatiq's "Failed to
  process message %s") is shown as ``actor_name[message_id]``: its arguments
  carry texts (OTP codes) and numbers;
- every run of 8 to 15 digits (optionally after ``+``) left in the message or
  its traceback is masked like a phone number. Longer runs (provider message
  ids) and shorter ones (ports, counts) pass.
"""

from __future__ import annotations

import logging
from typing import Any

from producers.phones import mask_numbers_in


def redact(text: str) -> str:
    return mask_numbers_in(text)


def _summarise(arg: Any) -> Any:
    """A Dramatiq message (or its proxy) as its actor and id; anything else unchanged."""
    actor, message_id = getattr(arg, "actor_name", None), getattr(arg, "message_id", None)
    if isinstance(actor, str) and isinstance(message_id, str):
        return f"{actor}[{message_id}]"
    return arg


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.args, tuple):
                record.args = tuple(_summarise(a) for a in record.args)
            message = record.getMessage()
        except Exception:  # a malformed log call must not raise in the caller
            record.msg, record.args = redact(str(record.msg)), None
            return True
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install() -> None:
    """Add the filter to every handler of the root logger (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
