"""Second-chance resend: a recipient whose send failed for a provider-side reason goes out
once more through the next account of its route.

A route opts in with ``resend_on = [...]`` (final statuses: ``undeliverable``,
``rejected``, ``failed``) and ``attempts`` (sends per recipient in all, 2 by default).
Which raw provider codes are provider-side (a closed route, an unregistered sender, a spam
filter, an operator's refusal) and which are the recipient's (a wrong, blocked or absent
number) is provider knowledge: each provider package's ``failure_side`` says, and only
``"provider"`` qualifies; an outcome without a reason, and ``unknown``, never do.

The decision is taken atomically where the final status arrives (``resend.lua``, inside
``record_chunk.lua`` for refusals at send time and ``apply_status.lua`` for reports): the
recipient goes back to ``queued`` with the ended attempt kept in its record
(``attempts``, ``attempt``), a ``resend`` event is written instead of a status event, and
``<prefix>:resend`` holds ``<job>|<number>|<attempt>``. :meth:`Resender.enqueue_due` turns
each entry into a one-recipient dispatch message (chunk index from ``RESEND_INDEX_BASE`` on, route: the
next account, then the untried ones) and removes it in the same transaction; it runs right
after the status path that queued it and on every reconciliation run (a crash in between
leaves the entry for the next). Each entry is claimed (SET NX with a TTL) by one drainer,
so one recipient's second chance is one dispatch message.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from producers.keys import Keys
from producers.status import Status
from producers.wire import NAMESPACE, build_message, write_message
from worker.core.messages import decode, message_args
from worker.core.queues import RESEND_INDEX_BASE, SEND_ACTOR, dispatch_queue
from worker.providers import failure_side

if TYPE_CHECKING:
    from worker.core.runtime import Runtime

log = logging.getLogger("smsq.resend")

CLIENT_ID_MAX = 2_147_483_647
MIN_VALIDITY = 60  # seconds a resent message is given at least (the providers' minimum)
CLAIM_SECONDS = 60  # an entry one drainer took is left alone by the others this long


def resend_key(prefix: str) -> str:
    return Keys(prefix).resend


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


class Resender:
    """The second-chance hook of one worker runtime (see the module doc)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.otp_max_age = rt.settings.dispatch.otp_max_age
        self.enabled = any(p.resend_on for p in rt.settings.route_policies.values())

    def candidate(
        self,
        account: str,
        status: Status,
        raw_status: str,
        raw_error: str,
        *,
        at_send: bool = False,
    ) -> bool:
        if not self.enabled:
            return False
        config = self._rt.settings.accounts.get(account)
        if config is None:
            return False
        side = failure_side(config.kind, status, raw_status, raw_error, at_send=at_send)
        return side == "provider"

    async def enqueue_due(self, limit: int = 1000) -> int:
        """Enqueue the dispatch of every recipient waiting for its second chance."""
        if not self.enabled:
            return 0
        rt = self._rt
        client = rt.async_redis()
        key = resend_key(rt.keys.prefix)
        entries = await client.zrange(key, 0, limit - 1)
        sent = 0
        for raw in entries:
            entry = _text(raw)
            # One drainer per entry: two dispatch messages for one chunk must not exist.
            # A drainer that dies before its transaction leaves the entry for a later one.
            claim = rt.keys.resend_claim(entry)
            if not await client.set(claim, "1", nx=True, ex=CLAIM_SECONDS):
                continue
            job_id, phone, attempt = entry.rsplit("|", 2)
            pipe = client.pipeline(transaction=False)
            pipe.hget(rt.keys.recipients(job_id), phone)
            pipe.hmget(
                rt.keys.job(job_id),
                ["sender", "text", "priority", "expires_at", "created_at", "accounts"],
            )
            record_raw, fields = await pipe.execute()
            record = json.loads(record_raw) if record_raw else None
            if (
                not isinstance(record, dict)
                or record.get("status") != Status.QUEUED.value
                or str(record.get("attempt")) != attempt
                or not record.get("resend_to")
            ):
                await client.zrem(key, entry)  # stale: settled, purged or sent already
                continue
            sender, text, priority, expires_at, created_at, accounts = (_text(f) for f in fields)
            tried = {a.get("account") for a in record.get("attempts") or [] if isinstance(a, dict)}
            first = str(record["resend_to"])
            route = [
                first,
                *(a for a in accounts.split(",") if a and a != first and a not in tried),
            ]
            now = time.time()
            validity = max(MIN_VALIDITY, int(float(expires_at) - now)) if expires_at else None
            client_id = (int(await client.incr(rt.keys.client_ids)) - 1) % CLIENT_ID_MAX + 1
            args = [
                job_id,
                RESEND_INDEX_BASE + int(await client.hincrby(rt.keys.job(job_id), "resends", 1)),
                route,
                sender,
                text,
                [phone],
                None,
                validity,
                priority or "bulk",
                client_id,
                float(created_at) if created_at else None,
            ]
            message = decode(SEND_ACTOR, args)
            target, redis_id, body = build_message(
                dispatch_queue(priority or "bulk"), SEND_ACTOR, message_args(message)
            )
            tx = client.pipeline(transaction=True)
            write_message(tx, target, redis_id, body, NAMESPACE)
            tx.zrem(key, entry)
            await tx.execute()
            sent += 1
        if sent:
            log.info("%d recipient(s) sent for a second chance", sent)
        return sent
