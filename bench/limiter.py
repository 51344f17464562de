"""Rate-limit exactness under load: violations, utilisation, Redis round trips per acquire.

    python -m bench.limiter [--seconds 30] [--cap 20] [--window 2] [--processes 4]

Two measurements in one run, each printed in one JSON object:

- ``limiter``: P processes hammer one (account, endpoint) key through
  ``RateLimiter.acquire``; every grant is logged. Round trips per acquire are
  counted exactly (one EVALSHA per ``try_acquire``).
- ``end_to_end``: ``smsq worker --processes P`` with a backlog against the
  Intis sandbox (in its own process), capped at CAP per WINDOW; the sandbox's
  arrival times are the truth.

``violations`` is the number of sliding windows holding more than CAP
requests (must be 0); ``utilisation`` is requests served over what the cap
allows, over the whole windows observed (the ceiling: 1.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from producers import redis_conn
from producers.client import SmsqClient
from worker.devtools.redis_server import RedisServer, free_port
from worker.devtools.sandboxes import sandbox_account, wait_until_serving
from worker.state.limiter import RateLimiter, Rule


def window_stats(times: list[float], cap: int, window: float) -> dict[str, Any]:
    times = sorted(times)
    worst, violations, lo = 0, 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        count = hi - lo + 1
        worst = max(worst, count)
        violations += count > cap
    span = times[-1] - times[0] if times else 0.0
    # Utilisation over the whole windows from the first request: a last window cut short
    # by the end of the run is not held against the limiter.
    windows = max(1, int(span // window))
    served = len([t for t in times if t < times[0] + windows * window]) if times else 0
    allowed = cap * windows
    return {
        "requests": len(times),
        "span_seconds": round(span, 3),
        "max_in_any_window": worst,
        "violations": violations,
        "whole_windows": windows,
        "served_in_whole_windows": served,
        "allowed_by_cap": allowed,
        "utilisation": round(served / allowed, 4) if allowed else 0.0,
    }


def _hammer(url: str, cap: int, window: float, seconds: float, out: Any) -> None:
    async def run() -> tuple[int, int]:
        client = redis_conn.async_client(url)
        limiter = RateLimiter(client, "bench")
        calls = grants = 0
        original = limiter.try_acquire

        async def counting(*args: Any, **kwargs: Any) -> float:
            nonlocal calls
            calls += 1
            return await original(*args, **kwargs)

        limiter.try_acquire = counting  # type: ignore[method-assign]
        deadline = time.time() + seconds
        while time.time() < deadline:
            wait = await limiter.acquire("acct", "send", [Rule(cap, window)], max_wait=seconds)
            if wait == 0.0 and time.time() < deadline:
                grants += 1
                await client.rpush("bench:grants", f"{time.time():.6f}")
        await client.aclose()
        return calls, grants

    out.put(asyncio.run(run()))


def limiter_bench(
    url: str, cap: int, window: float, seconds: float, processes: int
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(url, cap, window, seconds, queue))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    client = redis_conn.sync_client(url)
    times = [float(v) for v in client.lrange("bench:grants", 0, -1)]
    client.close()
    calls = sum(c for c, _ in results)
    grants = sum(g for _, g in results)
    stats = window_stats(times, cap, window)
    stats["round_trips_per_acquire"] = round(calls / grants, 3) if grants else None
    return stats


def end_to_end(url: str, cap: int, window: float, seconds: float, processes: int) -> dict[str, Any]:
    kind = "intis"
    creds = sandbox_account(kind)
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cmd = [
                sys.executable,
                "-m",
                "worker.entry.cli",
                "sandbox",
                kind,
                f"--port={kind}={port}",
            ]
            procs.append(
                subprocess.Popen([*cmd, f"--option={kind}.balance=1e9"], stdout=subprocess.DEVNULL)
            )
            base = f"http://127.0.0.1:{port}"
            wait_until_serving(base + "/__sandbox/faults")
            config = Path(tmp) / "bench.toml"
            config.write_text(
                f'[accounts.capped]\nkind = "{kind}"\nbase_url = "{base}"\nlogin = "{creds["login"]}"\n'
                f'api_key = {{ env = "BENCH_KEY" }}\n'
                f"limits.send = {{ requests = {cap}, per_seconds = {window} }}\n"
            )
            env = {
                **os.environ,
                "SMSQ_CONFIG": str(config),
                "REDIS_URL": url,
                "BENCH_KEY": creds["api_key"],
            }
            worker = [
                sys.executable,
                "-m",
                "worker.entry.cli",
                "worker",
                "--processes",
                str(processes),
                "--threads",
                "4",
                "--metrics-port",
                "0",
            ]
            procs.append(
                subprocess.Popen(
                    worker, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            backlog = int(cap * (seconds / window + 2)) * 50
            client = SmsqClient(url)
            numbers = [f"79{i:09d}" for i in range(backlog)]
            client.enqueue_send(
                provider="capped", sender=creds.get("sender", "smsq"), text="b", recipients=numbers
            )
            time.sleep(seconds)
            with urllib.request.urlopen(base + "/__sandbox/requests", timeout=30) as resp:
                log = json.load(resp)
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    times = [e["at"] for e in log if e["path"].endswith("/send.php")]
    return window_stats(times, cap, window)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    with RedisServer() as server:
        limiter = limiter_bench(server.url, args.cap, args.window, args.seconds, args.processes)
        e2e = end_to_end(server.url, args.cap, args.window, args.seconds, args.processes)
    result = {
        "benchmark": "rate_limits",
        "cap": args.cap,
        "window_seconds": args.window,
        "processes": args.processes,
        "limiter": limiter,
        "end_to_end": e2e,
        "ok": limiter["violations"] == 0 and e2e["violations"] == 0,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
