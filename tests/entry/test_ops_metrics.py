"""What ops see, on a running deployment: every process serves /metrics and /healthz, the
scrapes pass `promtool check metrics`, the counters agree with the job records, a worker
process killed with SIGKILL leaves no stale in-progress value, `smsq health` probes every
process, and `smsq top` shows one masked screen.

One stack for the module: the three providers' sandboxes (pushing delivery reports to the
web process), `smsq worker --processes 2`, `smsq scheduler` and `smsq web` as subprocesses,
each on a free port of 127.0.0.1, on the session's private Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from producers.client import SmsqClient
from producers.status import FINAL_STATUSES
from tests.support.sandboxes import SandboxThread
from worker.devtools.demo import _write_config, push_options
from worker.devtools.redis_server import RedisServer, free_port
from worker.devtools.sandboxes import sandbox_account
from worker.providers.sandbox_kit import OutcomeMix

SMSQ = [sys.executable, "-m", "worker.entry.cli"]
FINALS = {s.value for s in FINAL_STATUSES}
KINDS = ["intis", "smsc", "intellisoftware"]


def promtool() -> str | None:
    """Debian's promtool: on PATH, or unpacked into the virtualenv (here when missing: the
    `prometheus` package downloaded with apt-get and unpacked, nothing installed system-wide)."""
    found = shutil.which("promtool")
    if found:
        return found
    root = Path(sys.prefix) / "prometheus"
    local = root / "usr" / "bin" / "promtool"
    if not local.exists() and shutil.which("apt-get") and shutil.which("dpkg-deb"):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["apt-get", "download", "prometheus"], cwd=tmp, capture_output=True, timeout=300
            )
            for deb in Path(tmp).glob("prometheus_*.deb"):
                subprocess.run(
                    ["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, timeout=300
                )
    return str(local) if local.exists() else None


def wait_for(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def total(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **match: str
) -> float:
    return sum(
        v
        for (n, labels), v in scraped.items()
        if n == name and all(dict(labels).get(k) == x for k, x in match.items())
    )


@dataclass
class Stack:
    redis_url: str
    env: dict[str, str]
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path
    sandboxes: SandboxThread
    client: redis.Redis

    def url(self, process: str, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.ports[process]}{path}"

    def scrape(self, process: str) -> str:
        status, body = get(self.url(process))
        assert status == 200, f"{process} /metrics: {status} {body[:300]}"
        return body

    def log(self, process: str) -> str:
        return (self.logs / f"{process}.log").read_text(errors="replace")[-4000:]

    def start(self, process: str, args: list[str], **extra_env: str) -> None:
        out = open(self.logs / f"{process}.log", "ab")  # noqa: SIM115 (closed by the process)
        self.procs[process] = subprocess.Popen(
            [*SMSQ, *args], env={**self.env, **extra_env}, stdout=out, stderr=subprocess.STDOUT
        )

    def stop(self, process: str) -> None:
        proc = self.procs.pop(process, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    logs = tmp_path_factory.mktemp("ops-stack")
    web_port = free_port()
    hook_secrets = {kind: f"hook-secret-{kind}-0123" for kind in KINDS}
    # Intis and IntelliSoftware push their reports; SMSC's are only polled (both paths counted).
    options = {
        kind: {
            "balance": "100000",
            **(
                push_options(kind, f"http://127.0.0.1:{web_port}/hooks/{kind}-sandbox", secret)
                if kind != "smsc"
                else {}
            ),
        }
        for kind, secret in hook_secrets.items()
    }
    mix = OutcomeMix(delivered=0.6, undeliverable=0.25, expired=0.15, final_after=0.5, seed=5)
    sandboxes = SandboxThread(KINDS, mix=mix, **options)
    urls = {kind: sandboxes.url(kind) for kind in KINDS}
    config, secrets = _write_config(logs, urls, redis_server.url, web_port, hook_secrets)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PORT")}
    # One chunk a dispatch message: the figures below count dispatch_chunk messages per chunk.
    env.update(secrets, SMSQ_CONFIG=str(config), SMSQ__DISPATCH__CHUNKS_PER_MESSAGE="1")
    ports = {"worker": free_port(), "scheduler": free_port(), "web": web_port}
    s = Stack(redis_server.url, env, ports, {}, logs, sandboxes, client)
    s.start(
        "worker",
        ["worker", "--processes", "2", "--threads", "2", "--metrics-port", str(ports["worker"])],
        # small chunks: the SIGKILL test wants several dispatch messages at once
        SMSQ__ACCOUNTS__INTIS_SANDBOX__BATCH_SIZE="5",
    )
    s.start("scheduler", ["scheduler", "--metrics-port", str(ports["scheduler"])])
    s.start("web", ["web"], PORT=str(web_port))  # $PORT, as on a Procfile platform
    try:
        for process in ports:
            wait_for(
                lambda p=process: get(s.url(p, "/healthz"))[0] == 200,
                60,
                f"{process} /healthz: {s.log(process)}",
            )
        yield s
    finally:
        for process in list(s.procs):
            s.stop(process)
        sandboxes.stop()
        client.close()


def run_jobs(stack: Stack) -> list[str]:
    """A job per provider account (with one impossible number), until every recipient is final."""
    client = SmsqClient(stack.redis_url)
    jobs = []
    for k, kind in enumerate(KINDS):
        numbers = [f"+7916{k}{i:06d}" for i in range(30)] + ["12345"]
        jobs.append(
            client.enqueue_send(
                provider=f"{kind}-sandbox",
                sender=sandbox_account(kind).get("sender", "smsq"),
                text="Metrics check",
                recipients=numbers,
            )
        )

    def all_final() -> bool:
        for job_id in jobs:
            st = client.status(job_id)
            if st is None or sum(st.counts.values()) != 31:  # pending: not taken yet
                return False
            if any(s not in FINALS for s, n in st.counts.items() if n):
                return False
        return True

    wait_for(all_final, 90, "every recipient final")
    client.redis.close()
    return jobs


def redis_final_counts(client: redis.Redis) -> Counter[str]:
    counts: Counter[str] = Counter()
    for job_id in client.zrange("smsq:jobs", 0, -1):
        for status, n in client.hgetall(f"smsq:job:{job_id.decode()}:counts").items():
            if status.decode() in FINALS:
                counts[status.decode()] += int(n)
    return counts


def test_every_process_serves_metrics_that_pass_promtool(stack: Stack) -> None:
    run_jobs(stack)
    tool = promtool()
    if tool is None:
        pytest.skip(
            "promtool is not on PATH and Debian's prometheus package could not be downloaded "
            "(no apt-get / dpkg-deb, or no package source)"
        )
    for process in ("worker", "scheduler", "web"):
        body = stack.scrape(process)
        assert "smsq_" in body
        result = subprocess.run(
            [tool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, f"{process}: {result.stdout}{result.stderr}"
    worker = samples(stack.scrape("worker"))
    # Dramatiq's metrics come from both worker processes, in the same exposition.
    assert total(worker, "dramatiq_messages_total", actor_name="dispatch_chunk") >= 7
    assert total(worker, "smsq_time_to_submit_seconds_count", priority="bulk") >= 7
    assert total(worker, "smsq_time_to_final_seconds_count") > 0
    assert total(worker, "smsq_push_apply_lag_seconds_count") > 0
    assert total(worker, "smsq_limiter_permits_total", account="intis-sandbox") > 0
    assert total(worker, "smsq_events_published_total", type="status") > 0
    web = samples(stack.scrape("web"))
    assert total(web, "smsq_pushes_received_total", result="stored") > 0
    scheduler = samples(stack.scrape("scheduler"))
    assert total(scheduler, "smsq_scheduler_lease_held") == 1
    assert total(scheduler, "smsq_scheduler_active") == 1
    assert ("smsq_account_balance", (("account", "smsc-sandbox"), ("currency", "RUB"))) in (
        scheduler
    ) or total(scheduler, "smsq_account_balance") > 0
    queues = {dict(k[1])["queue"] for k in scheduler if k[0] == "smsq_queue_messages"}
    assert {"smsq-intake", "smsq-dispatch", "smsq-webhooks", "smsq-reconcile"} <= queues
    rules = [dict(k[1]) for k in scheduler if k[0] == "smsq_limiter_utilisation"]
    assert any(r["account"] == "smsc-sandbox" and r["rule"] == "1/60s" for r in rules)
    for process, body in (("worker", worker), ("web", web), ("scheduler", scheduler)):
        text = json.dumps([list(k) for k in body])
        assert "+7916" not in text and "79160" not in text, process  # no number in a label


def test_final_status_counters_agree_with_the_job_records(stack: Stack) -> None:
    run_jobs(stack)

    def settled() -> bool:
        scraped = samples(stack.scrape("worker"))
        from_metrics = {s: total(scraped, "smsq_recipients_final_total", status=s) for s in FINALS}
        return from_metrics == {s: float(redis_final_counts(stack.client)[s]) for s in FINALS}

    # The job records and the counters move in the same step; the scrape may lag a moment.
    wait_for(settled, 15, "final-status counters equal to the job records", step=0.5)
    scraped = samples(stack.scrape("worker"))
    counts = redis_final_counts(stack.client)
    assert counts["delivered"] > 0 and counts["undeliverable"] > 0 and counts["rejected"] >= 6, (
        counts
    )
    sources = {
        dict(labels)["source"]
        for (name, labels), v in scraped.items()
        if name == "smsq_status_reports_total" and dict(labels)["result"] == "applied" and v
    }
    assert "webhook" in sources and "poll" in sources, sources  # pushes and polls both counted
    by_account = {
        dict(labels)["account"]
        for (name, labels), v in scraped.items()
        if name == "smsq_recipients_final_total" and v
    }
    assert {"intis-sandbox", "smsc-sandbox", "intellisoftware-sandbox", "none"} <= by_account


def test_health_probes_every_process(stack: Stack) -> None:
    for process in ("worker", "scheduler", "web"):
        status, body = get(stack.url(process, "/healthz"))
        assert status == 200, body
        assert json.loads(body)["ok"] is True
    assert get(stack.url("web", "/health"))[0] == 200  # the old path keeps working
    for process in ("worker", "scheduler", "web"):
        result = subprocess.run(
            [*SMSQ, "health", "--process", process, "--json"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["ok"] is True
    result = subprocess.run(
        [*SMSQ, "health"], env=stack.env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "worker_heartbeat" in result.stdout, result.stdout


def test_health_fails_without_a_scheduler_and_comes_back(stack: Stack) -> None:
    stack.stop("scheduler")  # a clean stop releases the lease
    try:
        result = subprocess.run(
            [*SMSQ, "health", "--process", "scheduler"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, result.stdout
        assert "FAIL scheduler_lease" in result.stdout
    finally:
        stack.start("scheduler", ["scheduler", "--metrics-port", str(stack.ports["scheduler"])])
    wait_for(lambda: get(stack.url("scheduler", "/healthz"))[0] == 200, 30, "scheduler back")


def test_top_once_shows_one_masked_frame(stack: Stack) -> None:
    run_jobs(stack)
    stack.client.hset(
        "smsq:dlq",
        "dl-top-1",
        json.dumps(
            {
                "id": "dl-top-1",
                "source": "intake",
                "reasons": ["recipients[0]: +79161234567 is not allowed"],
                "at": time.time(),
                "payload": {},
            }
        ),
    )
    stack.client.zadd("smsq:dlq:index", {"dl-top-1": time.time()})
    try:
        result = subprocess.run(
            [*SMSQ, "top", "--once", "--interval", "1", "--metrics", stack.url("worker")],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stack.client.hdel("smsq:dlq", "dl-top-1")
        stack.client.zrem("smsq:dlq:index", "dl-top-1")
    assert result.returncode == 0, result.stderr
    frame = result.stdout
    for heading in ("QUEUE", "RATES /s", "LATENCY p50/p95", "ACCOUNT", "LIMIT", "DEAD LETTERS"):
        assert heading in frame, frame
    assert "smsq-dispatch" in frame and "smsc-sandbox" in frame and "1/60s" in frame
    assert "scheduler lease held" in frame
    assert "+79161234567" not in frame and "79161234567" not in frame  # masked
    assert "is not allowed" in frame


def test_top_live_screen_under_tmux(stack: Stack) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed")
    session = f"smsq-top-{os.getpid()}"
    env_args = [f"{k}={v}" for k, v in stack.env.items() if k.startswith(("SMSQ", "PATH"))]
    command = " ".join([*SMSQ, "top", "--interval", "0.5", "--metrics", stack.url("worker")])
    subprocess.run(
        [
            tmux,
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "40",
            "env",
            *env_args,
            *command.split(),
        ],
        check=True,
        timeout=10,
    )
    try:

        def screen() -> str:
            return subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout

        shown = wait_for(lambda: "RATES /s" in screen() and screen(), 30, "a frame with rates")
        assert "QUEUE" in shown and "intis-sandbox" in shown and "q: quit" in shown
        subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True, timeout=10)
        wait_for(
            lambda: (
                subprocess.run(
                    [tmux, "has-session", "-t", session], capture_output=True, timeout=10
                ).returncode
                != 0
            ),
            15,
            "smsq top to quit on q",
        )
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, timeout=10)


def _children(parent: int) -> dict[int, bytes]:
    found = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            stat = (pid_dir / "stat").read_text()
            cmdline = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found[int(pid_dir.name)] = cmdline
    return found


def _worker_children(supervisor: int) -> list[int]:
    """The worker processes of a `smsq worker` supervisor (forked: the same command line)."""
    own = (Path("/proc") / str(supervisor) / "cmdline").read_bytes()
    return sorted(p for p, cmd in _children(supervisor).items() if cmd == own)


def test_sigkilled_worker_process_leaves_no_stale_in_progress_gauge(stack: Stack) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to find the worker processes")
    supervisor = stack.procs["worker"].pid
    children = wait_for(
        lambda: len(_worker_children(supervisor)) == 2 and _worker_children(supervisor),
        30,
        "2 worker processes",
    )
    # Every send takes 2 s: both processes (2 threads each) hold dispatches in progress.
    stack.sandboxes.call(_set_latency(stack, "intis", 2.0))
    client = SmsqClient(stack.redis_url)
    job_id = client.enqueue_send(
        provider="intis-sandbox",
        sender="smsq",
        text="slow",
        recipients=[f"+4915123{i:06d}" for i in range(60)],  # 12 chunks of 5
    )

    def in_progress() -> float:
        return total(
            samples(stack.scrape("worker")),
            "dramatiq_messages_inprogress",
            actor_name="dispatch_chunk",
        )

    wait_for(lambda: in_progress() == 4, 30, "4 dispatches in progress (2 per process)")
    victim = children[0]
    os.kill(victim, signal.SIGKILL)
    # At once: the dead process's 2 no longer count (the survivor has at most its 2).
    wait_for(lambda: in_progress() <= 2, 5, "the dead process's in-progress values dropped")
    # The supervisor starts another process; the instance stays healthy.
    wait_for(
        lambda: len(c := _worker_children(supervisor)) == 2 and victim not in c,
        30,
        "a replacement worker process",
    )
    assert "starting a new one" in stack.log("worker")
    stack.sandboxes.call(_set_latency(stack, "intis", 0.0))

    # Truth once the work is done: nothing in progress anywhere. The killed process's
    # messages (in progress or prefetched) come back through the survivors' recovery of a
    # dead worker's messages, so every chunk of the job is recorded in the end.
    def done() -> bool:
        queued = int(stack.client.hget(f"smsq:job:{job_id}:counts", "queued") or 0)
        ready = stack.client.llen("dramatiq:smsq-dispatch")
        return queued == 0 and ready == 0 and in_progress() == 0

    wait_for(done, 90, "every chunk recorded and no dispatch in progress")
    scheduler = samples(stack.scrape("scheduler"))
    assert total(scheduler, "smsq_queue_messages", queue="smsq-dispatch", state="unacked") == 0
    assert total(samples(stack.scrape("worker")), "smsq_worker_restarts_total") >= 1
    assert get(stack.url("worker", "/healthz"))[0] == 200
    client.redis.close()


async def _set_latency(stack: Stack, kind: str, seconds: float) -> None:
    from worker.providers.sandbox_kit import Fault

    state = stack.sandboxes.running[kind].state
    state.faults = {"send.php": Fault(latency=seconds)} if seconds else {}
