"""smsq's own Prometheus metrics (seconds, ``_total``, bounded labels only).

Labels never hold a phone number, a message id or a job id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PROVIDER_REQUESTS = Counter(
    "smsq_provider_requests_total",
    "HTTP requests made to providers, by outcome.",
    ["provider", "endpoint", "outcome"],
)
PROVIDER_REQUEST_SECONDS = Histogram(
    "smsq_provider_request_duration_seconds",
    "Duration of HTTP requests to providers.",
    ["provider", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RECIPIENTS = Counter(
    "smsq_recipients_total",
    "Recipients by the outcome recorded at dispatch.",
    ["provider", "status"],
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
LIMITER_WAIT_SECONDS = Histogram(
    "smsq_limiter_wait_seconds",
    "Time spent waiting for a rate-limit permit in the event loop.",
    ["endpoint"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)
RESCHEDULED = Counter(
    "smsq_rescheduled_total",
    "Dispatches sent back to the queue to wait for a rate-limit permit.",
    ["actor"],
)
ACCOUNT_PAUSED = Gauge(
    "smsq_account_paused",
    "1 while a provider account is paused by the circuit breaker.",
    ["account"],
)
ACCOUNT_PROBES = Counter(
    "smsq_account_probes_total",
    "Balance probes of paused accounts, by result.",
    ["account", "result"],
)
STATUS_REPORTS = Counter(
    "smsq_status_reports_total",
    "Status reports applied from polls, history and webhooks, by source and result.",
    ["source", "result"],
)
INCOMING = Counter(
    "smsq_incoming_messages_total",
    "Incoming messages (MO) stored for the first time, by source.",
    ["source"],
)
# "mostrecent": with several worker processes (multiprocess exposition) the last reading wins.
ACCOUNT_BALANCE = Gauge(
    "smsq_account_balance",
    "Provider account balance, in the account's currency.",
    ["account"],
    multiprocess_mode="mostrecent",
)
AWAITING = Gauge(
    "smsq_awaiting_messages",
    "Messages awaiting a final status (reconciliation backlog), per account.",
    ["account"],
    multiprocess_mode="mostrecent",
)
SCHEDULED_RUNS = Counter(
    "smsq_scheduled_runs_total", "Runs of the periodic tasks, by result.", ["task", "result"]
)
SCHEDULER_ACTIVE = Gauge(
    "smsq_scheduler_active", "1 while this scheduler instance holds the lease."
)
SCHEDULER_SLOTS = Counter(
    "smsq_scheduler_slots_total", "Time slots claimed and enqueued, by task.", ["task"]
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
