"""One code path applies statuses from any source, with monotonic rules and one event per change."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis
import redis.asyncio as aredis

from producers.status import Status
from worker.providers.base import StatusReport
from worker.state.status_apply import StatusApplier, canonical_id


def seed(client: redis.Redis, job: str, phones_ids: dict[str, str], account: str = "acct") -> None:
    for phone, pid in phones_ids.items():
        client.hset(
            f"smsq:job:{job}:rcpt", phone, json.dumps({"status": "submitted", "account": account})
        )
        client.hset(f"smsq:msgid:{account}", canonical_id(pid), f"{job}|{phone}")
        client.zadd(f"smsq:awaiting:{account}", {canonical_id(pid): 0})
    client.hset(f"smsq:job:{job}:counts", "submitted", len(phones_ids))


def report(pid: str, status: Status, raw: str = "x", at: float | None = None) -> StatusReport:
    when = datetime.fromtimestamp(at, UTC) if at else None
    return StatusReport(provider_message_id=pid, status=status, raw_status=raw, at=when)


def counts(client: redis.Redis, job: str) -> dict[str, int]:
    return {
        k.decode(): int(v) for k, v in client.hgetall(f"smsq:job:{job}:counts").items() if int(v)
    }


def events(client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in e.items()} for _, e in client.xrange("smsq:events")]


async def test_monotonic_rules_and_exactly_one_event_per_change(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seed(redis_client, "j1", {"111": "0001", "222": "0002", "333": "0003"})
    client = aredis.Redis.from_url(redis_url)
    applier = StatusApplier(client, "smsq")

    first = await applier.apply(
        "acct",
        [
            report("1", Status.DELIVERED, "deliver"),
            report("0002", Status.EXPIRED, "expired"),
            report("9", Status.DELIVERED),
        ],
        "poll",
    )
    assert (first.applied, first.unchanged, first.unmatched) == (2, 0, 1)  # "1" matches "0001"
    assert counts(redis_client, "j1") == {"submitted": 1, "delivered": 1, "expired": 1}
    assert len(events(redis_client)) == 2

    # The same reports again (a provider retry), and older/weaker ones: nothing changes.
    again = await applier.apply(
        "acct",
        [
            report("0001", Status.DELIVERED),
            report("0001", Status.SUBMITTED),
            report("0002", Status.UNKNOWN),
        ],
        "webhook",
    )
    assert (again.applied, again.unchanged) == (0, 3)
    assert len(events(redis_client)) == 2

    # A final status is not overwritten by a weaker one; a late delivery upgrades an expiry.
    late = await applier.apply(
        "acct",
        [report("0002", Status.DELIVERED, "DELIVRD"), report("0001", Status.UNDELIVERABLE)],
        "history",
    )
    assert (late.applied, late.unchanged) == (1, 1)
    assert counts(redis_client, "j1") == {"submitted": 1, "delivered": 2}
    evs = events(redis_client)
    assert len(evs) == 3
    assert evs[-1]["previous"] == "expired" and evs[-1]["status"] == "delivered"
    assert (
        evs[-1]["source"] == "history" and evs[-1]["job_id"] == "j1" and evs[-1]["phone"] == "222"
    )

    record = json.loads(redis_client.hget("smsq:job:j1:rcpt", "111") or b"{}")
    assert (
        record["status"] == "delivered"
        and record["raw_status"] == "deliver"
        and record["account"] == "acct"
    )
    # Final messages leave the awaiting set; the pending one stays to be polled.
    assert [m.decode() for m in redis_client.zrange("smsq:awaiting:acct", 0, -1)] == ["3"]
    await client.aclose()


async def test_reports_for_another_account_do_not_match(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seed(redis_client, "j2", {"444": "77"}, account="a")
    client = aredis.Redis.from_url(redis_url)
    result = await StatusApplier(client, "smsq").apply(
        "b", [report("77", Status.DELIVERED)], "poll"
    )
    assert (result.applied, result.unmatched) == (0, 1)
    assert counts(redis_client, "j2") == {"submitted": 1}
    await client.aclose()


def test_canonical_ids() -> None:
    assert canonical_id(" 000123 ") == "123"
    assert canonical_id("0") == "0" and canonical_id("000") == "0"
    assert canonical_id("abc-001") == "abc-001"
