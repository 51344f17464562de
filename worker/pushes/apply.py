"""Provider pushes: the stored-push format and the actor that applies a stored push.

Receipt is in worker/entry/web.py: a push is verified by its provider's ``verify_push``,
then stored raw in the hash ``<prefix>:inbox`` (id -> JSON, body in base64) and the
``apply_webhook(id)`` message is enqueued on ``smsq-webhooks``, both in one MULTI/EXEC
(:func:`queue_push`), and only then does the provider hear its answer.

``apply_webhook`` loads the entry (a missing one was applied already), has the provider's
``parse_push`` read it, and applies what it carried through the one path for each:
statuses through :class:`~worker.state.status_apply.StatusApplier` (monotonic, one event per
change, none for a duplicate), incoming messages and HLR results through
:class:`~worker.tracking.inbound.Inbound` (stored once per id). Other events are appended to the
events stream in the same transaction that deletes the entry, so a redelivered message
never publishes them twice. A push that cannot be parsed is dead-lettered (source
``webhook``) and removed: never retried forever, never a crashed worker. A Redis failure
raises, and Dramatiq retries the message with backoff.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import dramatiq
import redis.asyncio as aredis

from producers.contract import unpaired_surrogates
from producers.keys import EVENTS_MAXLEN, Keys
from producers.wire import build_message, write_message
from worker.core import messages as wire_messages
from worker.core import metrics
from worker.core.messages import PushApply, push_args
from worker.core.runtime import Runtime
from worker.pipeline.resend import Resender
from worker.providers import provider_spec
from worker.providers.base import AccountConfig, InboundRequest, PushContent
from worker.state import store
from worker.state.status_apply import StatusApplier
from worker.tracking.inbound import Inbound

log = logging.getLogger("smsq.webhooks")

WEBHOOK_QUEUE = "smsq-webhooks"
WEBHOOK_ACTOR = "apply_webhook"
SOURCE = "webhook"
# A push event (call confirmation, subscription change) seen again within this long is a
# provider's retry and is not published twice.
EVENT_DEDUP_SECONDS = 86400
# A report for a message smsq has not recorded yet is tried again for this long.
UNMATCHED_GRACE = 120.0
UNMATCHED_RETRY = 3.0
# Parameters that carry a secret for every provider (a provider names its own in
# ProviderSpec.push_secret_params): never stored, masked in dead letters.
SECRET_PARAMS = frozenset({"key", "token", "secret", "api_key", "apikey", "password"})


def inbox_key(keys: Keys) -> str:
    """Hash: push id -> JSON of the raw request, until the actor has applied it."""
    return keys.inbox


def new_push_id() -> str:
    return uuid.uuid4().hex


def without_secrets(account: AccountConfig, request: InboundRequest) -> InboundRequest:
    """``request`` without the parameters that carry the account's push secret (or a
    signature made with it), from the query and from a URL-encoded form body: what is
    stored is what applying the push needs, never the secret."""
    names = {n.lower() for n in provider_spec(account.kind).push_secret_params} | SECRET_PARAMS
    query = {k: v for k, v in request.query.items() if k.lower() not in names}
    body = request.body
    media = request.content_type.split(";", 1)[0].strip().lower()
    if body and media in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            text = ""  # not URL-encoded: nothing to strip
        if text and any(k.lower() in names for k, _ in parse_qsl(text, keep_blank_values=True)):
            # latin-1 both ways keeps every percent-escaped byte as it came (any charset)
            pairs = parse_qsl(text, keep_blank_values=True, encoding="latin-1")
            kept = [(k, v) for k, v in pairs if k.lower() not in names]
            body = urlencode(kept, encoding="latin-1").encode("ascii")
    if query == dict(request.query) and body is request.body:
        return request
    return dataclasses.replace(request, query=query, body=body)


def encode_push(account: AccountConfig, request: InboundRequest) -> str:
    """The inbox JSON of one received push (its secrets left out: :func:`without_secrets`)."""
    request = without_secrets(account, request)
    return store.dumps(
        {
            "account": account.name,
            "kind": account.kind,
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "content_type": request.content_type,
            "body": base64.b64encode(request.body).decode("ascii"),
            "remote": request.remote,
            "received_at": request.received_at,
        }
    )


@dataclass(frozen=True)
class StoredPush:
    account: str
    kind: str
    request: InboundRequest


def decode_push(raw: bytes | str) -> StoredPush:
    """Read an inbox entry back; ValueError when it is not one."""
    try:
        data = json.loads(raw)
        query = data["query"]
        if not isinstance(query, dict):
            raise TypeError("query")
        request = InboundRequest(
            method=str(data["method"]),
            path=str(data["path"]),
            query={str(k): str(v) for k, v in query.items()},
            content_type=str(data["content_type"]),
            body=base64.b64decode(data["body"], validate=True),
            remote=str(data["remote"]),
            received_at=float(data["received_at"]),
        )
        return StoredPush(str(data["account"]), str(data["kind"]), request)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"not a stored push ({type(exc).__name__}: {exc})") from None


def queue_push(pipe: Any, keys: Keys, push_id: str, entry: str) -> None:
    """Queue, on a MULTI pipeline (sync or asyncio), the entry and its apply_webhook message."""
    pipe.hset(inbox_key(keys), push_id, entry)
    target, redis_id, body = build_message(
        WEBHOOK_QUEUE, WEBHOOK_ACTOR, push_args(PushApply(push_id))
    )
    write_message(pipe, target, redis_id, body)


def _masked(raw: bytes | str) -> str:
    """The entry as kept in a dead letter: shared secrets in the query masked."""
    try:
        data = json.loads(raw)
        query = data.get("query")
        if isinstance(query, dict):
            data["query"] = {k: "***" if k in SECRET_PARAMS else v for k, v in query.items()}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, AttributeError):
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw


class WebhookApplier:
    """Applies stored pushes; its Redis helpers live on the runtime's asyncio client."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._client: aredis.Redis | None = None
        self._statuses: StatusApplier | None = None
        self._inbound: Inbound | None = None

    def _helpers(self) -> tuple[aredis.Redis, StatusApplier, Inbound]:
        client = self.runtime.async_redis()
        if client is not self._client or self._statuses is None or self._inbound is None:
            # First use, or the runtime was restarted with a new client.
            self._statuses = StatusApplier(
                client,
                self.runtime.keys.prefix,
                resender=Resender(self.runtime),
                kinds=self.runtime.account_kinds(),
            )
            self._inbound = Inbound(client, self.runtime.keys)
            self._client = client
        return client, self._statuses, self._inbound

    async def apply(self, push_id: str) -> str:
        """Apply one stored push; returns 'applied', 'deferred', 'missing' or 'dead_lettered'."""
        client, statuses, inbound = self._helpers()
        keys = self.runtime.keys
        raw: bytes | str | None = await client.hget(inbox_key(keys), push_id)
        if raw is None:
            return "missing"  # applied (and removed) before: a redelivery
        try:
            push = decode_push(raw)
            account = self.runtime.settings.accounts.get(push.account)
            if account is None:
                raise ValueError(f"account {push.account!r} is no longer configured")
            if account.kind != push.kind:
                raise ValueError(f"account {push.account!r} is now of kind {account.kind!r}")
            content = provider_spec(account.kind).parse_push(account, push.request)
            if not isinstance(content, PushContent):
                raise TypeError(f"parse_push returned {type(content).__name__}")
            where = _unwritable_text(content)
            if where is not None:
                raise ValueError(f"the push carries text that is not valid Unicode ({where})")
        except Exception as exc:  # a bad push must not be retried forever
            reason = f"{type(exc).__name__}: {exc}"[:1000]
            await self._dead_letter(client, push_id, raw, reason)
            return "dead_lettered"

        unmatched = 0
        if content.reports:
            unmatched = (
                await statuses.apply(account.name, content.reports, source=SOURCE)
            ).unmatched
        if content.incoming:
            await inbound.store_incoming(account.name, content.incoming, source=SOURCE)
        if content.hlr:
            await inbound.record_hlr(
                account.name, content.hlr, self.runtime.settings.routing.operator_ttl
            )
        if unmatched and time.time() - push.request.received_at < UNMATCHED_GRACE:
            # A report can overtake the recording of its send: apply the push again shortly
            # (idempotent); its other events are published once, on the last pass.
            target, redis_id, body = build_message(
                WEBHOOK_QUEUE,
                WEBHOOK_ACTOR,
                push_args(PushApply(push_id)),
                eta_ms=int((time.time() + UNMATCHED_RETRY) * 1000),
            )
            retry = client.pipeline(transaction=True)
            write_message(retry, target, redis_id, body)
            await retry.execute()
            return "deferred"
        if unmatched:
            metrics.STATUS_REPORTS.labels(SOURCE, "given_up").inc(unmatched)
            log.info("push %s: %d report(s) matched no message smsq sent", push_id, unmatched)
        fresh = list(content.events)
        if fresh:
            # A provider's retry of the same push is a new push: publish each event once.
            seen = client.pipeline(transaction=False)
            for event in fresh:
                fingerprint = hashlib.sha256(
                    json.dumps([account.name, dict(event)], sort_keys=True).encode()
                ).hexdigest()
                seen.set(keys.push_seen(fingerprint), "1", nx=True, ex=EVENT_DEDUP_SECONDS)
            fresh = [e for e, new in zip(fresh, await seen.execute(), strict=True) if new]
        pipe = client.pipeline(transaction=True)
        for event in fresh:
            pipe.xadd(
                keys.events,
                _event(account.name, event),
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
        pipe.hdel(inbox_key(keys), push_id)
        await pipe.execute()
        metrics.EVENTS_PUBLISHED.labels("webhook").inc(len(fresh))
        metrics.PUSH_APPLY_LAG.labels(account.kind).observe(
            max(0.0, time.time() - push.request.received_at)
        )
        return "applied"

    async def _dead_letter(
        self, client: aredis.Redis, push_id: str, raw: bytes | str, reason: str
    ) -> None:
        pipe = client.pipeline(transaction=True)
        dl_id = store.dead_letter(
            pipe,
            self.runtime.keys,
            source=SOURCE,
            reasons=[reason],
            payload=_masked(raw),  # text, not an object: `smsq dlq replay` refuses it
            max_bytes=int(self.runtime.settings.dispatch.dead_letter_max_bytes),
        )
        pipe.hdel(inbox_key(self.runtime.keys), push_id)
        await pipe.execute()
        metrics.DEAD_LETTERS.labels(SOURCE).inc()
        log.warning("push %s dead-lettered (%s): %s", push_id, dl_id, reason[:300])


def _unwritable_text(content: PushContent) -> str | None:
    """Where a parsed push holds a string Redis cannot store (an unpaired surrogate from a
    JSON escape such as ``"\\ud800"``), or None."""
    stack: list[Any] = [content]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and unpaired_surrogates(item):
                return repr(item[:40])
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
    return None


def _event(account: str, event: Mapping[str, str]) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"type": "webhook", **{str(k): str(v) for k, v in event.items()}}
    fields.update(account=account, source=SOURCE, at=f"{time.time():.3f}")
    if not fields["type"]:
        fields["type"] = "webhook"
    return fields


def register_actors(broker: Any, runtime: Runtime) -> dict[str, Any]:
    """Declare ``apply_webhook`` (queue ``smsq-webhooks``) on ``broker``; returns it by name."""
    applier = WebhookApplier(runtime)

    async def apply_webhook(*args: Any) -> None:
        push_id = wire_messages.decode_push(args).push_id
        # Applying a push twice changes nothing: across a Redis outage it is run again.
        await runtime.outage.call(f"applying push {push_id}", lambda: applier.apply(push_id))

    broker.declare_queue(WEBHOOK_QUEUE)
    actor = dramatiq.actor(
        broker=broker,
        actor_name=WEBHOOK_ACTOR,
        queue_name=WEBHOOK_QUEUE,
        max_retries=20,
        min_backoff=500,
        max_backoff=60_000,
    )(apply_webhook)
    return {WEBHOOK_ACTOR: actor}
