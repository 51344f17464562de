"""Incoming messages are stored once per provider id; HLR results once per number."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import redis
import redis.asyncio as aredis

from producers.keys import Keys
from worker.providers.base import HlrResult, IncomingMessage
from worker.tracking.inbound import Inbound


async def test_incoming_stored_once_and_published_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = aredis.Redis.from_url(redis_url)
    inbound = Inbound(client, Keys())
    msg = IncomingMessage(
        "00042", "447400123071", "STOP", "smsq", datetime(2026, 11, 22, tzinfo=UTC)
    )
    assert await inbound.store_incoming("acct", [msg, msg], "webhook") == 1
    assert (
        await inbound.store_incoming(
            "acct", [IncomingMessage("42", "447400123071", "STOP")], "poll"
        )
        == 0
    )
    stored = json.loads(redis_client.hget("smsq:mo:acct", "42") or b"{}")
    assert stored["text"] == "STOP" and stored["source"] == "webhook"
    events = [e for _, e in redis_client.xrange("smsq:events")]
    assert (
        len(events) == 1 and events[0][b"type"] == b"incoming" and events[0][b"account"] == b"acct"
    )
    await client.aclose()


async def test_hlr_result_recorded_once_per_number(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.hset("smsq:msgid:acct", "7:447400123081", "job-h|447400123081")
    redis_client.hset("smsq:job:job-h:hlr", "447400123081", json.dumps({"pending": True}))
    client = aredis.Redis.from_url(redis_url)
    inbound = Inbound(client, Keys())
    result = HlrResult(
        "447400123081", True, provider_message_id="7:447400123081", imsi="25001", mcc="250"
    )
    assert await inbound.record_hlr("acct", [result]) == 1
    assert await inbound.record_hlr("acct", [result]) == 0  # a retried callback changes nothing
    assert await inbound.record_hlr("acct", [HlrResult("1", True, provider_message_id="nope")]) == 0
    record = json.loads(redis_client.hget("smsq:job:job-h:hlr", "447400123081") or b"{}")
    assert record["ok"] is True and record["imsi"] == "25001" and record["pending"] is False
    assert redis_client.xlen("smsq:events") == 1
    await client.aclose()


async def test_an_hlr_lookup_recorded_between_lookup_and_script_gets_its_result_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The result of an asynchronous HLR lookup arrives while the lookup's recording is
    written: the job found before the script is checked again inside it, and a result whose
    id came to name a job in between is recorded in a second call, once."""
    client = aredis.Redis.from_url(redis_url)
    keys = Keys()

    class Racing(Inbound):
        lookups = 0

        async def _jobs_of(self, account: str, pids: Sequence[str]) -> dict[str, str]:
            found = await super()._jobs_of(account, pids)
            self.lookups += 1
            if self.lookups == 1:  # the lookup's recording lands now
                await client.hset(keys.message_index("acct"), "h-1", "job-r|447400123081")
                await client.hset(keys.hlr("job-r"), "447400123081", '{"pending": true}')
            return found

    inbound = Racing(client, keys)
    result = HlrResult("447400123081", True, provider_message_id="h-1", mcc="250", mnc="01")
    assert await inbound.record_hlr("acct", [result]) == 1
    assert inbound.lookups == 2
    assert await inbound.record_hlr("acct", [result]) == 0
    record = json.loads(redis_client.hget(keys.hlr("job-r"), "447400123081") or b"{}")
    assert record["ok"] is True and record["mcc"] == "250"
    assert [e[b"job_id"] for _, e in redis_client.xrange(keys.events)] == [b"job-r"]
    await client.aclose()
