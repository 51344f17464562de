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
-- smsq: store incoming messages once each (by provider id) and publish the new ones.
-- KEYS[1] the account's incoming messages (hash: id -> JSON)
-- KEYS[2] their arrival index (sorted set: id by arrival, for retention)
-- KEYS[3] the events stream
-- ARGV[1] events maxlen   ARGV[2] account
-- then per message, 6 values: id, JSON, sender, text, arrival (epoch seconds), source
local new = 0
for i = 3, #ARGV, 6 do
  if redis.call("HSETNX", KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call("ZADD", KEYS[2], ARGV[i + 4], ARGV[i])
    redis.call("XADD", KEYS[3], "MAXLEN", "~", ARGV[1], "*", "type", "incoming",
               "provider_message_id", ARGV[i], "sender", ARGV[i + 2], "text", ARGV[i + 3],
               "at", ARGV[i + 4], "source", ARGV[i + 5], "account", ARGV[2])
    new = new + 1
  end
end
return new
"""

_RECORD_HLR = """
-- smsq: record final HLR results of asynchronous lookups once per number, matched by id.
-- KEYS[1] the account's message-id index (provider id -> "job|phone")
-- KEYS[2] the events stream
-- KEYS[3..] the HLR hash of each job the caller found for the results, job j at KEYS[2 + j]
-- ARGV[1] events maxlen   ARGV[2] J, the number of jobs given   ARGV[3..2 + J] their ids
-- then per result, 3 values: provider id, its job's number j (0: none found), result JSON
-- An id the index maps to another job than the one given (the lookup's recording came in
-- between) is left untouched and its position (from 1) returned in `deferred`, for the
-- caller to record in another call. Returns {new, deferred}.
local njobs = tonumber(ARGV[2])
local jobs = {}
for j = 1, njobs do jobs[j] = ARGV[2 + j] end
local new, deferred, pos = 0, {}, 0
for i = 3 + njobs, #ARGV, 3 do
  pos = pos + 1
  local ref = redis.call("HGET", KEYS[1], ARGV[i])
  if ref then
    local slot = tonumber(ARGV[i + 1])
    local sep = string.find(ref, "|", 1, true)
    local job = sep and string.sub(ref, 1, sep - 1)
    if slot == 0 or jobs[slot] ~= job then
      deferred[#deferred + 1] = pos
    else
      local phone = string.sub(ref, sep + 1)
      local hkey = KEYS[2 + slot]
      local current = redis.call("HGET", hkey, phone)
      if (not current) or cjson.decode(current)["pending"] then
        redis.call("HSET", hkey, phone, ARGV[i + 2])
        redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[1], "*", "type", "hlr", "job_id", job,
                   "phone", phone, "provider_message_id", ARGV[i], "result", ARGV[i + 2])
        new = new + 1
      end
    end
  end
end
return {new, deferred}
"""
LOOKUPS = 3  # lookups (and script calls) per batch of HLR results at most


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
        """Hash id -> message (its arrival index: ``Keys.incoming_index``)."""
        return self._keys.incoming_messages(account)

    async def trim_incoming(self, client: aredis.Redis, account: str, before: float) -> int:
        """Forget messages that arrived before ``before`` (epoch seconds); returns how many."""
        key, index = self.incoming_key(account), self._keys.incoming_index(account)
        old = await client.zrangebyscore(index, "-inf", before, 0, 10_000)
        if not old:
            return 0
        pipe = client.pipeline(transaction=True)
        pipe.hdel(key, *old)
        pipe.zrem(index, *old)
        await pipe.execute()
        return len(old)

    async def store_incoming(
        self, account: str, messages: Sequence[IncomingMessage], source: str
    ) -> int:
        """Store each message once (by provider id) and publish it; returns how many were new."""
        if not messages:
            return 0
        args: list[Any] = [EVENTS_MAXLEN, account]
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
            await self._store(
                keys=[
                    self.incoming_key(account),
                    self._keys.incoming_index(account),
                    self._keys.events,
                ],
                args=args,
            )
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
        items = [
            (canonical_id(r.provider_message_id), json.dumps(hlr_record(r), default=str))
            for r in results
            if r.provider_message_id and not r.pending
        ]
        new = 0
        index = self._keys.message_index(account)
        for _ in range(LOOKUPS):
            if not items:
                break
            # The job of each id, looked up first: the script takes its keys through KEYS
            # and checks the mapping again (see _RECORD_HLR).
            found = await self._jobs_of(account, [pid for pid, _ in items])
            slots: dict[str, int] = {}
            per_result: list[Any] = []
            for pid, record in items:
                job = found.get(pid)
                slot = slots.setdefault(job, len(slots) + 1) if job else 0
                per_result += [pid, slot, record]
            keys = [index, self._keys.events, *(self._keys.hlr(job) for job in slots)]
            args: list[Any] = [EVENTS_MAXLEN, len(slots), *slots, *per_result]
            added, deferred = await self._hlr(keys=keys, args=args)
            new += int(added)
            items = [items[int(i) - 1] for i in deferred]
        metrics.EVENTS_PUBLISHED.labels("hlr").inc(new)
        return new

    async def _jobs_of(self, account: str, pids: Sequence[str]) -> dict[str, str]:
        """The job each provider id maps to now (ids not indexed left out), in one round trip."""
        wanted = sorted(set(pids))
        refs = await self._client.hmget(self._keys.message_index(account), wanted)
        return {
            pid: (ref.decode() if isinstance(ref, bytes) else str(ref)).partition("|")[0]
            for pid, ref in zip(wanted, refs, strict=True)
            if ref
        }
