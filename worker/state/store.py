"""Writes smsq's records to Redis: jobs, recipients' outcomes, indexes, dead letters.

The functions that build commands take a pipeline (sync or asyncio: both queue
commands the same way) so a caller writes a whole chunk's outcome in one round
trip. The layout is in producers/keys.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from producers.contract import Job, RejectedRecipient, SendJob, is_job_id
from producers.keys import EVENTS_MAXLEN, Keys
from producers.status import FINAL_STATUSES, JobState, Status
from worker.core import metrics
from worker.providers.base import RecipientOutcome
from worker.state.limiter import Held
from worker.state.status_apply import ResendHook, canonical_id, lua_script

CHUNK_STATE_TTL = 7 * 24 * 3600
DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024  # default of [dispatch] dead_letter_max_bytes
DEAD_LETTER_MAX_REASONS = 50
DEAD_LETTER_REASON_LEN = 2000


# Dataclasses, dates and subclasses are left to json, as before (it refuses them).
_ORJSON = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def dumps(value: Any) -> str:
    """Compact JSON that Redis can always store: non-ASCII kept as is, unless a string holds
    an unpaired surrogate (JSON accepts ``"\\ud800"``; UTF-8 cannot encode it), in which
    case the whole document is written with ASCII escapes, which keep it exactly.

    orjson writes it (a chunk's outcomes and in-flight entry on every dispatch: json's
    encoder was a tenth of the dispatch's CPU); what orjson refuses (a lone surrogate, an
    integer beyond 64 bits, a type it does not know) is written by json as before."""
    try:
        return orjson.dumps(value, option=_ORJSON).decode()
    except (TypeError, orjson.JSONEncodeError):
        pass
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text


def recipient_record(
    status: Status,
    *,
    account: str | None = None,
    provider_message_id: str | None = None,
    parts: int | None = None,
    cost: str | None = None,
    code: str | None = None,
    reason: str | None = None,
    at: float | None = None,
    country: str | None = None,
) -> str:
    """The JSON kept per recipient (fields with no value are left out)."""
    record: dict[str, Any] = {"status": status.value, "at": round(at or time.time(), 3)}
    for name, value in (
        ("country", country),
        ("account", account),
        ("provider_message_id", provider_message_id),
        ("parts", parts),
        ("cost", cost),
        ("code", code),
        ("reason", reason),
    ):
        if value is not None:
            record[name] = value
    return dumps(record)


def write_job_record(
    pipe: Any,
    keys: Keys,
    job: Job,
    *,
    accounts: Iterable[str],
    chunks: int,
    now: float,
    decisions: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Queue the writes of an accepted job: record, recipients (queued / rejected), counts.

    ``decisions`` (one per recipient, in order): what routing decided, kept in each
    recipient's record; ``extra``: more fields of the job record."""
    record: dict[str, Any] = {
        "kind": job.kind,
        "state": JobState.ACCEPTED.value,
        "provider": job.provider,
        "accounts": ",".join(accounts),
        "priority": job.priority,
        "recipients": len(job.recipients) + len(job.rejected),
        "valid": len(job.recipients),
        "rejected": len(job.rejected),
        "duplicates": job.duplicates,
        "chunks": chunks,
        "chunks_done": 0,
        "created_at": round(now, 3),
        "metadata": dumps(job.metadata),
        **(extra or {}),
    }
    if isinstance(job, SendJob):
        record.update(
            {
                "sender": job.sender,
                "encoding": job.segments.encoding,
                "parts": job.segments.parts,
                "scheduled_at": job.scheduled_at.isoformat() if job.scheduled_at else "",
                "validity": job.validity or "",
            }
        )
    pipe.hset(keys.job(job.job_id), mapping=record)
    pipe.zadd(keys.jobs, {job.job_id: now})
    queued = recipient_record(Status.QUEUED, at=now)
    by_country: dict[str, str] = {}  # one record text per country
    countries = job.countries if len(job.countries) == len(job.recipients) else ()
    rcpt_key = keys.recipients(job.job_id)
    batch: dict[str, str] = {}
    for i, phone in enumerate(job.recipients):
        if decisions is not None:
            routed: dict[str, Any] = {"status": Status.QUEUED.value, "at": round(now, 3)}
            if countries and countries[i]:
                routed["country"] = countries[i]
            routed.update(decisions[i])
            batch[phone] = dumps(routed)
        elif countries and countries[i]:
            region = countries[i]
            record_text = by_country.get(region)
            if record_text is None:
                record_text = by_country[region] = recipient_record(
                    Status.QUEUED, at=now, country=region
                )
            batch[phone] = record_text
        else:
            batch[phone] = queued
        if len(batch) >= 10_000:
            pipe.hset(rcpt_key, mapping=batch)
            batch = {}
    for rej in job.rejected:
        batch[rejected_key(rej)] = recipient_record(Status.REJECTED, reason=rej.reason, at=now)
    if batch:
        pipe.hset(rcpt_key, mapping=batch)
    counts = {Status.QUEUED.value: len(job.recipients)}
    if job.rejected:
        counts[Status.REJECTED.value] = len(job.rejected)
    pipe.hset(keys.counts(job.job_id), mapping=counts)


