"""The PNG beside ``make bench``'s JSON: four panels, each smsq beside its ceilings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(doc: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _bulk(axes[0][0], doc)
    _latency(axes[0][1], doc)
    _throughput(axes[1][0], doc)
    _redis(axes[1][1], doc)
    commit = doc.get("commit") or "?"
    dirty = "+changes" if doc.get("dirty") else ""
    fig.suptitle(
        f"smsq bench ({doc['size']}) {doc['started_at']}, commit {commit}{dirty}, "
        f"{doc['machine']['cpus']} CPUs"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(ax: Any, labels: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + i * width for x in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.0f}" if v else "" for v in values], fontsize=7)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels)
    ax.legend(fontsize=8)


def _bulk(ax: Any, doc: dict[str, Any]) -> None:
    bulk = doc.get("bulk", {})
    ax.set_title("bulk: recipients/s (smsq beside its ceilings)")
    if not bulk:
        ax.text(0.5, 0.5, "not run", ha="center")
        return
    kinds = list(bulk)
    labels = [f"{k}\nratio {bulk[k]['ratio_to_adapter_alone']}" for k in kinds]
    series = {
        "smsq": [bulk[k]["smsq"]["recipients_per_s"] for k in kinds],
        "adapter alone": [bulk[k]["ceiling_adapter_alone_recipients_per_s"] for k in kinds],
        "bare aiohttp": [bulk[k]["ceiling_bare_client_recipients_per_s"] for k in kinds],
    }
    procs = doc.get("processes", {})
    if "2" in procs:
        kind = procs["provider"]
        series["smsq, 2 processes"] = [
            procs["2"]["bulk"]["smsq"]["recipients_per_s"] if k == kind else 0 for k in kinds
        ]
    _bars(ax, labels, series)
    ax.set_ylabel("recipients/s")


def _latency(ax: Any, doc: dict[str, Any]) -> None:
    otp = doc.get("otp", {})
    ax.set_title("OTP latency, enqueue → provider receives (ms, log)")
    rows = list(otp.get("rates", []))
    labels = [f"{r['rate']:g}/s" for r in rows]
    if "during_bulk" in otp:
        rows.append(otp["during_bulk"])
        labels.append(f"{otp['during_bulk']['rate']:g}/s\n+ bulk")
    if not rows:
        ax.text(0.5, 0.5, "not run", ha="center")
        return
    for key, marker in (("p50_ms", "o"), ("p95_ms", "s"), ("p99_ms", "^"), ("max_ms", "x")):
        ax.plot(labels, [r[key] or 0.0 for r in rows], marker=marker, label=key[:-3])
    ax.axhline(10, color="grey", linestyle=":", linewidth=1)
    ax.axhline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylabel("ms (targets: p50 10, p99 50)")
    ax.legend(fontsize=8)


def _throughput(ax: Any, doc: dict[str, Any]) -> None:
    ax.set_title("OTP jobs/s at saturation beside the bare Dramatiq drain")
    drain = doc.get("ceilings", {}).get("dramatiq_noop_drain")
    otp = doc.get("otp", {}).get("saturation")
    procs = doc.get("processes", {})
    labels, values = [], []
    if drain:
        labels += ["no-op drain\nmessages/s"]
        values += [drain["messages_per_s"] or 0.0]
    if otp:
        labels += [f"smsq OTP jobs/s\nratio {otp['ratio_to_drain_messages_per_s']}"]
        values += [otp["jobs_per_s"] or 0.0]
    if "2" in procs:
        labels += ["smsq OTP jobs/s\n2 processes"]
        values += [procs["2"]["otp_saturation"]["jobs_per_s"] or 0.0]
    if not labels:
        ax.text(0.5, 0.5, "not run", ha="center")
        return
    bars = ax.bar(labels, values, color=["grey", "C0", "C3"][: len(values)])
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_ylabel("per second")


def _redis(ax: Any, doc: dict[str, Any]) -> None:
    bulk = doc.get("bulk", {})
    ax.set_title("bulk: Redis per chunk, and CPU per 1,000 recipients")
    if not bulk:
        ax.text(0.5, 0.5, "not run", ha="center")
        return
    kinds = list(bulk)
    series = {
        "commands/chunk": [bulk[k]["smsq"]["redis_commands_per_chunk"] for k in kinds],
        "round trips/chunk (est.)": [bulk[k]["smsq"]["redis_round_trips_per_chunk"] for k in kinds],
        "worker CPU ms/1000 rcpt": [
            bulk[k]["smsq"]["cpu_s_per_1000_recipients"] * 1000 for k in kinds
        ],
    }
    _bars(ax, kinds, series)
