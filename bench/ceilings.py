"""The yardsticks smsq is measured against, on the same sandbox and Redis, in the same run:

- :func:`adapter_alone`: the provider adapter (aiohttp, signing, parsing) sending the
  bulk job's chunks straight to the sandbox, ``concurrency`` requests in flight — what
  smsq could at best reach without its queueing and state;
- the bare client: the requests the adapter makes for the same job (recorded without
  sending them, for other recipients), sent with a plain aiohttp session (no adapter, no
  parsing, no metrics) — what the HTTP stack and the sandbox allow;
- :func:`noop_drain`: a Dramatiq worker (smsq's broker class and settings, same thread
  count) draining a no-op actor's backlog from the same Redis, in a process of its own —
  the most messages per second the queueing itself allows.

``python -m bench.ceilings drain --redis URL --messages N --threads T`` is the drain's
process (started by :func:`noop_drain`); it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.harness import BULK_TEXT, Sandbox, numbers
from worker.providers import provider_spec
from worker.providers.base import SendRequest


@dataclass
class Recorded:
    method: str
    url: str
    params: Mapping[str, str] | None
    data: Any
    headers: Mapping[str, str] | None


class _NotSent(Exception):
    """Raised in place of an answer: the recording session sends nothing."""


class _NoAnswer:
    async def __aenter__(self) -> None:
        raise _NotSent

    async def __aexit__(self, *exc: object) -> None:
        return None


class RecordingSession:
    """Stands in for the adapter's ClientSession: notes every request and sends none of
    them (so the bare client is the first to send them: a provider that refuses a
    duplicate request takes them as new)."""

    def __init__(self) -> None:
        self.recorded: list[Recorded] = []

    def request(self, method: str, url: str, **kwargs: Any) -> _NoAnswer:
        data = kwargs.get("data")
        params = kwargs.get("params")
        self.recorded.append(
            Recorded(
                method,
                url,
                dict(params) if params is not None else None,
                dict(data) if isinstance(data, Mapping) else data,
                kwargs.get("headers"),
            )
        )
        return _NoAnswer()


async def record_requests(sandbox: Sandbox, recipients: int, offset: int) -> list[Recorded]:
    """The requests the adapter makes to send ``recipients`` (none of them sent)."""
    recorder = RecordingSession()
    adapter = provider_spec(sandbox.kind).adapter(sandbox.account(), recorder)  # type: ignore[arg-type]
    for i, chunk in enumerate(_chunks(recipients, adapter.max_batch, offset)):
        request = SendRequest(f"bare:{i}", sandbox.sender, BULK_TEXT, chunk, client_id=i + 1)
        with contextlib.suppress(_NotSent):
            await adapter.send(request)
    return recorder.recorded


def _chunks(recipients: int, size: int, offset: int) -> list[list[str]]:
    phones = numbers(recipients, offset)
    return [phones[i : i + size] for i in range(0, len(phones), size)]


async def _adapter_alone(
    sandbox: Sandbox, recipients: int, concurrency: int, offset: int
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        adapter = provider_spec(sandbox.kind).adapter(sandbox.account(), session)
        chunks = _chunks(recipients, adapter.max_batch, offset)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, chunk: list[str]) -> int:
            async with sem:
                request = SendRequest(
                    f"bench:{i}", sandbox.sender, BULK_TEXT, chunk, client_id=i + 1
                )
                return len(await adapter.send(request))

        cpu0, sb0 = time.process_time(), sandbox.cpu()
        started = time.perf_counter()
        done = sum(await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks))))
        elapsed = time.perf_counter() - started
        cpu, sb = time.process_time() - cpu0, sandbox.cpu() - sb0
    return _figures(done, len(chunks), elapsed, cpu, sb)


def _figures(
    recipients: int, requests: int, elapsed: float, cpu: float, sandbox_cpu: float
) -> dict[str, Any]:
    return {
        "recipients": recipients,
        "http_requests": requests,
        "seconds": round(elapsed, 3),
        "recipients_per_s": round(recipients / elapsed, 1),
        "http_requests_per_s": round(requests / elapsed, 1),
        "cpu_s_per_1000_recipients": round(cpu / recipients * 1000, 4) if recipients else None,
        "sandbox_cpu_share": round(sandbox_cpu / elapsed, 3),
    }


async def _bare_client(
    sandbox: Sandbox, recorded: list[Recorded], concurrency: int, per_request: int
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=200)
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(concurrency)

        async def one(r: Recorded) -> None:
            async with (
                sem,
                session.request(
                    r.method, r.url, params=r.params, data=r.data, headers=r.headers
                ) as resp,
            ):
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

        cpu0, sb0 = time.process_time(), sandbox.cpu()
        started = time.perf_counter()
        await asyncio.gather(*(one(r) for r in recorded))
        elapsed = time.perf_counter() - started
        cpu, sb = time.process_time() - cpu0, sandbox.cpu() - sb0
    # Each replayed request carries the same recipients as the adapter's original.
    out = _figures(per_request, len(recorded), elapsed, cpu, sb)
    out["http_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    return out


def adapter_and_bare(
    sandbox: Sandbox, recipients: int, concurrency: int = 8, offset: int = 500_000_000
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both HTTP ceilings for ``recipients`` sent in the provider's largest chunks."""
    adapter = asyncio.run(_adapter_alone(sandbox, recipients, concurrency, offset))
    recorded = asyncio.run(record_requests(sandbox, recipients, offset + recipients))
    bare = asyncio.run(_bare_client(sandbox, recorded, concurrency, recipients))
    return adapter, bare


