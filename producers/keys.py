"""The Redis key layout: every key smsq writes, in one place.

Every key starts with a configurable prefix (``smsq`` by default). :class:`Keys`
owns them all; no other module formats a key (tests/producers/test_key_layout.py checks). The
keys above the "internal" line are the public read model producers may read
(docs/wire-format.md); the ones below it are smsq's own bookkeeping, subject to change.
Dramatiq's queue keys (``dramatiq:...``) are the broker's (see producers/wire.py).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "smsq"

# Every append to the events stream trims it to about this many entries (XADD MAXLEN ~):
# one bound for every writer, as docs/wire-format.md promises; a consumer group lagging
# further behind loses the oldest events.
EVENTS_MAXLEN = 1_000_000


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def job(self, job_id: str) -> str:
        """Hash: the job record (state, provider, counts of recipients, reasons, ...)."""
        return f"{self.prefix}:job:{job_id}"

    def recipients(self, job_id: str) -> str:
        """Hash: phone -> JSON record of that recipient's outcome."""
        return f"{self.prefix}:job:{job_id}:rcpt"

    def counts(self, job_id: str) -> str:
        """Hash: status -> number of the job's recipients in it."""
        return f"{self.prefix}:job:{job_id}:counts"

    def hlr(self, job_id: str) -> str:
        """Hash: phone -> JSON HLR result (HLR jobs)."""
        return f"{self.prefix}:job:{job_id}:hlr"

    def cost(self, job_id: str) -> str:
        """Hash: "<account>|<currency>" -> what the job's sent messages cost there."""
        return f"{self.prefix}:job:{job_id}:cost"

    def operator(self, phone: str) -> str:
        """String (with a TTL): the operator (MCC+MNC) a number belongs to, when looked up."""
        return f"{self.prefix}:op:{phone}"

    @property
    def operators_wanted(self) -> str:
        """Sorted set: numbers waiting for an operator lookup, by the time they were seen."""
        return f"{self.prefix}:op:wanted"

    def prices(self, account: str) -> str:
        """Hash: an account's price list: "op:<mccmnc>" / "cc:<region>" -> price, currency, at."""
        return f"{self.prefix}:prices:{account}"

    def pending(self, job_id: str) -> str:
        """String: a job enqueued by a producer and not yet taken by a worker (JSON, expires)."""
        return f"{self.prefix}:pending:{job_id}"

    def chunk(self, job_id: str, index: int) -> str:
        """String: state of one chunk (claimed / sending / done / cancelled)."""
        return f"{self.prefix}:chunk:{job_id}:{index}"

    @property
    def inflight(self) -> str:
        """Hash: chunk key -> JSON of the dispatch holding it (actor, queue, args, message id,
        time), from its claim until its outcome is recorded; the stranded-work sweep reads it."""
        return f"{self.prefix}:inflight"

    @property
    def jobs(self) -> str:
        """Sorted set: job ids by creation time."""
        return f"{self.prefix}:jobs"

    def message_index(self, account: str) -> str:
        """Hash: provider message id -> "job_id|phone", per provider account."""
        return f"{self.prefix}:msgid:{account}"

    def awaiting(self, account: str) -> str:
        """Sorted set: provider message ids awaiting a final status, by next check time."""
        return f"{self.prefix}:awaiting:{account}"

    @property
    def retention(self) -> str:
        """Sorted set: finished job ids by the time their records are purged."""
        return f"{self.prefix}:retention"

    def purged(self, job_id: str) -> str:
        """String: a job id whose records were purged (so it is not accepted again)."""
        return f"{self.prefix}:purged:{job_id}"

    @property
    def events(self) -> str:
        """Stream: one entry per status change, HLR result, incoming message, account event."""
        return f"{self.prefix}:events"

    @property
    def dead_letters(self) -> str:
        """Hash: dead-letter id -> JSON record (reason, source, payload)."""
        return f"{self.prefix}:dlq"

    @property
    def dead_letter_index(self) -> str:
        """Sorted set: dead-letter ids by time."""
        return f"{self.prefix}:dlq:index"

    # ------------------------------------------------------------------- public: accounts

    def account(self, name: str) -> str:
        """Hash: a provider account's circuit state (state, reason, since, probe_at) and
        last balance (balance, currency, balance_at)."""
        return f"{self.prefix}:account:{name}"

    @property
    def accounts_pattern(self) -> str:
        """SCAN pattern of the account hashes (probe locks match too: skip names with ':')."""
        return f"{self.prefix}:account:*"

    # ------------------------------------------------------------------- internal

    def probe_lock(self, account: str) -> str:
        """String: held while one process probes a paused account."""
        return f"{self.prefix}:account:{account}:probe"

    @property
    def client_ids(self) -> str:
        """Counter: the numeric client message ids given to chunks."""
        return f"{self.prefix}:client_ids"

    def rate(self, account: str, endpoint: str) -> str:
        """Sorted set: the permit log of (account, endpoint class)."""
        return f"{self.prefix}:rl:{account}:{endpoint}"

    def rate_pause(self, account: str, endpoint: str) -> str:
        """String: a provider-requested pause of (account, endpoint class)."""
        return self.rate(account, endpoint) + ":pause"

    @property
    def rate_prefix(self) -> str:
        """What every permit log's key starts with (for SCAN)."""
        return f"{self.prefix}:rl:"

    def in_flight_leases(self, account: str) -> str:
        """Sorted set: the account's in-flight leases, by expiry."""
        return f"{self.prefix}:cc:{account}"

    def polls(self, job_id: str) -> str:
        """Hash: phone -> status polls made (expires with the job)."""
        return f"{self.prefix}:job:{job_id}:polls"

    def unknown(self, account: str) -> str:
        """Sorted set: unknown ids -> dispatch time, for the history sweep."""
        return f"{self.prefix}:unknown:{account}"

    def history(self, account: str) -> str:
        """Hash: the sent-history walk's cursor."""
        return f"{self.prefix}:history:{account}"

    def incoming(self, account: str) -> str:
        """Hash: the incoming poll's cursor."""
        return f"{self.prefix}:incoming:{account}"

    def incoming_messages(self, account: str) -> str:
        """Hash: provider id -> incoming message (indexed by arrival in :meth:`incoming_index`)."""
        return f"{self.prefix}:mo:{account}"

    def incoming_index(self, account: str) -> str:
        """Sorted set: the ids of an account's incoming messages by arrival (for retention)."""
        return f"{self.prefix}:mo:{account}:index"

    def last_run(self, account: str) -> str:
        """Hash: the last reconciliation run's figures."""
        return f"{self.prefix}:reconcile:{account}"

    def lock(self, task: str, account: str) -> str:
        """String: the run lease of a periodic task for one account."""
        return f"{self.prefix}:lock:{task}:{account}"

    def latest(self, task: str, account: str) -> str:
        """String: the newest slot the scheduler queued for (task, account)."""
        return f"{self.prefix}:sched:latest:{task}:{account}"

    @property
    def retention_scan(self) -> str:
        """Hash: the retention finder's position."""
        return f"{self.prefix}:retention:scan"

    @property
    def scheduler_lease(self) -> str:
        """String: held by the one active scheduler."""
        return f"{self.prefix}:scheduler:lease"

    def slot(self, task: str, account: str, slot: int) -> str:
        """String: one periodic task's time slot, claimed once."""
        return f"{self.prefix}:slot:{task}:{account}:{slot}"

    @property
    def inbox(self) -> str:
        """Hash: push id -> JSON of the raw request, until the actor has applied it."""
        return f"{self.prefix}:inbox"

    def push_seen(self, fingerprint: str) -> str:
        """String: a provider push's event already published (its retry changes nothing)."""
        return f"{self.prefix}:pushseen:{fingerprint}"

    @property
    def resend(self) -> str:
        """Sorted set: second-chance resends due, "<job>|<phone>|<attempt>" by time."""
        return f"{self.prefix}:resend"

    def resend_claim(self, entry: str) -> str:
        """String (with a TTL): one drainer turns this resend entry into a dispatch message."""
        return f"{self.prefix}:resend:claim:{entry}"

    @property
    def replication_probe(self) -> str:
        """String: written to check that replicas acknowledge writes (WAIT)."""
        return f"{self.prefix}:replication:probe"

    # -- producer callbacks (worker/tracking/callbacks.py) ----------------------------------------

    @property
    def callback_cursor(self) -> str:
        """String: the id of the last events-stream entry routed to the callback outboxes."""
        return f"{self.prefix}:cb:cursor"

    @property
    def callback_endpoints(self) -> str:
        """Hash: callback endpoint id -> its URL."""
        return f"{self.prefix}:cb:endpoints"

    @property
    def callback_due(self) -> str:
        """Sorted set: callback endpoint ids with events to deliver, by next attempt time."""
        return f"{self.prefix}:cb:due"

    def callback_outbox(self, endpoint: str) -> str:
        """List: an endpoint's events (JSON) in delivery order; the head goes next."""
        return f"{self.prefix}:cb:outbox:{endpoint}"

    def callback_state(self, endpoint: str) -> str:
        """Hash: failed attempts of the endpoint's head batch (attempts, last_error)."""
        return f"{self.prefix}:cb:state:{endpoint}"

    def callback_lock(self, endpoint: str) -> str:
        """String: the one deliverer of an endpoint at a time."""
        return f"{self.prefix}:cb:lock:{endpoint}"
