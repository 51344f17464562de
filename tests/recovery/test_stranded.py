"""No stranded work: a chunk whose provider answer arrives while Redis is away is still
recorded, and a chunk whose message is gone without a recording is sent again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producers.client import SmsqClient
from producers.wire import NAMESPACE
from tests.support.harness import numbers, outcome, progress, wait_dispatched
from tests.support.sandboxes import SandboxFactory, sandbox_settings, set_faults
from tests.support.worker import WorkerHarness
from worker.core.runtime import Runtime
from worker.devtools.redis_server import RedisServer
from worker.entry.actors import create_app
from worker.recovery.stranded import sweep_stranded


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True).start()
    yield server
    server.stop()


def test_redis_restart_mid_run_leaves_nothing_queued(
    private_redis: RedisServer, run_sandboxes: SandboxFactory
) -> None:
    """The issue's experiment: Redis stopped for 2 s while chunks are in flight. Before the
    fix, the chunks whose answers came back during the outage stayed ``queued`` for ever."""
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})
    harness: WorkerHarness | None = None
    try:
        sandboxes.call(set_faults(sandboxes, "intis", {"send.php": {"latency": 0.4}}))
        settings = sandbox_settings(private_redis.url, sandboxes)
        harness = WorkerHarness(create_app(settings), threads=8).start()
        client = SmsqClient(private_redis.url)
        phones = numbers(3000)
        job_id = client.enqueue_send(
            provider="intis", sender="smstest", text="outage", recipients=phones
        )
        deadline = time.monotonic() + 60
        while progress(client, [job_id]).get("submitted", 0) < 300:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        private_redis.shutdown()  # answers now arrive with nowhere to go
        time.sleep(2.0)
        private_redis.start()
        settle = wait_dispatched(client, [job_id], len(phones), timeout=60)
        result = outcome(client, [job_id], sandboxes, "intis", len(phones))
        print(f"\nredis restart: {dict(result.counts)}; settled in {settle:.1f}s")
        assert result.lost == 0, result.counts
        assert result.twice == 0
        assert result.unrecorded == 0
        status = client.status(job_id)
        assert status is not None and status.state == "done"
    finally:
        if harness is not None:
            harness.stop()


@pytest.fixture
def runtime(redis_url: str, run_sandboxes: SandboxFactory) -> Iterator[Runtime]:
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})
    settings = sandbox_settings(redis_url, sandboxes)
    rt = Runtime(settings)
    yield rt
    rt.close()


def _entry(args: list[Any], msg: str | None, at: float) -> str:
    return json.dumps(
        {"actor": "dispatch_chunk", "queue": "smsq-dispatch", "args": args, "msg": msg, "at": at}
    )


def _args(job_id: str, index: int, phones: list[str]) -> list[Any]:
    return [job_id, index, ["intis-sandbox"], "smstest", "hi", phones, None, None, "bulk", 7, None]


async def test_sweep_sends_again_only_chunks_whose_message_is_gone(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    await runtime.start()
    try:
        keys = runtime.keys
        now = time.time()
        old = now - runtime.settings.worker.stranded_after - 1
        # 0: claimed, message gone -> sent again; 1: sending, message gone -> sent again (the
        # delivery records it unknown); 2: message still queued -> left; 3: young -> left;
        # 4: done -> entry dropped.
        redis_client.set(keys.chunk("j", 0), "claimed:intis-sandbox:dead")
        redis_client.set(keys.chunk("j", 1), "sending:intis-sandbox:dead")
        redis_client.set(keys.chunk("j", 2), "claimed:intis-sandbox:alive")
        redis_client.set(keys.chunk("j", 3), "claimed:intis-sandbox:new")
        redis_client.set(keys.chunk("j", 4), "done")
        redis_client.hset(f"{NAMESPACE}:smsq-dispatch.msgs", "queued-id", "{}")
        entries = {
            keys.chunk("j", 0): _entry(_args("j", 0, ["+79161234567"]), "gone", old),
            keys.chunk("j", 1): _entry(_args("j", 1, ["+79161234568"]), None, old),
            keys.chunk("j", 2): _entry(_args("j", 2, ["+79161234569"]), "queued-id", old),
            keys.chunk("j", 3): _entry(_args("j", 3, ["+79161234570"]), "gone", now),
            keys.chunk("j", 4): _entry(_args("j", 4, ["+79161234571"]), "gone", old),
        }
        redis_client.hset(keys.inflight, mapping=entries)
        stats = await sweep_stranded(runtime, now=now)
        assert stats == {"resent": 2, "live": 1, "young": 1, "done": 1}
        queued = redis_client.lrange(f"{NAMESPACE}:smsq-dispatch", 0, -1)
        bodies = [
            json.loads(redis_client.hget(f"{NAMESPACE}:smsq-dispatch.msgs", i) or b"{}")
            for i in queued
        ]
        assert sorted(b["args"][1] for b in bodies) == [0, 1]
        assert not redis_client.hexists(keys.inflight, keys.chunk("j", 4))
        # The entries now name the new messages: the next sweep leaves them alone (and sends
        # chunk 3, old by then).
        later = now + runtime.settings.worker.stranded_after + 1
        assert await sweep_stranded(runtime, now=later) == {"resent": 1, "live": 3}
    finally:
        await runtime.stop()


async def test_an_otp_carried_by_its_intake_message_is_swept_to_its_dispatch_queue(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    """The fast path notes an OTP's chunk under its intake message ("mq": its queue): alive
    while that message exists there; once it is gone, sent again on the dispatch queue."""
    await runtime.start()
    try:
        keys = runtime.keys
        now = time.time()
        old = now - runtime.settings.worker.stranded_after - 1
        otp_args = _args("o", 0, ["+79161234572"])
        otp_args[8] = "otp"
        entry = {
            "actor": "dispatch_chunk",
            "queue": "smsq-dispatch-otp",
            "args": otp_args,
            "msg": "intake-id",
            "mq": "smsq-intake-otp",
            "at": old,
        }
        redis_client.set(keys.chunk("o", 0), "claimed:intis-sandbox:dead")
        redis_client.hset(keys.inflight, keys.chunk("o", 0), json.dumps(entry))
        redis_client.hset(f"{NAMESPACE}:smsq-intake-otp.msgs", "intake-id", "{}")
        assert await sweep_stranded(runtime, now=now) == {"live": 1}
        redis_client.hdel(f"{NAMESPACE}:smsq-intake-otp.msgs", "intake-id")
        assert await sweep_stranded(runtime, now=now) == {"resent": 1}
        assert redis_client.llen(f"{NAMESPACE}:smsq-intake-otp") == 0
        (queued,) = redis_client.lrange(f"{NAMESPACE}:smsq-dispatch-otp", 0, -1)
        body = json.loads(redis_client.hget(f"{NAMESPACE}:smsq-dispatch-otp.msgs", queued) or b"{}")
        assert body["actor_name"] == "dispatch_chunk" and body["args"] == otp_args
        swept = json.loads(redis_client.hget(keys.inflight, keys.chunk("o", 0)) or b"{}")
        assert "mq" not in swept and swept["msg"] == queued.decode()
        assert swept["queue"] == "smsq-dispatch-otp"
    finally:
        await runtime.stop()
