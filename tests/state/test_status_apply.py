"""One code path applies statuses from any source, with monotonic rules and one event per change."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aredis

from producers.keys import Keys
from producers.status import Status
from worker.providers.base import RecipientOutcome, StatusReport
from worker.state.status_apply import LOOKUPS, Applied, StatusApplier, canonical_id
from worker.state.store import ChunkRecorder


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


# -- the job of each report is looked up before the script: a mapping that appears or
# -- changes in between is applied in another call, once


class Recording(StatusApplier):
    """A status applier during whose lookups the given writes happen (as another process's
    would, between the lookup and the script)."""

    def __init__(self, client: aredis.Redis, between: list[Any]) -> None:
        super().__init__(client, "smsq")
        self.between = between
        self.lookups = 0

    async def _jobs_of(self, account: str, pids: Sequence[str]) -> list[str | None]:
        jobs = await super()._jobs_of(account, pids)
        self.lookups += 1
        if self.between:
            await self.between.pop(0)()
        return jobs


async def test_a_send_recorded_between_lookup_and_script_gets_its_report_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A push overtakes the recording of its send, which lands between the applier's lookup
    (nothing indexed yet) and its script: the report is applied once, to the recorded send."""
    client = aredis.Redis.from_url(redis_url)
    keys = Keys("smsq")
    redis_client.hset(keys.recipients("j9"), "447911123456", json.dumps({"status": "queued"}))
    redis_client.hset(keys.counts("j9"), "queued", 1)
    recorder = ChunkRecorder(client, keys, first_check=60)

    async def record_the_send() -> None:
        outcome = RecipientOutcome("447911123456", Status.SUBMITTED, provider_message_id="0555")
        await recorder.record("j9", keys.chunk("j9", 0), "acct", [outcome])

    applier = Recording(client, [record_the_send])
    result = await applier.apply("acct", [report("555", Status.DELIVERED, "DELIVRD")], "webhook")
    assert (result.applied, result.unchanged, result.unmatched) == (1, 0, 0)
    assert applier.lookups == 2  # the first call left the report to a second one
    assert counts(redis_client, "j9") == {"delivered": 1}
    assert [(e["status"], e["source"]) for e in events(redis_client)] == [
        ("submitted", "dispatch"),
        ("delivered", "webhook"),
    ]
    record = json.loads(redis_client.hget(keys.recipients("j9"), "447911123456") or b"{}")
    assert record["status"] == "delivered" and record["provider_message_id"] == "0555"
    assert redis_client.zcard(keys.awaiting("acct")) == 0

    again = await applier.apply("acct", [report("555", Status.DELIVERED, "DELIVRD")], "webhook")
    assert (again.applied, again.unchanged) == (0, 1)  # the provider's retry changes nothing
    assert len(events(redis_client)) == 2
    await client.aclose()


