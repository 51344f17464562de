"""smsq configuration: one TOML file (path in ``SMSQ_CONFIG``) plus environment overrides.

```toml
[redis]
url = "redis://127.0.0.1:6379/0"      # REDIS_URL overrides
key_prefix = "smsq"

[dispatch]
max_attempts = 5                      # tenacity attempts for transient failures
max_retry_seconds = 120
chunks_per_message = 8                # chunks one dispatch message carries (sent concurrently)

[accounts.intis-main]
kind = "intis"
base_url = "https://go.intistele.com"
login = "my-login"
api_key = { env = "SMSQ_INTIS_API_KEY" }     # or { file = "/run/secrets/intis_key" }
batch_size = 50

[routes]
default = ["intis-main"]
```

Credentials are never written inline: ``password`` and ``api_key`` take
``{ env = "NAME" }`` or ``{ file = "PATH" }``. Any scalar setting can be
overridden by an environment variable ``SMSQ__<SECTION>__<NAME>__<KEY>``
(upper case, ``-`` written as ``_``), e.g. ``SMSQ__ACCOUNTS__INTIS_MAIN__BASE_URL``.
Every problem found is reported at once, each naming its key.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from producers import redis_conn
from producers.errors import SmsqError
from producers.keys import DEFAULT_PREFIX
from producers.phones import ACCEPT_NUMBERS, AcceptNumbers
from worker.providers import known_kinds, provider_spec
from worker.providers.base import (
    AMBIGUOUS_SENDS,
    AccountConfig,
    AmbiguousSends,
    ExpectedIds,
    MessageLimits,
    ProviderOptions,
    parse_options,
)
from worker.state.limiter import Rule

ENV_PREFIX = "SMSQ__"
SECRET_FIELDS = ("password", "api_key", "webhook_secret")
ACCOUNT_FIELDS = {
    "kind",
    "base_url",
    "login",
    "password",
    "api_key",
    "batch_size",
    "timeout",
    "backup_urls",
    "options",
    "limits",
    "max_in_flight",
    "webhook_secret",
    "prices",
    "ambiguous_sends",
}
ROUTE_FIELDS = {"accounts", "strategy", "resend_on", "attempts"}
STRATEGIES = ("failover", "cost")
# Final statuses a route may resend on (never ``unknown``: it is not final; never
# ``delivered``; never ``expired``: the message's validity is spent).
RESENDABLE = ("undeliverable", "rejected", "failed")


class ConfigError(SmsqError, ValueError):
    """The configuration is invalid; ``problems`` lists every problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DispatchSettings:
    max_attempts: int = 5
    max_retry_seconds: float = 120.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    probe_interval: float = 30.0  # seconds between balance probes of a paused account
    otp_max_age: float = 600.0  # an otp chunk not sent within this long after intake fails
    dead_letter_max_bytes: float = 65536.0  # a dead letter keeps at most this much payload
    # Chunks of a send job one dispatch message carries, sent concurrently on the worker's
    # event loop (1: one chunk a message, the format every earlier version reads).
    chunks_per_message: int = 8


@dataclass(frozen=True)
class IntakeSettings:
    """``[intake]``: what a recipient must be to be sent to."""

    # "valid": a number libphonenumber calls valid; "possible": one of a possible length
    # for its country code (e.g. a range newer than the library's data).
    accept_numbers: AcceptNumbers = "valid"


@dataclass(frozen=True)
class WebSettings:
    """``[web]``: the aiohttp process serving provider pushes, health and the optional HTTP intake."""

    host: str = "127.0.0.1"
    port: int = 8080
    intake_tokens: tuple[str, ...] = field(
        default=(), repr=False
    )  # bearer tokens; empty: intake off
    max_body_bytes: int = 1_048_576
    header_timeout: float = 10.0  # a connection's request line and headers must arrive within
    body_timeout: float = 30.0  # a request's whole body must arrive within (else 408)


@dataclass(frozen=True)
class CallbackProducer:
    """``[callbacks.producers.<name>]``: a service that receives its jobs' events over HTTP."""

    name: str
    urls: tuple[str, ...]  # a job's callback_url must start with one of these
    secrets: tuple[str, ...] = field(default=(), repr=False)  # the first signs; each adds a v1=


@dataclass(frozen=True)
class CallbackSettings:
    """``[callbacks]``: delivery of job events to producers' URLs (docs/wire-format.md)."""

    producers: Mapping[str, CallbackProducer] = field(default_factory=dict)
    routes: Mapping[str, str] = field(default_factory=dict)  # provider value -> default URL
    interval: float = 1.0  # seconds between delivery runs (a scheduler task)
    batch_size: int = 100  # events per POST at most
    timeout: float = 10.0  # seconds per POST
    max_attempts: int = 15  # failed POSTs of one batch before it is dead-lettered
    max_age: float = 86400.0  # ... or once its oldest event is older than this (seconds)
    backoff_initial: float = 1.0
    backoff_max: float = 300.0

    def producer_for(self, url: str) -> CallbackProducer | None:
        """The producer whose configured URLs ``url`` starts with (longest prefix wins)."""
        best: tuple[int, CallbackProducer] | None = None
        for producer in self.producers.values():
            for prefix in producer.urls:
                if url.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), producer)
        return best[1] if best else None