# -- the bare Dramatiq drain ----------------------------------------------------------------


def noop_drain(
    redis_url: str, messages: int, threads: int = 8, timeout: float = 300
) -> dict[str, Any]:
    """Messages per second a no-op actor drains from a backlog (its own process)."""
    cmd = [sys.executable, "-m", "bench.ceilings", "drain", "--redis", redis_url]
    cmd += ["--messages", str(messages), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _drain_main(redis_url: str, messages: int, threads: int) -> dict[str, Any]:
    import dramatiq

    from worker.core.broker import build_broker
    from worker.core.config import WorkerSettings

    settings = WorkerSettings()
    broker = build_broker(redis_url, heartbeat_timeout=int(settings.heartbeat_timeout * 1000))
    dramatiq.set_broker(broker)
    queue = "bench-noop"
    lock = threading.Lock()
    seen = {"n": 0, "first": 0.0, "last": 0.0}
    finished = threading.Event()

    @dramatiq.actor(queue_name=queue, max_retries=0)
    def noop(i: int) -> None:
        now = time.perf_counter()
        with lock:
            seen["n"] += 1
            if seen["n"] == 1:
                seen["first"] = now
            seen["last"] = now
            if seen["n"] >= messages:
                finished.set()

    broker.client.delete(f"{broker.namespace}:{queue}", f"{broker.namespace}:{queue}.msgs")
    for i in range(messages):
        noop.send(i)
    cpu0 = time.process_time()
    worker = dramatiq.Worker(broker, worker_threads=threads)
    started = time.perf_counter()
    worker.start()
    ok = finished.wait(timeout=240)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    worker.stop()
    broker.close()
    n = int(seen["n"])
    span = seen["last"] - seen["first"]
    return {
        "messages": n,
        "complete": ok,
        "threads": threads,
        "seconds": round(elapsed, 3),
        # first to last message: the worker's start-up is not the queue's cost
        "messages_per_s": round((n - 1) / span, 1) if span > 0 else None,
        "cpu_s_per_1000_messages": round(cpu / n * 1000, 4) if n else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceilings")
    sub = parser.add_subparsers(dest="command", required=True)
    drain = sub.add_parser("drain")
    drain.add_argument("--redis", required=True)
    drain.add_argument("--messages", type=int, default=20_000)
    drain.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(_drain_main(args.redis, args.messages, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
