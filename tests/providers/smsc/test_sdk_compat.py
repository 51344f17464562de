"""The third-party ``smsc`` SDK (PyPI smsc==0.1.1, requests-based) against our sandbox.

What the SDK does on the wire (read from its source): GET ``/sys/send.php`` with
``login, psw, fmt=3, sender, cost=2|1, phones, mes, charset=utf-8``; GET ``status.php``
with ``all=2`` and the list form (trailing comma) — it requires a JSON array whose
items carry ``status``, ``status_name``, ``last_date``, ``send_date``,
``last_timestamp`` and ``send_timestamp`` (it ``del``s them; a missing key is a
KeyError); GET ``balance.php`` with ``cur=1`` (reads ``balance``, optional ``credit``,
``currency``). Its host is the class attribute ``SMSC._url`` (no constructor
option), so the script sets it. It calls ``logging.basicConfig(level=DEBUG)`` at
import, which makes urllib3 log full URLs with ``psw``: the script turns that down.

Skipped, with the reason, when a throwaway venv cannot install the package
(no network / index).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from worker.providers.sandbox_kit import OutcomeMix, RunningSandbox, SandboxState, serve
from worker.providers.smsc.sandbox import create_sandbox

SDK = "smsc==0.1.1"

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time
    from smsc.api import SMSC
    from smsc.messages import SMSMessage

    logging.getLogger().setLevel(logging.WARNING)  # the SDK's DEBUG logs print psw
    SMSC._url = sys.argv[1].rstrip("/") + "/sys/"
    client = SMSC(login="testuser", password="testpass", sender="MyShop")
    out = {}
    sent = client.send(to=["79161234567", "447400123123"], message=SMSMessage(text="Привет, мир"))
    assert sent.error is None, sent.error
    out["send"] = {"id": sent.message_id, "count": sent.count, "cost": sent.cost}
    cost = client.get_cost(to="79161234567", message=SMSMessage(text="x" * 200))
    assert cost.error is None, cost.error
    out["cost"] = {"count": cost.count, "cost": cost.cost}
    first = client.get_status(to="79161234567", msg_id=str(sent.message_id))
    time.sleep(float(sys.argv[2]))
    both = client.get_status(
        to=["79161234567", "447400123123"], msg_id=[str(sent.message_id)] * 2
    )
    out["status"] = [first[0].status.status_id] + [s.status.status_id for s in both]
    out["status_name"] = both[0].status.name
    out["status_data"] = {k: str(v) for k, v in both[0].data.items()}
    balance = client.get_balance()
    assert balance.error is None, balance.error
    out["balance"] = {"balance": balance.balance, "currency": balance.currency}
    bad = SMSC(login="testuser", password="wrong").get_balance()
    out["bad_login"] = list(bad.error) if bad.error else None
    print(json.dumps(out, ensure_ascii=False))
    """
)


async def run(*args: str, timeout: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", "timed out"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway venv with the SDK installed (module scoped: installed once)."""
    venv = tmp_path_factory.mktemp("smsc-sdk") / "venv"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", SDK],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot install {SDK} in a throwaway venv: {exc}")
        if done.returncode != 0:
            pytest.skip(f"cannot install {SDK} in a throwaway venv: {done.stderr.strip()[-300:]}")
    return venv / "bin" / "python"


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    mix = OutcomeMix(delivered=1.0, undeliverable=0.0, expired=0.0, final_after=0.5, seed=2)
    running = await serve(create_sandbox(SandboxState(mix)))  # SMSC's caps on
    yield running
    await running.stop()


async def test_sdk_send_status_balance(
    sdk_python: Path, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    script = tmp_path / "sdk_client.py"
    script.write_text(SCRIPT, encoding="utf-8")
    code, out, err = await run(str(sdk_python), str(script), sandbox.url, "0.6", timeout=60)
    assert code == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["send"] == {"id": 1, "count": 2, "cost": 3.0}
    assert result["cost"] == {"count": 2, "cost": 3.0}  # 200 GSM-7 chars: 2 parts
    assert result["status"] == [-1, 1, 1]
    assert result["status_name"] == "Доставлено"
    assert result["status_data"]["sender_id"] == "MyShop"
    assert result["status_data"]["operator"]  # all=2 adds country / operator / region
    assert result["balance"] == {"balance": 997.0, "currency": "RUB"}
    assert result["bad_login"][0] == 2
    sends = sandbox.state.log.for_path("send.php")
    assert [e.params["cost"] for e in sends] == ["2", "1"]
    assert sends[0].params["mes"] == "Привет, мир"  # utf-8 with charset=utf-8
    statuses = sandbox.state.log.for_path("status.php")
    assert statuses[0].params["id"] == "1," and statuses[0].params["all"] == "2"
