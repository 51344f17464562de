"""``smsq top``: one refreshing terminal screen for ops without Grafana.

What it shows, and where it reads it:

- queues (ready / delayed / unacknowledged, oldest waiting message), accounts (circuit,
  balance, awaiting messages, reconciliation lag), limiter utilisation per rule, the
  scheduler lease and the dead letters held: read from Redis with the same collector the
  scheduler serves (:class:`worker.core.metrics.ClusterCollector`);
- rates (recipients by outcome, provider requests and errors, per second) and latency
  (enqueue to provider accepted, provider request, accepted to final: p50 / p95): from the
  worker's ``/metrics`` (``--metrics URL``, repeatable), as the difference between two
  scrapes; shown as unavailable when no worker port answers;
- the newest dead letters with their reasons, and the reason of each paused account.

Numbers are masked (``worker.core.logs.redact``) in everything printed. ``--once`` prints one
frame (two scrapes ``min(interval, 1 s)`` apart) and exits; otherwise the screen is redrawn
every ``--interval`` seconds until ``q`` or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from producers import redis_conn
from producers.dead_letters import DeadLetter, DeadLetters
from producers.keys import Keys
from worker.core.config import Settings, safe_url
from worker.core.logs import redact
from worker.entry.exposition import cluster_collector

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Snapshot:
    """One reading of everything a frame shows."""

    at: float
    cluster: dict[str, list[tuple[dict[str, str], float]]]
    dead_letters: list[DeadLetter]
    paused_reasons: dict[str, str]
    scraped: Samples | None  # the workers' samples, None when no port answered
    scrape_error: str = ""
    scrape_at: float = 0.0


@dataclass
class Rates:
    """Per-second rates and latency quantiles between two worker scrapes."""

    seconds: float
    per_second: dict[str, float] = field(default_factory=dict)
    latency: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading


def scrape(urls: Sequence[str], timeout: float = 2.0) -> tuple[Samples | None, str]:
    """Every sample of the given /metrics pages, added up across them (None: none answered)."""
    total: Samples = {}
    errors = []
    answered = False
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        answered = True
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                total[key] = total.get(key, 0.0) + float(s.value)
    return (total if answered else None), "; ".join(errors)


def read_snapshot(
    settings: Settings, client: redis.Redis, urls: Sequence[str], dead_letters: int = 5
) -> Snapshot:
    cluster: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in cluster_collector(settings, client).collect():
        cluster[family.name] = [(dict(s.labels), float(s.value)) for s in family.samples]
    keys = Keys(settings.key_prefix)
    letters = DeadLetters(client, keys).list(limit=dead_letters)
    paused: dict[str, str] = {}
    pipe = client.pipeline(transaction=False)
    names = sorted(settings.accounts)
    for name in names:
        pipe.hmget(keys.account(name), ["state", "reason"])
    for name, (state, reason) in zip(names, pipe.execute(), strict=True):
        if state == b"paused":
            paused[name] = (reason or b"").decode("utf-8", "replace")
    samples, error = scrape(urls) if urls else (None, "no worker metrics URL")
    return Snapshot(time.time(), cluster, letters, paused, samples, error, time.monotonic())


def _sum(samples: Samples, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for (n, labels), value in samples.items():
        if n == name and all(dict(labels).get(k) == v for k, v in match.items()):
            out[labels] = out.get(labels, 0.0) + value
    return out


def _total(samples: Samples, name: str, **match: str) -> float:
    return sum(_sum(samples, name, **match).values())


def _quantiles(before: Samples, after: Samples, name: str) -> tuple[float | None, float | None]:
    """p50 and p95 of a histogram's observations between two scrapes (buckets interpolated)."""
    buckets: dict[float, float] = {}
    for (n, labels), value in after.items():
        if n != f"{name}_bucket":
            continue
        le = dict(labels).get("le", "+Inf")
        bound = math.inf if le == "+Inf" else float(le)
        buckets[bound] = buckets.get(bound, 0.0) + value - before.get((n, labels), 0.0)
    if not buckets:
        return None, None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None, None

    def q(fraction: float) -> float:
        rank = fraction * count
        lower, seen = 0.0, 0.0
        for bound in bounds:
            if buckets[bound] >= rank:
                if math.isinf(bound):
                    return lower
                inside = buckets[bound] - seen
                share = (rank - seen) / inside if inside > 0 else 1.0
                return lower + (bound - lower) * share
            lower, seen = bound, buckets[bound]
        return lower

    return q(0.5), q(0.95)


