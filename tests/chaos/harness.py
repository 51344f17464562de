"""What the chaos experiments share: a private Redis that can be stopped and brought back,
a sandbox whose request log says what the provider accepted, and the checks made after
every experiment (nothing lost, nothing sent twice, settled within the bound)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from producers.client import SmsqClient
from producers.status import FINAL_STATUSES
from tests.conftest import SandboxThread
from tests.test_dispatch import _set_faults
from tests.test_providers_bulk import accepted_phones

FINAL = {s.value for s in FINAL_STATUSES}
SETTLED = FINAL | {"submitted", "unknown"}  # dispatched: nothing left for a worker to do
TOOK = {"submitted", "unknown", "delivered", "undeliverable", "expired"}  # may be at the provider


def numbers(n: int, block: int = 0) -> list[str]:
    """``n`` valid Russian mobile numbers (libphonenumber accepts them)."""
    return [f"+7916{block:02d}{i:05d}" for i in range(n)]


def wait_for(redis_url: str, timeout: float = 60.0) -> None:
    """Wait until Redis answers again (a restart)."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@dataclass
class Outcome:
    """What an experiment left behind."""

    counts: Counter[str] = field(default_factory=Counter)
    lost: int = 0  # recipients still queued (or missing) when the wait ended
    twice: int = 0  # numbers the provider accepted more than once
    accepted: int = 0  # numbers the provider accepted
    unrecorded: int = 0  # numbers the provider accepted that smsq does not show as sent
    settle_seconds: float = 0.0  # from the last fault until nothing was left queued


def progress(client: SmsqClient, job_ids: Iterable[str]) -> Counter[str]:
    total: Counter[str] = Counter()
    for job_id in job_ids:
        status = client.status(job_id)
        if status is not None:
            total.update(status.counts)
    return total


def wait_dispatched(client: SmsqClient, job_ids: list[str], expected: int, timeout: float) -> float:
    """Seconds until every recipient of the jobs left ``queued`` (or the timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            counts = progress(client, job_ids)
        except redis.RedisError:
            time.sleep(0.1)
            continue
        if sum(counts.values()) >= expected and not set(counts) - SETTLED:
            return time.monotonic() - started
        time.sleep(0.1)
    return time.monotonic() - started


def outcome(
    client: SmsqClient, job_ids: list[str], sandboxes: SandboxThread, kind: str, expected: int
) -> Outcome:
    result = Outcome()
    sent: set[str] = set()
    for job_id in job_ids:
        status = client.status(job_id, recipients=True)
        assert status is not None, job_id
        result.counts.update(status.counts)
        sent.update(r.phone.lstrip("+") for r in status.recipients if r.status in TOOK)
    result.lost = expected - sum(n for s, n in result.counts.items() if s in SETTLED)
    accepted = Counter(accepted_phones(sandboxes, kind))
    result.accepted = len(accepted)
    result.twice = sum(1 for n in accepted.values() if n > 1)
    result.unrecorded = len(set(accepted) - sent)
    return result


async def set_faults(
    sandboxes: SandboxThread, kind: str, faults: dict[str, dict[str, float]]
) -> None:
    await _set_faults(sandboxes, kind, faults)
