"""Every Prometheus metric smsq exposes (seconds, ``_total``, bounded labels only).

Labels never hold a phone number, a message id, a job id or error text: only provider
kind, account name, endpoint class, queue, priority, status, error class and the like.

Three kinds of metrics, by where they are served (see ``worker.entry.exposition``):

- process metrics below (counters and histograms), written where the event happens.
  ``smsq worker`` runs several Dramatiq processes: each writes them to the instance's
  private multiprocess directory and the worker's one ``/metrics`` port adds them up;
- Dramatiq's own metrics (:class:`DramatiqMetrics`, the names of Dramatiq's Prometheus
  middleware) in the same exposition; their gauges are ``livesum``, so the values of a
  process that died (even by SIGKILL) are dropped from the sum;
- cluster-wide gauges read from Redis at scrape time (:class:`ClusterCollector`), served
  by the scheduler process: queue backlog and age, dead letters, reconciliation lag,
  circuit state, balances, limiter utilisation, the scheduler lease.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from producers.keys import Keys

log = logging.getLogger("smsq.metrics")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DELIVERY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0)

# --------------------------------------------------------------------------- providers

PROVIDER_REQUESTS = Counter(
    "smsq_provider_requests_total",
    "HTTP requests made to providers, by outcome.",
    ["provider", "account", "endpoint", "outcome"],
)
PROVIDER_REQUEST_SECONDS = Histogram(
    "smsq_provider_request_duration_seconds",
    "Duration of HTTP requests to providers.",
    ["provider", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# --------------------------------------------------------------------------- recipients and jobs

RECIPIENTS = Counter(
    "smsq_recipients_total",
    "Recipients by the outcome recorded at dispatch.",
    ["provider", "account", "status"],
)
RECIPIENTS_FINAL = Counter(
    "smsq_recipients_final_total",
    "Recipients that reached a final status, from any source (dispatch, poll, history, push, "
    "expiry, intake); each recipient is counted once, at its first final status.",
    ["provider", "account", "status"],
)
TIME_TO_SUBMIT = Histogram(
    "smsq_time_to_submit_seconds",
    "Time from a send job's acceptance by the intake to the provider accepting a chunk of it.",
    ["priority"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FINAL = Histogram(
    "smsq_time_to_final_seconds",
    "Time from the provider accepting a message to its final status.",
    ["provider"],
    buckets=DELIVERY_BUCKETS,
)
JOBS = Counter(
    "smsq_jobs_total",
    "Jobs taken by the intake, by kind and result.",
    ["kind", "result"],
)
DEAD_LETTERS = Counter(
    "smsq_dead_letters_total",
    "Items dead-lettered, by source.",
    ["source"],
)
RETRIES = Counter(
    "smsq_retries_total",
    "Provider requests retried, by the class of the failure.",
    ["error_class"],
)
RESCHEDULED = Counter(
    "smsq_rescheduled_total",
    "Dispatches sent back to the queue to wait for a rate-limit permit.",
    ["actor"],
)
EVENTS_PUBLISHED = Counter(
    "smsq_events_published_total",
    "Entries appended to the events stream, by type.",
    ["type"],
)

# --------------------------------------------------------------------------- limits and accounts

LIMITER_WAIT_SECONDS = Histogram(
    "smsq_limiter_wait_seconds",
    "Time spent waiting for a rate-limit permit in the event loop.",
    ["account", "endpoint"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)
LIMITER_PERMITS = Counter(
    "smsq_limiter_permits_total",
    "Rate-limit permit requests, by result (granted at once, granted after waiting, "
    "rescheduled because the next permit was too far away, refused while the provider "
    "paused the endpoint).",
    ["account", "endpoint", "result"],
)
ACCOUNT_PROBES = Counter(
    "smsq_account_probes_total",
    "Balance probes of paused accounts, by result.",
    ["account", "result"],
)

# --------------------------------------------------------------------------- delivery tracking

STATUS_REPORTS = Counter(
    "smsq_status_reports_total",
    "Status reports applied from polls, history and webhooks, by source and result.",
    ["source", "result"],
)
PUSHES_RECEIVED = Counter(
    "smsq_pushes_received_total",
    "Provider pushes (delivery reports, incoming messages) received by the web process.",
    ["provider", "account", "result"],
)
PUSH_APPLY_LAG = Histogram(
    "smsq_push_apply_lag_seconds",
    "Time from a push being stored by the web process to the worker applying it.",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
INCOMING = Counter(
    "smsq_incoming_messages_total",
    "Incoming messages (MO) stored for the first time, by source.",
    ["source"],
)

# --------------------------------------------------------------------------- scheduler

SCHEDULED_RUNS = Counter(
    "smsq_scheduled_runs_total", "Runs of the periodic tasks, by result.", ["task", "result"]
)
# Served by the scheduler process only (a worker's exposition leaves them out).
SCHEDULER_ONLY = frozenset({"smsq_scheduler_active"})
# Kept by the worker's supervisor process itself, added to its exposition.
SUPERVISOR_ONLY = frozenset({"smsq_worker_restarts"})
SCHEDULER_ACTIVE = Gauge(
    "smsq_scheduler_active", "1 while this scheduler instance holds the lease."
)
SCHEDULER_SLOTS = Counter(
    "smsq_scheduler_slots_total", "Time slots claimed and enqueued, by task.", ["task"]
)
OTP_FAST_PATH = Counter(
    "smsq_otp_fast_path_total",
    "OTP chunks dispatched in their intake message's run, by what became of them.",
    ["result"],
)
STRANDED = Counter(
    "smsq_stranded_chunks_total",
    "Chunks found claimed with no message left and sent to the queue again by the sweep.",
    ["actor"],
)
REQUEUED = Counter(
    "smsq_requeued_messages_total",
    "Messages of dead worker processes put back on their queues, by queue.",
    ["queue"],
)
WORKER_RESTARTS = Counter(
    "smsq_worker_restarts_total", "Worker processes started again after they died."
)
COST = Counter(
    "smsq_cost",
    "What sending cost, per account and currency: the provider's reported cost of each"
    " recipient sent, else the routing price of its parts.",
    ["account", "currency"],
)
REPLICATION_WAITS = Counter(
    "smsq_replication_waits_total",
    "WAITs for replicas before a send request, by outcome (ok, short: fewer replicas confirmed"
    " within [redis] wait_timeout).",
    ["outcome"],
)


def count_finals(provider: str, account: str, tally: Mapping[str, int]) -> None:
    """Add the final statuses of ``tally`` (status -> recipients) to RECIPIENTS_FINAL."""
    for status, n in tally.items():
        if n and status in FINAL:
            RECIPIENTS_FINAL.labels(provider, account, status).inc(n)


FINAL = frozenset({"delivered", "undeliverable", "expired", "rejected", "failed", "cancelled"})


# --------------------------------------------------------------------------- Dramatiq's own

DRAMATIQ_MESSAGES = Counter(
    "dramatiq_messages_total",
    "The total number of messages processed.",
    ["queue_name", "actor_name"],
)
DRAMATIQ_ERRORS = Counter(
    "dramatiq_message_errors_total",
    "The total number of errored messages.",
    ["queue_name", "actor_name"],
)
DRAMATIQ_RETRIES = Counter(
    "dramatiq_message_retries_total",
    "The total number of retried messages.",
    ["queue_name", "actor_name"],
)
DRAMATIQ_REJECTS = Counter(
    "dramatiq_message_rejects_total",
    "The total number of dead-lettered messages.",
    ["queue_name", "actor_name"],
)
# livesum: summed over the live processes only; a dead process's file is dropped.
DRAMATIQ_INPROGRESS = Gauge(
    "dramatiq_messages_inprogress",
    "The number of messages in progress.",
    ["queue_name", "actor_name"],
    multiprocess_mode="livesum",
)
DRAMATIQ_DELAYED_INPROGRESS = Gauge(
    "dramatiq_delayed_messages_inprogress",
    "The number of delayed messages in memory.",
    ["queue_name", "actor_name"],
    multiprocess_mode="livesum",
)
# Dramatiq's middleware names this one ..._milliseconds; smsq keeps Prometheus's base unit.
DRAMATIQ_DURATION = Histogram(
    "dramatiq_message_duration_seconds",
    "The time spent processing messages.",
    ["queue_name", "actor_name"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


class DramatiqMetrics(dramatiq.Middleware):
    """Dramatiq's Prometheus middleware, without its separate exposition server.

    The same metric names and hooks as ``dramatiq.middleware.prometheus.Prometheus``
    (except the duration, in seconds: ``dramatiq_message_duration_seconds``);
    the values go to smsq's registry (multiprocess files under ``smsq worker``), so they
    are served on the worker's one metrics port next to smsq's own.
    """

    def __init__(self) -> None:
        self._delayed: set[str] = set()
        self._started: dict[str, float] = {}

    def after_nack(self, broker: Any, message: Any) -> None:
        DRAMATIQ_REJECTS.labels(message.queue_name, message.actor_name).inc()

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if "retries" in message.options:
            DRAMATIQ_RETRIES.labels(message.queue_name, message.actor_name).inc()

    def before_delay_message(self, broker: Any, message: Any) -> None:
        self._delayed.add(message.message_id)
        DRAMATIQ_DELAYED_INPROGRESS.labels(message.queue_name, message.actor_name).inc()

    def before_process_message(self, broker: Any, message: Any) -> None:
        labels = (message.queue_name, message.actor_name)
        if message.message_id in self._delayed:
            self._delayed.discard(message.message_id)
            DRAMATIQ_DELAYED_INPROGRESS.labels(*labels).dec()
        DRAMATIQ_INPROGRESS.labels(*labels).inc()
        self._started[message.message_id] = time.monotonic()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        labels = (message.queue_name, message.actor_name)
        started = self._started.pop(message.message_id, time.monotonic())
        DRAMATIQ_DURATION.labels(*labels).observe(time.monotonic() - started)
        DRAMATIQ_INPROGRESS.labels(*labels).dec()
        DRAMATIQ_MESSAGES.labels(*labels).inc()
        if exception is not None:
            DRAMATIQ_ERRORS.labels(*labels).inc()

    after_skip_message = after_process_message


# --------------------------------------------------------------------------- cluster-wide gauges


@dataclass(frozen=True)
class LimitRule:
    """One rate rule of an account endpoint, as the collector reads it."""

    account: str
    endpoint: str
    limit: int
    window: float  # seconds, the window the limiter counts over (with its margin)
    label: str  # e.g. "600/60s"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class ClusterCollector(Collector):
    """Gauges read from Redis at scrape time (served by ``smsq scheduler``, active or standby).

    One pipeline of cheap reads per scrape (LLEN, SCARD, ZCARD, ZCOUNT, HGETALL, LINDEX):
    queue backlog from Dramatiq's own keys (``dramatiq:<queue>`` ready, ``<queue>.DQ`` plus
    the delayed messages workers hold, the workers' ``__acks__`` sets unacknowledged), the
    age of the oldest waiting message, dead letters held, reconciliation backlog and lag,
    circuit state, balances, limiter utilisation and the scheduler lease. A Redis failure
    yields no samples (the scrape still succeeds: ``up`` stays about the process).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        keys: Keys,
        accounts: Sequence[str],
        queues: Sequence[str],
        rules: Sequence[LimitRule],
        namespace: str = "dramatiq",
        age_sample: int = 500,
    ) -> None:
        self.client = client
        self.keys = keys
        self.accounts = list(accounts)
        self.queues = list(queues)
        self.rules = list(rules)
        self.namespace = namespace
        self.age_sample = age_sample

    def describe(self) -> Iterable[Any]:
        return []  # collected on demand; nothing is read from Redis at registration

    def collect(self) -> Iterator[Any]:
        try:
            families = self._read()
        except (redis.RedisError, OSError) as exc:
            log.warning("cluster metrics: Redis unavailable (%s)", type(exc).__name__)
            return
        yield from families

    # -- reading -------------------------------------------------------------------

    def _acks_keys(self, broker_ids: list[str], queue: str) -> list[str]:
        return [f"{self.namespace}:__acks__.{b}.{queue}" for b in broker_ids]

    def _read(self) -> list[Any]:
        r = self.client
        ns, k = self.namespace, self.keys
        broker_ids = [_text(b) for b in r.zrange(f"{ns}:__heartbeats__", 0, -1)]
        pipe = r.pipeline(transaction=False)
        pipe.time()
        for q in self.queues:
            pipe.llen(f"{ns}:{q}")
            pipe.llen(f"{ns}:{q}.DQ")
            pipe.lrange(f"{ns}:{q}", 0, 0)
            pipe.lrange(f"{ns}:{q}.DQ", 0, self.age_sample - 1)
            for key in self._acks_keys(broker_ids, q):
                pipe.scard(key)
            for key in self._acks_keys(broker_ids, f"{q}.DQ"):
                pipe.smembers(key)
        pipe.hlen(k.dead_letters)
        pipe.exists(k.scheduler_lease)
        for a in self.accounts:
            pipe.zcard(k.awaiting(a))
            pipe.zrange(k.awaiting(a), 0, 0, withscores=True)
            pipe.hgetall(k.account(a))
        results = iter(pipe.execute())
        seconds, micros = next(results)
        now = float(seconds) + float(micros) / 1e6

        ready = GaugeMetricFamily(
            "smsq_queue_messages",
            "Messages in a Dramatiq queue now, by state (ready: waiting to be fetched; "
            "delayed: waiting for their time; unacked: fetched by a worker, not yet done).",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "smsq_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting in a queue (ready, or delayed and due); 0 when none.",
            labels=["queue"],
        )
        bodies: list[tuple[str, list[str], str]] = []  # (queue, ids, msgs key)
        for q in self.queues:
            n_ready = int(next(results))
            n_dq = int(next(results))
            head = [_text(i) for i in next(results)]
            dq_ids = [_text(i) for i in next(results)]
            unacked = sum(int(next(results)) for _ in broker_ids)
            held: list[str] = []
            for _ in broker_ids:
                held += [_text(i) for i in next(results)]
            ready.add_metric([q, "ready"], n_ready)
            ready.add_metric([q, "delayed"], n_dq + len(held))
            ready.add_metric([q, "unacked"], unacked)
            bodies.append((q, head, f"{ns}:{q}.msgs"))
            bodies.append((q, (dq_ids + held)[: self.age_sample], f"{ns}:{q}.DQ.msgs"))
        dlq = int(next(results))
        lease = int(next(results))
        account_rows = [
            (a, int(next(results)), next(results), next(results)) for a in self.accounts
        ]

        ages = self._oldest(bodies, now)
        for q in self.queues:
            oldest.add_metric([q], ages.get(q, 0.0))

        dead = GaugeMetricFamily("smsq_dead_letters_held", "Dead letters held now (smsq dlq list).")
        dead.add_metric([], dlq)
        held_lease = GaugeMetricFamily(
            "smsq_scheduler_lease_held", "1 while some scheduler instance holds the lease."
        )
        held_lease.add_metric([], 1 if lease else 0)
        awaiting = GaugeMetricFamily(
            "smsq_awaiting_messages",
            "Messages awaiting a final status (reconciliation backlog), per account.",
            labels=["account"],
        )
        lag = GaugeMetricFamily(
            "smsq_reconcile_lag_seconds",
            "How overdue the most overdue awaiting message's next check is; 0 when none is due.",
            labels=["account"],
        )
        paused = GaugeMetricFamily(
            "smsq_account_paused",
            "1 while a provider account is paused by the circuit breaker, else 0.",
            labels=["account"],
        )
        balance = GaugeMetricFamily(
            "smsq_account_balance",
            "Provider account balance last polled, in the currency of the label.",
            labels=["account", "currency"],
        )
        for account, count, first, state in account_rows:
            awaiting.add_metric([account], count)
            due = float(first[0][1]) if first else now
            lag.add_metric([account], max(0.0, now - due))
            paused.add_metric([account], 1 if state.get(b"state") == b"paused" else 0)
            amount = state.get(b"balance")
            if amount is not None:
                try:
                    value = float(_text(amount))
                except ValueError:
                    continue
                currency = _text(state.get(b"currency", b"")) or "unknown"
                balance.add_metric([account, currency[:8]], value)
        return [
            ready,
            oldest,
            dead,
            held_lease,
            awaiting,
            lag,
            paused,
            balance,
            self._utilisation(),
        ]

    def _oldest(self, bodies: list[tuple[str, list[str], str]], now: float) -> dict[str, float]:
        pipe = self.client.pipeline(transaction=False)
        asked = [(q, key, ids) for q, ids, key in bodies if ids]
        for _, key, ids in asked:
            pipe.hmget(key, ids)
        ages: dict[str, float] = {}
        for (q, _, _), raw in zip(asked, pipe.execute() if asked else [], strict=True):
            for body in raw:
                age = _waiting_age(body, now)
                if age is not None and age > ages.get(q, 0.0):
                    ages[q] = age
        return ages

    def _utilisation(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "smsq_limiter_utilisation",
            "Fraction (0..1) of a rate rule's cap used in its current window.",
            labels=["account", "endpoint", "rule"],
        )
        if not self.rules:
            return family
        seconds, micros = self.client.time()
        now_us = int(seconds) * 1_000_000 + int(micros)
        pipe = self.client.pipeline(transaction=False)
        for rule in self.rules:
            since = now_us - int(rule.window * 1_000_000)
            pipe.zcount(self.keys.rate(rule.account, rule.endpoint), f"({since}", "+inf")
        for rule, used in zip(self.rules, pipe.execute(), strict=True):
            family.add_metric(
                [rule.account, rule.endpoint, rule.label], min(1.0, int(used) / rule.limit)
            )
        return family


def _waiting_age(body: bytes | None, now: float) -> float | None:
    """How long a stored Dramatiq message has been waiting: since its enqueue, or since its
    eta when it has one (a delayed message not yet due is not waiting: None)."""
    if not body:
        return None
    try:
        message = json.loads(body)
        since = float(message["message_timestamp"]) / 1000
        eta = message.get("options", {}).get("eta")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if isinstance(eta, int | float) and not isinstance(eta, bool):
        if eta / 1000 > now:
            return None
        since = max(since, eta / 1000)
    return max(0.0, now - since)


CALLBACK_REQUESTS = Counter(
    "smsq_callback_requests_total",
    "POSTs of job events to producers' callback URLs, by result (delivered|failed).",
    ["result"],
)
CALLBACK_EVENTS = Counter(
    "smsq_callback_events_total",
    "Job events handed to producers' callback URLs, by result (delivered|dead_lettered).",
    ["result"],
)
