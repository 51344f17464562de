"""``make bench``: every scenario beside its ceilings, in one run, as one JSON document.

    python -m bench                       # the full run (100k-recipient jobs; several minutes)
    python -m bench --quick               # the same scenarios, smaller (about two minutes)
    python -m bench --quick --only bulk   # one group: bulk, otp, otp_bulk, processes, limiter
    python -m bench --size smoke          # seconds; checks the harness, not the speed

Writes the document to ``--out`` (default ``bench/results/bench.json``) and to stdout, and
a plot next to it (same name, ``.png``) when matplotlib is installed (``pip install
-e '.[bench]'``). docs/performance.md says how to read it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ceilings, limiter, scenarios
from bench.harness import PROVIDERS, Stack, ratio

GROUPS = ("bulk", "otp", "otp_bulk", "processes", "limiter")

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "bulk_recipients": 100_000,
        "otp_rates": {2: 30.0, 100: 10.0, 500: 6.0, 1000: 5.0},  # jobs/s: seconds offered
        "otp_saturation_jobs": 5_000,
        "otp_bulk_rate": 100,
        "drain_messages": 20_000,
        "limiter_seconds": 20.0,
    },
    "quick": {
        "bulk_recipients": 20_000,
        "otp_rates": {2: 5.0, 100: 3.0, 500: 2.0, 1000: 1.0},
        "otp_saturation_jobs": 1_000,
        "otp_bulk_rate": 100,
        "drain_messages": 5_000,
        "limiter_seconds": 5.0,
    },
    "smoke": {
        "bulk_recipients": 400,
        "otp_rates": {2: 1.0, 100: 0.2, 500: 0.1, 1000: 0.05},
        "otp_saturation_jobs": 40,
        "otp_bulk_rate": 20,
        "drain_messages": 200,
        "limiter_seconds": 2.0,
        "idle_seconds": 0.3,
    },
}

THREADS = (
    8  # the worker's default Dramatiq threads; the HTTP ceilings keep as many requests in flight
)
OTP_KIND = "intis"


def _commit() -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": bool(dirty)}


def _target(name: str, value: float | None, op: str, threshold: float) -> dict[str, Any]:
    ok = None
    if value is not None:
        ok = value >= threshold if op == ">=" else value <= threshold if op == "<=" else None
        if op == "==":
            ok = value == threshold
    return {"target": f"{name} {op} {threshold:g}", "value": value, "pass": ok}


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets, each with the figure measured and pass/fail (None when
    the scenario did not run or produced no figure)."""
    out: list[dict[str, Any]] = []
    for kind, b in doc.get("bulk", {}).items():
        out.append(
            _target(f"bulk_ratio_to_adapter[{kind}]", b["ratio_to_adapter_alone"], ">=", 0.7)
        )
        out.append(
            _target(
                f"redis_round_trips_per_chunk[{kind}]",
                b["smsq"]["redis_round_trips_per_chunk"],
                "<=",
                2,
            )
        )
    otp = doc.get("otp", {})
    if "saturation" in otp:
        out.append(
            _target(
                "otp_jobs_per_s_ratio_to_drain_messages_per_s",
                otp["saturation"]["ratio_to_drain_messages_per_s"],
                ">=",
                0.6,
            )
        )
    for row in otp.get("rates", []):
        if row["rate"] in (2, 100, 500):
            out.append(_target(f"otp_p50_ms[{row['rate']:g}/s]", row["p50_ms"], "<=", 10))
            out.append(_target(f"otp_p99_ms[{row['rate']:g}/s]", row["p99_ms"], "<=", 50))
    if "during_bulk" in otp:
        d = otp["during_bulk"]
        name = f"otp_p99_ms_during_bulk[{d['rate']:g}/s, {d['bulk_recipients']} recipients]"
        out.append(_target(name, d["p99_ms"], "<=", 100))
    lim = doc.get("limiter")
    if lim is not None:
        out.append(_target("limiter_violations", lim["limiter"]["violations"], "==", 0))
        out.append(
            _target("limiter_end_to_end_violations", lim["end_to_end"]["violations"], "==", 0)
        )
        out.append(_target("limiter_utilisation", lim["limiter"]["utilisation"], ">=", 0.98))
        out.append(
            _target(
                "limiter_round_trips_per_acquire",
                lim["limiter"]["round_trips_per_acquire"],
                "<=",
                1,
            )
        )
    memory = doc.get("bulk", {}).get(OTP_KIND, {}).get("smsq")
    if memory is not None:
        grown = ratio(memory["worker_rss_mb_after"], memory["worker_rss_mb_idle"])
        out.append(_target("worker_rss_after_bulk_ratio_to_idle", grown, "<=", 1.5))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = dict(SIZES[args.size])
    if args.recipients:
        size["bulk_recipients"] = args.recipients
    only = set(args.only or GROUPS)
    kinds = list(args.providers or PROVIDERS)
    n = int(size["bulk_recipients"])
    started = time.time()
    doc: dict[str, Any] = {
        "benchmark": "smsq",
        "size": args.size,
        "started_at": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(
            timespec="seconds"
        ),
        **_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            **{k: v for k, v in size.items() if k != "otp_rates"},
            "otp_rates_seconds": {str(k): v for k, v in size["otp_rates"].items()},
            "worker_threads": THREADS,
            "ceiling_concurrency": THREADS,
            "groups": sorted(only),
            "providers": kinds,
        },
        "ceilings": {},
    }
    needs_http = {k for k in kinds if "bulk" in only} | (
        {OTP_KIND} if "processes" in only else set()
    )
    needs_drain = bool(only & {"otp", "processes"})
    stack_kinds = sorted(needs_http | ({OTP_KIND} if only & {"otp", "otp_bulk"} else set()))
    if stack_kinds:
        with Stack(stack_kinds) as stack:
            _log(f"stack up: Redis and sandboxes {', '.join(stack_kinds)}")
            http: dict[str, Any] = {}
            for kind in [k for k in PROVIDERS if k in needs_http]:
                adapter, bare = ceilings.adapter_and_bare(stack.sandboxes[kind], n, THREADS)
                http[kind] = {"adapter_alone": adapter, "bare_client": bare}
                _log(
                    f"ceiling {kind}: adapter {adapter['recipients_per_s']:.0f}/s, "
                    f"bare client {bare['recipients_per_s']:.0f}/s"
                )
            if http:
                doc["ceilings"]["http"] = http
            drain = None
            if needs_drain:
                drain = ceilings.noop_drain(stack.url, int(size["drain_messages"]), THREADS)
                doc["ceilings"]["dramatiq_noop_drain"] = drain
                _log(f"ceiling dramatiq no-op drain: {drain['messages_per_s']} messages/s")
            if only & {"bulk", "otp", "otp_bulk"}:
                with stack.worker(processes=1, threads=THREADS) as worker:
                    if "bulk" in only:
                        doc["bulk"] = {}
                        for i, kind in enumerate(k for k in PROVIDERS if k in kinds):
                            smsq = scenarios.bulk(
                                stack,
                                worker,
                                kind,
                                n,
                                scenarios.BULK_OFFSET + i * 2 * n,
                                idle_seconds=float(size.get("idle_seconds", 1.0)),
                            )
                            doc["bulk"][kind] = _bulk_row(smsq, http[kind])
                            _log(
                                f"bulk {kind}: {smsq['recipients_per_s']:.0f}/s, ratio "
                                f"{doc['bulk'][kind]['ratio_to_adapter_alone']}"
                            )
                    if "otp" in only:
                        doc["otp"] = _otp(stack, size, drain)
                    if "otp_bulk" in only:
                        during = scenarios.otp_during_bulk(
                            stack,
                            OTP_KIND,
                            float(size["otp_bulk_rate"]),
                            n,
                            scenarios.BULK_OFFSET + 8 * n,
                        )
                        doc.setdefault("otp", {})["during_bulk"] = during
                        _log(f"otp during bulk: p99 {during['p99_ms']} ms")
            if "processes" in only:
                doc["processes"] = _processes(stack, doc, size, n, http[OTP_KIND], drain)
    if "limiter" in only:
        seconds = float(size["limiter_seconds"])
        doc["limiter"] = limiter.run(cap=20, window=2.0, seconds=seconds, processes=2)
        _log(f"limiter: {doc['limiter']['limiter']['violations']} violations")
    doc["targets"] = targets(doc)
    checked = [t for t in doc["targets"] if t["pass"] is not None]
    doc["summary"] = {
        "targets_passed": sum(1 for t in checked if t["pass"]),
        "targets_checked": len(checked),
        "seconds": round(time.time() - started, 1),
        "headline": _headline(doc),
    }
    return doc


