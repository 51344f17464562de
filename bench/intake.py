"""What number validation costs at intake: the same 100,000-recipient job validated with
libphonenumber (``valid``, the worker's default; ``possible``) and by form only.

    python -m bench.intake [--recipients 100000]

Prints one JSON object (seconds and microseconds per recipient, best of three runs).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from producers.contract import validate_job


def timed(payload: dict[str, Any], numbers: Any) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        validate_job(payload, numbers=numbers)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    args = parser.parse_args()
    n = args.recipients
    mixed = [f"+7916{i:07d}" if i % 2 else f"+447400{i:06d}" for i in range(n)]
    payload = {"provider": "bench", "sender": "smsq", "text": "hi", "recipients": mixed}
    out: dict[str, Any] = {"benchmark": "intake_validation", "recipients": n}
    for name, numbers in (("valid", "valid"), ("possible", "possible"), ("form_only", None)):
        seconds = timed(payload, numbers)
        out[name] = {"seconds": round(seconds, 3), "us_per_recipient": round(seconds / n * 1e6, 1)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
