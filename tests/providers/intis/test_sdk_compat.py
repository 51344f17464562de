"""Intis's own Python SDK (``intis==0.2`` from PyPI) against our sandbox.

The SDK is installed into a throwaway venv and driven by a script run with that
venv's python, so nothing of it enters smsq's environment. Skipped, with the
reason, when the venv or the install is not possible (no network, no index).
Set ``SMSQ_INTIS_SDK_PYTHON`` to a python that already has ``intis==0.2`` to
skip the install.

What the SDK taught us (kept true by the assertions below):

- it points at another host with ``IntisClient(login, key, host=".../external/get/")``;
- it fetches ``timestamp.php`` before every call and signs with its body as is
  (so that body must be bare digits), then sends everything by GET with
  ``return=json``; the signature is the same md5 algorithm as ours;
- it cannot read the doc's flat ``status.php`` answer (IndexError): it needs
  ``{"<id>": {"status": …, "time": "YYYY-MM-DD HH:MM:SS"}}``;
- its other models expect shapes that differ from the doc's examples
  (find_on_stop keyed by entry id, templates keyed by id with the name inside,
  stat_by_month as a list of days, operator without ``"error": 0``), which the
  sandbox answers with ``dialect="sdk"`` and our adapter parses either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from worker.providers.intis.sandbox import DEFAULT_API_KEY, create_sandbox
from worker.providers.sandbox_kit import OutcomeMix, RunningSandbox, SandboxState, serve

SDK_REQUIREMENT = "intis==0.2"

SDK_SCRIPT = r"""
import datetime, json, sys
from intis import IntisClient, IntisApiError

host, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = IntisClient("testuser", key, host=host)
out = {}

def attempt(name, call):
    try:
        return call()
    except IntisApiError as exc:
        out[name] = {"api_error": exc.code}
    except Exception as exc:
        out[name] = {"exception": type(exc).__name__}
    return None

if mode == "core":
    balance = client.get_balance()
    out["balance"] = [balance.money, balance.currency]
    sent = client.message_send(["79161234567", "79161234568", "123"], "smstest", "Hello SDK")
    out["send"] = sorted(
        [m.phone, str(m.error), m.id_sms, m.cost, m.count_sms] for m in sent
    )
    ids = [str(m.id_sms) for m in sent if str(m.error) == "0"]
    out["ids"] = ids
    statuses = client.get_message_status(ids)
    out["status"] = sorted(
        [s.id, s.status, isinstance(s.time, datetime.datetime)] for s in statuses
    )
    out["balance_after"] = client.get_balance().money
    attempt("bad_key", lambda: IntisClient("testuser", "wrong", host=host).get_balance())
elif mode == "flat_status":
    sent = client.message_send(["79161234567"], "smstest", "Hello SDK")
    attempt("status", lambda: client.get_message_status([str(m.id_sms) for m in sent]))
