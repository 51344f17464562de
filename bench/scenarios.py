"""smsq's scenarios, each measured on a :class:`~bench.harness.Stack` with a running worker.

- :func:`bulk`: one job of N recipients, enqueue to every outcome recorded: recipients/s,
  provider requests/s, worker CPU per 1,000 recipients, Redis commands and read events
  (≈ round trips) per chunk, worker memory before and after;
- :func:`otp_at_rate`: single-recipient OTP jobs enqueued at a fixed rate (open loop);
  latency from the producer's enqueue call to the sandbox receiving the request;
- :func:`otp_saturation`: a backlog of OTP jobs, jobs/s from the first enqueue to the last
  request received;
- :func:`otp_during_bulk`: OTP at a fixed rate while a bulk job drains.

Latency is measured across processes with one clock: the producer notes ``time.time()``
just before each enqueue call, the sandbox notes ``time.time()`` as each request arrives
(its request log), and each OTP's text carries its code, which matches the two.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.harness import (
    BULK_TEXT,
    OTP_CODE,
    Stack,
    Worker,
    background_rates,
    numbers,
    otp_text,
    percentiles,
    redis_delta,
    redis_snapshot,
    wait_done,
    wait_queues_empty,
)
from producers.client import send_payload

# Ranges of phone numbers per use, so that no two jobs of a run share recipients.
BULK_OFFSET = 100_000_000
OTP_OFFSET = 800_000_000


class Codes:
    """OTP codes handed out in a run (unique across scenarios)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> int:
        first = self.next
        self.next += n
        return first


CODES = Codes()


def bulk(
    stack: Stack,
    worker: Worker,
    kind: str,
    recipients: int,
    offset: int,
    timeout: float = 900,
    idle_seconds: float = 1.0,
) -> dict[str, Any]:
    sandbox = stack.sandboxes[kind]
    client = stack.smsq
    r = stack.redis()
    idle_job = stack.last_job

    def poll() -> None:
        if idle_job is not None:
            client.status(idle_job)

    background = background_rates(r, poll, idle_seconds)
    sandbox.clear_log()
    rss_idle = worker.rss()
    cpu0, sb_cpu0 = worker.cpu(), sandbox.cpu()
    before = redis_snapshot(r)
    started = time.perf_counter()
    job = client.enqueue_send(
        provider=kind, sender=sandbox.sender, text=BULK_TEXT, recipients=numbers(recipients, offset)
    )
    status = wait_done(client, job, timeout)
    elapsed = time.perf_counter() - started
    after = redis_snapshot(r)
    cpu, sb_cpu = worker.cpu() - cpu0, sandbox.cpu() - sb_cpu0
    rss_after = worker.rss()
    r.close()
    stack.last_job = job
    log = sandbox.requests()
    chunks = int(status["record"].get("chunks", 0)) or 1
    delta = redis_delta(before, after, background)
    arrivals = [e["at"] for e in log]
    span = max(arrivals) - min(arrivals) if len(arrivals) > 1 else 0.0
    commands = sum(delta["calls"].values())
    return {
        "recipients": recipients,
        "chunks": chunks,
        "http_requests": len(log),
        "seconds": round(elapsed, 3),
        "recipients_per_s": round(recipients / elapsed, 1),
        "http_requests_per_s": round(len(log) / elapsed, 1),
        # first to last request the sandbox received: the dispatch phase alone
        "provider_side_recipients_per_s": round(recipients / span, 1) if span else None,
        "cpu_s_per_1000_recipients": round(cpu / recipients * 1000, 4),
        "worker_cpu_share": round(cpu / elapsed, 3),
        "sandbox_cpu_share": round(sb_cpu / elapsed, 3),
        "redis_cpu_share": round(delta["cpu"] / elapsed, 3),
        "redis_commands_per_chunk": round(commands / chunks, 2),
        "redis_round_trips_per_chunk": round(delta["reads"] / chunks, 2),
        "redis_commands_per_chunk_by_name": {
            k: round(v / chunks, 2)
            for k, v in sorted(delta["calls"].items(), key=lambda kv: -kv[1])
            if v / chunks >= 0.01
        },
        "worker_rss_mb_idle": round(rss_idle / 1e6, 1),
        "worker_rss_mb_after": round(rss_after / 1e6, 1),
        "statuses": status["counts"],
    }


def _otp_payload(kind: str, sender: str, code: int) -> dict[str, Any]:
    return send_payload(
        provider=kind,
        sender=sender,
        text=otp_text(code),
        recipients=numbers(1, OTP_OFFSET + code),
        priority="otp",
    )


