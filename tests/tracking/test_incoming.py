"""Incoming messages polled after each account's cursor are stored once (SMSC and Intis
sandboxes over HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from tests.support.sandboxes import SandboxFactory
from tests.support.tracking import make_settings, runtime
from worker.providers.intis.sandbox import INTIS_KEY
from worker.providers.smsc.sandbox import sandbox_of
from worker.tracking import incoming, runs


async def test_incoming_polling_stores_each_message_once(
    redis_url: str, redis_client: redis.Redis, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc", "intis"])
    smsc = sandbox_of(sandboxes.running["smsc"].app)
    intis = sandboxes.running["intis"].app[INTIS_KEY]

    async def add(n: int) -> None:
        for i in range(n):
            smsc.add_incoming(f"7916000000{len(smsc.incoming)}", f"hello {i}")
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            intis.incoming.append(
                {
                    "id": f"55{len(intis.incoming)}",
                    "date": stamp,
                    "sender": "447400123555",
                    "prefix": "",
                    "text": f"hi {i}",
                }
            )

    sandboxes.call(add(2))
    async with runtime(make_settings(redis_url, sandboxes)) as rt:
        got = [await incoming.poll_incoming(rt, a) for a in ("smsc-sandbox", "intis-sandbox")]
        assert got == [2, 2]
        again = [await incoming.poll_incoming(rt, a) for a in ("smsc-sandbox", "intis-sandbox")]
        assert again == [0, 0]
        sandboxes.call(add(1))
        more = [await incoming.poll_incoming(rt, a) for a in ("smsc-sandbox", "intis-sandbox")]
        assert more == [1, 1]
    for account in ("smsc-sandbox", "intis-sandbox"):
        assert redis_client.hlen(f"smsq:mo:{account}") == 3
    events = [e for _, e in redis_client.xrange("smsq:events") if e[b"type"] == b"incoming"]
    assert len(events) == 6
    answers = [e for e in sandboxes.log("smsc") if e.params.get("get_answers") == "1"]
    assert [e.params.get("after_id") for e in answers] == [None, "5000002", "5000002"]
    tk = runs.TrackingKeys("smsq")
    assert redis_client.hget(tk.incoming("smsc-sandbox"), "cursor") == b"5000003"