def rejected_key(rej: RejectedRecipient) -> str:
    """Field name of a recipient rejected at validation: its raw value (it has no normalised form)."""
    return f"#{rej.index}:{rej.raw}"


def chunk_outcomes_json(
    outcomes: Iterable[RecipientOutcome],
    candidate: Callable[[RecipientOutcome], bool] | None = None,
) -> tuple[str, Counter[Status]]:
    """The outcomes argument of ``record_chunk.lua`` and how many went to each status.

    ``candidate`` marks the failures the provider's codes call provider-side (``rs``)."""
    items: list[dict[str, Any]] = []
    tally: Counter[Status] = Counter()
    for o in outcomes:
        item: dict[str, Any] = {"p": o.phone, "s": o.status.value}
        if (
            candidate is not None
            and o.status in FINAL_STATUSES
            and o.status is not Status.DELIVERED
            and candidate(o)
        ):
            item["rs"] = 1
        if o.provider_message_id:
            item["id"] = o.provider_message_id
            item["cid"] = canonical_id(o.provider_message_id)
        if o.parts is not None:
            item["n"] = o.parts
        if o.cost is not None:
            item["c"] = o.cost
        if o.raw_code is not None:
            item["k"] = o.raw_code
        if o.reason is not None:
            item["r"] = o.reason
        items.append(item)
        tally[o.status] += 1
    return dumps(items), tally


class ChunkRecorder:
    """Records a dispatched chunk's outcomes with ``record_chunk.lua`` (one round trip)."""

    def __init__(
        self,
        client: Any,
        keys: Keys,
        first_check: float,
        *,
        resender: ResendHook | None = None,
    ) -> None:
        self._keys = keys
        self._first_check = first_check  # seconds after submit before the first status poll
        self._resender = resender
        self._script = client.register_script(lua_script("record_chunk.lua"))

    async def record(
        self,
        job_id: str,
        chunk_key: str,
        account: str,
        outcomes: Iterable[RecipientOutcome],
        *,
        now: float | None = None,
        second_chance: bool = False,
        held: Held | None = None,
    ) -> Counter[Status]:
        """Record the outcomes; an empty tally when the chunk was already recorded.

        ``held``: the request's rate permit and in-flight lease, completed and released in
        the same call (also when the chunk was recorded before).

        ``second_chance``: the chunk resends recipients (it is not one of the job's
        counted chunks). Recipients queued for a second chance are in the tally as
        ``queued``, and their dispatch is enqueued before this returns."""
        now = now or time.time()
        resender = self._resender
        payload, tally = chunk_outcomes_json(
            outcomes,
            None
            if resender is None
            else lambda o: resender.candidate(
                account, o.status, o.raw_code or "", "", at_send=True
            ),
        )
        k = self._keys
        keys = [
            chunk_key,
            k.inflight,
            k.job(job_id),
            k.recipients(job_id),
            k.counts(job_id),
            k.cost(job_id),
            k.message_index(account),
            k.awaiting(account),
            k.events,
            k.resend,
            k.prices(account),
            k.account(account),
        ]
        args = [
            job_id,
            account,
            f"{now:.3f}",
            EVENTS_MAXLEN,
            f"{now + self._first_check:.3f}",
            CHUNK_STATE_TTL,
            payload,
            f"{resender.otp_max_age if resender is not None else 0.0:.3f}",
            "resend" if second_chance else "",
        ]
        if held is not None:
            keys += held.script_keys()
            args += held.script_args()
        else:
            args += ["", ""]
        result = await self._script(keys=keys, args=args)
        if not isinstance(result, list):  # -1: recorded before
            return Counter()
        _, cost_list, resent_list = result
        for i in range(0, len(resent_list), 2):
            name = resent_list[i].decode() if isinstance(resent_list[i], bytes) else resent_list[i]
            moved = int(resent_list[i + 1])
            tally[Status(str(name))] -= moved
            tally[Status.QUEUED] += moved
        tally = +tally  # drop the zeros
        if resent_list and resender is not None:
            await resender.enqueue_due()
        for i in range(0, len(cost_list), 2):
            label = cost_list[i].decode() if isinstance(cost_list[i], bytes) else cost_list[i]
            account_label, _, currency = str(label).partition("|")
            metrics.COST.labels(account_label, currency or "unknown").inc(float(cost_list[i + 1]))
        return tally