def _produce(
    stack: Stack,
    kind: str,
    rate: float | None,
    count: int,
    until: Callable[[], bool] | None = None,
    batch: int = 200,
) -> dict[int, float]:
    """Enqueue OTP jobs, ``rate`` a second (None: as fast as possible, ``batch`` per
    call), up to ``count`` of them or until ``until()`` is true; returns each code's
    enqueue time (``time.time()`` just before the call that enqueued it)."""
    client = stack.smsq
    sender = stack.sandboxes[kind].sender
    first = CODES.take(count)
    sent: dict[int, float] = {}
    started = time.perf_counter()
    i = 0
    next_check = started
    while i < count:
        now = time.perf_counter()
        if until is not None and now >= next_check:
            next_check = now + 0.2
            if until():
                break
        if rate is None:
            due = min(count, i + batch)
        else:
            due = min(count, int((now - started) * rate) + 1)
            if due <= i:
                time.sleep(min(0.005, (i / rate) - (now - started)))
                continue
        payloads = [_otp_payload(kind, sender, first + j) for j in range(i, due)]
        at = time.time()
        client.enqueue_many(payloads)
        for j in range(i, due):
            sent[first + j] = at
        i = due
    return sent


def _arrivals(stack: Stack, kind: str, sent: dict[int, float], timeout: float) -> dict[int, float]:
    """The sandbox's arrival time of each code in ``sent`` (waits up to ``timeout``)."""
    sandbox = stack.sandboxes[kind]
    seen: dict[int, float] = {}
    cursor = 0
    deadline = time.monotonic() + timeout
    while True:
        entries = sandbox.requests(cursor)
        cursor += len(entries)
        for e in entries:
            for value in e["params"].values():
                m = OTP_CODE.search(value)
                if m is not None:
                    code = int(m.group(1))
                    if code in sent and code not in seen:
                        seen[code] = e["at"]
        if len(seen) >= len(sent) or time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


def _latency(sent: dict[int, float], seen: dict[int, float]) -> dict[str, Any]:
    lat = [seen[c] - sent[c] for c in seen]
    times = sorted(sent.values())
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    out: dict[str, Any] = {
        "jobs": len(sent),
        "received": len(seen),
        "missing": len(sent) - len(seen),
        "offered_per_s": round((len(sent) - 1) / span, 1) if span else None,
    }
    out.update(percentiles(lat))
    return out


def otp_at_rate(stack: Stack, kind: str, rate: float, seconds: float) -> dict[str, Any]:
    stack.sandboxes[kind].clear_log()
    count = max(2, round(rate * seconds))
    sent = _produce(stack, kind, rate, count)
    seen = _arrivals(stack, kind, sent, timeout=30 + count / 100)
    wait_queues_empty(stack.smsq)
    out = {"rate": rate}
    out.update(_latency(sent, seen))
    return out


def otp_saturation(stack: Stack, kind: str, jobs: int) -> dict[str, Any]:
    """Jobs/s through the OTP path with a backlog (the producer enqueues as fast as it can)."""
    stack.sandboxes[kind].clear_log()
    sent = _produce(stack, kind, None, jobs)
    seen = _arrivals(stack, kind, sent, timeout=60 + jobs / 50)
    wait_queues_empty(stack.smsq)
    out = _latency(sent, seen)
    span = max(seen.values(), default=0.0) - min(sent.values())
    out["jobs_per_s"] = round(len(seen) / span, 1) if span > 0 else None
    return out


def otp_during_bulk(
    stack: Stack, kind: str, rate: float, recipients: int, offset: int
) -> dict[str, Any]:
    """OTP at ``rate`` from the moment a bulk job of ``recipients`` is enqueued until it is done."""
    sandbox = stack.sandboxes[kind]
    client = stack.smsq
    sandbox.clear_log()
    started = time.perf_counter()
    job = client.enqueue_send(
        provider=kind, sender=sandbox.sender, text=BULK_TEXT, recipients=numbers(recipients, offset)
    )
    done_at: list[float] = []

    def bulk_done() -> bool:
        status = client.status(job)
        if status is not None and status.state == "done":
            done_at.append(time.perf_counter())
            return True
        return False

    sent = _produce(stack, kind, rate, count=10**7, until=bulk_done)
    if not done_at:
        wait_done(client, job, 900)
        done_at.append(time.perf_counter())
    seen = _arrivals(stack, kind, sent, timeout=30 + len(sent) / 100)
    wait_queues_empty(client)
    stack.last_job = job
    elapsed = done_at[0] - started
    out: dict[str, Any] = {"rate": rate, "bulk_recipients": recipients}
    out["bulk_seconds"] = round(elapsed, 3)
    out["bulk_recipients_per_s"] = round(recipients / elapsed, 1)
    out.update(_latency(sent, seen))
    return out
