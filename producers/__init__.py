"""smsq's job contract and enqueue client (depends on ``redis`` only).

``from producers import SmsqClient, AsyncSmsqClient, enqueue_send, enqueue_hlr`` (loaded on
first use).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AsyncSmsqClient",
    "CancelResult",
    "Event",
    "JobStatus",
    "RecipientRow",
    "SmsqClient",
    "enqueue_hlr",
    "enqueue_send",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from producers import client

        return getattr(client, name)
    raise AttributeError(f"module 'producers' has no attribute {name!r}")
