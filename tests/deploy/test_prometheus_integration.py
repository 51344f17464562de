"""Debian's real Prometheus scraping a real sandbox run.

A worker (2 processes), the scheduler and web run as `smsq` processes against the
providers' sandboxes (some send errors injected, a tight rate rule, pushes on); Prometheus
scrapes them every second with deploy/'s rules loaded. Then, through Prometheus's HTTP API:
every expression of the Grafana dashboard, every recording rule and every measured part of
every alert returns data (parsed out of deploy/ itself), and the recipients by final status
from the metrics equal the counts in the job records in Redis.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from producers.client import SmsqClient
from producers.status import FINAL_STATUSES
from tests.support.deploy_files import (
    RULES,
    alert_operands,
    alert_rules,
    dashboard_exprs,
    recording_rules,
    require_tool,
)
from tests.support.sandboxes import SandboxFactory, SandboxThread
from worker.devtools.demo import push_options
from worker.devtools.redis_server import free_port
from worker.devtools.sandboxes import sandbox_account, wait_until_serving
from worker.providers.sandbox_kit import Fault, OutcomeMix

KINDS = ["intis", "smsc", "intellisoftware"]
FINALS = {s.value for s in FINAL_STATUSES}


def _write_config(
    path: Path, redis_url: str, sandboxes: SandboxThread, ports: dict[str, int]
) -> dict[str, str]:
    env: dict[str, str] = {}
    lines = ["[redis]", f'url = "{redis_url}"', ""]
    for kind in KINDS:
        account = sandbox_account(kind)
        lines += [
            f"[accounts.{kind}-sandbox]",
            f'kind = "{kind}"',
            f'base_url = "{sandboxes.url(kind)}"',
        ]
        lines.append(f'login = "{account["login"]}"')
        for secret in ("password", "api_key"):
            if account.get(secret):
                env[f"PI_{kind.upper()}_{secret.upper()}"] = account[secret]
                lines.append(f'{secret} = {{ env = "PI_{kind.upper()}_{secret.upper()}" }}')
        if kind == "intis":
            lines.append("batch_size = 10")  # many chunks for the tight rule below
        env[f"PI_{kind.upper()}_HOOK"] = f"hook-{kind}"
        lines += [f'webhook_secret = {{ env = "PI_{kind.upper()}_HOOK" }}', "timeout = 5", ""]
    # a tight send rule on intis: permits wait and chunks are rescheduled (delayed messages)
    lines += ["[accounts.intis-sandbox.limits]", "send = { requests = 2, per_seconds = 1 }", ""]
    lines += ["[routes]", 'default = ["intis-sandbox"]', ""]
    lines += ["[dispatch]", "backoff_initial = 0.05", "backoff_max = 0.5", ""]
    lines += ["[web]", f"port = {ports['web']}", ""]
    lines += [
        "[metrics]",
        f"worker_port = {ports['worker']}",
        f"scheduler_port = {ports['scheduler']}",
        "",
    ]
    lines += [
        "[scheduler]",
        "tick_seconds = 0.5",
        "lease_seconds = 5",
        "reconcile_interval = 1",
        "first_check = 1",
        "max_check_interval = 2",
        "balance_interval = 1",
        "history_interval = 2",
        "incoming_interval = 2",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return env


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class PrometheusAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets_up(self) -> dict[str, float]:
        return {
            sample["metric"]["job"]: float(sample["value"][1])
            for sample in self.query('up{job=~"smsq-.*"}')
        }


@pytest.fixture
def prometheus_binary() -> str:
    return require_tool("prometheus")


@pytest.fixture
def run(
    redis_url: str, tmp_path: Path, prometheus_binary: str, run_sandboxes: SandboxFactory
) -> Iterator[dict[str, Any]]:
    ports = {name: free_port() for name in ("web", "worker", "scheduler", "prometheus")}
    web = f"http://127.0.0.1:{ports['web']}"
    pushes = {  # deliveries pushed to smsq web by every sandbox
        kind: push_options(kind, f"{web}/hooks/{kind}-sandbox", f"hook-{kind}") for kind in KINDS
    }
    sandboxes = run_sandboxes(KINDS, mix=OutcomeMix(final_after=0.5, seed=11), **pushes)
    processes = Processes(tmp_path)
    try:
        config = tmp_path / "smsq.toml"
        env = {
            **os.environ,
            **_write_config(config, redis_url, sandboxes, ports),
            "SMSQ_CONFIG": str(config),
            "REDIS_URL": redis_url,
        }
        env.pop("PORT", None)
        smsq = [sys.executable, "-m", "worker.entry.cli"]
        processes.start("worker", [*smsq, "worker", "--processes", "2", "--threads", "4"], env)
        processes.start("scheduler", [*smsq, "scheduler"], env)
        processes.start("web", [*smsq, "web"], env)
        for port in (ports["web"], ports["worker"], ports["scheduler"]):
            wait_until_serving(f"http://127.0.0.1:{port}/metrics", timeout=60)

        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{ports[name]}"]}]}
                for job, name in (
                    ("smsq-worker", "worker"),
                    ("smsq-scheduler", "scheduler"),
                    ("smsq-web", "web"),
                )
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config), encoding="utf-8")
        processes.start(
            "prometheus",
            [
                prometheus_binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            ],
            dict(os.environ),
        )
        api = PrometheusAPI(f"http://127.0.0.1:{ports['prometheus']}")
        wait_until_serving(f"{api.url}/-/ready", timeout=60)
        yield {"api": api, "sandboxes": sandboxes, "processes": processes, "redis_url": redis_url}
    finally:
        processes.stop()


def _wait_for(what: str, check: Any, processes: Processes, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        processes.check_alive()
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every query deploy/ uses, parsed from the files themselves."""
    out = [(f"dashboard panel {title!r}", expr) for title, expr in dashboard_exprs()]
    out += [(f"recording rule {r['record']}", r["expr"]) for r in recording_rules()]
    for rule in alert_rules():
        out += [(f"alert {rule['alert']}", operand) for operand in alert_operands(rule["expr"])]
    return out


