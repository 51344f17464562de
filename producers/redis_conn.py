"""The one place smsq makes Redis clients: plain, TLS and Sentinel, sync and asyncio.

URLs understood (everything else redis-py's ``from_url`` takes works as well)::

    redis://[[user]:password@]host[:port][/db]            plain TCP
    rediss://[[user]:password@]host[:port][/db]           TLS
    unix:///path/to/redis.sock[?db=N]
    redis+sentinel://[[user]:password@]h1:p1[,h2:p2...]/<master>[/db]
    rediss+sentinel://...                                 TLS to the sentinels and the servers

Query options: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` (``required`` | ``optional`` | ``none``), ``ssl_check_hostname``
for TLS; ``sentinel_password`` / ``sentinel_username`` when the sentinels have their
own credentials; ``socket_timeout``, ``socket_connect_timeout``; ``wait_replicas``
and ``wait_timeout`` (see :func:`replication_options`).

A Sentinel client asks the sentinels for the current master on every new connection
and drops its connections when a server turns out to be a replica, so it follows a
failover by itself; callers see connection errors for the seconds the failover takes.
Depends on ``redis`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)
DEFAULT_SENTINEL_PORT = 26379
# Without a socket timeout a read from a server whose host vanished (no RST) waits forever.
DEFAULT_OPTIONS: dict[str, float] = {"socket_connect_timeout": 5.0, "socket_timeout": 30.0}
_FLOAT_OPTIONS = ("socket_timeout", "socket_connect_timeout")
_OWN_OPTIONS = ("wait_replicas", "wait_timeout")
_SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")
_TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int = 0
    tls: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict, repr=False)


def scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def is_sentinel(url: str) -> bool:
    return scheme(url) in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, master name, db and options of a ``redis+sentinel://`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"not a sentinel URL: scheme {parts.scheme!r}")
    netloc = parts.netloc
    creds, _, hosts = netloc.rpartition("@")
    username = password = None
    if creds:
        user, sep, pw = creds.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"sentinel {item!r}: the port is not a number") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"sentinel {item!r} is not host:port")
        sentinels.append((host, port))
    if not sentinels:
        raise ValueError("a sentinel URL names at least one sentinel (host:port)")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a sentinel URL names the master after the hosts: /<master>[/db]")
    if len(path) > 2:
        raise ValueError("a sentinel URL's path is /<master>[/db]")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"db {path[1]!r} is not a number") from None
    options = dict(parse_qsl(parts.query))
    if "db" in options:
        db = int(options.pop("db"))
    return SentinelTarget(
        sentinels=sentinels,
        master=path[0],
        db=db,
        tls=parts.scheme.lower() == "rediss+sentinel",
        username=username,
        password=password,
        options=options,
    )


def build_sentinel_url(
    sentinels: list[tuple[str, int]],
    master: str,
    *,
    db: int = 0,
    tls: bool = False,
    username: str | None = None,
    password: str | None = None,
    options: dict[str, str] | None = None,
) -> str:
    """The ``redis+sentinel://`` URL of these settings (credentials percent-encoded)."""
    creds = ""
    if username or password:
        creds = quote(username or "", safe="") + (
            ":" + quote(password, safe="") if password else ""
        )
        creds += "@"
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in sentinels)
    query = f"?{urlencode(options)}" if options else ""
    name = "rediss+sentinel" if tls else "redis+sentinel"
    return f"{name}://{creds}{hosts}/{quote(master, safe='')}/{db}{query}"


def with_options(url: str, options: dict[str, str]) -> str:
    """``url`` with ``options`` added to its query string (existing keys replaced)."""
    if not options:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(options)
    return parts._replace(query=urlencode(query)).geturl()


def replication_options(url: str) -> tuple[int, float]:
    """``(wait_replicas, wait_timeout)`` of ``url``: how many replicas must confirm the writes
    that guard against sending twice (``WAIT``), and for how long to wait (seconds).

    Defaults: 1 replica within 0.5 s for a Sentinel URL (a failover promotes a replica),
    0 (no ``WAIT``) otherwise."""
    query = dict(parse_qsl(urlsplit(url).query))
    replicas = int(query.get("wait_replicas", "1" if is_sentinel(url) else "0"))
    timeout = float(query.get("wait_timeout", "0.5"))
    return max(0, replicas), max(0.0, timeout)