def dead_letter(
    pipe: Any,
    keys: Keys,
    *,
    source: str,
    reasons: list[str],
    payload: bytes | str | Mapping[str, Any] | None,
    job_id: str | None = None,
    record_job: bool = False,
    now: float | None = None,
    max_bytes: int = DEAD_LETTER_PAYLOAD_LIMIT,
) -> str:
    """Queue the writes of one dead letter; returns its id.

    The payload is kept whole up to ``max_bytes`` (of its JSON or text form); a larger one
    is kept as the first ``max_bytes`` of that text with ``payload_truncated`` set.
    ``payload_bytes`` always records the original size. Any string (lone surrogates
    included) can be stored. ``job_id`` is kept only when it is a valid job id; with
    ``record_job`` (the caller found no record for it), a job record in state
    ``dead_lettered`` with the reasons is written too, so ``smsq status`` tells the
    producer what happened.
    """
    now = now or time.time()
    dl_id = uuid.uuid4().hex
    max_bytes = max(256, int(max_bytes))
    kept: Any
    if isinstance(payload, bytes):
        size = len(payload)
        text = payload[:max_bytes].decode("utf-8", errors="replace")
        kept = _clean_text(text)
    elif isinstance(payload, str):
        encoded = _clean_text(payload).encode("utf-8")
        size = len(encoded)
        kept = encoded[:max_bytes].decode("utf-8", errors="ignore")
    elif payload is None:
        size, kept = 0, None
    else:
        try:
            text = dumps(payload)
            whole: Any = payload
        except (TypeError, ValueError, RecursionError) as exc:
            text = whole = f"<payload not encodable as JSON: {type(exc).__name__}>"
        encoded = text.encode("utf-8")
        size = len(encoded)
        kept = whole if size <= max_bytes else encoded[:max_bytes].decode("utf-8", "ignore")
    truncated = size > max_bytes
    if not is_job_id(job_id):
        job_id = None
    clean = [_clean_text(str(r))[:DEAD_LETTER_REASON_LEN] for r in reasons]
    if len(clean) > DEAD_LETTER_MAX_REASONS:
        more = len(clean) - DEAD_LETTER_MAX_REASONS
        clean = [*clean[:DEAD_LETTER_MAX_REASONS], f"... and {more} more reasons"]
    record: dict[str, Any] = {
        "id": dl_id,
        "source": source,
        "reasons": clean,
        "job_id": job_id,
        "at": round(now, 3),
        "payload": kept,
        "payload_bytes": size,
    }
    if truncated:
        record["payload_truncated"] = True
    pipe.hset(keys.dead_letters, dl_id, dumps(record))
    pipe.zadd(keys.dead_letter_index, {dl_id: now})
    if job_id and record_job:
        job_record = {
            "state": JobState.DEAD_LETTERED.value,
            "reasons": dumps(clean),
            "dead_letter_id": dl_id,
            "created_at": round(now, 3),
        }
        pipe.hset(keys.job(job_id), mapping=job_record)
        pipe.zadd(keys.jobs, {job_id: now}, nx=True)
    return dl_id


def _clean_text(text: str) -> str:
    """``text`` with unpaired surrogates written as ``\\uXXXX`` (UTF-8 cannot hold them)."""
    if text.isascii():
        return text
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def remember_operator(pipe: Any, keys: Keys, phone: str, mccmnc: str, ttl: float) -> None:
    """Cache a number's operator (in ``pipe``): a lookup or an HLR result placed it."""
    if mccmnc.isdigit() and len(mccmnc) in (5, 6):
        pipe.set(keys.operator(phone), mccmnc, ex=max(1, int(ttl)))
