"""Least-cost routing: what the same mixed-operator job costs through a failover route and a
cost route, both over the same two sandboxes (Intis and SMSC) with per-operator prices.

    python -m bench.routing [--recipients 10000]

Starts an embedded Redis, both sandboxes (each charging its own price list per operator),
an in-process worker and the scheduler's price and operator-lookup tasks, then sends
the same job three times and reads what each cost (the providers' reported costs, as
``smsq status`` shows them):

- ``failover``: route ``[intis, smsc]`` in order;
- ``cost_first_contact``: the cost route before any operator is known (each number
  priced by its country; the numbers are queued for lookups);
- ``cost``: the cost route once the scheduler's lookups placed every number.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import Future
from decimal import Decimal
from typing import Any

import dramatiq

from producers.client import SmsqClient
from worker.core.config import Settings, parse_settings
from worker.devtools.redis_server import RedisServer
from worker.devtools.sandboxes import sandbox_account, start_sandboxes
from worker.entry.actors import create_app
from worker.providers.sandbox_kit import OutcomeMix
from worker.tracking.scheduler import Scheduler

# network -> (share of the job, number pattern, Intis price, SMSC price or None)
NETWORKS: dict[str, tuple[float, str, str, str | None]] = {
    "25001": (0.30, "7916{:07d}", "0.40", "0.80"),  # MTS
    "25002": (0.25, "7926{:07d}", "1.20", "0.60"),  # MegaFon
    "25099": (0.20, "7903{:07d}", "0.90", "0.95"),  # Beeline
    "25020": (0.15, "7977{:07d}", "1.50", "0.70"),  # Tele2
    "23430": (0.10, "447400{:06d}", "3.00", None),  # EE (UK): only Intis prices it
}


def job_numbers(n: int) -> list[str]:
    rng = random.Random(12)
    networks = list(NETWORKS)
    weights = [NETWORKS[k][0] for k in networks]
    seen: Counter[str] = Counter()
    out = []
    for _ in range(n):
        net = rng.choices(networks, weights)[0]
        out.append("+" + NETWORKS[net][1].format(seen[net]))
        seen[net] += 1
    return out


def settings_for(redis_url: str, urls: dict[str, str]) -> Settings:
    accounts: dict[str, Any] = {}
    env: dict[str, str] = {}
    for kind, url in urls.items():
        creds = sandbox_account(kind)
        table: dict[str, Any] = {"kind": kind, "base_url": url, "login": creds.get("login", "")}
        for secret in ("password", "api_key"):
            if creds.get(secret):
                env[f"BENCH_{kind.upper()}_{secret.upper()}"] = creds[secret]
                table[secret] = {"env": f"BENCH_{kind.upper()}_{secret.upper()}"}
        accounts[kind] = table
    data = {
        "redis": {"url": redis_url},
        "accounts": accounts,
        "routes": {
            "failover": ["intis", "smsc"],
            "cost": {"accounts": ["intis", "smsc"], "strategy": "cost"},
        },
        "routing": {"lookups_per_run": 100_000},
    }
    return parse_settings(data, env)


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)


def drain(broker: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    queues = sorted(broker.get_declared_queues(), key=lambda q: "intake" not in q)
    while True:
        for q in queues:
            broker.join(q, timeout=int(max(0.1, deadline - time.monotonic()) * 1000))
        if all(broker.do_qsize(q) == 0 for q in queues):
            return


def send(client: SmsqClient, broker: Any, route: str, numbers: list[str]) -> dict[str, Any]:
    sender = sandbox_account("intis").get("sender", "smsq")
    job = client.enqueue_send(
        provider=route, sender=sender, text="December offers", recipients=numbers
    )
    started = time.perf_counter()
    drain(broker)
    status = client.status(job, recipients=True)
    assert status is not None
    by_account: dict[str, Decimal] = {}
    currency = ""
    for line in status.costs:
        by_account[line.account] = by_account.get(line.account, Decimal(0)) + Decimal(
            str(line.amount)
        )
        currency = line.currency
    basis = Counter(r.priced_by for r in status.recipients)
    sent_by = Counter(r.account for r in status.recipients)
    return {
        "total": float(sum(by_account.values(), Decimal(0))),
        "currency": currency,
        "by_account": {k: float(v) for k, v in sorted(by_account.items())},
        "recipients_by_account": dict(sorted((k or "?", v) for k, v in sent_by.items())),
        "priced_by": dict(sorted((k or "?", v) for k, v in basis.items())),
        "statuses": dict(status.counts),
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=10_000)
    args = parser.parse_args()
    numbers = job_numbers(args.recipients)
    options: dict[str, dict[str, Any]] = {
        "intis": {
            "balance": "100000000",
            "charge_by_operator": True,
            "prices": {
                k: {"NETWORK_NAME": k, "COUNTRY": "", "PRICE": v[2], "CURRENCY": "RUB"}
                for k, v in NETWORKS.items()
            },
        },
        "smsc": {
            "balance": "100000000",
            "price": "1.50",
            "operator_prices": {k: v[3] for k, v in NETWORKS.items() if v[3] is not None},
        },
    }
    loop = Loop()
    with RedisServer() as server:
        running = loop.call(
            start_sandboxes(["intis", "smsc"], mix=OutcomeMix(final_after=3600), options=options)
        )
        settings = settings_for(server.url, {k: r.url for k, r in running.items()})
        app = create_app(settings)
        worker = dramatiq.Worker(app.broker, worker_threads=8)
        worker.start()
        scheduler = Scheduler(settings)
        try:
            client = SmsqClient(server.url)
            tick = time.time()
            scheduler.run_due(tick)  # price lists
            drain(app.broker)
            failover = send(client, app.broker, "failover", numbers)
            first_contact = send(client, app.broker, "cost", numbers)
            scheduler.run_due(tick + 86_400)  # operator lookups of the numbers first seen
            drain(app.broker)
            waiting = int(client.redis.zcard(f"{settings.key_prefix}:op:wanted"))
            cost = send(client, app.broker, "cost", numbers)
            saving = failover["total"] - cost["total"]
            print(
                json.dumps(
                    {
                        "benchmark": "least_cost_routing",
                        "recipients": args.recipients,
                        "mix": {k: v[0] for k, v in NETWORKS.items()},
                        "failover": failover,
                        "cost_first_contact": first_contact,
                        "operators_left_unplaced": waiting,
                        "cost": cost,
                        "saving": round(saving, 2),
                        "saving_share": round(saving / failover["total"], 4),
                    },
                    indent=2,
                )
            )
        finally:
            worker.stop(timeout=10_000)
            app.runtime.close()
            app.broker.close()
            scheduler.close()
            for r in running.values():
                loop.call(r.stop())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
