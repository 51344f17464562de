"""Leases on Redis: one holder at a time, renewed by its holder, released on shutdown.

A lease is a key holding its holder's token, taken with ``SET key token NX PX``.
Only the holder may renew (``PEXPIRE``) or release (``DEL``) it: both are
compare-and-set scripts, so a holder that paused past its lease and lost it
can never extend or delete its successor's lease. A holder that dies simply
stops renewing: the key expires and another candidate takes it.

:class:`Lease` (synchronous) elects the active scheduler; :class:`AsyncLease`
keeps two runs of the same periodic task from overlapping in the worker.
"""

from __future__ import annotations

import asyncio
import uuid

import redis
import redis.asyncio as aredis

RENEW = """
-- KEYS[1] the lease   ARGV[1] the holder's token   ARGV[2] lease time (ms)
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
-- KEYS[1] the lease   ARGV[1] the holder's token
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Lease:
    """A lease on ``key`` for ``seconds``, held under ``token`` (synchronous client)."""

    def __init__(
        self, client: redis.Redis, key: str, seconds: float, token: str | None = None
    ) -> None:
        self.client = client
        self.key = key
        self.seconds = seconds
        self.token = token or uuid.uuid4().hex
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it, or extend it if we still do (after a Redis blip
        a holder that stepped down takes its own lease back at once)."""
        if self.client.set(self.key, self.token, nx=True, px=_ms(self.seconds)):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend the lease by its full length; False when it is no longer ours."""
        return bool(int(self._renew(keys=[self.key], args=[self.token, _ms(self.seconds)])))

    def release(self) -> bool:
        """Give the lease up (only if it is still ours)."""
        return bool(int(self._release(keys=[self.key], args=[self.token])))

    def remaining(self) -> float:
        """Seconds until the current lease (anyone's) expires; 0.0 when there is none."""
        ms = int(self.client.pttl(self.key))
        return ms / 1000 if ms > 0 else 0.0


class AsyncLease:
    """The same lease for an asyncio client (one holder per key, compare-and-set release).

    While held it renews itself every third of its length, so a run that takes longer
    than the lease (slow provider, long retries) keeps it; a holder that dies stops
    renewing and the lease lapses.
    """

    def __init__(self, client: aredis.Redis, key: str, seconds: float) -> None:
        self.client = client
        self.key = key
        self.seconds = seconds
        self.token = uuid.uuid4().hex
        self._release = client.register_script(RELEASE)
        self._renew = client.register_script(RENEW)
        self._keeper: asyncio.Task[None] | None = None

    async def acquire(self) -> bool:
        if not await self.client.set(self.key, self.token, nx=True, px=_ms(self.seconds)):
            return False
        self._keeper = asyncio.create_task(self._keep())
        return True

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                if not int(
                    await self._renew(keys=[self.key], args=[self.token, _ms(self.seconds)])
                ):
                    return  # no longer ours
            except Exception:  # Redis trouble: try again next time; the lease may lapse
                continue

    async def release(self) -> bool:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        return bool(int(await self._release(keys=[self.key], args=[self.token])))
