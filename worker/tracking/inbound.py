"""What providers tell us besides statuses: incoming messages (MO) and HLR results.

Both are written by small Lua scripts so that storing and publishing happen
together and only once: an incoming message is stored once per provider id
(``<prefix>:mo:<account>``, id -> JSON) however often it is pushed or polled,
and an HLR result is recorded once per number of its job (``<prefix>:job:<id>:hlr``).
Each first write appends one event to ``<prefix>:events``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis

from producers.keys import EVENTS_MAXLEN, Keys
from worker.core import metrics
from worker.providers.base import HlrResult, IncomingMessage
from worker.state import store
from worker.state.status_apply import canonical_id

_STORE_INCOMING = """
-- KEYS[1] mo hash (its time index: KEYS[1] .. ":index"), KEYS[2] events stream;
-- ARGV: maxlen, then per message: id, json, sender, text, at, source
local new = 0
for i = 2, #ARGV, 6 do
  if redis.call("HSETNX", KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call("ZADD", KEYS[1] .. ":index", ARGV[i + 4], ARGV[i])
    redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[1], "*", "type", "incoming",
               "provider_message_id", ARGV[i], "sender", ARGV[i + 2], "text", ARGV[i + 3],
               "at", ARGV[i + 4], "source", ARGV[i + 5], "account", string.match(KEYS[1], "[^:]+$"))
    new = new + 1
  end
end
return new
"""

_RECORD_HLR = """
-- KEYS[1] msgid index, KEYS[2] events; ARGV: prefix, maxlen, then per result: id, json
local new = 0
for i = 3, #ARGV, 2 do
  local ref = redis.call("HGET", KEYS[1], ARGV[i])
  if ref then
    local sep = string.find(ref, "|", 1, true)
    local job, phone = string.sub(ref, 1, sep - 1), string.sub(ref, sep + 1)
    local hkey = ARGV[1] .. ":job:" .. job .. ":hlr"
    local current = redis.call("HGET", hkey, phone)
    if (not current) or cjson.decode(current)["pending"] then
      redis.call("HSET", hkey, phone, ARGV[i + 1])
      redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[2], "*", "type", "hlr",
                 "job_id", job, "phone", phone, "provider_message_id", ARGV[i], "result", ARGV[i + 1])
      new = new + 1
    end
  end
end
return new
"""


def hlr_record(result: HlrResult) -> dict[str, Any]:
    """The JSON kept per number of an HLR job (also used at dispatch)."""
    return {
        "ok": result.ok,
        "pending": result.pending,
        "imsi": result.imsi,
        "mcc": result.mcc,
        "mnc": result.mnc,
        "network": result.network,
        "ported": result.ported,
        "roaming": result.roaming,
        "error": result.error,
        "raw": dict(result.raw),
    }


class Inbound:
    def __init__(self, client: aredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._store = client.register_script(_STORE_INCOMING)
        self._hlr = client.register_script(_RECORD_HLR)

    def incoming_key(self, account: str) -> str:
        """Hash id -> message; ``+ ':index'``: sorted set of ids by arrival, for retention."""
        return self._keys.incoming_messages(account)

    async def trim_incoming(self, client: aredis.Redis, account: str, before: float) -> int:
        """Forget messages that arrived before ``before`` (epoch seconds); returns how many."""
        key = self.incoming_key(account)
        old = await client.zrangebyscore(key + ":index", "-inf", before, 0, 10_000)
        if not old:
            return 0
        pipe = client.pipeline(transaction=True)
        pipe.hdel(key, *old)
        pipe.zrem(key + ":index", *old)
        await pipe.execute()
        return len(old)

    async def store_incoming(
        self, account: str, messages: Sequence[IncomingMessage], source: str
    ) -> int:
        """Store each message once (by provider id) and publish it; returns how many were new."""
        if not messages:
            return 0
        args: list[Any] = [EVENTS_MAXLEN]
        for m in messages:
            at = m.received_at.timestamp() if m.received_at else time.time()
            record = {
                "sender": m.sender,
                "recipient": m.recipient,
                "text": m.text,
                "received_at": round(at, 3),
                "source": source,
                "extra": dict(m.extra),
            }
            args += [
                canonical_id(m.provider_message_id),
                json.dumps(record, default=str, ensure_ascii=False),
                m.sender,
                m.text,
                f"{at:.3f}",
                source,
            ]
        new = int(
            await self._store(keys=[self.incoming_key(account), self._keys.events], args=args)
        )
        metrics.INCOMING.labels(source).inc(new)
        metrics.EVENTS_PUBLISHED.labels("incoming").inc(new)
        return new

    async def record_hlr(
        self, account: str, results: Sequence[HlrResult], operator_ttl: float | None = None
    ) -> int:
        """Record final HLR results of asynchronous lookups, matched by provider id; returns new ones.

        With ``operator_ttl``, a result that names the number's network (MCC, MNC) also
        fills the operator cache of least-cost routing."""
        if operator_ttl:
            placed = [r for r in results if r.phone.isdigit() and r.mcc and r.mnc]
            if placed:
                pipe = self._client.pipeline(transaction=False)
                for r in placed:
                    store.remember_operator(
                        pipe, self._keys, r.phone, f"{r.mcc}{r.mnc}", operator_ttl
                    )
                await pipe.execute()
        args: list[Any] = [self._keys.prefix, EVENTS_MAXLEN]
        for r in results:
            if r.provider_message_id and not r.pending:
                args += [
                    canonical_id(r.provider_message_id),
                    json.dumps(hlr_record(r), default=str),
                ]
        if len(args) == 2:
            return 0
        keys = [self._keys.message_index(account), self._keys.events]
        new = int(await self._hlr(keys=keys, args=args))
        metrics.EVENTS_PUBLISHED.labels("hlr").inc(new)
        return new
