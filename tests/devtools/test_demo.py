"""The README's first command keeps working: `smsq demo` end to end, on its own Redis."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_end_to_end_and_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SMSQ_CONFIG")}
    result = subprocess.run(
        [sys.executable, "-m", "worker.entry.cli", "demo", "--bulk", "200", "--otp", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "embedded Redis" in out
    assert "204/204" in out  # 200 + one impossible number + 3 OTPs, every one final
    assert "delivered" in out and "where to look next" in out
    assert "79000000" not in out  # numbers are masked in the status it prints