def _bulk_row(smsq: dict[str, Any], http: dict[str, Any]) -> dict[str, Any]:
    adapter, bare = http["adapter_alone"], http["bare_client"]
    return {
        "smsq": smsq,
        "ceiling_adapter_alone_recipients_per_s": adapter["recipients_per_s"],
        "ceiling_bare_client_recipients_per_s": bare["recipients_per_s"],
        "ratio_to_adapter_alone": ratio(smsq["recipients_per_s"], adapter["recipients_per_s"]),
        "ratio_to_bare_client": ratio(smsq["recipients_per_s"], bare["recipients_per_s"]),
        "http_requests_per_s_ratio_to_adapter_alone": ratio(
            smsq["http_requests_per_s"], adapter["http_requests_per_s"]
        ),
        # CPU: how many times the adapter alone's CPU per recipient smsq spends (lower is better)
        "cpu_per_recipient_ratio_to_adapter_alone": ratio(
            smsq["cpu_s_per_1000_recipients"], adapter["cpu_s_per_1000_recipients"]
        ),
    }


def _otp(stack: Stack, size: dict[str, Any], drain: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"provider": OTP_KIND, "rates": []}
    for rate, seconds in size["otp_rates"].items():
        row = scenarios.otp_at_rate(stack, OTP_KIND, float(rate), float(seconds))
        out["rates"].append(row)
        _log(f"otp at {rate}/s: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms")
    sat = scenarios.otp_saturation(stack, OTP_KIND, int(size["otp_saturation_jobs"]))
    out["saturation"] = _saturation_row(sat, drain)
    _log(f"otp saturation: {sat['jobs_per_s']} jobs/s")
    return out


