"""smsq over TLS (``rediss://``) to a real redis-server with a CA made here, client
certificates required; and the ``[redis]`` settings that build Sentinel and TLS URLs."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producers import redis_conn
from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from tests.support.sentinel import Node
from tests.support.web import WebServer, http
from worker.core.config import ConfigError, parse_settings
from worker.devtools.redis_server import find_redis_server, free_port
from worker.tracking.scheduler import Scheduler


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=smsq test CA", cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN=smsq test {name}", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext, cwd=directory,
        )  # fmt: skip
    return {
        n: directory / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    }


def tls_unavailable() -> str | None:
    if shutil.which("openssl") is None:
        return "no openssl binary to make a test CA"
    try:
        find_redis_server()
    except FileNotFoundError as exc:
        return str(exc)
    return None


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path]]]:
    reason = tls_unavailable()
    if reason:
        pytest.skip(reason)
    certs = make_certificates(tmp_path)
    port = free_port()
    node = Node(
        tmp_path,
        "tls",
        port,
        f'port 0\ntls-port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {tmp_path}\n'
        f"tls-cert-file {certs['server.crt']}\ntls-key-file {certs['server.key']}\n"
        f"tls-ca-cert-file {certs['ca.crt']}\ntls-auth-clients yes\n"
        f"logfile {tmp_path / 'tls.log'}\n",
    )
    node.start()
    try:
        deadline = time.monotonic() + 10
        url = tls_url(port, certs)
        while True:
            client = redis_conn.sync_client(url)
            try:
                client.ping()
                break
            except redis.RedisError:
                if node.process is not None and node.process.poll() is not None:
                    log = (tmp_path / "tls.log").read_text(errors="replace")
                    pytest.skip(f"this redis-server cannot serve TLS: {log[-300:]}")
                assert time.monotonic() < deadline, (tmp_path / "tls.log").read_text()[-2000:]
                time.sleep(0.1)
            finally:
                client.close()
        yield port, certs
    finally:
        node.stop()


def tls_url(port: int, certs: dict[str, Path]) -> str:
    return redis_conn.with_options(
        f"rediss://127.0.0.1:{port}/0",
        {
            "ssl_ca_certs": str(certs["ca.crt"]),
            "ssl_certfile": str(certs["client.crt"]),
            "ssl_keyfile": str(certs["client.key"]),
        },
    )


def test_smsq_runs_over_tls_with_client_certificates(
    tls_redis: tuple[int, dict[str, Path]],
    make_worker: Any,
    run_sandboxes: SandboxFactory,
    start_scheduler: Callable[..., Scheduler],
    start_web: Callable[..., WebServer],
) -> None:
    port, certs = tls_redis
    # Plain TCP to the TLS port gets nowhere, and TLS without our client certificate is refused.
    plain = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=1)
    with pytest.raises(redis.RedisError):
        plain.ping()
    plain.close()
    no_cert = redis_conn.sync_client(
        redis_conn.with_options(
            f"rediss://127.0.0.1:{port}/0", {"ssl_ca_certs": str(certs["ca.crt"])}
        )
    )
    with pytest.raises(redis.RedisError):
        no_cert.ping()
    no_cert.close()

    sandboxes = run_sandboxes(["intis"])
    base = sandbox_settings("redis://127.0.0.1:1/0", sandboxes)
    settings = parse_settings(
        {
            "redis": {
                "url": f"rediss://127.0.0.1:{port}/0",
                "ca_file": str(certs["ca.crt"]),
                "cert_file": str(certs["client.crt"]),
                "key_file": str(certs["client.key"]),
            },
            "accounts": {
                name: {
                    "kind": acc.kind,
                    "base_url": acc.base_url,
                    "login": acc.login,
                    "api_key": {"env": "TLS_TEST_KEY"},
                }
                for name, acc in base.accounts.items()
            },
        },
        env={"TLS_TEST_KEY": next(iter(base.accounts.values())).api_key},
    )
    assert redis_conn.scheme(settings.redis_url) == "rediss"
    worker = make_worker(settings)  # broker, state and limiter over TLS
    client = SmsqClient(settings.redis_url)  # the producers' client
    job_id = client.enqueue_send(
        provider="intis", sender="smstest", text="over TLS",
        recipients=[f"+7916{i:07d}" for i in range(120)],
    )  # fmt: skip
    worker.join()
    status = client.status(job_id)
    assert status is not None and status.state == "done"
    assert status.counts == {"submitted": 120}
    scheduler = start_scheduler(settings, identity="tls")
    deadline = time.monotonic() + 10
    while not scheduler.is_leader:
        assert time.monotonic() < deadline, "scheduler did not take its lease over TLS"
        time.sleep(0.05)
    web = start_web(settings)
    assert http("GET", web.url + "/health")[0] == 200


# --------------------------------------------------------------------------- settings


def _settings(redis_section: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse_settings(
        {
            "redis": redis_section,
            "accounts": {"a": {"kind": "intis", "base_url": "http://127.0.0.1:9"}},
        },
        env=env or {},
    )


def test_sentinel_settings_build_one_url() -> None:
    settings = _settings(
        {
            "sentinels": ["10.0.0.1:26379", "10.0.0.2:26380", "[::1]:26381"],
            "master": "smsq-main",
            "db": 2,
            "password": {"env": "R_PW"},
            "sentinel_password": {"env": "S_PW"},
            "wait_replicas": 1,
            "wait_timeout": 0.25,
        },
        {"R_PW": "p@ss:word", "S_PW": "sentinel-secret"},
    )
    url = settings.redis_url
    target = redis_conn.parse_sentinel_url(url)
    assert target.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)]
    assert (target.master, target.db, target.password) == ("smsq-main", 2, "p@ss:word")
    assert target.options["sentinel_password"] == "sentinel-secret"
    assert redis_conn.replication_options(url) == (1, 0.25)
    assert "p@ss" not in redis_conn.safe_url(url) and "sentinel-secret" not in redis_conn.safe_url(
        url
    )
    assert "p@ss" not in repr(settings)


def test_sentinel_url_and_tls_flag() -> None:
    url = _settings({"url": "redis+sentinel://h1:1,h2:2/m/3", "tls": True}).redis_url
    target = redis_conn.parse_sentinel_url(url)
    assert target.tls and target.db == 3 and target.master == "m"
    assert redis_conn.replication_options(url) == (1, 0.5)  # Sentinel: WAIT for one replica
    assert redis_conn.replication_options("redis://h/0") == (0, 0.5)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"url": "http://x"}, "must be a redis://"),
        ({"url": "redis+sentinel://h1:1"}, "names the master"),
        ({"sentinels": ["nohost"], "master": "m"}, 'is not "host:port"'),
        ({"sentinels": ["h:1"]}, "master name is required"),
        ({"url": "rediss://h/0", "ca_file": "/nonexistent/ca.pem"}, "readable file"),
        ({"wait_replicas": -1}, "must be a number >= 0"),
        ({"bogus": 1}, "unknown setting"),
    ],
)
def test_bad_redis_settings_are_named(section: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings(section)
    assert any(expected in p for p in info.value.problems), info.value.problems
