"""The state of one chunk, so a redelivered chunk is never sent twice nor wrongly given up.

Values of ``<prefix>:chunk:<job>:<index>``:

- ``claimed:<account>:<token>`` — a delivery owns the chunk; nothing has left for
  the provider. A redelivery that finds it takes it over and sends.
- ``sending:<account>:<token>`` — set just before the request. A redelivery that
  finds it cannot know whether the provider took the request: the recipients
  become ``unknown`` and reconciliation settles them. A failure the provider
  answered (or a connection that never opened) sets it back to ``claimed``.
- ``done`` — the outcomes are recorded (by ``record_chunk.lua``, which ignores a
  second recording).
- ``cancelled`` — the producer cancelled the job before any chunk was claimed
  (``SmsqClient.cancel``); a delivery that finds it acknowledges without sending.

Every transition after the claim is compare-and-set on the owner's token.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis
from redis.commands.core import AsyncScript

from worker.state.limiter import Mark, RateLimiter, Rule, lua_with_limits
from worker.state.store import CHUNK_STATE_TTL

_CAS = """
-- KEYS[1] the chunk's state key
-- ARGV[1] the owner's token   ARGV[2] the new value ("": delete the key)   ARGV[3] its ttl (s)
-- Sets the value only while the current one ends in ":" .. ARGV[1]; returns 1, else 0.
local v = redis.call("GET", KEYS[1])
if not v then return 0 end
if string.match(v, ":([^:]+)$") ~= ARGV[1] then return 0 end
if ARGV[2] == "" then redis.call("DEL", KEYS[1]) else redis.call("SET", KEYS[1], ARGV[2], "EX", ARGV[3]) end
return 1
"""


# A chunk cancelled or recorded since it was read is not taken over.
_TAKE_OVER = """
-- KEYS[1] the chunk's state key   ARGV[1] the new value   ARGV[2] its ttl (s)
local v = redis.call("GET", KEYS[1])
if v == "cancelled" or v == "done" then return 0 end
redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2])
return 1
"""


_scripts: dict[str, AsyncScript] = {}


def _script(client: aredis.Redis, name: str) -> AsyncScript:
    """The script ``name`` (called with an explicit client: the cache holds its text only)."""
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = client.register_script(lua_with_limits(name))
    return script


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class SendClaim:
    """What :meth:`ChunkOwner.claim_sending` found (``claim_send.lua``).

    ``state``: ``sending`` (ours, marked sending, the lease and permit held), ``done``,
    ``cancelled``, ``found`` (another state: ``value``), ``paused`` (the first account of
    the route is paused) or ``wait`` (``wait`` seconds; ``blocked_by`` ``pause``, ``lease``
    or ``rate``). ``accounts``: with ``sending``, the raw (state, reason, probe_at) of each
    account of the route."""

    state: str
    value: str | None = None
    wait: float = 0.0
    blocked_by: str = ""
    accounts: tuple[dict[bytes, bytes], ...] = ()


def parse(value: str) -> tuple[str, str | None, str | None]:
    """(state, account, token) of a stored value (``<state>:<account>:<token>`` or ``done``)."""
    if value == "done":
        return "done", None, None
    state, _, rest = value.partition(":")
    account, _, token = rest.rpartition(":")
    return state, account or None, token or None


@dataclass
class ChunkOwner:
    """This delivery's hold on a chunk."""

    client: aredis.Redis
    key: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    maybe_sent: bool = False  # a request of this delivery may have reached the provider
    account: str | None = None  # the account of its last move to sending

    def value(self, state: str, account: str) -> str:
        return f"{state}:{account}:{self.token}"

    async def _cas(self, new_value: str) -> bool:
        script = self.client.register_script(_CAS)
        return bool(await script(keys=[self.key], args=[self.token, new_value, CHUNK_STATE_TTL]))

    async def take_over(self, account: str) -> bool:
        """Own a chunk found ``claimed`` by a delivery that never sent it; False when it was
        cancelled or recorded since it was read (it was released and then cancelled, say)."""
        script = self.client.register_script(_TAKE_OVER)
        value = self.value("claimed", account)
        return bool(await script(keys=[self.key], args=[value, CHUNK_STATE_TTL]))

    async def claim_sending(
        self,
        account: str,
        *,
        inflight: str,
        entry: str,
        account_keys: Sequence[str],
        rate_log: str,
        rate_pause: str,
        leases: str,
        lease: str | None,
        cap: int,
        lease_time: float,
        permit: str,
        otp: bool,
        hold: float,
        rules: list[Rule],
    ) -> SendClaim:
        """Claim the chunk, take the lease (``lease``: its id, when the account has a cap)
        and the permit (when ``rules``) and mark it sending through ``account``: one round
        trip, all or nothing (``claim_send.lua``)."""
        keys = [self.key, inflight, rate_log, rate_pause, leases, *account_keys]
        args: list[Any] = [
            self.value("sending", account),
            CHUNK_STATE_TTL,
            entry,
            lease or "",
            cap,
            int(lease_time * 1_000_000),
            permit,
            1 if otp else 0,
            int(hold * 1_000_000),
            *RateLimiter.rule_args(rules),
        ]
        reply = await _script(self.client, "claim_send.lua")(
            keys=keys, args=args, client=self.client
        )
        state = _text(reply[0])
        if state == "sending":
            self.account = account
            fields = (b"state", b"reason", b"probe_at")
            accounts = tuple(
                {f: v for f, v in zip(fields, raw, strict=False) if v is not None}
                for raw in reply[1]
            )
            return SendClaim(state, accounts=accounts)
        if state == "found":
            return SendClaim(state, value=_text(reply[1]))
        if state == "wait":
            return SendClaim(
                state, wait=max(0.001, int(reply[1]) / 1_000_000), blocked_by=_text(reply[2])
            )
        return SendClaim(state)

    def sending_mark(self, account: str) -> Mark:
        """The move to ``sending``, for the rate limiter to make with its grant."""
        self.account = account
        return Mark(self.key, self.token, self.value("sending", account), CHUNK_STATE_TTL)

    async def not_sent(self, account: str) -> None:
        """The request did not reach the provider (or it refused it): back to claimed."""
        await self._cas(self.value("claimed", account))

    async def release(self) -> None:
        """Give the chunk up before sending (it is rescheduled)."""
        await self._cas("")
