"""Bulk dispatch throughput of one provider: smsq end to end beside its ceilings, same
sandbox, same run (the ``bulk`` group of ``python -m bench`` for one provider).

    python -m bench.dispatch [--provider intis] [--recipients 20000] [--concurrency 8]

Starts a private Redis, the provider's sandbox (its own process) and one worker
process; measures the adapter alone and a bare aiohttp client on the same sandbox
(bench.ceilings), then a job of N recipients through smsq (bench.scenarios.bulk).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench import ceilings, scenarios
from bench.harness import PROVIDERS, Stack, ratio


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch")
    parser.add_argument("--provider", default="intis", choices=PROVIDERS)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads")
    args = parser.parse_args()
    with Stack([args.provider]) as stack:
        sandbox = stack.sandboxes[args.provider]
        adapter, bare = ceilings.adapter_and_bare(sandbox, args.recipients, args.concurrency)
        with stack.worker(threads=args.concurrency) as worker:
            smsq = scenarios.bulk(stack, worker, args.provider, args.recipients, 1000)
    result = {
        "benchmark": "bulk_dispatch",
        "provider": args.provider,
        "concurrency": args.concurrency,
        "ceiling_adapter_only": adapter,
        "ceiling_bare_client": bare,
        "smsq": smsq,
        "smsq_vs_ceiling": ratio(smsq["recipients_per_s"], adapter["recipients_per_s"]),
        "smsq_vs_bare_client": ratio(smsq["recipients_per_s"], bare["recipients_per_s"]),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