@dataclass(frozen=True)
class SchedulerSettings:
    """``[scheduler]``: periodic work with one active instance across replicas."""

    lease_seconds: float = 10.0  # a standby takes over within this long
    tick_seconds: float = 1.0
    reconcile_interval: float = 10.0  # seconds between reconciliation runs per account
    first_check: float = 30.0  # seconds after submit before a message's first status poll
    max_check_interval: float = 1800.0  # backoff ceiling between polls of one message
    horizon: float = 72 * 3600.0  # stop polling after this long (or at the message's validity)
    history_interval: float = 60.0  # seconds between sent-history sweeps for unknown messages
    incoming_interval: float = 60.0  # seconds between polls for incoming messages
    balance_interval: float = 300.0
    retention: float = 7 * 24 * 3600.0  # finished job records expire after this long


@dataclass(frozen=True)
class WorkerSettings:
    """``[worker]``: how worker processes survive crashes, Redis outages and shutdowns."""

    heartbeat_timeout: float = 15.0  # a worker silent this long is dead: its messages are requeued
    maintenance_interval: float = 5.0  # seconds between checks for dead workers (per process)
    shutdown_timeout: float = 30.0  # after SIGTERM, in-flight work gets this long to finish
    redis_outage: float = (
        120.0  # seconds a worker keeps a provider's answer, retrying its recording
    )
    stranded_after: float = 30.0  # a chunk claimed this long with no message left is settled
    restart_delay: float = 1.0  # seconds before a crashed worker process is started again
    otp_threads: float = 4.0  # threads of each worker process kept for the OTP queues alone
    gil_switch_interval: float = 0.0005  # seconds a thread runs before one waiting gets the GIL

    @property
    def requeue_within(self) -> float:
        """The bound on how long a dead worker's messages wait before another takes them."""
        return self.heartbeat_timeout + self.maintenance_interval


@dataclass(frozen=True)
class RoutingSettings:
    """``[routing]``: least-cost routing's caches and refreshes."""

    operator_ttl: float = 30 * 24 * 3600.0  # a number's cached operator (MCC+MNC) is kept this long
    price_interval: float = 3600.0  # seconds between price list refreshes per account
    operator_interval: float = 60.0  # seconds between operator lookup runs per account
    lookups_per_run: float = 1000.0  # numbers one lookup run may ask about (within the caps)


@dataclass(frozen=True)
class RoutePolicy:
    """How a route picks an account per recipient and whether it tries again."""

    strategy: str = "failover"  # "failover": in order; "cost": the cheapest account per number
    resend_on: tuple[str, ...] = ()  # final statuses sent once more through the next account
    attempts: int = 1  # sends per recipient in all (1: no second chance)


@dataclass(frozen=True)
class PriceOverride:
    """``[accounts.<name>.prices]``: prices that replace the provider's price list."""

    prices: Mapping[str, Decimal] = field(default_factory=dict)  # MCC+MNC or region -> price
    currency: str | None = None


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: where the worker and the scheduler serve ``/metrics`` and ``/healthz``.

    ``smsq web`` serves both on its own port. Port 0: any free port (logged at start).
    Loopback by default; containers set ``SMSQ__METRICS__HOST=0.0.0.0``.
    """

    host: str = "127.0.0.1"
    worker_port: int = 9191
    scheduler_port: int = 9192


@dataclass(frozen=True)
class AccountLimits:
    """Rate rules per endpoint class (send, status, history, hlr, balance, ...) and in-flight cap."""

    rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    max_in_flight: int = 0  # 0: no cap

    def for_endpoint(self, endpoint: str) -> list[Rule]:
        return list(self.rules.get(endpoint, ()))


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(repr=False)  # may hold a password
    key_prefix: str = DEFAULT_PREFIX
    accounts: Mapping[str, AccountConfig] = field(default_factory=dict)
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    limits: Mapping[str, AccountLimits] = field(default_factory=dict)
    web: WebSettings = field(default_factory=WebSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    route_policies: Mapping[str, RoutePolicy] = field(default_factory=dict)
    price_overrides: Mapping[str, PriceOverride] = field(default_factory=dict)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def policy(self, provider: str) -> RoutePolicy:
        """The route policy of a job's ``provider`` (plain failover for accounts and kinds)."""
        return self.route_policies.get(provider) or RoutePolicy()

    callbacks: CallbackSettings = field(default_factory=CallbackSettings)

    def limits_for(self, account: str) -> AccountLimits:
        return self.limits.get(account) or AccountLimits()

    def message_limits(self, account: str) -> MessageLimits:
        """What one message may be on the account's provider (its documented limits)."""
        return provider_spec(self.accounts[account].kind).message_limits

    def provider_names(self) -> set[str]:
        """Every name a job's ``provider`` may take: routes, accounts, and kinds with one account."""
        kinds: dict[str, int] = {}
        for acc in self.accounts.values():
            kinds[acc.kind] = kinds.get(acc.kind, 0) + 1
        return set(self.routes) | set(self.accounts) | {k for k, n in kinds.items() if n == 1}

    def resolve(self, provider: str) -> tuple[str, ...]:
        """Account names, in order of preference, for a job's ``provider`` value."""
        if provider in self.routes:
            return self.routes[provider]
        if provider in self.accounts:
            return (provider,)
        matching = tuple(name for name, acc in self.accounts.items() if acc.kind == provider)
        if len(matching) == 1:
            return matching
        raise KeyError(provider)


