"""The benchmark harness runs and writes the document docs/performance.md describes.

Its smallest size (a few hundred recipients, a second of OTP per rate) checks the shape
of the JSON, never the speed: speed is the benchmark's own business (``make bench``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.harness import percentiles
from bench.limiter import window_stats

ROOT = Path(__file__).resolve().parents[2]

PERCENTILES = {"p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}


def test_smallest_run_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "bench", "--size", "smoke", "--only", "bulk", "otp", "otp_bulk"]
    cmd += ["--providers", "intis", "--no-plot", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert json.loads(done.stdout) == doc

    assert doc["size"] == "smoke" and doc["machine"]["cpus"] >= 1
    http = doc["ceilings"]["http"]["intis"]
    for ceiling in (http["adapter_alone"], http["bare_client"]):
        assert ceiling["recipients"] == doc["settings"]["bulk_recipients"]
        assert ceiling["recipients_per_s"] > 0 and ceiling["http_requests"] > 0
    assert set(http["bare_client"]["http_statuses"]) == {"200"}
    assert doc["ceilings"]["dramatiq_noop_drain"]["complete"] is True

    bulk = doc["bulk"]["intis"]
    smsq = bulk["smsq"]
    assert smsq["recipients"] == doc["settings"]["bulk_recipients"]
    # Every recipient reached the sandbox and has its outcome recorded.
    assert sum(smsq["statuses"].values()) == smsq["recipients"]
    assert smsq["http_requests"] == smsq["chunks"] == -(-smsq["recipients"] // 50)
    assert smsq["redis_commands_per_chunk"] > 0 and smsq["redis_round_trips_per_chunk"] > 0
    assert smsq["cpu_s_per_1000_recipients"] > 0 and smsq["worker_rss_mb_idle"] > 0
    assert bulk["ratio_to_adapter_alone"] > 0 and bulk["ratio_to_bare_client"] > 0

    otp = doc["otp"]
    assert [r["rate"] for r in otp["rates"]] == [2, 100, 500, 1000]
    for row in [*otp["rates"], otp["saturation"], otp["during_bulk"]]:
        assert row["missing"] == 0 and row["received"] == row["jobs"] > 0
        assert set(row) >= PERCENTILES and row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert otp["saturation"]["jobs_per_s"] > 0
    assert otp["saturation"]["ratio_to_drain_messages_per_s"] > 0

    names = [t["target"] for t in doc["targets"]]
    assert "bulk_ratio_to_adapter[intis] >= 0.7" in names
    assert "otp_p99_ms[100/s] <= 50" in names
    assert all(isinstance(t["pass"], bool) for t in doc["targets"])
    assert doc["summary"]["targets_checked"] == len(doc["targets"])


def test_percentiles_by_nearest_rank() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = percentiles(values)
    assert (p["p50_ms"], p["p95_ms"], p["p99_ms"], p["max_ms"]) == (50.0, 95.0, 99.0, 100.0)
    assert percentiles([])["p99_ms"] is None


def test_window_stats_counts_windows_over_the_cap() -> None:
    # 3 per second allowed: a 4th request inside one second is a violation.
    ok = window_stats([0.0, 0.1, 0.2, 1.05, 1.1, 1.2, 2.1], cap=3, window=1.0)
    assert ok["violations"] == 0 and ok["max_in_any_window"] == 3
    bad = window_stats([0.0, 0.1, 0.2, 0.9], cap=3, window=1.0)
    assert bad["violations"] == 1 and bad["max_in_any_window"] == 4
