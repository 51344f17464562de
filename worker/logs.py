"""Logging that never shows a phone number.

:class:`RedactingFilter` masks every run of 8 to 15 digits (optionally after
``+``) in a record's message and traceback — phone numbers in any format a
library may print, e.g. Dramatiq's "Failed to process message f(args)" line.
Longer runs (provider message ids) and shorter ones (ports, counts) pass.
"""

from __future__ import annotations

import logging
import re

from producers.phones import mask_phone

_PHONE = re.compile(r"(?<![\w.])\+?(\d{8,15})(?![\w.])")


def redact(text: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(1)), text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
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
