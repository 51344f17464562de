"""Provider adapters and their sandboxes.

The registry maps an account's ``kind`` to the module that implements it; the
core looks adapters up here and never names a provider itself. Each provider
package exposes ``Adapter`` (a :class:`~worker.providers.base.ProviderAdapter`)
and ``create_sandbox(state, **options) -> aiohttp.web.Application``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
