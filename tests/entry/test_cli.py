"""The `smsq` command as users run it: a worker process, send, hlr, status, check-config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sandboxes import SandboxFactory
from worker.devtools.sandboxes import sandbox_account

SMSQ = [sys.executable, "-m", "worker.entry.cli"]


@pytest.fixture
def cli_env(
    redis_url: str, tmp_path: Path, run_sandboxes: SandboxFactory
) -> Iterator[dict[str, str]]:
    sandboxes = run_sandboxes(["intis"])
    creds = sandbox_account("intis")
    config = tmp_path / "smsq.toml"
    config.write_text(
        f"""
[redis]
url = "{redis_url}"

[accounts.intis-sandbox]
kind = "intis"
base_url = "{sandboxes.url("intis")}"
login = "{creds["login"]}"
api_key = {{ env = "CLI_TEST_INTIS_KEY" }}

[routes]
default = ["intis-sandbox"]
"""
    )
    env = {**os.environ, "SMSQ_CONFIG": str(config), "CLI_TEST_INTIS_KEY": creds["api_key"]}
    env.pop("REDIS_URL", None)
    yield env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SMSQ, *args], env=env, capture_output=True, text=True, timeout=60)


def test_send_status_and_worker_process(cli_env: dict[str, str]) -> None:
    worker = subprocess.Popen(
        [*SMSQ, "worker", "--processes", "1", "--threads", "2", "--metrics-port", "0"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sent = run(
            cli_env,
            "send",
            "--provider",
            "default",
            "--sender",
            "smstest",
            "--text",
            "Hello from the CLI",
            "--to",
            "+44 7400 123123",
            "--to",
            "+7 916 123-45-67",
            "--to",
            "123",
        )
        assert sent.returncode == 0, sent.stderr
        job_id = sent.stdout.strip()
        deadline = time.monotonic() + 60
        while True:
            status = run(cli_env, "status", job_id, "--json")
            if status.returncode == 0 and json.loads(status.stdout)["state"] == "done":
                break
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.3)
        data = json.loads(status.stdout)
        assert data["counts"] == {"submitted": 2, "rejected": 1}
        text = run(cli_env, "status", job_id)
        assert "submitted  2" in text.stdout.replace("submitted 2", "submitted  2")
        assert "447400123123" not in text.stdout and "79161234567" not in text.stdout
        assert "4474******23" in text.stdout
        shown = run(cli_env, "status", job_id, "--show-numbers")
        assert "447400123123" in shown.stdout

        hlr = run(cli_env, "hlr", "--provider", "default", "--to", "+447400123123")
        assert hlr.returncode == 0, hlr.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
    assert worker.returncode == 0, (worker.stderr.read() if worker.stderr else "")[-2000:]
    log = worker.stderr.read() if worker.stderr else ""
    assert "447400123123" not in log


def test_bad_jobs_are_refused_with_reasons(cli_env: dict[str, str]) -> None:
    result = run(
        cli_env, "send", "--provider", "nowhere", "--sender", "smstest", "--text", "", "--to", "1"
    )
    assert result.returncode == 2
    assert "job rejected" in result.stderr
    assert "nowhere" in result.stderr and "text" in result.stderr


def test_status_of_unknown_job(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "status", "no-such-job")
    assert result.returncode == 1 and "no job" in result.stderr


def test_check_config_reports_every_problem(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert run(cli_env, "check-config").returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[accounts.x]\nkind = "nope"\nbase_url = "ftp://x"\n')
    result = run({**cli_env, "SMSQ_CONFIG": str(bad)}, "check-config")
    assert result.returncode == 2
    assert "accounts.x.kind" in result.stderr and "accounts.x.base_url" in result.stderr


def test_overview_and_dead_letter_commands(cli_env: dict[str, str]) -> None:
    overview = run(cli_env, "status")
    assert overview.returncode == 0, overview.stderr
    assert "queues:" in overview.stdout and "smsq-intake" in overview.stdout
    assert "dead letters: 0" in overview.stdout
    listed = run(cli_env, "dlq", "list")
    assert listed.returncode == 0 and "0 dead letters" in listed.stdout
    missing = run(cli_env, "dlq", "show", "nope")
    assert missing.returncode == 1 and "no dead letter" in missing.stderr
    assert run(cli_env, "dlq", "replay").returncode == 2
    assert "purged 0" in run(cli_env, "dlq", "purge").stdout


def test_sandbox_command_takes_faults_at_start_up(tmp_path: Path) -> None:
    from worker.devtools.redis_server import free_port

    port = free_port()
    faults = '{"send.php": {"error_rate": 0.5, "latency": 0.1}}'
    proc = subprocess.Popen(
        [*SMSQ, "sandbox", "intis", f"--port=intis={port}", f"--faults=intis={faults}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/__sandbox/faults", timeout=1
                ) as r:
                    body = json.load(r)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert body["send.php"]["error_rate"] == 0.5 and body["send.php"]["latency"] == 0.1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    bad = run(dict(os.environ), "sandbox", "intis", "--faults=intis=notjson")
    assert bad.returncode == 2 and "--faults intis" in bad.stderr