def _saturation_row(sat: dict[str, Any], drain: dict[str, Any] | None) -> dict[str, Any]:
    per_s = drain["messages_per_s"] if drain else None
    sat["ceiling_drain_messages_per_s"] = per_s
    sat["ratio_to_drain_messages_per_s"] = ratio(sat["jobs_per_s"], per_s)
    # An OTP job is two Dramatiq messages today (intake, then dispatch).
    sat["ratio_to_drain_jobs_per_s_at_2_messages"] = ratio(
        sat["jobs_per_s"], per_s / 2 if per_s else None
    )
    return sat


def _processes(
    stack: Stack,
    doc: dict[str, Any],
    size: dict[str, Any],
    n: int,
    http: dict[str, Any],
    drain: dict[str, Any] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"provider": OTP_KIND}
    one_bulk = doc.get("bulk", {}).get(OTP_KIND, {}).get("smsq")
    one_otp = doc.get("otp", {}).get("saturation")
    for procs in (1, 2):
        if procs == 1 and one_bulk is not None and one_otp is not None:
            out["1"] = {"bulk": _bulk_row(one_bulk, http), "otp_saturation": one_otp}
            continue
        with stack.worker(processes=procs, threads=THREADS) as worker:
            offset = scenarios.BULK_OFFSET + (10 + procs) * n
            bulk = scenarios.bulk(stack, worker, OTP_KIND, n, offset)
            sat = scenarios.otp_saturation(stack, OTP_KIND, int(size["otp_saturation_jobs"]))
        out[str(procs)] = {
            "bulk": _bulk_row(bulk, http),
            "otp_saturation": _saturation_row(sat, drain),
        }
        _log(
            f"{procs} process(es): bulk {bulk['recipients_per_s']:.0f}/s, otp {sat['jobs_per_s']} jobs/s"
        )
    out["bulk_ratio_2_to_1"] = ratio(
        out["2"]["bulk"]["smsq"]["recipients_per_s"], out["1"]["bulk"]["smsq"]["recipients_per_s"]
    )
    out["otp_ratio_2_to_1"] = ratio(
        out["2"]["otp_saturation"]["jobs_per_s"], out["1"]["otp_saturation"]["jobs_per_s"]
    )
    return out


def _headline(doc: dict[str, Any]) -> dict[str, Any]:
    """The figures in one glance."""
    h: dict[str, Any] = {}
    for kind, b in doc.get("bulk", {}).items():
        h[f"bulk[{kind}]"] = (
            f"{b['smsq']['recipients_per_s']:.0f}/s of {b['ceiling_adapter_alone_recipients_per_s']:.0f}/s"
            f" adapter alone ({b['ratio_to_adapter_alone']}), bare client "
            f"{b['ceiling_bare_client_recipients_per_s']:.0f}/s; "
            f"{b['smsq']['redis_round_trips_per_chunk']} round trips/chunk"
        )
    otp = doc.get("otp", {})
    for row in otp.get("rates", []):
        h[f"otp[{row['rate']:g}/s]"] = (
            f"p50 {row['p50_ms']} p95 {row['p95_ms']} p99 {row['p99_ms']} max {row['max_ms']} ms"
        )
    if "saturation" in otp:
        s = otp["saturation"]
        h["otp_saturation"] = (
            f"{s['jobs_per_s']} jobs/s; drain {s['ceiling_drain_messages_per_s']} messages/s "
            f"({s['ratio_to_drain_messages_per_s']})"
        )
    if "during_bulk" in otp:
        d = otp["during_bulk"]
        h["otp_during_bulk"] = f"p50 {d['p50_ms']} p99 {d['p99_ms']} max {d['max_ms']} ms"
    if "processes" in doc:
        p = doc["processes"]
        h["processes_2_vs_1"] = f"bulk x{p['bulk_ratio_2_to_1']}, otp x{p['otp_ratio_2_to_1']}"
    if "limiter" in doc:
        lim = doc["limiter"]["limiter"]
        h["limiter"] = (
            f"{lim['violations']} violations, utilisation {lim['utilisation']}, "
            f"{lim['round_trips_per_acquire']} round trips/acquire"
        )
    return h


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--quick", action="store_const", const="quick", dest="size")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="these groups only")
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, help="bulk providers")
    parser.add_argument("--recipients", type=int, help="bulk job size (default: by --size)")
    parser.add_argument("--out", default="bench/results/bench.json")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    doc = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc["plot"] = None
    if not args.no_plot:
        try:
            from bench.plot import plot
        except ImportError:
            _log("no plot: matplotlib is not installed (pip install -e '.[bench]')")
        else:
            png = out.with_suffix(".png")
            plot(doc, png)
            doc["plot"] = png.name
    text = json.dumps(doc, indent=2)
    out.write_text(text + "\n")
    print(text)
    _log(f"written {out}" + (f" and {out.with_suffix('.png')}" if doc["plot"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
