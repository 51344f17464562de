"""Least-cost routing: decisions, price lists, operator lookups, and a mixed job split by price.

The end-to-end test runs two sandboxes whose price lists differ per operator (Intis
``prices.php`` by MCC+MNC, SMSC ``get_price`` individual tariffs and a country zone),
both charging what they list, a worker and the scheduler's price and lookup tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from producers.cli import format_status
from producers.client import JobStatus, SmsqClient
from tests.support.prices import NETWORKS, intis_prices, smsc_prices
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from worker.core.config import ConfigError, PriceOverride, parse_settings
from worker.pipeline.routing import MCC_REGIONS, PriceBook, decide, price_book, stored_prices
from worker.tracking.scheduler import Scheduler, build_tasks

ROUTE = ("intis-sandbox", "smsc-sandbox")

# Number patterns the sandboxes place on those networks.
PATTERNS = {
    "25001": "+7916{:07d}",
    "25002": "+7926{:07d}",
    "25099": "+7903{:07d}",
    "25020": "+7977{:07d}",
    "23430": "+447400{:06d}",
}


@pytest.fixture
def priced_sandboxes(run_sandboxes: SandboxFactory) -> Callable[[], SandboxThread]:
    """``priced_sandboxes()``: Intis and SMSC with per-operator price lists."""

    def start() -> SandboxThread:
        return run_sandboxes(
            ["intis", "smsc"],
            intis={"prices": intis_prices(), "charge_by_operator": True, "balance": "1000000"},
            smsc={"operator_prices": smsc_prices(), "balance": "1000000", "price": "1.50"},
        )

    return start


def mixed_numbers(per_network: int) -> list[str]:
    return [PATTERNS[mccmnc].format(i) for i in range(per_network) for mccmnc in sorted(PATTERNS)]


def routes() -> dict[str, Any]:
    return {
        "plain": list(ROUTE),
        "cheap": {"accounts": list(ROUTE), "strategy": "cost"},
    }


def total_cost(status: JobStatus | None) -> Decimal:
    assert status is not None
    return sum((Decimal(str(c.amount)) for c in status.costs), Decimal("0"))


def run_scheduled(scheduler: Scheduler, worker: Any, tick: list[float]) -> None:
    """Run every periodic task once (a fresh slot each call) and wait for the worker."""
    tick[0] += 10 * 86400
    scheduler.run_due(tick[0])
    worker.join()


# --------------------------------------------------------------------------- decisions


BOOKS = {
    "a": PriceBook({"25001": Decimal("0.40")}, {"RU": Decimal("1.50")}, "RUB"),
    "b": PriceBook({"25001": Decimal("0.80"), "25002": Decimal("0.60")}, {"RU": Decimal("1.50")}),
    "c": PriceBook({"25001": Decimal("0.40")}, {}),
}


def test_cost_picks_the_cheapest_account_for_the_operator_then_the_country() -> None:
    d = decide(["a", "b"], [], BOOKS, "cost", "25002", "RU")
    assert (d.account, d.price, d.basis) == ("b", Decimal("0.60"), "operator")
    d = decide(["a", "b"], [], BOOKS, "cost", "25001", "RU")
    assert (d.account, d.price, d.basis) == ("a", Decimal("0.40"), "operator")
    d = decide(["b", "a"], [], BOOKS, "cost", None, "RU")  # tie on the country: route order
    assert (d.account, d.price, d.basis) == ("b", Decimal("1.50"), "country")
    d = decide(["c", "a"], [], BOOKS, "cost", "25001", "RU")  # tie on the operator: route order
    assert d.account == "c"
    d = decide(["c", "a"], [], BOOKS, "cost", "26201", "DE")  # nobody prices it: route order
    assert (d.account, d.price, d.basis) == ("c", None, "order")


def test_paused_accounts_are_skipped_and_failover_keeps_the_order() -> None:
    d = decide(["a", "b"], ["a"], BOOKS, "cost", "25001", "RU")
    assert (d.account, d.price) == ("b", Decimal("0.80"))
    d = decide(["a", "b"], ["a", "b"], BOOKS, "cost", "25001", "RU")  # all paused: waits in order
    assert d.account == "a"
    d = decide(["b", "a"], [], BOOKS, "failover", "25001", "RU")
    assert (d.account, d.price, d.basis) == ("b", Decimal("0.80"), "order")
    assert d.fields() == {
        "route_account": "b",
        "priced_by": "order",
        "operator": "25001",
        "price": "0.8",
    }


def test_price_books_derive_country_prices_and_take_overrides() -> None:
    stored = stored_prices([], 0.0) | {
        "op:25001": "0.40",
        "op:25002": "1.20",
        "op:23430": "3",
        "currency": "RUB",
        "op:bad": "x",
    }
    book = price_book(stored)
    assert book.countries == {"RU": Decimal("1.20"), "GB": Decimal("3")}  # the dearest operator
    override = PriceOverride({"25001": Decimal("0.10"), "RU": Decimal("0.90")}, "EUR")
    book = price_book(stored, override)
    assert book.for_operator("25001") == Decimal("0.10") and book.for_country("RU") == Decimal(
        "0.90"
    )
    assert book.currency == "EUR"
    assert MCC_REGIONS["250"] == "RU" and MCC_REGIONS["234"] == "GB"


def test_route_tables_are_validated() -> None:
    base: dict[str, Any] = {
        "accounts": {
            "a": {"kind": "intis", "base_url": "http://127.0.0.1:1"},
            "b": {"kind": "smsc", "base_url": "http://127.0.0.1:2"},
        }
    }
    good = parse_settings(
        {
            **base,
            "routes": {"r": {"accounts": ["a", "b"], "strategy": "cost"}, "f": ["a"]},
            "accounts": {
                **base["accounts"],
                "a": {**base["accounts"]["a"], "prices": {"25001": 0.5, "RU": 1}},
            },
        },
        {},
    )
    assert good.routes["r"] == ("a", "b") and good.policy("r").strategy == "cost"
    assert good.policy("f").strategy == "failover" and good.policy("a").strategy == "failover"
    assert good.price_overrides["a"].prices == {"25001": Decimal("0.5"), "RU": Decimal("1")}
    try:
        parse_settings(
            {
                **base,
                "routes": {"r": {"accounts": ["a"], "strategy": "cheapest", "colour": 1}},
                "accounts": {
                    **base["accounts"],
                    "b": {**base["accounts"]["b"], "prices": {"x": -1}},
                },
            },
            {},
        )
    except ConfigError as exc:
        text = "\n".join(exc.problems)
        assert "routes.r.strategy" in text and "routes.r.colour" in text
        assert "accounts.b.prices.x" in text
    else:
        raise AssertionError("invalid routes accepted")


# --------------------------------------------------------------------------- end to end


def test_a_mixed_job_is_split_by_price_and_costs_less_than_failover(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    priced_sandboxes: Callable[[], SandboxThread],
) -> None:
    sandboxes = priced_sandboxes()
    settings = sandbox_settings(redis_url, sandboxes, routes=routes())
    assert {t.name for t in build_tasks(settings)} >= {"prices", "operators"}
    worker = make_worker(settings)
    scheduler = Scheduler(settings, client=redis_client)
    tick = [time.time()]
    client = SmsqClient(redis_url)
    numbers = mixed_numbers(4)  # 20 numbers, 4 per network

    run_scheduled(scheduler, worker, tick)  # price lists of both accounts
    assert redis_client.hget("smsq:prices:intis-sandbox", "op:25001") == b"0.40"
    assert redis_client.hget("smsq:prices:smsc-sandbox", "op:25002") == b"0.60"
    assert redis_client.hget("smsq:prices:smsc-sandbox", "cc:RU") == b"1.50"  # the zone

    # Operators not known yet: routed by country, and queued for lookups.
    first = client.enqueue_send(
        provider="cheap", sender="smstest", text="hi", recipients=numbers, job_id="first"
    )
    worker.join()
    status = client.status(first, recipients=True)
    assert status is not None and status.counts == {"submitted": 20}
    assert {r.priced_by for r in status.recipients} == {"country"}
    assert redis_client.zcard("smsq:op:wanted") == 20

    run_scheduled(scheduler, worker, tick)  # the lookups, within the caps
    assert redis_client.zcard("smsq:op:wanted") == 0
    for mccmnc, pattern in PATTERNS.items():
        assert redis_client.get(f"smsq:op:{pattern.format(0)[1:]}") == mccmnc.encode()

    cheap = client.enqueue_send(
        provider="cheap", sender="smstest", text="hi", recipients=numbers, job_id="cheap"
    )
    plain = client.enqueue_send(
        provider="plain", sender="smstest", text="hi", recipients=numbers, job_id="plain"
    )
    worker.join()
    cheap_status = client.status(cheap, recipients=True)
    plain_status = client.status(plain, recipients=True)
    assert cheap_status is not None and plain_status is not None
    assert cheap_status.counts == plain_status.counts == {"submitted": 20}
    rows = {r.phone: r for r in cheap_status.recipients}
    for mccmnc, (_, intis, smsc) in NETWORKS.items():
        row = rows[PATTERNS[mccmnc].format(1)[1:]]
        cheaper = (
            "smsc-sandbox"
            if smsc is not None and Decimal(smsc) < Decimal(intis)
            else "intis-sandbox"
        )
        assert (row.route_account, row.account, row.operator) == (cheaper, cheaper, mccmnc)
        assert Decimal(row.price or "") == min(Decimal(intis), Decimal(smsc or intis))
        assert row.priced_by == "operator" and row.currency == "RUB"
    assert {r.account for r in plain_status.recipients} == {"intis-sandbox"}

    by_account = {c.account: Decimal(str(c.amount)) for c in cheap_status.costs}
    assert by_account == {"intis-sandbox": Decimal("17.20"), "smsc-sandbox": Decimal("5.20")}
    assert total_cost(plain_status) == Decimal("28.00")
    assert total_cost(cheap_status) < total_cost(plain_status)
    shown = format_status(cheap_status, limit=0)
    assert "cost: 22.40 RUB" in shown and "smsc-sandbox" in shown and "5.20 RUB" in shown
    print(
        f"\n20-recipient mixed job: failover {total_cost(plain_status)} RUB, cost route {total_cost(cheap_status)} RUB"
    )
    # One job out through two accounts, chunked after routing.
    sends = {k: [e for e in sandboxes.log(k) if "send" in e.path] for k in ("intis", "smsc")}
    assert sends["smsc"] and sends["intis"]
    assert (
        REGISTRY.get_sample_value("smsq_cost_total", {"account": "smsc-sandbox", "currency": "RUB"})
        or 0
    ) >= 5.2


def test_a_paused_account_is_skipped_by_the_cost_route(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    priced_sandboxes: Callable[[], SandboxThread],
) -> None:
    sandboxes = priced_sandboxes()
    settings = sandbox_settings(redis_url, sandboxes, routes=routes())
    worker = make_worker(settings)
    numbers = [PATTERNS["25002"].format(i) for i in range(3)]  # cheaper at SMSC
    for n in numbers:
        redis_client.set(f"smsq:op:{n[1:]}", "25002")
    redis_client.hset("smsq:prices:smsc-sandbox", mapping={"op:25002": "0.60"})
    redis_client.hset("smsq:prices:intis-sandbox", mapping={"op:25002": "1.20"})
    redis_client.hset(
        "smsq:account:smsc-sandbox",
        mapping={"state": "paused", "reason": "test", "probe_at": time.time() + 3600},
    )
    client = SmsqClient(redis_url)
    job = client.enqueue_send(provider="cheap", sender="smstest", text="hi", recipients=numbers)
    worker.join()
    status = client.status(job, recipients=True)
    assert status is not None and status.counts == {"submitted": 3}
    assert {(r.route_account, r.account, r.price) for r in status.recipients} == {
        ("intis-sandbox", "intis-sandbox", "1.2")
    }


def test_hlr_results_fill_the_operator_cache(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    client.enqueue_hlr(provider="intis", recipients=["+79261234567", "+79031234567"])
    worker.join()
    assert redis_client.get("smsq:op:79261234567") == b"25002"
    assert redis_client.get("smsq:op:79031234567") == b"25099"
    assert 0 < redis_client.ttl("smsq:op:79261234567") <= 30 * 86400


def test_every_bad_route_key_is_named_even_with_bad_accounts() -> None:
    accounts = {
        "a": {"kind": "intis", "base_url": "http://127.0.0.1:1"},
        "b": {"kind": "smsc", "base_url": "http://127.0.0.1:2"},
    }
    bad = {
        "r": {
            "accounts": "a",
            "strategy": "cheap",
            "resend_on": ["delivered"],
            "attempts": 0,
            "resendon": ["rejected"],
        }
    }
    with pytest.raises(ConfigError) as err:
        parse_settings({"accounts": accounts, "routes": bad}, {})
    text = "\n".join(err.value.problems)
    for where in ("accounts", "strategy", "resend_on", "attempts", "resendon"):
        assert f"routes.r.{where}" in text, (where, text)
    for routes in ([["a", "b"]], "a"):  # a list or a string where the [routes] table belongs
        with pytest.raises(ConfigError) as err:
            parse_settings({"accounts": accounts, "routes": routes}, {})
        assert "routes: must be a table" in "\n".join(err.value.problems)


def test_attempts_and_resend_on_only_make_sense_together() -> None:
    accounts = {
        "a": {"kind": "intis", "base_url": "http://127.0.0.1:1"},
        "b": {"kind": "smsc", "base_url": "http://127.0.0.1:2"},
    }
    routes = {
        "no_statuses": {"accounts": ["a", "b"], "attempts": 2},
        "one_send": {"accounts": ["a", "b"], "resend_on": ["rejected"], "attempts": 1},
    }
    with pytest.raises(ConfigError) as err:
        parse_settings({"accounts": accounts, "routes": routes}, {})
    text = "\n".join(err.value.problems)
    assert "routes.no_statuses.attempts: more than one send needs resend_on" in text
    assert "routes.one_send.resend_on: no second chance with attempts = 1" in text
    ok = parse_settings(
        {"accounts": accounts, "routes": {"r": {"accounts": ["a", "b"], "attempts": 1}}}, {}
    )
    assert ok.policy("r").attempts == 1 and not ok.policy("r").resend_on
