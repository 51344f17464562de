"""Malformed messages pushed straight into Redis end dead-lettered; the worker goes on."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.support.messages import dead_letters, message, push_raw, raw_enqueue
from tests.support.sandboxes import SandboxFactory, sandbox_settings


def test_malformed_messages_are_dead_lettered_and_the_worker_goes_on(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    # Broken at the Dramatiq level: never reach an actor.
    push_raw(redis_client, b"{not json")
    push_raw(redis_client, b"\xff\xfe binary")
    push_raw(redis_client, json.dumps([1, 2, 3]))
    push_raw(redis_client, json.dumps({"actor_name": "accept_job", "args": []}))
    no_id = message([{}])
    no_id["options"] = {}
    push_raw(redis_client, no_id)
    push_raw(redis_client, message([{}], actor_name="no_such_actor"))
    push_raw(redis_client, message([{}], extra_field=1))
    push_raw(redis_client, message("not a list"))
    # Stored under another id than the one it names: could never be acknowledged.
    mismatched = message([{}])
    redis_client.hset("dramatiq:smsq-intake.msgs", "other-id", json.dumps(mismatched))
    redis_client.rpush("dramatiq:smsq-intake", "other-id")
    # Well-formed messages with bad jobs: reach accept_job, fail the contract.
    push_raw(redis_client, message([]))
    push_raw(redis_client, message([{"kind": "send"}, 2]))
    push_raw(redis_client, message(["a string"]))
    push_raw(
        redis_client,
        message(
            [
                {
                    "job_id": "bad-1",
                    "provider": "nowhere",
                    "sender": "x",
                    "text": "",
                    "recipients": 5,
                }
            ]
        ),
    )
    # And a good job after all of that.
    raw_enqueue(
        redis_client,
        {
            "job_id": "good-1",
            "provider": "intis-sandbox",
            "sender": "smstest",
            "text": "still serving",
            "recipients": ["+447400123123"],
        },
    )
    worker.join()

    assert redis_client.hget("smsq:job:good-1", "state") == b"done"
    letters = dead_letters(redis_client)
    assert len(letters) == 13
    reasons = [" ".join(dl["reasons"]) for dl in letters]
    assert all(r for r in reasons)
    joined = "\n".join(reasons)
    for expected in (
        "not valid JSON",
        "not UTF-8",
        "not an object",
        "missing fields",
        "redis_message_id",
        "no actor named 'no_such_actor'",
        "unexpected fields extra_field",
        "field args has the wrong type",
        "exactly one positional argument",
        "does not match the id",
    ):
        assert expected in joined, expected
    bad = json.loads(redis_client.hget("smsq:job:bad-1", "reasons") or b"[]")
    assert redis_client.hget("smsq:job:bad-1", "state") == b"dead_lettered"
    assert len(bad) >= 3  # provider, text, recipients: every problem listed
    # Nothing left unacknowledged or queued.
    assert redis_client.llen("dramatiq:smsq-intake") == 0
    assert redis_client.hlen("dramatiq:smsq-intake.msgs") == 0
    assert not [k for k in redis_client.keys("dramatiq:__acks__*") if redis_client.scard(k)]


def test_messages_that_would_kill_threads_or_vanish_are_dead_lettered(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes), threads=2)
    job = {
        "provider": "intis",
        "sender": "smstest",
        "text": "x",
        "recipients": ["+447400123001"],
    }
    # Names another queue: Dramatiq would look up a consumer by it and kill the thread.
    push_raw(redis_client, message([job], queue_name="smsq-intake-typo"))
    push_raw(redis_client, message([job], queue_name="smsq-intake-typo"))
    # Nested deeper than the JSON decoder's recursion limit.
    push_raw(redis_client, b"[" * 100_000 + b"]" * 100_000)
    # A delayed message without an eta, and one naming the wrong delay queue.
    push_raw(redis_client, message([job], queue_name="smsq-intake.DQ"), queue="smsq-intake.DQ")
    late = message([job], queue_name="smsq_intake.DQ")
    late["options"]["eta"] = 1
    push_raw(redis_client, late, queue="smsq-intake.DQ")
    # A dispatch message pushed straight onto the intake queue would skip the contract.
    push_raw(
        redis_client,
        message(
            ["job", 0, ["intis-sandbox"], "s", "t", ["447400123002"]],
            actor_name="dispatch_chunk",
        ),
    )
    raw_enqueue(redis_client, {**job, "job_id": "still-good"})
    worker.join()
    assert redis_client.hget("smsq:job:still-good", "state") == b"done"
    assert all(t.is_alive() for t in worker.worker.workers)
    reasons = "\n".join(" ".join(d["reasons"]) for d in dead_letters(redis_client))
    assert reasons.count("does not match the queue") == 3
    assert "cannot be decoded (RecursionError)" in reasons
    assert "needs a numeric options.eta" in reasons
    assert "'dispatch_chunk' is not accepted on this queue" in reasons
    assert not [k for k in redis_client.keys("dramatiq:__acks__*") if redis_client.scard(k)]