def rates(before: Snapshot, after: Snapshot) -> Rates | None:
    if before.scraped is None or after.scraped is None:
        return None
    dt = after.scrape_at - before.scrape_at
    if dt <= 0:
        return None
    a, b = before.scraped, after.scraped
    out = Rates(dt)

    def rate(name: str, **match: str) -> float:
        return max(0.0, (_total(b, name, **match) - _total(a, name, **match)) / dt)

    for status in ("submitted", "delivered", "undeliverable", "expired", "rejected", "failed"):
        out.per_second[f"recorded {status}"] = rate("smsq_recipients_total", status=status)
    for status in ("delivered", "undeliverable", "expired", "rejected", "failed"):
        out.per_second[f"final {status}"] = rate("smsq_recipients_final_total", status=status)
    out.per_second["requests"] = rate("smsq_provider_requests_total")
    out.per_second["request errors"] = out.per_second["requests"] - rate(
        "smsq_provider_requests_total", outcome="ok"
    )
    out.per_second["retries"] = rate("smsq_retries_total")
    out.per_second["messages"] = rate("dramatiq_messages_total")
    out.per_second["message errors"] = rate("dramatiq_message_errors_total")
    out.latency["enqueue -> accepted"] = _quantiles(a, b, "smsq_time_to_submit_seconds")
    out.latency["provider request"] = _quantiles(a, b, "smsq_provider_request_duration_seconds")
    out.latency["accepted -> final"] = _quantiles(a, b, "smsq_time_to_final_seconds")
    out.latency["push -> applied"] = _quantiles(a, b, "smsq_push_apply_lag_seconds")
    return out


# --------------------------------------------------------------------------- rendering


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _bar(fraction: float, width: int = 10) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "#" * filled + "." * (width - filled)


def _rows(snapshot: Snapshot, name: str) -> list[tuple[dict[str, str], float]]:
    return snapshot.cluster.get(name, [])


