"""The OTP fast path: an OTP job's one chunk dispatched in its intake message's run.

Intake (``take_job`` with the message as :class:`~worker.pipeline.intake.Carrier`) records
the job as always but writes no dispatch message for an OTP of one chunk: the chunk is noted
in ``<prefix>:inflight`` under the intake message and handed back, and :func:`send_now`
dispatches it at once through :func:`worker.pipeline.dispatch.dispatch_or_give_up`, the
function every dispatch message runs: claim, account states and pauses, in-flight lease and
rate permit, ``claimed`` -> ``sending`` -> ``done`` with tokens, recording, metrics, events.
So an OTP costs one queue hop, not two. What differs:

- one try only: a failure worth a retry (transient, throttled) or a permit further away
  than the usual short wait releases the chunk and reschedules it as an ordinary dispatch
  message on ``smsq-dispatch-otp`` (after the backoff's first wait, or when the permit
  comes), which then has every retry of its own;
- a dispatch that raises (anything but a Redis outage, which it rides out), or that a stop
  cuts short, hands the chunk to a dispatch message at once: the chunk's state tells that
  delivery what is left to do (``claimed``: send; ``sending``: ``unknown``; ``done``:
  nothing), and the intake message is acknowledged;
- a worker that dies mid-dispatch leaves the intake message in its acks set: requeued, it
  finds the job accepted and the chunk still noted under it and dispatches it again, the
  chunk's state deciding. If that message is gone without the chunk being recorded, the
  stranded-work sweep sends the chunk again as a dispatch message.
"""

from __future__ import annotations

import asyncio
import logging

from producers.wire import NAMESPACE, build_message, write_message
from worker.core import messages, metrics
from worker.core.messages import SendChunk
from worker.core.queues import SEND_ACTOR, dispatch_queue
from worker.core.runtime import Runtime
from worker.pipeline import dispatch
from worker.pipeline.intake import Carrier

log = logging.getLogger("smsq.fast_path")


async def send_now(rt: Runtime, chunk: SendChunk, carrier: Carrier) -> str:
    """Dispatch ``chunk`` in the run of ``carrier``, the message its job came in; returns what
    became of it (see :func:`worker.pipeline.dispatch.dispatch_chunk`, or 'handed_off')."""
    args = tuple(chunk.positional())
    try:
        result = await dispatch.dispatch_or_give_up(
            rt,
            SEND_ACTOR,
            args,
            message_id=carrier.message_id,
            carrier_queue=carrier.queue,
            one_try=True,
        )
    except asyncio.CancelledError:
        # A stop cut it short: what may have left was recorded (or the chunk stays sending).
        log.info("chunk %s:%d stopped: handed to %s", chunk.job_id, chunk.index, _queue(chunk))
        await asyncio.wait_for(hand_off(rt, chunk), dispatch.INTERRUPT_RECORD_SECONDS)
        result = "handed_off"
    except Exception as exc:
        log.warning(
            "chunk %s:%d failed in its intake run (%s): handed to %s",
            chunk.job_id,
            chunk.index,
            type(exc).__name__,
            _queue(chunk),
        )
        await hand_off(rt, chunk)
        result = "handed_off"
    metrics.OTP_FAST_PATH.labels(result).inc()
    return result


def _queue(chunk: SendChunk) -> str:
    return dispatch_queue(chunk.priority)


async def hand_off(rt: Runtime, chunk: SendChunk) -> None:
    """Enqueue ``chunk``'s dispatch message now and note the chunk in flight under it (one
    transaction): from here on it is a chunk like any other."""
    queue = _queue(chunk)
    target, redis_id, body = build_message(queue, SEND_ACTOR, messages.message_args(chunk))
    held = dispatch.Delivery(SEND_ACTOR, queue, chunk.positional(), redis_id)
    pipe = rt.async_redis().pipeline(transaction=True)
    write_message(pipe, target, redis_id, body, NAMESPACE)
    pipe.hset(rt.keys.inflight, rt.keys.chunk(chunk.job_id, chunk.index), held.entry())
    await pipe.execute()
