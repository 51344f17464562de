"""Leftovers stay gone: every Lua ARGV slot is read, no legacy chunk state or wording,
no unused push-verification helpers beside the one module that does it."""

from __future__ import annotations

import re
from pathlib import Path

from producers.keys import Keys
from worker.pipeline.chunk_state import parse
from worker.providers.intellisoftware import push_formats

ROOT = Path(__file__).resolve().parents[2]


def lua_sources() -> dict[str, str]:
    """Every Lua script: the .lua files and the scripts embedded in Python modules."""
    out = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "worker").rglob("*.lua")}
    for path in (ROOT / "worker").rglob("*.py"):
        for i, script in enumerate(re.findall(r'"""\n(.*?)"""', path.read_text(), re.S)):
            if "redis.call" in script:
                out[f"{path.relative_to(ROOT)}#{i}"] = script
    return out


def test_every_argv_slot_a_script_takes_is_read() -> None:
    for name, source in lua_sources().items():
        code = "\n".join(line.split("--")[0] for line in source.splitlines())
        used = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", code)}
        if used:
            assert used == set(range(1, max(used) + 1)), f"{name}: unused ARGV slots"


def test_no_inflight_chunk_state_or_wording() -> None:
    # Chunk states are claimed / sending / done; ``inflight`` was an older state's name.
    assert parse("inflight:acct") != ("sending", "acct", None)
    assert "inflight" not in (Keys.chunk.__doc__ or "")
    for folder in ("worker", "producers", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".lua", ".md"):
                assert not re.search(r"(``|`)inflight(``|`)", path.read_text()), path


def test_push_verification_lives_in_push_auth_only() -> None:
    assert not hasattr(push_formats, "verify_shared_secret")
    assert not hasattr(push_formats, "verify_source_ip")
