"""Rate-limit exactness under load: violations, utilisation, Redis round trips per acquire.

    python -m bench.limiter [--seconds 30] [--cap 20] [--window 2] [--processes 4]

Two measurements in one run, each printed in one JSON object:

- ``limiter``: P processes hammer one (account, endpoint) key through
  ``RateLimiter.acquire``; every grant is logged. ``round_trips_per_acquire``: requests
  written to Redis (a pipeline counts once) per ``try_acquire`` call, counted in the
  client; ``tries_per_grant``: calls per permit granted (above 1 when processes contend
  for a freed permit).
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
import sys
import time
from typing import Any

from bench.harness import Account, Stack, numbers
from producers import redis_conn
from worker.devtools.redis_server import RedisServer
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
    from redis.asyncio.connection import AbstractConnection

    sends = 0  # requests written to Redis (a pipeline is one) while a try is in progress
    trying = False
    send = AbstractConnection.send_packed_command

    async def counted_send(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        if trying:
            sends += 1
        await send(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]

    async def run() -> tuple[int, int, int]:
        nonlocal trying
        client = redis_conn.async_client(url)
        limiter = RateLimiter(client, "bench")
        calls = grants = 0
        first_sends = 0
        original = limiter.try_acquire

        async def counting(*args: Any, **kwargs: Any) -> float:
            nonlocal calls, trying, first_sends
            calls += 1
            trying = True
            try:
                return await original(*args, **kwargs)
            finally:
                trying = False
                if calls == 1:  # the connection's set-up and the script's loading
                    first_sends = sends

        limiter.try_acquire = counting  # type: ignore[method-assign]
        deadline = time.time() + seconds
        while time.time() < deadline:
            wait = await limiter.acquire("acct", "send", [Rule(cap, window)], max_wait=seconds)
            if wait == 0.0 and time.time() < deadline:
                grants += 1
                await client.rpush("bench:grants", f"{time.time():.6f}")
        await client.aclose()
        return calls, grants, sends - first_sends

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
    calls = sum(c for c, _, _ in results)
    grants = sum(g for _, g, _ in results)
    sends = sum(s for _, _, s in results)
    stats = window_stats(times, cap, window)
    # Tries per grant: above 1 when processes contend for the same freed permit.
    stats["tries_per_grant"] = round(calls / grants, 3) if grants else None
    # Requests written to Redis per try (each process's first try, which opens the
    # connection and loads the script, left out).
    tries = calls - len(results)
    stats["round_trips_per_acquire"] = round(sends / tries, 3) if tries > 0 else None
    return stats


def end_to_end(cap: int, window: float, seconds: float, processes: int) -> dict[str, Any]:
    """A capped Intis account, a backlog far above the cap, ``seconds`` of sending
    (a Redis, sandbox and worker of its own: the backlog is thrown away with them)."""
    with Stack(["intis"]) as stack:
        sandbox = stack.sandboxes["intis"]
        capped = Account("capped", sandbox, limits={"send": (cap, window)})
        with stack.worker(processes=processes, threads=4, accounts=[capped]):
            sandbox.clear_log()
            backlog = int(cap * (seconds / window + 2)) * 50
            stack.smsq.enqueue_send(
                provider="capped", sender=sandbox.sender, text="b", recipients=numbers(backlog, 0)
            )
            time.sleep(seconds)
            log = sandbox.requests()
    times = [e["at"] for e in log if e["path"].endswith("/send.php")]
    return window_stats(times, cap, window)


def run(cap: int, window: float, seconds: float, processes: int) -> dict[str, Any]:
    with RedisServer() as server:
        limiter = limiter_bench(server.url, cap, window, seconds, processes)
    e2e = end_to_end(cap, window, seconds, processes)
    return {
        "benchmark": "rate_limits",
        "cap": cap,
        "window_seconds": window,
        "processes": processes,
        "limiter": limiter,
        "end_to_end": e2e,
        "ok": limiter["violations"] == 0 and e2e["violations"] == 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    result = run(args.cap, args.window, args.seconds, args.processes)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
