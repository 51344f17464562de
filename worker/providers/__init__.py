"""Provider adapters and their sandboxes: the registry.

The registry maps an account's ``kind`` to its provider package's ``SPEC``, a typed
:class:`~worker.providers.base.ProviderSpec` (adapter, options, push handling, documented
limits, sandbox); the core looks providers up here and never names one itself.
"""

from __future__ import annotations

import importlib

from producers.status import Status
from worker.providers.base import ProviderSpec, Side

PROVIDER_MODULES: dict[str, str] = {
    "intis": "worker.providers.intis",
    "smsc": "worker.providers.smsc",
    "intellisoftware": "worker.providers.intellisoftware",
}


def provider_spec(kind: str) -> ProviderSpec:
    """The spec of provider ``kind``; ValueError naming the known kinds otherwise."""
    try:
        module = importlib.import_module(PROVIDER_MODULES[kind])
    except KeyError:
        raise ValueError(
            f"unknown provider kind {kind!r}; known: {sorted(PROVIDER_MODULES)}"
        ) from None
    spec = module.SPEC
    if not isinstance(spec, ProviderSpec) or spec.kind != kind:
        raise TypeError(f"{module.__name__}.SPEC is not the ProviderSpec of {kind!r}")
    return spec


def known_kinds() -> list[str]:
    return sorted(PROVIDER_MODULES)


def failure_side(
    kind: str, status: Status, raw_status: str, raw_error: str, *, at_send: bool = False
) -> Side:
    """Whose failure a final outcome is, by the provider's own codes (its spec's
    ``failure_side``): ``provider`` (route, sender, operator or account side: another
    provider may deliver), ``recipient`` (the number) or ``unknown`` (no reason given).
    ``at_send``: the send itself was refused and ``raw_status`` is its error code."""
    return provider_spec(kind).failure_side(status, raw_status, raw_error, at_send=at_send)


__all__ = [
    "PROVIDER_MODULES",
    "ProviderSpec",
    "Side",
    "failure_side",
    "known_kinds",
    "provider_spec",
]
