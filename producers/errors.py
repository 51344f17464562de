"""smsq's one error hierarchy: every exception smsq raises derives from :class:`SmsqError`.

Catch ``SmsqError`` for anything smsq raised on purpose, or a branch for one kind of
problem. The classes live where they are raised, re-parented under these bases (never
duplicated); docs/design.md ("Error hierarchy") shows the tree.

Classes that were ``ValueError`` before stay ``ValueError`` too, so existing handlers
keep working.
"""

from __future__ import annotations


class SmsqError(Exception):
    """Base of every exception smsq raises on purpose."""


class InputError(SmsqError):
    """Input smsq refuses; the message says why."""


class PushError(SmsqError):
    """A provider's push that cannot be taken."""


class DispatchInterrupted(SmsqError):
    """Dispatch stops a call for a reason that is not a failure (wait, or someone else's)."""


__all__ = ["DispatchInterrupted", "InputError", "PushError", "SmsqError"]