async def test_an_id_moving_to_another_job_in_between_is_applied_to_that_job_only(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seed(redis_client, "ja", {"447911123456": "77"})
    seed(redis_client, "jb", {"447400123456": "88"})
    client = aredis.Redis.from_url(redis_url)

    async def move() -> None:  # the provider reused the id: the index now names jb
        await client.hset("smsq:msgid:acct", "77", "jb|447400123456")

    applier = Recording(client, [move])
    result = await applier.apply(
        "acct", [report("77", Status.DELIVERED), report("88", Status.EXPIRED)], "poll"
    )
    # "77" was looked up as ja's, found jb's by the script: applied in the second call;
    # "88" was applied to jb in the first. Both reports concern jb's one recipient: the
    # delivery (applied first or second) wins, each change one event.
    assert applier.lookups == 2 and result.unmatched == 0
    assert counts(redis_client, "ja") == {"submitted": 1}
    assert counts(redis_client, "jb") == {"delivered": 1}
    assert {e["job_id"] for e in events(redis_client)} == {"jb"}
    assert len(events(redis_client)) == result.applied
    await client.aclose()


async def test_a_report_still_moving_after_every_lookup_is_unmatched_and_untouched(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seed(redis_client, "ja", {"447911123456": "77"})
    seed(redis_client, "jb", {"447400123456": "99"})
    client = aredis.Redis.from_url(redis_url)
    refs = iter(["jb|447400123456", "ja|447911123456"] * LOOKUPS)

    async def move() -> None:
        await client.hset("smsq:msgid:acct", "77", next(refs))

    applier = Recording(client, [move] * LOOKUPS)
    result = await applier.apply("acct", [report("77", Status.DELIVERED)], "webhook")
    assert (result.applied, result.unmatched) == (0, 1) and applier.lookups == LOOKUPS
    assert counts(redis_client, "ja") == {"submitted": 1}
    assert counts(redis_client, "jb") == {"submitted": 1}
    assert events(redis_client) == []
    # The push is applied again later (as an unmatched push is): once, where the id now points.
    later = await StatusApplier(client, "smsq").apply(
        "acct", [report("77", Status.DELIVERED)], "webhook"
    )
    assert later.applied == 1 and len(events(redis_client)) == 1
    await client.aclose()


async def test_tracking_ids_name_their_job_without_a_lookup(
    redis_url: str, redis_client: redis.Redis
) -> None:
    seed(redis_client, "j7", {"447911123456": "~j7|447911123456"})
    client = aredis.Redis.from_url(redis_url)
    applier = Recording(client, [])
    result = await applier.apply(
        "acct", [report("~j7|447911123456", Status.EXPIRED, "validity")], "reconcile"
    )
    assert result.applied == 1 and applier.lookups == 1
    evs = events(redis_client)
    assert evs[0]["job_id"] == "j7" and "provider_message_id" not in evs[0]
    await client.aclose()


async def test_reports_racing_their_sends_recording_end_applied_once_each(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Pushes and the recordings of their sends run concurrently (real Redis, separate
    connections); an unmatched report is applied again afterwards, as the push actor does.
    Every recipient ends delivered with exactly one delivered event: nothing lost, nothing
    twice."""
    keys = Keys("smsq")
    phones = [f"4479111{i:05d}" for i in range(40)]
    pushes, recordings = aredis.Redis.from_url(redis_url), aredis.Redis.from_url(redis_url)
    applier = Recording(pushes, [])
    recorder = ChunkRecorder(recordings, keys, first_check=60)
    calls = 0
    for round_ in range(15):
        job = f"race{round_}"
        redis_client.hset(
            keys.recipients(job), mapping={p: json.dumps({"status": "queued"}) for p in phones}
        )
        redis_client.hset(keys.counts(job), "queued", len(phones))
        outcomes = [
            RecipientOutcome(p, Status.SUBMITTED, provider_message_id=f"{round_}-{i}")
            for i, p in enumerate(phones)
        ]
        reports = [report(f"{round_}-{i}", Status.DELIVERED) for i in range(len(phones))]

        async def record(chunk: int, part: list[RecipientOutcome], job: str = job) -> None:
            await asyncio.sleep(random.random() * 0.004)
            await recorder.record(job, keys.chunk(job, chunk), "acct", part)

        async def push(part: list[StatusReport]) -> Applied:
            await asyncio.sleep(random.random() * 0.004)
            return await applier.apply("acct", part, "webhook")

        applier.lookups = 0
        results = await asyncio.gather(
            record(0, outcomes[:20]),
            record(1, outcomes[20:]),
            push(reports[::2]),
            push(reports[1::2]),
        )
        calls += applier.lookups
        unmatched = sum(r.unmatched for r in results[2:] if r is not None)
        applied = sum(r.applied for r in results[2:] if r is not None)
        if unmatched:  # the push actor applies an unmatched push again a moment later
            applied += (await applier.apply("acct", reports, "webhook")).applied
        assert applied == len(phones)
        assert counts(redis_client, job) == {"delivered": len(phones)}
        delivered = [
            e for e in events(redis_client) if e["job_id"] == job and e["status"] == "delivered"
        ]
        assert sorted(e["phone"] for e in delivered) == sorted(phones)
    print(f"\n15 rounds of 2 pushes: {calls} script calls (more than 30: deferred reports)")
    await pushes.aclose()
    await recordings.aclose()
