"""The events stream has one bound, kept by every writer (docs/wire-format.md: ~1,000,000)."""

from __future__ import annotations

import redis

from producers.keys import EVENTS_MAXLEN, Keys
from tests.support.tracking import make_settings, runtime
from worker.pipeline import accounts

BACKLOG = 150_000  # more than the 100,000 an account event once trimmed the stream to


def fill(client: redis.Redis, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(Keys().events, {"type": "status", "n": i})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def test_the_documented_bound() -> None:
    assert EVENTS_MAXLEN == 1_000_000


async def test_account_events_do_not_trim_a_lagging_consumers_backlog(
    redis_url: str, redis_client: redis.Redis
) -> None:
    fill(redis_client, BACKLOG)
    async with runtime(make_settings(redis_url, None)) as rt:
        await accounts.pause(rt, "intis-sandbox", "insufficient funds")
        await accounts.resume(rt, "intis-sandbox")
    # Every event still there: the stream is far below its bound.
    assert redis_client.xlen(Keys().events) == BACKLOG + 2
