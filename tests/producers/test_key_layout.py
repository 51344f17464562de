"""One key module: producers/keys.py formats every Redis key smsq writes.

No other Python module formats a ``<prefix>:...`` key. Lua scripts should receive their keys
through KEYS; the scripts below still derive some from the prefix (per-job keys found inside
the script) and are the only ones allowed to: the list may only shrink.
"""

from __future__ import annotations

import re
from pathlib import Path

from producers.keys import DEFAULT_PREFIX, Keys

ROOT = Path(__file__).resolve().parents[2]
PYTHON_KEY = re.compile(r"\{[^}]*prefix\}:|[\"']" + DEFAULT_PREFIX + r":[a-z]")
LUA_KEY = re.compile(r"prefix \.\. \":")

# Scripts that still build keys from the prefix (not yet KEYS-only), by file.
LUA_PREFIX_KEYS = {
    "worker/state/scripts/apply_status.lua",  # the job of each report is found in the script
    "worker/state/scripts/record_chunk.lua",  # shares resend.lua with apply_status.lua
    "worker/state/scripts/resend.lua",
    "producers/client.py",  # cancel: the job's chunk keys
}


def sources() -> list[Path]:
    return [
        p
        for folder in ("worker", "producers")
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".lua")
    ]


def test_no_module_but_keys_formats_a_key() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in sources()
        if p != ROOT / "producers" / "keys.py"
        for m in PYTHON_KEY.finditer(p.read_text())
    ]
    assert offenders == []


def test_lua_scripts_deriving_keys_from_the_prefix_are_the_known_ones() -> None:
    deriving = {str(p.relative_to(ROOT)) for p in sources() if LUA_KEY.search(p.read_text())}
    assert deriving <= LUA_PREFIX_KEYS


def test_the_public_read_model_is_part_of_the_one_layout() -> None:
    keys = Keys("p")
    public = [keys.job("j"), keys.recipients("j"), keys.counts("j"), keys.events, keys.account("a")]
    internal = [keys.rate("a", "send"), keys.in_flight_leases("a"), keys.lock("t", "a")]
    assert all(k.startswith("p:") for k in public + internal)
    assert keys.rate_pause("a", "send") == keys.rate("a", "send") + ":pause"