def test_prometheus_scrapes_every_process_and_every_query_returns_data(
    run: dict[str, Any],
) -> None:
    api: PrometheusAPI = run["api"]
    processes: Processes = run["processes"]
    sandboxes: SandboxThread = run["sandboxes"]
    _wait_for(
        "every target up",
        lambda: api.targets_up() == {"smsq-worker": 1, "smsq-scheduler": 1, "smsq-web": 1},
        processes,
        60,
    )
    sandboxes.call(_faults(sandboxes, "intis", {"send.php": {"error_rate": 0.2}}))
    client = SmsqClient(run["redis_url"], providers=None)
    jobs: list[tuple[str, int]] = []
    # bulk on intis (tight rate rule, injected 500s: retries, waits, rescheduled chunks)
    numbers = [f"+7916{i:07d}" for i in range(300)] + ["12345"]  # one impossible number
    jobs.append(
        (
            client.enqueue_send(
                provider="default", sender="smstest", text="Metrics run", recipients=numbers
            ),
            len(numbers),
        )
    )
    for i, kind in enumerate(KINDS):  # OTP to every provider (pushes from each sandbox)
        sender = sandbox_account(kind).get("sender", "smsq")
        for j in range(3):
            number = f"+44791112{i}{j:03d}"
            jobs.append(
                (
                    client.enqueue_send(
                        provider=f"{kind}-sandbox",
                        sender=sender,
                        text=f"Code {i}{j}",
                        recipients=[number],
                        priority="otp",
                    ),
                    1,
                )
            )
    later = datetime.now(UTC) + timedelta(seconds=3)  # a delayed (scheduled) job
    jobs.append(
        (
            client.enqueue_send(
                provider="smsc-sandbox",
                sender="SMSC.ru",
                text="Scheduled",
                recipients=["+4915123456789"],
                scheduled_at=later,
            ),
            1,
        )
    )
    client.redis.hset("dramatiq:smsq-intake.msgs", "bad", "not a message")  # a dead letter
    client.redis.rpush("dramatiq:smsq-intake", "bad")

    def settled() -> bool:
        done = 0
        for job_id, _ in jobs:
            status = client.status(job_id)
            done += sum(n for s, n in status.counts.items() if s in FINALS) if status else 0
        return done == sum(n for _, n in jobs)

    _wait_for("every recipient final", settled, processes, 180)

    # recipients by final status: metrics (through Prometheus) == the job records in Redis
    records: dict[str, int] = {}
    for job_id, _ in jobs:
        status = client.status(job_id)
        assert status is not None
        for s, n in status.counts.items():
            if s in FINALS:
                records[s] = records.get(s, 0) + n

    def scraped() -> dict[str, int]:
        return {
            sample["metric"]["status"]: round(float(sample["value"][1]))
            for sample in api.query("sum by (status) (smsq_recipients_final_total)")
        }

    _wait_for(f"metrics = records {records}", lambda: scraped() == records, processes, 30)
    assert sum(records.values()) == sum(n for _, n in jobs)

    # every expression of the dashboard, the recording rules and the alerts returns data
    time.sleep(3)  # rate() windows and recording rules have a few evaluations
    missing, nan_only = [], []
    expressions = _expressions()
    for where, expr in expressions:
        result = api.query(expr)
        if not result:
            missing.append(f"{where}: {expr}")
        elif all(math.isnan(float(s["value"][1])) for s in result):
            nan_only.append(f"{where}: {expr}")
    assert not missing, "no data for:\n" + "\n".join(missing)
    assert not nan_only, "only NaN for:\n" + "\n".join(nan_only)
    assert len(expressions) >= 45
    client.redis.close()


async def _faults(sandboxes: SandboxThread, kind: str, faults: dict[str, dict[str, float]]) -> None:
    sandboxes.running[kind].state.faults = {k: Fault.from_mapping(v) for k, v in faults.items()}
