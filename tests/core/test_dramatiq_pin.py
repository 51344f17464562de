"""smsq relies on Dramatiq internals; the pin and these tests say which.

- pyproject pins the Dramatiq minor version (``dramatiq[redis]>=2.2.1,<2.3``) and the
  installed version must satisfy it;
- the Redis broker keeps a fetched message's id in ``<ns>:__acks__.<broker id>.<queue>``
  (SafeRedisBroker acknowledges bad bodies there), messages in ``<ns>:<queue>.msgs``, delayed
  ones in ``<queue>.DQ``, failed ones in ``<queue>.XQ`` (producers/wire.py writes these);
- retries are Dramatiq's: a dispatch that fails every try is handed to ``dispatch_gave_up``
  by the ``on_retry_exhausted`` hook, for send and HLR chunks alike;
- ``WakingConsumer`` extends the Redis consumer (its message cache, the ids it has handed
  out, ``do_fetch``) and ``SmsqWorker`` the worker (how it makes consumers and threads, its
  work queue of ``_WorkQueueItem``), both as the pinned version has them.
"""

from __future__ import annotations

import inspect
import json
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq.brokers.redis
import dramatiq.worker
import redis

from producers.wire import NAMESPACE, build_message, write_message
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from worker.core import queues
from worker.core.broker import build_broker
from worker.entry import actors

ROOT = Path(__file__).resolve().parents[2]


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_the_installed_dramatiq_satisfies_the_pin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (requirement,) = [d for d in project["dependencies"] if d.startswith("dramatiq")]
    match = re.fullmatch(r"dramatiq\[redis\]>=([\d.]+),<(\d+)\.(\d+)", requirement.strip())
    assert match, f"Dramatiq must be pinned to one minor version, not {requirement!r}"
    low, major, minor = version_tuple(match.group(1)), int(match.group(2)), int(match.group(3))
    assert low[:2] == (major, minor - 1), "the pin allows exactly one minor version"
    installed = version_tuple(metadata.version("dramatiq"))
    assert low <= installed < (major, minor)


def test_the_broker_keys_smsq_relies_on() -> None:
    script = (Path(dramatiq.brokers.redis.__file__).parent / "redis" / "dispatch.lua").read_text()
    for layout in (
        'namespace .. ":__acks__." .. worker_id',
        'queue_full_name .. ".msgs"',
        '".DQ"',
        '".XQ"',
    ):
        assert layout in script, layout


def test_the_consumer_and_worker_internals_smsq_extends() -> None:
    consumer = dramatiq.brokers.redis._RedisConsumer
    assert list(inspect.signature(consumer.__init__).parameters) == [
        "self",
        "broker",
        "queue_name",
        "prefetch",
        "timeout",
    ]
    source = inspect.getsource(consumer)
    for name in ("self.message_cache", "self.queued_message_ids", "self.misses", "do_fetch"):
        assert name in source, name
    assert isinstance(consumer.outstanding_message_count, property)
    worker = dramatiq.worker.Worker
    for method, parameters in (
        ("_add_consumer", ["self", "queue_name", "delay"]),
        ("start", ["self"]),
        ("stop", ["self", "timeout"]),
        ("join", ["self"]),
    ):
        assert list(inspect.signature(getattr(worker, method)).parameters) == parameters, method
    for cls, parameters in (
        (dramatiq.worker.ConsumerThread, {"broker", "queue_name", "prefetch", "work_queue"}),
        (dramatiq.worker.WorkerThread, {"broker", "consumers", "work_queue", "worker_timeout"}),
    ):
        assert parameters <= set(inspect.signature(cls.__init__).parameters), cls
    start = inspect.getsource(worker.start)
    assert "_WorkerMiddleware(self)" in start and "self._add_worker()" in start
    init = inspect.getsource(worker.__init__)
    for name in ("self.work_queue", "self.queue_prefetch", "self.delay_prefetch", "self.consumers"):
        assert name in init, name


def test_a_fetched_message_is_held_in_the_acks_set(
    redis_url: str, redis_client: redis.Redis
) -> None:
    broker = build_broker(redis_url)
    try:
        queue = "smsq-pin-check"

        def some_actor(n: int) -> None:
            pass

        dramatiq.actor(broker=broker, actor_name="some_actor", queue_name=queue)(some_actor)
        target, redis_id, body = build_message(queue, "some_actor", [1])
        pipe = redis_client.pipeline()
        write_message(pipe, target, redis_id, body, NAMESPACE)
        pipe.execute()
        assert redis_client.hexists(f"{NAMESPACE}:{queue}.msgs", redis_id)
        fetched = broker.do_fetch(queue, 1)
        assert [json.loads(m)["options"]["redis_message_id"] for m in fetched] == [redis_id]
        acks = f"{NAMESPACE}:__acks__.{broker.broker_id}.{queue}"
        assert broker._acks_key(queue) == acks
        assert redis_client.sismember(acks, redis_id)
    finally:
        broker.close()


def test_dispatch_actors_use_dramatiqs_retry_hook(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    app = worker.app
    for actor in (app.dispatch_chunk, app.dispatch_hlr):
        assert actor.options["on_retry_exhausted"] == actors.GAVE_UP_ACTOR
        assert actor.options["max_retries"] == actors.DISPATCH_MAX_RETRIES
    redis_client.hset("smsq:job:job-h", mapping={"chunks": 1, "state": "accepted", "kind": "hlr"})
    redis_client.hset("smsq:job:job-h:counts", mapping={"queued": 1})
    # An HLR chunk whose route names an account this worker does not have, on its last try.
    args = ["job-h", 0, ["gone-account"], ["447400123201"], "bulk"]
    app.dispatch_hlr.send_with_options(args=args, retries=actors.DISPATCH_MAX_RETRIES)
    worker.join()
    record = json.loads(redis_client.hget("smsq:job:job-h:rcpt", "447400123201") or b"{}")
    assert record["status"] == "failed" and "every try: KeyError" in record["reason"]
    letters = [json.loads(v) for v in redis_client.hvals("smsq:dlq")]
    assert [d["source"] for d in letters] == [f"dispatch:{queues.HLR_ACTOR}"]
