"""One key module: producers/keys.py formats every Redis key smsq writes.

No other Python module formats a ``<prefix>:...`` key, and every Lua script (the files of
worker/state/scripts and the scripts written inline in Python modules) receives its keys
through KEYS only: none builds a key from the prefix or from another key, and each one's
header comment lists its KEYS and ARGV (each KEYS[n] and ARGV[n] a script reads by number
is in its header).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from producers.keys import DEFAULT_PREFIX, Keys

ROOT = Path(__file__).resolve().parents[2]
PYTHON_KEY = re.compile(
    r"\{[^}]*prefix\}:"  # f"{prefix}:..." / f"{self.prefix}:..."
    r"|[\"']" + DEFAULT_PREFIX + r":[a-z]"  # "smsq:..."
    r"|\{[^}]*key\}:[a-z{]"  # f"{key}:claim:..." (a key derived from another)
    r"|\+\s*\":[a-z]"  # key + ":pause"
)
# Lua building a key: the prefix concatenated, a string ending in ":"-parts appended to a
# value (``x .. ":job:"``, ``KEYS[1] .. ":index"``), or smsq's prefix written out.
LUA_KEY = re.compile(r"\bprefix\b\s*\.\.|\.\.\s*\"[^\"\n]*:|\"" + DEFAULT_PREFIX + r":")
INDEXED = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
DOCUMENTED = re.compile(r"\b(KEYS|ARGV)\[(\d+)(\s*\.\.[^\]]*)?\]")
INLINE = re.compile(r'^(\w+) = """\n(.*?)"""', re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Script:
    name: str  # the .lua file, or "<module>:<NAME>" for a script written inline
    text: str

    @property
    def header(self) -> str:
        """The comment lines before the first line of code."""
        lines = []
        for line in self.text.splitlines():
            if line.strip().startswith("--"):
                lines.append(line)
            elif line.strip():
                break
        return "\n".join(lines)

    @property
    def code(self) -> str:
        return "\n".join(line.split("--", 1)[0] for line in self.text.splitlines())


def sources() -> list[Path]:
    return [
        p
        for folder in ("worker", "producers")
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".lua")
    ]


def scripts() -> list[Script]:
    found = []
    for p in sources():
        name = str(p.relative_to(ROOT))
        if p.suffix == ".lua":
            found.append(Script(name, p.read_text()))
            continue
        for m in INLINE.finditer(p.read_text()):
            if "redis.call" in m.group(2):
                found.append(Script(f"{name}:{m.group(1)}", m.group(2)))
    return found


def test_no_module_but_keys_formats_a_key() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in sources()
        if p != ROOT / "producers" / "keys.py"
        for m in PYTHON_KEY.finditer(p.read_text())
    ]
    assert offenders == []


def test_every_script_is_found() -> None:
    names = {s.name for s in scripts()}
    assert {
        "worker/state/scripts/apply_status.lua",
        "worker/state/scripts/record_chunk.lua",
        "worker/state/scripts/resend.lua",
        "producers/client.py:CANCEL_SCRIPT",
        "worker/tracking/inbound.py:_RECORD_HLR",
        "worker/tracking/inbound.py:_STORE_INCOMING",
        "worker/tracking/status_polls.py:_NOTE_UNKNOWN",
        "worker/state/lease.py:RENEW",
    } <= names


def test_the_key_building_check_sees_what_it_must() -> None:
    built = [
        'local base = prefix .. ":job:" .. job',
        'local hkey = ARGV[1] .. ":job:" .. job .. ":hlr"',
        'redis.call("ZADD", KEYS[1] .. ":index", 1, "x")',
        'redis.call("GET", "smsq:events")',
    ]
    assert all(LUA_KEY.search(Script("t", line).code) for line in built)
    fine = [
        'redis.call("ZADD", resend_key, t, job .. "|" .. phone .. "|" .. n)',
        'local ckey = account .. "|" .. (currency or "")',
        'string.match(v, ":([^:]+)$")',
        '-- a comment about prefix .. ":job:"',
    ]
    assert not any(LUA_KEY.search(Script("t", line).code) for line in fine)


def test_no_script_builds_a_key() -> None:
    building = {s.name for s in scripts() if LUA_KEY.search(s.code)}
    assert building == set()


def test_every_script_lists_its_keys_and_arguments_in_a_header() -> None:
    problems = []
    for s in scripts():
        header = s.header
        if "KEYS" not in header or "ARGV" not in header:
            problems.append(f"{s.name}: no KEYS/ARGV header")
            continue
        documented: dict[str, list[tuple[int, bool]]] = {"KEYS": [], "ARGV": []}
        for kind, index, span in DOCUMENTED.findall(header):
            documented[kind].append((int(index), bool(span)))
        for kind, index in sorted(set(INDEXED.findall(s.code))):
            n = int(index)
            if not any(i == n or (span and i <= n) for i, span in documented[kind]):
                problems.append(f"{s.name}: {kind}[{n}] used but not in its header")
    assert problems == []


def test_the_public_read_model_is_part_of_the_one_layout() -> None:
    keys = Keys("p")
    public = [keys.job("j"), keys.recipients("j"), keys.counts("j"), keys.events, keys.account("a")]
    internal = [keys.rate("a", "send"), keys.in_flight_leases("a"), keys.lock("t", "a")]
    assert all(k.startswith("p:") for k in public + internal)
    assert keys.rate_pause("a", "send") == keys.rate("a", "send") + ":pause"
    assert keys.incoming_index("a") == keys.incoming_messages("a") + ":index"
    assert keys.resend_claim("j|1|2") == keys.resend + ":claim:j|1|2"
