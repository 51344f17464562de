"""The light enqueue client: validates a job, writes it to Redis, reads its status.

Depends on ``redis`` only::

    from producers import SmsqClient
    client = SmsqClient("redis://127.0.0.1:6379/0")
    job_id = client.enqueue_send(provider="intis", sender="smstest", text="Hello",
                                 recipients=["+7 916 123-45-67"])
    print(client.status(job_id).counts)
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from producers.contract import is_job_id, new_job_id, validate_job
from producers.keys import DEFAULT_PREFIX, Keys
from producers.phones import AcceptNumbers, mask_phone
from producers.wire import INTAKE_OTP_QUEUE, INTAKE_QUEUE, NAMESPACE, enqueue_payload


@dataclass(frozen=True)
class RecipientRow:
    phone: str
    status: str
    provider_message_id: str | None = None
    account: str | None = None
    parts: int | None = None
    cost: str | None = None
    code: str | None = None
    reason: str | None = None
    at: float | None = None
    raw_status: str | None = None  # the provider's own status, once a report was applied
    raw_error: str | None = None
    source: str | None = None  # what set the status: dispatch, poll, history, webhook
    country: str | None = None  # region code from the number (ISO 3166-1 alpha-2)
    route_account: str | None = None  # the account routing chose (``account``: what sent it)
    operator: str | None = None  # MCC+MNC, when known
    price: str | None = None  # of one SMS part at route_account, when priced
    currency: str | None = None
    priced_by: str | None = None  # operator | country | order
    attempt: int | None = None  # 2 once sent a second time (second-chance resend)
    attempts: list[dict[str, Any]] | None = None  # earlier sends' outcomes

    @classmethod
    def from_record(cls, phone: str, record: dict[str, Any]) -> RecipientRow:
        """A row from the stored JSON; fields this version does not know are ignored."""
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__ and k != "phone"}
        known.setdefault("status", "unknown")
        return cls(phone=phone, **known)

    def masked(self) -> RecipientRow:
        phone = self.phone if self.phone.startswith("#") else mask_phone(self.phone)
        return RecipientRow(**{**self.__dict__, "phone": phone})


@dataclass(frozen=True)
class CostLine:
    """What a job's sent messages cost at one account, in one currency."""

    account: str
    currency: str
    amount: float


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str
    record: Mapping[str, str]
    counts: Mapping[str, int]
    recipients: list[RecipientRow] = field(default_factory=list)
    hlr: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    costs: list[CostLine] = field(default_factory=list)  # per account and currency

    @property
    def reasons(self) -> list[str]:
        raw = self.record.get("reasons")
        return list(json.loads(raw)) if raw else []


@dataclass(frozen=True)
class AccountView:
    name: str
    state: str  # active | paused
    reason: str = ""
    since: float | None = None
    probe_at: float | None = None


@dataclass(frozen=True)
class LimiterView:
    account: str
    endpoint: str
    recent: int  # permits granted within the longest window of the key's rules
    paused_for: float  # seconds the provider asked us to wait, 0 when not paused


@dataclass(frozen=True)
class Overview:
    """Back-pressure as a producer sees it: queue depths, paused accounts, limiter use."""

    queues: Mapping[str, int]
    accounts: list[AccountView]
    limiters: list[LimiterView]
    dead_letters: int


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _count(value: bytes | str) -> int:
    """A count from the counts hash; 0 for anything that is not a number."""
    try:
        return int(value)
    except ValueError:
        return 0