else:  # every other SDK call
    today = datetime.datetime.utcnow()
    day = today.strftime("%Y-%m-%d")
    client.message_send(["79161234569"], "smstest", "for the statistics")
    calls = {
        "senders": lambda: [(s.sender, s.state) for s in client.get_senders()],
        "bases": lambda: [(b.id, b.name, b.count) for b in client.get_phone_bases()],
        "base_numbers": lambda: [n.phone for n in client.get_phone_base_numbers(125448)],
        "stop_miss": lambda: client.find_in_stop_list("79160000001"),
        "stop_add": lambda: client.add_to_stop_list("79160000001"),
        "stop_hit": lambda: client.find_in_stop_list("79160000001").description,
        "template_add": lambda: client.add_template("greeting", "Hello!"),
        "templates": lambda: [(t.id, t.name, t.template) for t in client.get_templates()],
        "template_delete": lambda: client.delete_template("greeting"),
        "stats": lambda: [
            (str(s.date.date()), sorted((d.status, d.parts) for d in s.stats))
            for s in client.get_statistic_on_month(today.year, today.month)
        ],
        "hlr": lambda: [(h.destination, h.stat) for h in client.make_hlr_request(["79161234567"])],
        "hlr_stat": lambda: [h.phone for h in client.get_hlr_statistic(day, day)],
        "operator": lambda: client.get_network_by_phone("79161234567").operator,
        "inbox": lambda: [(m.id, m.text) for m in client.get_inbox_messages(day)],
        "prices": lambda: sorted(p.id for p in client.get_prices()),
    }
    for name, call in calls.items():
        result = attempt(name, call)
        if name not in out:
            out[name] = {"ok": result}
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A python with intis==0.2 installed in a throwaway venv (or skip, saying why)."""
    preset = os.environ.get("SMSQ_INTIS_SDK_PYTHON")
    if preset:
        return Path(preset)
    venv = tmp_path_factory.mktemp("intis-sdk") / "venv"
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot create a throwaway venv for the Intis SDK: {exc}")
    python = venv / "bin" / "python"
    try:
        result = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--timeout",
                "15",
                "--retries",
                "1",
                SDK_REQUIREMENT,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot install {SDK_REQUIREMENT} (no network?): {exc}")
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        pytest.skip(f"cannot install {SDK_REQUIREMENT} (no network or package index?): {tail[0]}")
    return python


RunSdk = Callable[..., Awaitable[tuple[dict[str, Any], RunningSandbox]]]


@pytest.fixture
async def run_sdk(sdk_python: Path) -> AsyncIterator[RunSdk]:
    """Run the SDK script in ``mode`` against a fresh sandbox (options as create_sandbox)."""
    running: list[RunningSandbox] = []

    async def run(mode: str, **options: Any) -> tuple[dict[str, Any], RunningSandbox]:
        state = SandboxState(OutcomeMix(final_after=0.0, seed=8))
        sandbox = await serve(create_sandbox(state, **options))
        running.append(sandbox)
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        proc = await asyncio.create_subprocess_exec(
            str(sdk_python),
            "-c",
            SDK_SCRIPT,
            f"{sandbox.url}/external/get/",
            DEFAULT_API_KEY,
            mode,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        return json.loads(out), sandbox

    yield run
    for sandbox in running:
        await sandbox.stop()


async def test_sdk_send_status_balance(run_sdk: RunSdk) -> None:
    out, sandbox = await run_sdk("core", dialect="sdk")
    assert out["balance"] == [1000.0, "RUR"]
    invalid, first, second = out["send"]  # sorted by phone
    assert invalid == ["123", "16", None, None, None]
    for phone, (p, error, id_sms, cost, parts) in zip(
        ("79161234567", "79161234568"), (first, second), strict=True
    ):
        assert (p, error, cost, parts) == (phone, "0", 0.5, 1)
        assert len(str(id_sms)) == 22
    assert sorted(out["ids"]) == sorted(sandbox.state.messages)
    assert len(out["status"]) == 2
    for message_id, word, has_time in out["status"]:
        assert message_id in sandbox.state.messages
        assert word in {"deliver", "not_deliver", "expired"} and has_time
    assert out["balance_after"] == 999.0
    assert out["bad_key"] == {"api_error": 6}
    # The SDK signs with a timestamp it fetched from timestamp.php, by GET.
    log = sandbox.state.log.entries
    assert len([e for e in log if e.path.endswith("/timestamp.php")]) == 5
    signed = [e for e in log if not e.path.endswith("/timestamp.php")]
    assert {e.method for e in signed} == {"GET"} and {e.params["return"] for e in signed} == {
        "json"
    }
    assert abs(int(signed[0].params["timestamp"]) - time.time()) < 60


async def test_sdk_cannot_read_the_docs_flat_status(run_sdk: RunSdk) -> None:
    """A real difference: the doc's {"<id>": "deliver"} crashes the SDK's model."""
    out, _ = await run_sdk("flat_status", dialect="doc")
    assert out["status"] == {"exception": "IndexError"}


async def test_sdk_other_calls_on_the_sdk_dialect(run_sdk: RunSdk) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    out, _ = await run_sdk(
        "others",
        dialect="sdk",
        incoming=[
            {"id": "5597", "date": f"{today} 05:47:24", "sender": "1", "prefix": "", "text": "hi"}
        ],
    )
    assert out.pop("stop_miss") == {"api_error": 19}  # {} is the SDK's "Empty response"
    failures = {name: r for name, r in out.items() if "ok" not in r}
    assert failures == {}
    ok = {name: r["ok"] for name, r in out.items()}
    assert ok["senders"] == [["smstest", "completed"], ["smstest2", "completed"]]
    assert ok["base_numbers"] == ["79687931116", "79874617237", "79871846995"]
    assert ok["stop_hit"] == "added via API"
    assert ok["templates"] == [[int(ok["template_add"]), "greeting", "Hello!"]]
    assert ok["template_delete"] == "deleted"
    ((day, stats),) = ok["stats"]
    assert day == today and sum(parts for _, parts in stats) == 1
    assert ok["hlr"] == [["79161234567", "DELIVRD"]] and ok["hlr_stat"] == ["79161234567"]
    assert ok["operator"] == "MTS (Mobile TeleSystems)"
    assert ok["inbox"] == [[5597, "hi"]]
    assert ok["prices"] == [25001, 25002, 25020, 25099]