def _connection_options(options: dict[str, str], tls: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(DEFAULT_OPTIONS)
    for key, value in options.items():
        if key in _OWN_OPTIONS or key in _SENTINEL_OPTIONS:
            continue
        if key in _FLOAT_OPTIONS:
            kwargs[key] = float(value)
        elif key == "ssl_check_hostname":
            kwargs[key] = value.lower() in ("1", "true", "yes", "on")
        else:
            kwargs[key] = value
    if tls:
        kwargs["ssl"] = True
    return kwargs


def _plain_url(url: str) -> tuple[str, dict[str, Any]]:
    """A URL redis-py can read (smsq's own options taken out) and the default options."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _OWN_OPTIONS]
    given = {k for k, _ in query}
    clean = parts._replace(query=urlencode(query)).geturl()
    defaults = {k: v for k, v in DEFAULT_OPTIONS.items() if k not in given}
    return clean, defaults


def _sentinel_parts(target: SentinelTarget) -> tuple[dict[str, Any], dict[str, Any]]:
    """(connection kwargs for the servers, kwargs for the sentinels)."""
    conn = _connection_options(target.options, target.tls)
    if target.password is not None:
        conn["password"] = target.password
    if target.username is not None:
        conn["username"] = target.username
    sentinel_kwargs = {
        k: v for k, v in conn.items() if k.startswith("socket_") or k.startswith("ssl")
    }
    if "sentinel_password" in target.options:
        sentinel_kwargs["password"] = target.options["sentinel_password"]
    if "sentinel_username" in target.options:
        sentinel_kwargs["username"] = target.options["sentinel_username"]
    return conn, sentinel_kwargs


def sync_client(url: str, **overrides: Any) -> redis.Redis:
    """A redis-py client for ``url`` (``overrides`` win over URL and default options)."""
    if is_sentinel(url):
        target = parse_sentinel_url(url)
        conn, sentinel_kwargs = _sentinel_parts(target)
        conn.update(overrides)
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs, **conn)  # type: ignore[no-untyped-call]
        master = sentinel.master_for(target.master, db=target.db)  # type: ignore[no-untyped-call]
        return cast(redis.Redis, master)
    clean, defaults = _plain_url(url)
    return redis.Redis.from_url(clean, **{**defaults, **overrides})


def async_client(url: str, **overrides: Any) -> aredis.Redis:
    """An asyncio redis-py client for ``url`` (see :func:`sync_client`)."""
    if is_sentinel(url):
        target = parse_sentinel_url(url)
        conn, sentinel_kwargs = _sentinel_parts(target)
        conn.update(overrides)
        sentinel = AsyncSentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs, **conn)  # type: ignore[no-untyped-call]
        return cast(aredis.Redis, sentinel.master_for(target.master, db=target.db))
    clean, defaults = _plain_url(url)
    return aredis.Redis.from_url(clean, **{**defaults, **overrides})


def safe_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    creds, _, hosts = parts.netloc.rpartition("@")
    user = creds.partition(":")[0]
    netloc = (f"{user}:***@" if ":" in creds else f"{user}@") + hosts
    query = [(k, "***" if "password" in k else v) for k, v in parse_qsl(parts.query)]
    return parts._replace(netloc=netloc, query=urlencode(query)).geturl()


async def wait_for_replicas(
    client: aredis.Redis, probe_key: str, replicas: int, timeout: float
) -> int:
    """Block until ``replicas`` replicas hold every write made so far on the server (WAIT),
    or ``timeout`` seconds passed; returns how many confirmed.

    WAIT covers the writes of its own connection: a pipeline writes ``probe_key`` and waits
    on one connection, and since replication is one ordered stream, every write that
    reached the server before the probe (from any connection) is covered too."""
    pipe = client.pipeline(transaction=False)
    pipe.set(probe_key, "1", ex=60)
    pipe.wait(replicas, max(1, int(timeout * 1000)))
    _, acked = await pipe.execute()
    return int(acked)
