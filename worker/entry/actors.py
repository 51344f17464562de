"""The Dramatiq actors, bound to one broker and one runtime.

| actor | queue | what it does |
|---|---|---|
| ``accept_job`` | ``smsq-intake`` (+ ``smsq-intake-otp``) | validate, record, split, enqueue chunks |
| ``dispatch_chunk`` | ``smsq-dispatch`` (+ ``smsq-dispatch-otp``) | one send request per chunk |
| ``dispatch_hlr`` | ``smsq-dispatch`` (+ ``smsq-dispatch-otp``) | one HLR request per chunk |
| ``dispatch_gave_up`` | ``smsq-dispatch`` | Dramatiq's ``on_retry_exhausted`` hook of both: records the chunk failed |
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import CurrentMessage

from producers.wire import INTAKE_ACTOR, INTAKE_OTP_QUEUE, INTAKE_QUEUE
from worker.core import messages, metrics, queues
from worker.core.broker import DeadLetterFailed, SafeRedisBroker, SmsqWorker, build_broker
from worker.core.config import Settings
from worker.core.runtime import Runtime, RuntimeMiddleware
from worker.pipeline import dispatch, fast_path, intake
from worker.pushes import apply as webhooks
from worker.recovery.dead_workers import Recovery
from worker.state import store
from worker.tracking import callbacks, periodic

log = logging.getLogger("smsq.actors")

OTP_QUEUES = (INTAKE_OTP_QUEUE, queues.DISPATCH_OTP_QUEUE)  # consumed without idle latency

DISPATCH_MAX_RETRIES = 5  # Dramatiq retries of a dispatch that raised (send and HLR alike)
GAVE_UP_ACTOR = "dispatch_gave_up"  # Dramatiq's on_retry_exhausted target for both


@dataclass
class App:
    settings: Settings
    runtime: Runtime
    broker: SafeRedisBroker
    accept_job: Any
    dispatch_chunk: Any
    dispatch_hlr: Any
    actors: dict[str, Any]  # the other modules' actors, by name
    recovery: Recovery

    def worker(
        self, threads: int, queues: set[str] | None = None, *, worker_timeout: int = 1000
    ) -> SmsqWorker:
        """This process's Dramatiq worker: ``threads`` for the queues it consumes, and
        ``[worker] otp_threads`` more for the OTP queues alone. A process consuming only
        OTP queues gives them all its threads."""
        lane = set(OTP_QUEUES)
        shared = queues is None or bool(set(queues) - lane)
        return SmsqWorker(
            self.broker,
            queues=queues,
            worker_timeout=worker_timeout,
            worker_threads=threads,
            lane_queues=lane if shared else (),
            lane_threads=int(self.settings.worker.otp_threads) if shared else 0,
        )


def create_app(settings: Settings, **broker_options: Any) -> App:
    """Build the broker, the runtime and the actors for one process."""
    runtime = Runtime(settings)

    def write_dead_letter(source: str, reasons: list[str], payload: Any) -> None:
        """One dead letter, written across a Redis outage (a failover) rather than lost."""
        at = time.time()

        def write() -> None:
            pipe = runtime.redis.pipeline(transaction=True)
            store.dead_letter(
                pipe,
                runtime.keys,
                source=source,
                reasons=reasons,
                payload=payload,
                now=at,
                max_bytes=int(settings.dispatch.dead_letter_max_bytes),
            )
            pipe.execute()

        runtime.outage.call_sync(f"dead letter ({source})", write)

    def poison_sink(queue: str, data: bytes, reason: str) -> None:
        write_dead_letter(f"queue:{queue}", [reason], data)
        metrics.DEAD_LETTERS.labels("decode").inc()

    def failed_sink(queue: str, message: Mapping[str, Any], reason: str) -> None:
        write_dead_letter(f"failed:{queue}", [reason], message)
        metrics.DEAD_LETTERS.labels("failed").inc()

    recovery = Recovery(settings.worker)
    options: dict[str, Any] = {"heartbeat_timeout": int(settings.worker.heartbeat_timeout * 1000)}
    broker = build_broker(
        settings.redis_url,
        poison_sink=poison_sink,
        middleware=[
            CurrentMessage(),
            RuntimeMiddleware(runtime),
            DeadLetterFailed(failed_sink),
            recovery,
            metrics.DramatiqMetrics(),
        ],
        **(options | broker_options),
    )
    dramatiq.set_broker(broker)

    def accept_job(*args: Any, **kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        enqueued_at = message.message_timestamp / 1000 if message is not None else None
        message_id = message.message_id if message is not None else None
        redis_id = message.options.get("redis_message_id") if message is not None else None
        carrier = (
            intake.Carrier(message.queue_name, redis_id)
            if message is not None and isinstance(redis_id, str)
            else None
        )
        # Taking a job in twice changes nothing: across a Redis outage it is simply run again.
        taken = runtime.outage.call_sync(
            "accept_job",
            lambda: intake.take_job(
                runtime,
                args,
                kwargs,
                enqueued_at=enqueued_at,
                message_id=message_id,
                carrier=carrier,
            ),
        )
        if taken.direct is not None and carrier is not None:
            # The OTP fast path: its one chunk is dispatched in this run, no second hop.
            thread = get_event_loop_thread()
            if thread is None:
                raise RuntimeError("the AsyncIO middleware is not running")
            thread.run_coroutine(fast_path.send_now(runtime, taken.direct, carrier))

    def refused(actor: str, args: tuple[Any, ...]) -> messages.DispatchMessage | None:
        """The message, decoded (messages.decode: this version's or an earlier one's); or
        None after dead-lettering (and so acknowledging) one intake could not have written."""
        problem: str | None = None
        try:
            decoded = messages.decode(actor, args)
        except messages.MessageInvalid as exc:
            problem = str(exc)
        else:
            # Across a Redis outage (a failover), wait: an error here would drop the message.
            job_key = runtime.keys.job(decoded.job_id)
            known = runtime.outage.call_sync(
                "dispatch check", lambda: runtime.redis.exists(job_key)
            )
            if known:
                return decoded
            problem = f"job {decoded.job_id!r} has no record: not a message smsq's intake wrote"
        write_dead_letter(f"dispatch:{actor}", [problem], {"args": list(args)})
        metrics.DEAD_LETTERS.labels("dispatch").inc()
        log.warning("%s message dead-lettered: %s", actor, problem)
        return None

    def on_loop(actor: str, args: tuple[Any, ...]) -> None:
        # Sync wrappers, so the retry count is read on the worker thread (CurrentMessage
        # does not cross into the event loop); the work runs on the loop as usual.
        decoded = runtime.outage.call_sync(
            f"{actor}: checking the message", lambda: refused(actor, args)
        )
        if decoded is None:
            return
        message = CurrentMessage.get_current_message()
        message_id = message.options.get("redis_message_id") if message is not None else None
        thread = get_event_loop_thread()
        if thread is None:
            raise RuntimeError("the AsyncIO middleware is not running")
        thread.run_coroutine(dispatch.dispatch_message(runtime, decoded, message_id=message_id))

    def dispatch_gave_up(failed: dict[str, Any], retries: dict[str, Any]) -> None:
        """Dramatiq's ``on_retry_exhausted`` hook of the dispatch actors: ``failed`` is the
        message it gave up on (its last traceback in its options)."""
        actor = str(failed.get("actor_name", ""))
        args = failed.get("args")
        try:
            decoded = messages.decode(actor, args if isinstance(args, list) else [])
        except messages.MessageInvalid as exc:
            log.warning("dispatch_gave_up: not a dispatch message (%s)", exc)
            return
        options = failed.get("options")
        trace = str(options.get("traceback") or "") if isinstance(options, dict) else ""
        lines = trace.strip().splitlines()
        error = lines[-1].split(":", 1)[0].rsplit(".", 1)[-1] if lines else "unknown error"
        thread = get_event_loop_thread()
        if thread is None:
            raise RuntimeError("the AsyncIO middleware is not running")
        thread.run_coroutine(dispatch.give_up_message(runtime, decoded, error))

    def dispatch_chunk(*args: Any) -> None:
        on_loop(queues.SEND_ACTOR, args)

    def dispatch_hlr(*args: Any) -> None:
        on_loop(queues.HLR_ACTOR, args)

    accept = dramatiq.actor(
        broker=broker, actor_name=INTAKE_ACTOR, queue_name=INTAKE_QUEUE, max_retries=5
    )(accept_job)
    send = dramatiq.actor(
        broker=broker,
        actor_name=queues.SEND_ACTOR,
        queue_name=queues.DISPATCH_QUEUE,
        max_retries=DISPATCH_MAX_RETRIES,
        on_retry_exhausted=GAVE_UP_ACTOR,
    )(dispatch_chunk)
    hlr = dramatiq.actor(
        broker=broker,
        actor_name=queues.HLR_ACTOR,
        queue_name=queues.DISPATCH_QUEUE,
        max_retries=DISPATCH_MAX_RETRIES,
        on_retry_exhausted=GAVE_UP_ACTOR,
    )(dispatch_hlr)
    gave_up = dramatiq.actor(
        broker=broker,
        actor_name=GAVE_UP_ACTOR,
        queue_name=queues.DISPATCH_QUEUE,
        max_retries=DISPATCH_MAX_RETRIES,
    )(dispatch_gave_up)
    extra = {
        GAVE_UP_ACTOR: gave_up,
        **webhooks.register_actors(broker, runtime),
        **periodic.register_actors(broker, runtime),
        **callbacks.register_actors(broker, runtime),
    }
    for otp_queue in OTP_QUEUES:
        broker.wait_on(otp_queue)  # before the queue is declared: its consumer is made then
    broker.declare_queue(INTAKE_OTP_QUEUE)
    for intake_queue in (INTAKE_QUEUE, INTAKE_OTP_QUEUE):
        broker.restrict_queue(intake_queue, frozenset({INTAKE_ACTOR}))
    broker.declare_queue(queues.DISPATCH_OTP_QUEUE)
    return App(settings, runtime, broker, accept, send, hlr, extra, recovery)
