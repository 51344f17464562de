"""One typed ProviderSpec per provider, capabilities as protocols, typed options.

The core reads a provider only through its spec and the capability protocols of
worker/providers/base.py; options are a dataclass per provider, validated by the config
loader with every bad option named.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from worker.core.config import ConfigError, parse_settings
from worker.providers import known_kinds, provider_spec
from worker.providers.base import (
    AccountConfig,
    BalanceQuery,
    ExpectedIds,
    HlrLookup,
    HlrResults,
    IncomingPolling,
    ProviderOptions,
    ProviderSpec,
    SentHistory,
    StatusPolling,
    implements,
)
from worker.providers.intis.options import IntisOptions
from worker.providers.smsc.options import SmscOptions

ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = {
    "status": StatusPolling,
    "hlr": HlrLookup,
    "hlr_results": HlrResults,
    "history": SentHistory,
    "incoming": IncomingPolling,
    "balance": BalanceQuery,
    "expected_ids": ExpectedIds,
}
EXPECTED = {
    "smsc": {"status", "hlr", "hlr_results", "history", "incoming", "balance", "expected_ids"},
    "intis": {"status", "hlr", "incoming", "balance"},
    "intellisoftware": {"balance"},
}


@pytest.mark.parametrize("kind", known_kinds())
def test_every_provider_has_one_typed_spec(kind: str) -> None:
    spec = provider_spec(kind)
    assert isinstance(spec, ProviderSpec) and spec.kind == kind
    assert issubclass(spec.options, ProviderOptions)
    assert callable(spec.sandbox().create) and spec.sandbox().account
    module = importlib.import_module(f"worker.providers.{kind}")
    # No module-attribute registry beside the spec.
    for name in ("Adapter", "DEFAULT_LIMITS", "SANDBOX_ACCOUNT", "MESSAGE_LIMITS"):
        assert not hasattr(module, name), f"worker.providers.{kind}.{name}"


@pytest.mark.parametrize("kind", known_kinds())
async def test_capabilities_are_protocols(kind: str) -> None:
    spec = provider_spec(kind)
    account = AccountConfig(name="a", kind=kind, base_url="http://127.0.0.1:9")
    async with aiohttp.ClientSession() as session:
        adapter = spec.adapter(account, session)
    has = {name for name, proto in CAPABILITIES.items() if isinstance(adapter, proto)}
    assert has == EXPECTED[kind]
    # The same answer from the class, as the scheduler asks it.
    assert {n for n, p in CAPABILITIES.items() if implements(spec.adapter, p)} == has


def test_the_core_asks_no_adapter_with_getattr() -> None:
    core = [p for p in (ROOT / "worker").glob("*.py")]
    for path in core:
        text = path.read_text()
        assert not re.search(r"getattr\((adapter|provider_module|module)\b", text), path
        assert "provider_module(" not in text, path


def settings_with(options: dict[str, dict[str, Any]]) -> Any:
    kinds = {"s": "smsc", "i": "intis", "l": "intellisoftware"}
    accounts = {
        name: {"kind": kind, "base_url": "http://127.0.0.1:9", "options": options.get(name, {})}
        for name, kind in kinds.items()
    }
    return parse_settings({"accounts": accounts}, {})


def test_options_are_typed_per_provider() -> None:
    settings = settings_with(
        {"s": {"translit": 1, "always_post": True}, "i": {"timezone": "Europe/Moscow"}}
    )
    smsc, intis = settings.accounts["s"].options, settings.accounts["i"].options
    assert smsc == SmscOptions(translit=1, always_post=True)
    assert intis == IntisOptions(timezone="Europe/Moscow")
    assert settings.accounts["l"].options.default_country_code == "44"


def test_every_bad_option_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        settings_with(
            {
                "s": {"translit": "yes", "callback_algorithm": "sha256", "webhook_ips": 5},
                "i": {"timezone": "Mars/Olympus"},
                "l": {"colour": "blue"},
            }
        )
    problems = "\n".join(info.value.problems)
    for expected in (
        "accounts.s.options.translit: must be a whole number",
        "accounts.s.options.callback_algorithm: must be one of",
        "accounts.s.options.webhook_ips: must be a list of strings",
        "accounts.i.options.timezone: not a time zone name",
        "accounts.l.options.colour: unknown option",
    ):
        assert expected in problems, expected
