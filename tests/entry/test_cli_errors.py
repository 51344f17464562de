"""Every smsq command, pointed at a Redis that does not answer or at a URL that is not one,
says so in one line on stderr and exits non-zero: never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from worker.devtools.redis_server import free_port

SMSQ = [sys.executable, "-m", "worker.entry.cli"]
NUMBER = "+447911123456"

COMMANDS: list[list[str]] = [
    ["check-config"],
    ["worker", "--processes", "1", "--threads", "1", "--metrics-port", "0"],
    ["web", "--port", "0"],
    ["scheduler", "--metrics-port", "0"],
    ["send", "--provider", "default", "--sender", "smsq", "--text", "hi", "--to", NUMBER],
    ["hlr", "--provider", "default", "--to", NUMBER],
    ["status"],
    ["status", "0123456789abcdef"],
    ["dlq", "list"],
    ["dlq", "show", "0123456789abcdef"],
    ["dlq", "replay", "--all"],
    ["dlq", "purge"],
    ["health"],
    ["health", "--process", "worker"],
    ["top", "--once"],
    ["demo", "--bulk", "1", "--otp", "0"],
]
# `smsq sandbox` is the one command that never talks to Redis.


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "smsq.toml"
    path.write_text(
        f"""
[redis]
url = "{url}"

[accounts.intis-main]
kind = "intis"
base_url = "http://127.0.0.1:9"
login = "someone"
api_key = {{ env = "CLI_ERR_KEY" }}

[routes]
default = ["intis-main"]
"""
    )
    return path


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SMSQ, *args], env=env, capture_output=True, text=True, timeout=60)


def check_all(env: dict[str, str], expect: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda args: run(args, env), COMMANDS))
    for args, result in zip(COMMANDS, results, strict=True):
        name = "smsq " + " ".join(args)
        err = result.stderr.strip()
        assert result.returncode != 0, f"{name} exited 0: {result.stdout}"
        assert "Traceback" not in result.stderr + result.stdout, f"{name}:\n{result.stderr}"
        assert len(err.splitlines()) == 1, f"{name} printed more than one line:\n{err}"
        assert expect in err, f"{name}: {err}"


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSQ", "REDIS_URL"))}
    env["CLI_ERR_KEY"] = "k"
    return env


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_every_command_reports_an_unreachable_redis_in_one_line(
    tmp_path: Path, closed_port: int
) -> None:
    url = f"redis://127.0.0.1:{closed_port}/0"
    env = {**base_env(), "SMSQ_CONFIG": str(config(tmp_path, url)), "REDIS_URL": url}
    check_all(env, "Redis")


def test_producer_commands_without_a_config_report_an_unreachable_redis(closed_port: int) -> None:
    env = {**base_env(), "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"}
    for args in (
        ["send", "--provider", "x", "--sender", "s", "--text", "t", "--to", NUMBER],
        ["status"],
        ["dlq", "list"],
    ):
        result = run(args, env)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0 and "Redis unreachable" in result.stderr


@pytest.mark.parametrize(
    "bad", ["http://127.0.0.1:6379/0", "redis://127.0.0.1:notaport/0"], ids=["scheme", "port"]
)
def test_every_command_reports_a_bad_redis_url_in_one_line(tmp_path: Path, bad: str) -> None:
    env = {**base_env(), "SMSQ_CONFIG": str(config(tmp_path, bad)), "REDIS_URL": bad}
    check_all(env, "REDIS_URL")
    without_config = {**base_env(), "REDIS_URL": bad}
    for args in (["status"], ["dlq", "list"]):
        result = run(args, without_config)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "REDIS_URL" in result.stderr
