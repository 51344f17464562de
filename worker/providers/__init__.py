"""Provider adapters and their sandboxes.

The registry maps an account's ``kind`` to the module that implements it; the
core looks adapters up here and never names a provider itself. Each provider
package exposes ``Adapter`` (a :class:`~worker.providers.base.ProviderAdapter`)
and ``create_sandbox(state, **options) -> aiohttp.web.Application``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Literal

from producers.status import Status

Side = Literal["provider", "recipient", "unknown"]

PROVIDER_MODULES: dict[str, str] = {
    "intis": "worker.providers.intis",
    "smsc": "worker.providers.smsc",
    "intellisoftware": "worker.providers.intellisoftware",
}


def provider_module(kind: str) -> ModuleType:
    try:
        return importlib.import_module(PROVIDER_MODULES[kind])
    except KeyError:
        raise ValueError(
            f"unknown provider kind {kind!r}; known: {sorted(PROVIDER_MODULES)}"
        ) from None


def known_kinds() -> list[str]:
    return sorted(PROVIDER_MODULES)


def failure_side(
    kind: str, status: Status, raw_status: str, raw_error: str, *, at_send: bool = False
) -> Side:
    """Whose failure a final outcome is, by the provider's own codes (its package's
    ``failure_side``): ``provider`` (route, sender, operator or account side: another
    provider may deliver), ``recipient`` (the number) or ``unknown`` (no reason given).
    ``at_send``: the send itself was refused and ``raw_status`` is its error code."""
    side = getattr(provider_module(kind), "failure_side", None)
    if side is None:
        return "unknown"
    result: Side = side(status, raw_status, raw_error, at_send=at_send)
    return result