class SmsqClient:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: redis.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        providers: Collection[str] | None = None,
        namespace: str = NAMESPACE,
        numbers: AcceptNumbers | None = "valid",
    ) -> None:
        """``numbers``: what a recipient must be for the local check (with the
        ``phonenumbers`` package installed; the worker checks again with its own
        setting): "valid", "possible", or None for the form only."""
        if client is None:
            client = redis.Redis.from_url(redis_url or "redis://127.0.0.1:6379/0")
        self.redis = client
        self.keys = Keys(prefix)
        self.providers = providers
        self.namespace = namespace
        self.numbers: AcceptNumbers | None = numbers

    def enqueue_payload(self, payload: Mapping[str, Any]) -> str:
        """Validate a wire payload (raises JobRejected) and enqueue it; returns the job id.

        The payload goes as given (with a generated job id when it has none), so
        the worker records impossible numbers as rejected recipients.
        """
        body = dict(payload)
        if body.get("job_id") is None:  # "" or false is refused by validate_job, not replaced
            body["job_id"] = new_job_id()
        job = validate_job(body, providers=self.providers, numbers=self.numbers)
        enqueue_payload(self.redis, body, namespace=self.namespace)
        return job.job_id

    def enqueue_send(
        self,
        *,
        provider: str,
        sender: str,
        text: str,
        recipients: Iterable[str | int],
        job_id: str | None = None,
        scheduled_at: datetime | str | None = None,
        validity: int | None = None,
        priority: str = "bulk",
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        payload: dict[str, Any] = {
            "kind": "send",
            "provider": provider,
            "sender": sender,
            "text": text,
            "recipients": list(recipients),
            "priority": priority,
        }
        if job_id is not None:
            payload["job_id"] = job_id
        if scheduled_at is not None:
            payload["scheduled_at"] = (
                scheduled_at.isoformat() if isinstance(scheduled_at, datetime) else scheduled_at
            )
        if validity is not None:
            payload["validity"] = validity
        if metadata:
            payload["metadata"] = dict(metadata)
        return self.enqueue_payload(payload)

    def enqueue_hlr(
        self,
        *,
        provider: str,
        recipients: Iterable[str | int],
        job_id: str | None = None,
        priority: str = "bulk",
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        payload: dict[str, Any] = {
            "kind": "hlr",
            "provider": provider,
            "recipients": list(recipients),
            "priority": priority,
        }
        if job_id is not None:
            payload["job_id"] = job_id
        if metadata:
            payload["metadata"] = dict(metadata)
        return self.enqueue_payload(payload)

    def status(
        self, job_id: str, *, recipients: bool = False, limit: int | None = None
    ) -> JobStatus | None:
        """The job's record and counts (and recipients' rows if asked); None if unknown.

        ValueError for a string that is not a job id (one with ``:`` could name another
        job's records)."""
        if not is_job_id(job_id):
            raise ValueError(f"{job_id[:140]!r} is not a job id (letters, digits and . _ -)")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.job(job_id))
        pipe.hgetall(self.keys.counts(job_id))
        pipe.hgetall(self.keys.cost(job_id))
        record_raw, counts_raw, cost_raw = pipe.execute()
        if not record_raw:
            return None
        record = {_decode(k): _decode(v) for k, v in record_raw.items()}
        counts = {_decode(k): n for k, v in counts_raw.items() if (n := _count(v))}
        rows: list[RecipientRow] = []
        hlr: dict[str, Mapping[str, Any]] = {}
        if recipients:
            for phone, raw in self.redis.hscan_iter(self.keys.recipients(job_id), count=1000):
                rows.append(RecipientRow.from_record(_decode(phone), json.loads(raw)))
                if limit is not None and len(rows) >= limit:
                    break
            for phone, raw in self.redis.hscan_iter(self.keys.hlr(job_id), count=1000):
                hlr[_decode(phone)] = json.loads(raw)
        costs = []
        for key, value in sorted(cost_raw.items()):
            account, _, currency = _decode(key).partition("|")
            costs.append(CostLine(account, currency, round(float(value), 6)))
        return JobStatus(job_id, record.get("state", "unknown"), record, counts, rows, hlr, costs)

    def accounts(self) -> list[AccountView]:
        """Provider accounts the circuit breaker has seen (never-paused accounts have no record)."""
        out = []
        for key in self.redis.scan_iter(match=f"{self.keys.prefix}:account:*", count=200):
            name = _decode(key).split(":", 2)[2]
            if ":" in name:
                continue  # the probe lock
            raw = {_decode(k): _decode(v) for k, v in self.redis.hgetall(key).items()}
            out.append(
                AccountView(
                    name=name,
                    state=raw.get("state", "active"),
                    reason=raw.get("reason", ""),
                    since=float(raw["since"]) if raw.get("since") else None,
                    probe_at=float(raw["probe_at"])
                    if raw.get("probe_at") and raw.get("state") == "paused"
                    else None,
                )
            )
        return sorted(out, key=lambda a: a.name)

    def limiters(self) -> list[LimiterView]:
        """Permits recently granted per (account, endpoint class), and provider-requested pauses."""
        prefix = f"{self.keys.prefix}:rl:"
        out = []
        for key in self.redis.scan_iter(match=prefix + "*", count=200):
            rest = _decode(key)[len(prefix) :]
            if rest.endswith(":pause"):
                continue
            account, _, endpoint = rest.rpartition(":")
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(key)
            pipe.pttl(_decode(key) + ":pause")
            recent, pause_ms = pipe.execute()
            out.append(LimiterView(account, endpoint, int(recent), max(0, int(pause_ms)) / 1000))
        return sorted(out, key=lambda v: (v.account, v.endpoint))

    def overview(self) -> Overview:
        return Overview(
            queues=self.queue_depths(),
            accounts=self.accounts(),
            limiters=self.limiters(),
            dead_letters=int(self.redis.zcard(self.keys.dead_letter_index)),
        )

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each smsq queue (immediate and delayed)."""
        names = [
            INTAKE_QUEUE,
            INTAKE_OTP_QUEUE,
            "smsq-dispatch",
            "smsq-dispatch-otp",
            "smsq-webhooks",
            "smsq-reconcile",
        ]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(f"{self.namespace}:{name}")
            pipe.hlen(f"{self.namespace}:{name}.DQ.msgs")
        values = pipe.execute()
        out = {}
        for i, name in enumerate(names):
            out[name] = int(values[2 * i])
            out[f"{name}.delayed"] = int(values[2 * i + 1])
        return out


def enqueue_send(redis_url: str, **kwargs: Any) -> str:
    """One-shot :meth:`SmsqClient.enqueue_send`."""
    client = SmsqClient(redis_url)
    try:
        return client.enqueue_send(**kwargs)
    finally:
        client.redis.close()


def enqueue_hlr(redis_url: str, **kwargs: Any) -> str:
    """One-shot :meth:`SmsqClient.enqueue_hlr`."""
    client = SmsqClient(redis_url)
    try:
        return client.enqueue_hlr(**kwargs)
    finally:
        client.redis.close()
