"""Bulk dispatch throughput: smsq end to end against a bare adapter ceiling, same sandbox, same run.

    python -m bench.dispatch [--provider intis] [--recipients 20000] [--concurrency 8]

Starts an embedded Redis, the provider's sandbox (its own process) and one
worker process; then measures

- ``ceiling``: the provider adapter alone (aiohttp, signing, parsing) sending
  the same chunks to the same sandbox with the worker's concurrency — what
  smsq could at best reach on this machine;
- ``smsq``: a job of N recipients enqueued through the client, until every
  recipient has its outcome recorded (queueing, Redis state, Dramatiq).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis

from producers.client import SmsqClient
from worker.devtools.redis_server import RedisServer, free_port
from worker.devtools.sandboxes import sandbox_account, wait_until_serving
from worker.providers import provider_spec
from worker.providers.base import AccountConfig, SendRequest

TEXT = "Your December statement is ready."
SENDER = "smsq"


def numbers(n: int, offset: int) -> list[str]:
    return [f"79{offset + i:09d}" for i in range(n)]


async def ceiling(account: AccountConfig, recipients: int, concurrency: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        adapter = provider_spec(account.kind).adapter(account, session)
        size = adapter.max_batch
        phones = numbers(recipients, 500_000_000)
        chunks = [phones[i : i + size] for i in range(0, len(phones), size)]
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, chunk: list[str]) -> int:
            async with sem:
                request = SendRequest(f"bench:{i}", SENDER, TEXT, chunk, client_id=i + 1)
                out = await adapter.send(request)
                return len(out)

        started = time.perf_counter()
        done = sum(await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks))))
        elapsed = time.perf_counter() - started
    return {
        "recipients": done,
        "http_requests": len(chunks),
        "seconds": round(elapsed, 3),
        "recipients_per_s": round(done / elapsed, 1),
    }


def command_stats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", default="intis")
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    kind = args.provider
    creds = sandbox_account(kind)
    global SENDER
    SENDER = creds.get("sender", SENDER)
    procs: list[subprocess.Popen[bytes]] = []
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        try:
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "worker.entry.cli",
                        "sandbox",
                        kind,
                        f"--port={kind}={port}",
                        f"--option={kind}.balance=1000000000",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(url + "/__sandbox/faults")
            account = AccountConfig(
                name="bench",
                kind=kind,
                base_url=url,
                login=creds.get("login", ""),
                password=creds.get("password", ""),
                api_key=creds.get("api_key", ""),
            )
            bare = asyncio.run(ceiling(account, args.recipients, args.concurrency))

            config = Path(tmp) / "bench.toml"
            secrets = {
                f"BENCH_{k.upper()}": v for k, v in creds.items() if k in ("password", "api_key")
            }
            lines = [
                f'[accounts.bench]\nkind = "{kind}"\nbase_url = "{url}"\nlogin = "{creds.get("login", "")}"'
            ]
            lines += [
                f'{k} = {{ env = "BENCH_{k.upper()}" }}'
                for k in creds
                if k in ("password", "api_key")
            ]
            config.write_text("\n".join(lines) + "\n")
            env = {**os.environ, **secrets, "SMSQ_CONFIG": str(config), "REDIS_URL": server.url}
            worker_cmd = [sys.executable, "-m", "worker.entry.cli", "worker", "--processes", "1"]
            worker_cmd += ["--threads", str(args.concurrency), "--metrics-port", "0"]
            procs.append(
                subprocess.Popen(
                    worker_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            client = SmsqClient(server.url)
            warm = client.enqueue_send(
                provider="bench", sender=SENDER, text=TEXT, recipients=numbers(10, 0)
            )
            _wait_done(client, warm, 60)
            before = command_stats(client.redis)
            started = time.perf_counter()
            job = client.enqueue_send(
                provider="bench",
                sender=SENDER,
                text=TEXT,
                recipients=numbers(args.recipients, 1000),
            )
            status = _wait_done(client, job, 600)
            elapsed = time.perf_counter() - started
            after = command_stats(client.redis)
            chunks = int(status["chunks"])
            per_chunk = {
                k: round((after.get(k, 0) - before.get(k, 0)) / chunks, 2)
                for k in sorted(after)
                if after.get(k, 0) - before.get(k, 0) > 0 and k not in ("info",)
            }
            smsq = {
                "recipients": args.recipients,
                "chunks": chunks,
                "seconds": round(elapsed, 3),
                "recipients_per_s": round(args.recipients / elapsed, 1),
                "redis_commands_per_chunk": per_chunk,
            }
            print(
                json.dumps(
                    {
                        "benchmark": "bulk_dispatch",
                        "provider": kind,
                        "concurrency": args.concurrency,
                        "ceiling_adapter_only": bare,
                        "smsq": smsq,
                        "smsq_vs_ceiling": round(
                            smsq["recipients_per_s"] / bare["recipients_per_s"], 3
                        ),
                    },
                    indent=2,
                )
            )
            return 0
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()


def _wait_done(client: SmsqClient, job_id: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status(job_id)
        if status is not None and status.state == "done":
            return dict(status.record)
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} not done within {timeout}s")


if __name__ == "__main__":
    sys.exit(main())