def render(settings: Settings, snapshot: Snapshot, rate: Rates | None, width: int = 100) -> str:
    """One frame, as plain text lines no wider than ``width``; numbers masked."""
    lines: list[str] = []
    stamp = datetime.fromtimestamp(snapshot.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lease = _rows(snapshot, "smsq_scheduler_lease_held")
    held = "held" if lease and lease[0][1] else "NOT HELD"
    dlq = _rows(snapshot, "smsq_dead_letters_held")
    lines.append(
        f"smsq top  {stamp}  redis {safe_url(settings.redis_url)}  scheduler lease {held}  "
        f"dead letters {int(dlq[0][1]) if dlq else 0}"
    )
    lines.append("")
    lines.append(f"{'QUEUE':<22}{'ready':>8}{'delayed':>9}{'unacked':>9}{'oldest':>9}")
    depth: dict[str, dict[str, float]] = {}
    for labels, value in _rows(snapshot, "smsq_queue_messages"):
        depth.setdefault(labels["queue"], {})[labels["state"]] = value
    ages = {
        labels["queue"]: v for labels, v in _rows(snapshot, "smsq_queue_oldest_message_age_seconds")
    }
    for queue, states in depth.items():
        lines.append(
            f"  {queue:<20}{states.get('ready', 0):>8.0f}{states.get('delayed', 0):>9.0f}"
            f"{states.get('unacked', 0):>9.0f}{_dur(ages.get(queue, 0.0)):>9}"
        )
    lines.append("")
    if rate is None:
        why = snapshot.scrape_error or "waiting for a second scrape"
        lines.append(f"RATES, LATENCY   unavailable: {why}"[:width])
    else:
        per = rate.per_second
        lines.append(
            f"RATES /s (last {rate.seconds:.0f}s)  requests {per['requests']:.1f}  "
            f"errors {per['request errors']:.1f}  retries {per['retries']:.1f}  "
            f"messages {per['messages']:.1f}  message errors {per['message errors']:.1f}"
        )
        recorded = "  ".join(
            f"{k.split()[1]} {v:.1f}" for k, v in per.items() if k.startswith("recorded ")
        )
        finals = "  ".join(
            f"{k.split()[1]} {v:.1f}" for k, v in per.items() if k.startswith("final ")
        )
        lines.append(f"  at dispatch: {recorded}")
        lines.append(f"  final:       {finals}")
        lat = "  ".join(
            f"{name} {_dur(p50)}/{_dur(p95)}" for name, (p50, p95) in rate.latency.items()
        )
        lines.append(f"LATENCY p50/p95  {lat}")
    lines.append("")
    lines.append(f"{'ACCOUNT':<22}{'circuit':<9}{'balance':>16}{'awaiting':>10}{'lag':>8}")
    balance = {
        labels["account"]: f"{value:,.2f} {labels['currency']}"
        for labels, value in _rows(snapshot, "smsq_account_balance")
    }
    awaiting = {labels["account"]: v for labels, v in _rows(snapshot, "smsq_awaiting_messages")}
    lag = {labels["account"]: v for labels, v in _rows(snapshot, "smsq_reconcile_lag_seconds")}
    for labels, value in _rows(snapshot, "smsq_account_paused"):
        name = labels["account"]
        line = (
            f"  {name:<20}{'PAUSED' if value else 'ok':<9}{balance.get(name, '-'):>16}"
            f"{awaiting.get(name, 0):>10.0f}{_dur(lag.get(name, 0.0)):>8}"
        )
        if name in snapshot.paused_reasons:
            line += "  " + redact(snapshot.paused_reasons[name])
        lines.append(line)
    lines.append("")
    lines.append(f"{'LIMIT':<36}{'rule':>12}  utilisation")
    for labels, value in _rows(snapshot, "smsq_limiter_utilisation"):
        where = f"{labels['account']} {labels['endpoint']}"
        lines.append(f"  {where:<34}{labels['rule']:>12}  {_bar(value)} {value * 100:5.1f}%")
    lines.append("")
    lines.append("RECENT DEAD LETTERS" if snapshot.dead_letters else "RECENT DEAD LETTERS  none")
    for dl in snapshot.dead_letters:
        when = datetime.fromtimestamp(dl.at, UTC).strftime("%H:%M:%S")
        reasons = redact("; ".join(dl.reasons))
        lines.append(f"  {when} {dl.source[:24]:<24} {reasons}")
    return "\n".join(line[:width] for line in lines)


# --------------------------------------------------------------------------- running


def default_urls(settings: Settings) -> list[str]:
    host = settings.metrics.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return [f"http://{host}:{settings.metrics.worker_port}/metrics"]


@contextlib.contextmanager
def _screen() -> Iterator[bool]:
    """Alternate screen, no cursor, keys without Enter (when stdin is a terminal)."""
    interactive = sys.stdin.isatty()
    saved: Any = None
    if interactive:
        import termios
        import tty

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setcbreak(sys.stdin.fileno())
    sys.stdout.write("\x1b[?1049h\x1b[?25l")
    try:
        yield interactive
    finally:
        sys.stdout.write("\x1b[?25h\x1b[?1049l")
        sys.stdout.flush()
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _wait_for_quit(seconds: float, interactive: bool) -> bool:
    """Sleep up to ``seconds``; True when the user pressed q."""
    if not interactive:
        time.sleep(seconds)
        return False
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:
        return os.read(sys.stdin.fileno(), 16).strip().lower().startswith(b"q")
    return False


def run_top(
    settings: Settings,
    *,
    interval: float = 2.0,
    once: bool = False,
    metrics_url: Sequence[str] | None = None,
) -> int:
    urls = list(metrics_url or default_urls(settings))
    client = redis_conn.sync_client(settings.redis_url, socket_connect_timeout=3, socket_timeout=5)
    try:
        previous = read_snapshot(settings, client, urls)
        if once:
            time.sleep(min(interval, 1.0))
            current = read_snapshot(settings, client, urls)
            print(render(settings, current, rates(previous, current), width=_width()))
            return 0
        with _screen() as interactive:
            current = previous
            while True:
                frame = render(settings, current, rates(previous, current), width=_width())
                footer = f"\n\nrefresh {interval:g}s   q: quit"
                sys.stdout.write("\x1b[H\x1b[2J" + frame + footer)
                sys.stdout.flush()
                if _wait_for_quit(interval, interactive):
                    return 0
                previous, current = current, read_snapshot(settings, client, urls)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def _width() -> int:
    return max(60, shutil.get_terminal_size((120, 40)).columns)
