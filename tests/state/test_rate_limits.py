"""Rate limits hold across worker processes, as the provider sees them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from producers.client import SmsqClient
from tests.support.limits import max_in_window
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from worker.devtools.sandboxes import sandbox_account

CAP, WINDOW = 10, 2.0


def _sends(sandboxes: SandboxThread) -> list[float]:
    return [e.at for e in sandboxes.log("intis") if e.path.endswith("/send.php")]


def test_four_worker_processes_respect_the_cap_and_use_it(
    redis_url: str, tmp_path: Path, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"], intis={"balance": "10000000"})
    creds = sandbox_account("intis")
    config = tmp_path / "smsq.toml"
    config.write_text(
        f"""
[redis]
url = "{redis_url}"

[accounts.capped]
kind = "intis"
base_url = "{sandboxes.url("intis")}"
login = "{creds["login"]}"
api_key = {{ env = "RL_TEST_KEY" }}
limits.send = {{ requests = {CAP}, per_seconds = {WINDOW} }}
"""
    )
    env = {**os.environ, "SMSQ_CONFIG": str(config), "RL_TEST_KEY": creds["api_key"]}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.entry.cli",
            "worker",
            "--processes",
            "4",
            "--threads",
            "4",
            "--metrics-port",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = SmsqClient(redis_url)
        numbers = [f"+7922{i:07d}" for i in range(50 * 200)]  # a backlog of 200 requests
        client.enqueue_send(provider="capped", sender="smstest", text="capped", recipients=numbers)
        # Measure from the first request, however long the processes took to start.
        started = time.monotonic()
        while not _sends(sandboxes) and time.monotonic() - started < 60:
            time.sleep(0.05)
        time.sleep(10)
        stopped_at = time.time()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    arrivals = sorted(_sends(sandboxes))
    assert len(arrivals) > 3 * CAP
    worst = max_in_window(arrivals, WINDOW)
    assert worst <= CAP
    # Utilisation over the whole windows that elapsed before the workers were stopped.
    windows = int((stopped_at - arrivals[0]) // WINDOW)
    served = len([t for t in arrivals if t < arrivals[0] + windows * WINDOW])
    print(
        f"\n{served} requests in {windows} windows of {WINDOW}s (cap {CAP}); max in any window: {worst}"
    )
    assert served >= 0.98 * CAP * windows, (served, CAP * windows)


def test_default_limits_come_from_the_provider_and_config_replaces_them(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    settings = sandbox_settings(redis_url, sandboxes)
    limits = settings.limits_for("intis-sandbox")
    assert limits.max_in_flight == 0
    assert all(r.limit >= 1 for rules in limits.rules.values() for r in rules)