def safe_url(url: str) -> str:
    """``url`` without the password it may carry (for messages and output)."""
    return redis_conn.safe_url(url)


REDIS_KEYS = {
    "url",
    "key_prefix",
    "sentinels",
    "master",
    "db",
    "username",
    "password",
    "sentinel_password",
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
    "wait_replicas",
    "wait_timeout",
}


def _redis_url(raw: Any, env: Mapping[str, str], problems: list[str]) -> str:
    """``[redis]`` as one URL for producers/redis_conn.py (REDIS_URL, when set, wins).

    Either ``url`` (redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://)
    or ``sentinels`` + ``master`` (+ ``db``, ``username``, ``password``,
    ``sentinel_password``); ``tls``, ``ca_file``, ``cert_file``, ``key_file`` for TLS;
    ``wait_replicas`` / ``wait_timeout`` for ``WAIT`` (docs/reliability.md).
    """
    if not isinstance(raw, dict):
        problems.append("redis: must be a table")
        return "redis://127.0.0.1:6379/0"
    for key in sorted(set(raw) - REDIS_KEYS):
        problems.append(f"redis.{key}: unknown setting (known: {', '.join(sorted(REDIS_KEYS))})")
    options: dict[str, str] = {}
    for key, option in (
        ("ca_file", "ssl_ca_certs"),
        ("cert_file", "ssl_certfile"),
        ("key_file", "ssl_keyfile"),
    ):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not Path(value).is_file():
            problems.append(f"redis.{key}: must name a readable file, got {value!r}")
            continue
        options[option] = value
    for key, kind in (("wait_replicas", int), ("wait_timeout", float)):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            problems.append(f"redis.{key}: must be a number >= 0, got {value!r}")
            continue
        options[key] = str(kind(value))
    sentinels = raw.get("sentinels")
    url = env.get("REDIS_URL") or raw.get("url")
    tls = raw.get("tls", False)
    if not isinstance(tls, bool):
        problems.append("redis.tls: must be true or false")
        tls = False
    if sentinels is not None and not env.get("REDIS_URL"):
        if raw.get("url"):
            problems.append("redis: give either url or sentinels (with master), not both")
        master = raw.get("master")
        db = raw.get("db", 0)
        hosts: list[tuple[str, int]] = []
        if not isinstance(sentinels, list) or not sentinels:
            problems.append('redis.sentinels: must be a list of "host:port"')
            sentinels = []
        for item in sentinels:
            host, _, port = str(item).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                problems.append(f'redis.sentinels: {item!r} is not "host:port"')
                continue
            hosts.append((host.strip("[]"), int(port)))
        if not isinstance(master, str) or not master:
            problems.append("redis.master: the Sentinel master name is required with sentinels")
            master = "mymaster"
        if not isinstance(db, int) or isinstance(db, bool) or db < 0:
            problems.append(f"redis.db: must be a whole number >= 0, got {db!r}")
            db = 0
        sentinel_password = _secret(
            "redis.sentinel_password", raw.get("sentinel_password"), env, problems
        )
        if sentinel_password:
            options["sentinel_password"] = sentinel_password
        username = raw.get("username")
        if username is not None and not isinstance(username, str):
            problems.append("redis.username: must be a string")
            username = None
        password = _secret("redis.password", raw.get("password"), env, problems)
        if not hosts:
            return "redis://127.0.0.1:6379/0"
        return redis_conn.build_sentinel_url(
            hosts,
            master,
            db=db,
            tls=tls,
            username=username,
            password=password or None,
            options=options,
        )
    url = str(url or "redis://127.0.0.1:6379/0")
    name = redis_conn.scheme(url)
    if name not in redis_conn.SCHEMES:
        problems.append(
            "redis.url / REDIS_URL: must be a redis://, rediss://, unix://, redis+sentinel://"
            f" or rediss+sentinel:// URL, got {safe_url(url)!r}"
        )
        return url
    if name in redis_conn.SENTINEL_SCHEMES:
        try:
            redis_conn.parse_sentinel_url(url)
        except ValueError as exc:
            problems.append(f"redis.url / REDIS_URL: {exc}")
    if tls and name == "redis":
        url = "rediss" + url[len("redis") :]
    elif tls and name == "redis+sentinel":
        url = "rediss+sentinel" + url[len("redis+sentinel") :]
    if (
        options
        and (name in ("redis", "unix") and not tls)
        and any(k.startswith("ssl") for k in options)
    ):
        problems.append("redis.ca_file / cert_file / key_file: need a rediss:// URL or tls = true")
    return redis_conn.with_options(url, options)


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL smsq can use (None when it is); the password never shown."""
    name = redis_conn.scheme(url)
    if name not in redis_conn.SCHEMES:
        return (
            "must be a redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel:// URL,"
            f" got {safe_url(url)!r}"
        )
    try:
        if name in redis_conn.SENTINEL_SCHEMES:
            redis_conn.parse_sentinel_url(url)
        else:
            urlparse(url).port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        return f"{exc} in {safe_url(url)!r}"
    return None


def _env_overrides(env: Mapping[str, str]) -> list[tuple[list[str], str]]:
    out = []
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            out.append(([p.lower() for p in name[len(ENV_PREFIX) :].split("__")], value))
    return out


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


def _apply_overrides(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    for path, value in _env_overrides(env):
        node: Any = data
        for part in path[:-1]:
            if not isinstance(node, dict):
                break
            match = next((k for k in node if _norm(k) == part), None)
            if match is None:
                match = part
                node[match] = {}
            node = node[match]
        if not isinstance(node, dict):
            problems.append(f"{ENV_PREFIX}{'__'.join(path).upper()}: does not name a setting")
            continue
        leaf = next((k for k in node if _norm(k) == path[-1]), path[-1])
        node[leaf] = _coerce(value, node.get(leaf))


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        try:
            return int(value)
        except ValueError:
            return value
    if isinstance(current, float):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(current, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    if current is None:  # a setting the file does not have: numbers are numbers
        for number in (int, float):
            try:
                return number(value)
            except ValueError:
                pass
    return value


def _secret(key: str, value: Any, env: Mapping[str, str], problems: list[str]) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        problems.append(
            f'{key}: credentials are not written inline; use {{ env = "NAME" }} or {{ file = "PATH" }}'
        )
        return ""
    if not isinstance(value, dict) or set(value) - {"env", "file"} or len(value) != 1:
        problems.append(f'{key}: expected {{ env = "NAME" }} or {{ file = "PATH" }}')
        return ""
    if "env" in value:
        name = str(value["env"])
        if name not in env or env[name] == "":
            problems.append(f"{key}: environment variable {name} is not set")
            return ""
        return env[name]
    path = Path(str(value["file"]))
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{key}: cannot read secret file {path}: {exc.strerror}")
        return ""


def _account(
    name: str, raw: Any, env: Mapping[str, str], problems: list[str]
) -> AccountConfig | None:
    where = f"accounts.{name}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table")
        return None
    for unknown in sorted(set(raw) - ACCOUNT_FIELDS):
        problems.append(
            f"{where}.{unknown}: unknown setting (known: {', '.join(sorted(ACCOUNT_FIELDS))})"
        )
    kind = raw.get("kind")
    if kind not in known_kinds():
        problems.append(f"{where}.kind: must be one of {', '.join(known_kinds())}, got {kind!r}")
    base_url = raw.get("base_url")
    if not isinstance(base_url, str) or urlparse(base_url).scheme not in ("http", "https"):
        shown = safe_url(base_url) if isinstance(base_url, str) else base_url
        problems.append(f"{where}.base_url: must be an http(s) URL, got {shown!r}")
    login = raw.get("login", "")
    if not isinstance(login, str):
        problems.append(f"{where}.login: must be a string")
    batch = raw.get("batch_size", 0)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
        problems.append(f"{where}.batch_size: must be a whole number >= 0 (0: provider maximum)")
    timeout = raw.get("timeout", 30.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        problems.append(f"{where}.timeout: must be a positive number of seconds")
    backups = raw.get("backup_urls", [])
    if not isinstance(backups, list) or not all(isinstance(u, str) for u in backups):
        problems.append(f"{where}.backup_urls: must be a list of URLs")
        backups = []
    options = raw.get("options", {})
    if not isinstance(options, dict):
        problems.append(f"{where}.options: must be a table")
        options = {}
    secrets = {f: _secret(f"{where}.{f}", raw.get(f), env, problems) for f in SECRET_FIELDS}
    ambiguous = _ambiguous_sends(where, kind, raw.get("ambiguous_sends", "unknown"), problems)
    if not isinstance(kind, str) or not isinstance(base_url, str):
        return None
    typed: ProviderOptions = ProviderOptions()
    if kind in known_kinds():  # the provider's own options, every bad one named
        typed = parse_options(provider_spec(kind).options, options, f"{where}.options", problems)
    return AccountConfig(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        login=login if isinstance(login, str) else "",
        password=secrets["password"],
        api_key=secrets["api_key"],
        webhook_secret=secrets["webhook_secret"],
        batch_size=batch if isinstance(batch, int) else 0,
        timeout=float(timeout) if isinstance(timeout, int | float) else 30.0,
        backup_urls=tuple(u.rstrip("/") for u in backups),
        options=typed,
        ambiguous_sends=ambiguous,
    )


def _ambiguous_sends(where: str, kind: Any, value: Any, problems: list[str]) -> AmbiguousSends:
    """``ambiguous_sends``: one of AMBIGUOUS_SENDS; "retry_unanswered" only for a provider
    that cannot look a send up by smsq's own id (one whose adapter is not
    ``ExpectedIds``: there reconciliation settles every ambiguous send)."""
    for policy in AMBIGUOUS_SENDS:
        if value == policy:
            break
    else:
        problems.append(
            f"{where}.ambiguous_sends: must be 'unknown' (a send that timed out stays unknown:"
            " the default) or 'retry_unanswered' (one that timed out before any byte of the"
            f" answer arrived is retried; risk: a duplicate), got {value!r}"
        )
        return "unknown"
    if (
        policy == "retry_unanswered"
        and kind in known_kinds()
        and isinstance(adapter := provider_spec(kind).adapter, type)
        and issubclass(adapter, ExpectedIds)
    ):
        problems.append(
            f"{where}.ambiguous_sends: 'retry_unanswered' is for providers that cannot look a"
            f" send up by smsq's id; {kind} sends that timed out are settled by reconciliation"
        )
        return "unknown"
    return policy


def parse_settings(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Validate a configuration mapping (already read from TOML) with overrides from ``env``."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    data = _deep_copy(data)
    _apply_overrides(data, env, problems)
    sections = {
        "redis",
        "accounts",
        "routes",
        "dispatch",
        "web",
        "scheduler",
        "intake",
        "routing",
        "worker",
        "metrics",
        "callbacks",
    }
    for unknown in sorted(set(data) - sections):
        problems.append(f"{unknown}: unknown section (known: {', '.join(sorted(sections))})")

    redis_section = data.get("redis", {})
    redis_url = _redis_url(redis_section, env, problems)
    url_problem = redis_url_problem(redis_url)
    if url_problem and not any(p.startswith("redis.url / REDIS_URL") for p in problems):
        problems.append(f"redis.url / REDIS_URL: {url_problem}")
    prefix = redis_section.get("key_prefix", DEFAULT_PREFIX)
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        problems.append("redis.key_prefix: must be a non-empty string without ':'")
        prefix = DEFAULT_PREFIX

    accounts: dict[str, AccountConfig] = {}
    raw_accounts = data.get("accounts", {})
    if not isinstance(raw_accounts, dict) or not raw_accounts:
        problems.append("accounts: at least one provider account is required")
        raw_accounts = {}
    limits: dict[str, AccountLimits] = {}
    for name, raw in raw_accounts.items():
        acc = _account(name, raw, env, problems)
        if acc is not None:
            accounts[name] = acc
            limits[name] = _limits(name, acc.kind, raw, problems)

    routes: dict[str, tuple[str, ...]] = {}
    policies: dict[str, RoutePolicy] = {}
    raw_routes = data.get("routes") or {}
    if not isinstance(raw_routes, dict):
        problems.append("routes: must be a table of route name = accounts")
        raw_routes = {}
    for name, raw_route in raw_routes.items():
        members = raw_route.get("accounts") if isinstance(raw_route, dict) else raw_route
        if (
            not isinstance(members, list)
            or not members
            or not all(isinstance(m, str) for m in members)
        ):
            where = f"routes.{name}.accounts" if isinstance(raw_route, dict) else f"routes.{name}"
            problems.append(f"{where}: must be a non-empty list of account names")
            if isinstance(raw_route, dict):  # its other keys are named too
                _route_policy(name, raw_route, 0, problems)
            continue
        for m in members:
            if m not in raw_accounts:
                problems.append(f"routes.{name}: names account {m!r}, which is not defined")
        if len(set(members)) != len(members):
            problems.append(f"routes.{name}: names an account twice")
        routes[name] = tuple(members)
        if isinstance(raw_route, dict):
            policies[name] = _route_policy(name, raw_route, len(members), problems)
    overrides: dict[str, PriceOverride] = {}
    for name, raw in raw_accounts.items():
        if isinstance(raw, dict) and "prices" in raw:
            overrides[name] = _price_override(name, raw["prices"], problems)

    dispatch = _plain_section("dispatch", DispatchSettings, data.get("dispatch", {}), problems)
    if dispatch.max_attempts != int(dispatch.max_attempts):
        problems.append("dispatch.max_attempts: must be a whole number")
    if dispatch.chunks_per_message != int(dispatch.chunks_per_message):
        problems.append("dispatch.chunks_per_message: must be a whole number")
    dispatch = DispatchSettings(
        **{
            **dispatch.__dict__,
            "max_attempts": int(dispatch.max_attempts),
            "chunks_per_message": int(dispatch.chunks_per_message),
        }
    )

    web = _web(data.get("web", {}), env, problems)
    scheduler = _plain_section("scheduler", SchedulerSettings, data.get("scheduler", {}), problems)
    intake = _intake(data.get("intake", {}), problems)
    worker = _plain_section("worker", WorkerSettings, data.get("worker", {}), problems)
    routing = _plain_section("routing", RoutingSettings, data.get("routing", {}), problems)
    metrics = _metrics(data.get("metrics", {}), problems)
    callbacks = _callbacks(data.get("callbacks", {}), env, problems)
    names = (
        set(routes)
        | set(raw_accounts)
        | {str(a.get("kind")) for a in raw_accounts.values() if isinstance(a, dict)}
    )
    for route in callbacks.routes:
        if route not in names:
            problems.append(f"callbacks.routes.{route}: names no route, account or provider kind")

    if problems:
        raise ConfigError(problems)
    return Settings(
        redis_url=str(redis_url),
        key_prefix=prefix,
        accounts=accounts,
        routes=routes,
        dispatch=dispatch,
        limits=limits,
        web=web,
        scheduler=scheduler,
        intake=intake,
        worker=worker,
        routing=routing,
        route_policies=policies,
        price_overrides=overrides,
        metrics=metrics,
        callbacks=callbacks,
    )


def _route_policy(name: str, raw: dict[str, Any], size: int, problems: list[str]) -> RoutePolicy:
    where = f"routes.{name}"
    for key in sorted(set(raw) - ROUTE_FIELDS):
        problems.append(
            f"{where}.{key}: unknown setting (known: {', '.join(sorted(ROUTE_FIELDS))})"
        )
    strategy = raw.get("strategy", "failover")
    if strategy not in STRATEGIES:
        problems.append(
            f"{where}.strategy: must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
        strategy = "failover"
    resend_on = raw.get("resend_on", [])
    if not isinstance(resend_on, list) or not all(isinstance(x, str) for x in resend_on):
        problems.append(f"{where}.resend_on: must be a list of final statuses")
        resend_on = []
    for status in resend_on:
        if status not in RESENDABLE:
            problems.append(
                f"{where}.resend_on: {status!r} cannot be resent on"
                f" (allowed: {', '.join(RESENDABLE)})"
            )
    resend_on = [x for x in resend_on if x in RESENDABLE]
    attempts = raw.get("attempts", 2 if resend_on else 1)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        problems.append(f"{where}.attempts: must be a whole number >= 1")
        attempts = 1
    elif size and attempts > size:  # size 0: the route's accounts are in error already
        problems.append(
            f"{where}.attempts: {attempts} sends need as many accounts; the route has {size}"
        )
        attempts = size
    if "attempts" in raw and attempts > 1 and not resend_on and "resend_on" not in raw:
        problems.append(f"{where}.attempts: more than one send needs resend_on (the statuses)")
    elif resend_on and attempts < 2 and "attempts" in raw:
        problems.append(f"{where}.resend_on: no second chance with attempts = {attempts}")
    return RoutePolicy(strategy=strategy, resend_on=tuple(resend_on), attempts=attempts)


def _price_override(name: str, raw: Any, problems: list[str]) -> PriceOverride:
    where = f"accounts.{name}.prices"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table of MCC+MNC or country code = price")
        return PriceOverride()
    currency = raw.get("currency")
    if currency is not None and (not isinstance(currency, str) or not currency):
        problems.append(f"{where}.currency: must be a currency code")
        currency = None
    prices: dict[str, Decimal] = {}
    for key, value in raw.items():
        if key == "currency":
            continue
        text = str(key)
        if not ((text.isdigit() and len(text) in (5, 6)) or (text.isalpha() and len(text) == 2)):
            problems.append(
                f"{where}.{text}: keys are MCC+MNC (5 or 6 digits) or a country code (2 letters)"
            )
            continue
        try:
            price = Decimal(str(value))
        except InvalidOperation:
            price = Decimal(-1)
        if isinstance(value, bool) or not price.is_finite() or price < 0:
            problems.append(f"{where}.{text}: must be a price >= 0, got {value!r}")
            continue
        prices[text.upper()] = price
    return PriceOverride(prices=prices, currency=currency)


def _intake(raw: Any, problems: list[str]) -> IntakeSettings:
    if not isinstance(raw, dict):
        problems.append("intake: must be a table")
        return IntakeSettings()
    known = set(IntakeSettings.__dataclass_fields__)
    for key in sorted(set(raw) - known):
        problems.append(f"intake.{key}: unknown setting (known: {', '.join(sorted(known))})")
    accept = raw.get("accept_numbers", IntakeSettings.accept_numbers)
    if accept not in ACCEPT_NUMBERS:
        problems.append(
            f"intake.accept_numbers: must be one of {', '.join(ACCEPT_NUMBERS)}, got {accept!r}"
        )
        return IntakeSettings()
    return IntakeSettings(accept_numbers=accept)


def _port(where: str, value: Any, problems: list[str]) -> bool:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        problems.append(f"{where}: must be a port number (0: any free port), got {value!r}")
        return False
    return True


def _metrics(raw: Any, problems: list[str]) -> MetricsSettings:
    if not isinstance(raw, dict):
        problems.append("metrics: must be a table")
        return MetricsSettings()
    known = set(MetricsSettings.__dataclass_fields__)
    for key in sorted(set(raw) - known):
        problems.append(f"metrics.{key}: unknown setting (known: {', '.join(sorted(known))})")
    default = MetricsSettings()
    host = raw.get("host", default.host)
    if not isinstance(host, str) or not host:
        problems.append("metrics.host: must be a host name or address")
        host = default.host
    ports = {}
    for key in ("worker_port", "scheduler_port"):
        value = raw.get(key, getattr(default, key))
        ports[key] = value if _port(f"metrics.{key}", value, problems) else getattr(default, key)
    return MetricsSettings(host=host, **ports)


CALLBACK_NUMBERS = {
    "interval": float,
    "batch_size": int,
    "timeout": float,
    "max_attempts": int,
    "max_age": float,
    "backoff_initial": float,
    "backoff_max": float,
}


def _callbacks(raw: Any, env: Mapping[str, str], problems: list[str]) -> CallbackSettings:
    if not isinstance(raw, dict):
        problems.append("callbacks: must be a table")
        return CallbackSettings()
    known = {"producers", "routes", *CALLBACK_NUMBERS}
    for key in sorted(set(raw) - known):
        problems.append(f"callbacks.{key}: unknown setting (known: {', '.join(sorted(known))})")
    numbers: dict[str, Any] = {}
    for key, kind in CALLBACK_NUMBERS.items():
        if key not in raw:
            continue
        value = raw[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and value > 0
        if kind is int and ok and value != int(value):
            ok = False
        if not ok:
            what = "a whole number > 0" if kind is int else "a positive number"
            problems.append(f"callbacks.{key}: must be {what}, got {value!r}")
        else:
            numbers[key] = kind(value)
    producers: dict[str, CallbackProducer] = {}
    raw_producers = raw.get("producers", {})
    if not isinstance(raw_producers, dict):
        problems.append("callbacks.producers: must be a table of producers")
        raw_producers = {}
    for name, table in raw_producers.items():
        where = f"callbacks.producers.{name}"
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table with urls and secrets")
            continue
        for key in sorted(set(table) - {"urls", "secrets"}):
            problems.append(f"{where}.{key}: unknown setting (known: secrets, urls)")
        urls = table.get("urls")
        if (
            not isinstance(urls, list)
            or not urls
            or not all(
                isinstance(u, str)
                and urlparse(u).scheme in ("http", "https")
                and urlparse(u).netloc
                for u in urls
            )
        ):
            problems.append(f"{where}.urls: must be a non-empty list of http(s) URL prefixes")
            urls = []
        refs = table.get("secrets")
        if not isinstance(refs, list) or not refs:
            problems.append(
                f'{where}.secrets: must be a non-empty list of {{ env = "NAME" }} or {{ file = "PATH" }}'
            )
            refs = []
        secrets = tuple(
            s
            for i, ref in enumerate(refs)
            if (s := _secret(f"{where}.secrets[{i}]", ref, env, problems))
        )
        producers[name] = CallbackProducer(name, tuple(urls), secrets)
    settings = CallbackSettings(producers=producers, **numbers)
    routes: dict[str, str] = {}
    raw_routes = raw.get("routes", {})
    if not isinstance(raw_routes, dict):
        problems.append("callbacks.routes: must be a table of route name = URL")
        raw_routes = {}
    for route, url in raw_routes.items():
        if not isinstance(url, str) or settings.producer_for(url) is None:
            problems.append(
                f"callbacks.routes.{route}: {url!r} does not start with any callbacks.producers URL"
            )
            continue
        routes[route] = url
    return CallbackSettings(producers=producers, routes=routes, **numbers)


def _plain_section(name: str, cls: Any, raw: Any, problems: list[str]) -> Any:
    """A section of positive numbers mapped onto a settings dataclass, every key checked."""
    if not isinstance(raw, dict):
        problems.append(f"{name}: must be a table")
        return cls()
    fields = cls.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"{name}.{key}: unknown setting (known: {', '.join(sorted(fields))})")
        elif (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            problems.append(f"{name}.{key}: must be a positive number, got {value!r}")
        else:
            values[key] = float(value)
    return cls(**values)


def _web(raw: Any, env: Mapping[str, str], problems: list[str]) -> WebSettings:
    if not isinstance(raw, dict):
        problems.append("web: must be a table")
        return WebSettings()
    known = set(WebSettings.__dataclass_fields__)
    for key in sorted(set(raw) - known):
        problems.append(f"web.{key}: unknown setting (known: {', '.join(sorted(known))})")
    host = raw.get("host", WebSettings.host)
    port = raw.get("port", WebSettings.port)
    if not isinstance(host, str) or not host:
        problems.append("web.host: must be a host name or address")
        host = WebSettings.host
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        problems.append(f"web.port: must be a port number, got {port!r}")
        port = WebSettings.port
    body = raw.get("max_body_bytes", WebSettings.max_body_bytes)
    if not isinstance(body, int) or isinstance(body, bool) or body < 1024:
        problems.append("web.max_body_bytes: must be a whole number >= 1024")
        body = WebSettings.max_body_bytes
    tokens_raw = raw.get("intake_tokens", [])
    if not isinstance(tokens_raw, list):
        problems.append("web.intake_tokens: must be a list of { env = ... } or { file = ... }")
        tokens_raw = []
    tokens = tuple(
        t
        for i, ref in enumerate(tokens_raw)
        if (t := _secret(f"web.intake_tokens[{i}]", ref, env, problems))
    )
    timeouts: dict[str, float] = {}
    for name in ("header_timeout", "body_timeout"):
        value = raw.get(name, getattr(WebSettings, name))
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            problems.append(f"web.{name}: must be a positive number of seconds, got {value!r}")
            value = getattr(WebSettings, name)
        timeouts[name] = float(value)
    return WebSettings(host=host, port=port, intake_tokens=tokens, max_body_bytes=body, **timeouts)


def _rule(where: str, raw: Any, problems: list[str]) -> Rule | None:
    if not isinstance(raw, dict) or set(raw) - {"requests", "per_seconds", "otp_reserve"}:
        problems.append(
            f"{where}: expected {{ requests = N, per_seconds = W, otp_reserve = R (optional) }}"
        )
        return None
    try:
        return Rule(
            limit=int(raw["requests"]),
            window=float(raw["per_seconds"]),
            reserve=int(raw.get("otp_reserve", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(f"{where}: {exc}")
        return None


def _limits(name: str, kind: str, raw: dict[str, Any], problems: list[str]) -> AccountLimits:
    """The account's rate rules and in-flight cap: the provider's documented defaults (rules
    replaced per endpoint by config, the cap by ``max_in_flight``; 0: no cap)."""
    spec = provider_spec(kind) if kind in known_kinds() else None
    defaults = spec.default_limits if spec is not None else {}
    rules: dict[str, tuple[Rule, ...]] = {
        endpoint: tuple(Rule(limit, window) for limit, window in pairs)
        for endpoint, pairs in defaults.items()
    }
    configured = raw.get("limits", {})
    if not isinstance(configured, dict):
        problems.append(f"accounts.{name}.limits: must be a table of endpoint classes")
        configured = {}
    for endpoint, value in configured.items():
        where = f"accounts.{name}.limits.{endpoint}"
        items = value if isinstance(value, list) else [value]
        parsed = [_rule(where, item, problems) for item in items]
        rules[endpoint] = tuple(r for r in parsed if r is not None)
    default_cap = spec.default_max_in_flight if spec is not None else 0
    cap = raw.get("max_in_flight", default_cap)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        problems.append(f"accounts.{name}.max_in_flight: must be a whole number >= 0 (0: no cap)")
        cap = 0
    return AccountLimits(rules=rules, max_in_flight=cap)


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file at ``path`` (default: ``$SMSQ_CONFIG``) and validate it."""
    env = dict(os.environ if env is None else env)
    path = path or env.get("SMSQ_CONFIG")
    if not path:
        raise ConfigError(["SMSQ_CONFIG: not set; point it at the smsq TOML configuration file"])
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([f"SMSQ_CONFIG: cannot read {path}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_settings(data, env)
