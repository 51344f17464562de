"""The Procfile under honcho, against the embedded defaults: `honcho start` with neither
SMSQ_CONFIG nor REDIS_URL set brings every process type up (`smsq dev` gives them Redis, the
sandboxes and a config), a job sent to that Redis is dispatched and settled, and stopping
honcho stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from producers.client import SmsqClient
from producers.status import FINAL_STATUSES
from tests.support.deploy_files import ROOT

PROCFILE = ROOT / "Procfile"


def _process_types() -> list[str]:
    return [
        line.split(":", 1)[0].strip()
        for line in PROCFILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _free_base_port(types: int) -> int:
    """A base port with base + 100 * i free for each process type (honcho's $PORT)."""
    for base in range(21000, 60000, 1000):
        try:
            for i in range(types):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + 100 * i))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range for honcho")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait(
    what: str, check: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"honcho exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}"
            )
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def test_honcho_runs_every_process_type_on_the_embedded_defaults(tmp_path: Path) -> None:
    types = _process_types()
    assert types == ["dev", "worker", "worker-otp", "scheduler", "web"]
    base = _free_base_port(len(types))
    ports = {name: base + 100 * i for i, name in enumerate(types)}  # honcho's $PORT per type
    env = {k: v for k, v in os.environ.items() if k not in ("SMSQ_CONFIG", "REDIS_URL", "PORT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "honcho.log"
    honcho = Path(sys.executable).parent / "honcho"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(honcho), "start", "-f", str(PROCFILE), "-d", str(tmp_path), "-p", str(base)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        env_file = tmp_path / ".smsq-dev" / "env.json"
        dev = _wait(
            "smsq dev", lambda: env_file.exists() and json.loads(env_file.read_text()), proc, log
        )
        redis_url = dev["env"]["REDIS_URL"]
        web = f"http://127.0.0.1:{dev['web_port']}"
        _wait("web /health", lambda: _get(f"{web}/health")[0] == 200, proc, log)
        for name in ("worker", "worker-otp", "scheduler"):
            _wait(
                f"{name} /healthz",
                lambda n=name: _get(f"http://127.0.0.1:{ports[n]}/healthz")[0] == 200,
                proc,
                log,
            )
        _wait("web /healthz", lambda: _get(f"{web}/healthz")[0] == 200, proc, log)
        client = redis.Redis.from_url(redis_url)
        try:
            # three Dramatiq worker processes (2 + 1) heartbeat; a scheduler holds the lease
            _wait(
                "3 worker heartbeats",
                lambda: client.zcard("dramatiq:__heartbeats__") >= 3,
                proc,
                log,
            )
            _wait("scheduler lease", lambda: client.exists("smsq:scheduler:lease"), proc, log)
            producer = SmsqClient(client=client, providers=None)
            kind = "intis"
            bulk = producer.enqueue_send(
                provider=f"{kind}-sandbox",
                sender="smstest",
                text="Procfile check",
                recipients=[f"+7916{i:07d}" for i in range(20)],
            )
            otp = producer.enqueue_send(
                provider="smsc-sandbox",
                sender="SMSC.ru",
                text="Your code is 123456",
                recipients=["+447911123456"],
                priority="otp",
            )
            finals = {s.value for s in FINAL_STATUSES}

            def settled() -> bool:
                for job_id, n in ((bulk, 20), (otp, 1)):
                    status = producer.status(job_id)
                    if (
                        status is None
                        or sum(c for s, c in status.counts.items() if s in finals) < n
                    ):
                        return False
                return True

            _wait("both jobs settled (sent, then final by push or poll)", settled, proc, log, 90)
        finally:
            client.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert not (tmp_path / ".smsq-dev" / "env.json").exists(), "smsq dev did not clean up"
    text = log.read_text()
    for name in types:
        assert f"{name}" in text
    # honcho reports how each process ended; none was killed for not stopping
    assert "SIGKILL" not in text, text[-3000:]
