"""Reading and replaying dead letters (``smsq dlq``).

A dead letter is JSON ``{id, source, reasons, job_id, at, payload, payload_bytes}``
(plus ``payload_truncated`` when the payload was cut to the configured bound) in the
hash ``<prefix>:dlq``, indexed by time in ``<prefix>:dlq:index``. Replaying
puts the job payload back on the intake queue, where the worker validates it
again; a letter whose payload holds no job (an undecodable message) cannot be
replayed and says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from producers.contract import is_job_id
from producers.errors import InputError
from producers.keys import Keys
from producers.wire import INTAKE_ACTOR, NAMESPACE, enqueue_payload


@dataclass(frozen=True)
class DeadLetter:
    id: str
    source: str
    reasons: list[str]
    job_id: str | None
    at: float
    payload: Any
    payload_bytes: int | None = None  # the original payload's size
    payload_truncated: bool = False  # payload holds only its first bytes

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        data = json.loads(raw)
        return cls(
            id=data["id"],
            source=data.get("source", ""),
            reasons=list(data.get("reasons", [])),
            job_id=data.get("job_id"),
            at=float(data.get("at", 0)),
            payload=data.get("payload"),
            payload_bytes=data.get("payload_bytes"),
            payload_truncated=bool(data.get("payload_truncated", False)),
        )


class NotReplayable(InputError, ValueError):
    """The dead letter holds nothing that can go back on the intake queue."""


def job_payload(letter: DeadLetter) -> dict[str, Any]:
    """The job payload a dead letter carries, or NotReplayable saying why there is none."""
    payload = letter.payload
    if letter.payload_truncated:
        raise NotReplayable(
            f"the payload was truncated (originally {letter.payload_bytes} bytes);"
            " there is no whole job to replay"
        )
    if letter.source.startswith(("queue:", "failed:")):
        # An undecodable message, or one that failed on every try: its body may still
        # hold an accept_job payload.
        try:
            body = json.loads(payload) if isinstance(payload, str) else payload
        except json.JSONDecodeError:
            raise NotReplayable("the message body is not JSON; there is no job to replay") from None
        if not (isinstance(body, dict) and body.get("actor_name") == INTAKE_ACTOR):
            raise NotReplayable(
                "the message is not an accept_job message; there is no job to replay"
            )
        args = body.get("args")
        payload = args[0] if isinstance(args, list) and len(args) == 1 else None
    elif isinstance(payload, dict) and set(payload) == {"args", "kwargs"}:
        args = payload["args"]
        payload = (
            args[0] if isinstance(args, list) and len(args) == 1 and not payload["kwargs"] else None
        )
    if not isinstance(payload, dict):
        raise NotReplayable("the dead letter holds no job object to replay")
    return payload


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys, namespace: str = NAMESPACE) -> None:
        self.redis = client
        self.keys = keys
        self.namespace = namespace

    def count(self) -> int:
        return int(self.redis.zcard(self.keys.dead_letter_index))

    def list(self, limit: int = 50, offset: int = 0) -> list[DeadLetter]:
        """Newest first."""
        ids = cast(
            list[bytes],
            self.redis.zrevrange(self.keys.dead_letter_index, offset, offset + limit - 1),
        )
        if not ids:
            return []
        raws = self.redis.hmget(self.keys.dead_letters, ids)
        return [DeadLetter.from_json(r) for r in raws if r]

    def iter_all(self) -> Iterator[DeadLetter]:
        for _, raw in self.redis.hscan_iter(self.keys.dead_letters, count=500):
            yield DeadLetter.from_json(raw)

    def get(self, letter_id: str) -> DeadLetter | None:
        raw = self.redis.hget(self.keys.dead_letters, letter_id)
        return DeadLetter.from_json(raw) if raw else None

    def remove(self, letter_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.dead_letters, letter_id)
        pipe.zrem(self.keys.dead_letter_index, letter_id)
        removed, _ = pipe.execute()
        return bool(removed)

    def replay(self, letter_id: str) -> str:
        """Put the letter's job back on the intake queue and remove the letter; returns the job id.

        The worker validates the job again. A job id whose earlier attempt left a
        ``dead_lettered`` record gets that record cleared first, so the replayed
        job can be accepted under the same id.
        """
        letter = self.get(letter_id)
        if letter is None:
            raise KeyError(letter_id)
        payload = job_payload(letter)
        job_id = payload.get("job_id")
        if is_job_id(job_id):
            assert isinstance(job_id, str)
            job_key = self.keys.job(job_id)
            if self.redis.hget(job_key, "state") == b"dead_lettered":
                self.redis.delete(job_key)
        enqueue_payload(self.redis, payload, namespace=self.namespace)
        self.remove(letter_id)
        return str(job_id or "")

    def purge(self, older_than: float | None = None) -> int:
        """Remove every dead letter (or those recorded before ``older_than``, epoch seconds)."""
        if older_than is None:
            n = self.count()
            self.redis.delete(self.keys.dead_letters, self.keys.dead_letter_index)
            return n
        ids = cast(
            list[bytes], self.redis.zrangebyscore(self.keys.dead_letter_index, "-inf", older_than)
        )
        for letter_id in ids:
            self.remove(letter_id.decode())
        return len(ids)
