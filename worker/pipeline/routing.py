"""Routing: which account of a route sends each recipient, and the price that decided it.

A route's ``strategy`` is ``failover`` (the default: the first active account of the
list sends, the next takes over while it is paused) or ``cost``: each recipient goes to
the cheapest active account that prices its operator (MCC+MNC), failing that its country,
failing that the first active account; ties keep the route's order.

- **Operators** come from a per-number cache, ``<prefix>:op:<digits>`` (MCC+MNC, with the
  TTL ``[routing] operator_ttl``), filled by the providers' operator lookups
  (:class:`~worker.providers.base.OperatorSource`, run by the scheduler within each
  account's ``operator`` rate rules over the numbers intake could not place,
  ``<prefix>:op:wanted``) and by HLR results. A number not in the cache is routed by its
  country (libphonenumber's region, recorded at intake).
- **Prices** come from each account's price list (:class:`~worker.providers.base.PriceSource`,
  refreshed by the scheduler into ``<prefix>:prices:<account>``: ``op:<mccmnc>`` and
  ``cc:<region>`` -> price of one SMS part, ``currency``, ``at``), under the account's
  ``[accounts.<name>.prices]`` overrides. A country's price, when the provider lists only
  operators, is the highest of its operators' prices (what a number of an unknown operator
  may cost). Prices of the accounts of one cost route are compared as numbers: bill them in
  one currency.

Every recipient records the decision at intake: ``route_account``, ``operator``,
``price``, ``currency`` and ``priced_by`` (``operator``, ``country`` or ``order``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from producers.keys import Keys
from worker.core.config import PriceOverride, RoutePolicy
from worker.core.runtime import Runtime
from worker.pipeline.dispatch import Reschedule, limited_call
from worker.providers.base import OperatorSource, PriceSource, ProviderError, implements
from worker.state import store

log = logging.getLogger("smsq.routing")

WANTED_MAX = 1_000_000  # numbers waiting for an operator lookup, at most (oldest dropped)

# MCC -> ISO 3166-1 region (ITU-T E.212), for turning per-operator prices into country
# prices. Countries with several MCCs list each. An MCC not here still prices its
# operators exactly; it only gives no country price.
MCC_REGIONS: Mapping[str, str] = {
    "202": "GR", "204": "NL", "206": "BE", "208": "FR", "212": "MC", "213": "AD",
    "214": "ES", "216": "HU", "218": "BA", "219": "HR", "220": "RS", "221": "XK",
    "222": "IT", "225": "VA", "226": "RO", "228": "CH", "230": "CZ", "231": "SK",
    "232": "AT", "234": "GB", "235": "GB", "238": "DK", "240": "SE", "242": "NO",
    "244": "FI", "246": "LT", "247": "LV", "248": "EE", "250": "RU", "255": "UA",
    "257": "BY", "259": "MD", "260": "PL", "262": "DE", "266": "GI", "268": "PT",
    "270": "LU", "272": "IE", "274": "IS", "276": "AL", "278": "MT", "280": "CY",
    "282": "GE", "283": "AM", "284": "BG", "286": "TR", "288": "FO", "290": "GL",
    "292": "SM", "293": "SI", "294": "MK", "295": "LI", "297": "ME", "302": "CA",
    "310": "US", "311": "US", "312": "US", "313": "US", "314": "US", "315": "US",
    "316": "US", "334": "MX", "400": "AZ", "401": "KZ", "402": "BT", "404": "IN",
    "405": "IN", "410": "PK", "412": "AF", "413": "LK", "414": "MM", "415": "LB",
    "416": "JO", "417": "SY", "418": "IQ", "419": "KW", "420": "SA", "421": "YE",
    "422": "OM", "424": "AE", "425": "IL", "426": "BH", "427": "QA", "428": "MN",
    "429": "NP", "430": "AE", "431": "AE", "432": "IR", "434": "UZ", "436": "TJ",
    "437": "KG", "438": "TM", "440": "JP", "441": "JP", "450": "KR", "452": "VN",
    "454": "HK", "455": "MO", "456": "KH", "457": "LA", "460": "CN", "466": "TW",
    "470": "BD", "472": "MV", "502": "MY", "505": "AU", "510": "ID", "515": "PH",
    "520": "TH", "525": "SG", "528": "BN", "530": "NZ", "602": "EG", "603": "DZ",
    "604": "MA", "605": "TN", "606": "LY", "608": "SN", "612": "CI", "620": "GH",
    "621": "NG", "630": "CD", "634": "SD", "636": "ET", "639": "KE", "640": "TZ",
    "641": "UG", "645": "ZM", "648": "ZW", "655": "ZA", "704": "GT", "706": "SV",
    "708": "HN", "710": "NI", "712": "CR", "714": "PA", "716": "PE", "722": "AR",
    "724": "BR", "730": "CL", "732": "CO", "734": "VE", "736": "BO", "740": "EC",
    "744": "PY", "748": "UY",
}  # fmt: skip


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class PriceBook:
    """One account's prices of an SMS part, by operator and by country."""

    operators: Mapping[str, Decimal] = field(default_factory=dict)
    countries: Mapping[str, Decimal] = field(default_factory=dict)
    currency: str | None = None

    def for_operator(self, operator: str | None) -> Decimal | None:
        return self.operators.get(operator) if operator else None

    def for_country(self, region: str | None) -> Decimal | None:
        return self.countries.get(region) if region else None

    def __bool__(self) -> bool:
        return bool(self.operators or self.countries)


def _decimal(text: Any) -> Decimal | None:
    try:
        value = Decimal(text.decode() if isinstance(text, bytes) else str(text))
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() and value >= 0 else None


def price_book(stored: Mapping[Any, Any], override: PriceOverride | None = None) -> PriceBook:
    """The prices from a stored price list (``<prefix>:prices:<account>``) under overrides."""
    operators: dict[str, Decimal] = {}
    countries: dict[str, Decimal] = {}
    currency: str | None = None
    for raw_key, raw_value in stored.items():
        key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        if key == "currency":
            currency = (
                raw_value.decode() if isinstance(raw_value, bytes) else str(raw_value)
            ) or None
            continue
        price = _decimal(raw_value)
        if price is None:
            continue
        if key.startswith("op:"):
            operators[key[3:]] = price
        elif key.startswith("cc:"):
            countries[key[3:]] = price
    # A country the list prices only per operator: the highest of its operators' prices.
    derived: dict[str, Decimal] = {}
    for mccmnc, price in operators.items():
        region = MCC_REGIONS.get(mccmnc[:3])
        if region and region not in countries:
            derived[region] = max(price, derived.get(region, price))
    countries.update(derived)
    if override is not None:
        for key, price in override.prices.items():
            if key.isdigit():
                operators[key] = price
            else:
                countries[key] = price
        currency = override.currency or currency
    return PriceBook(operators, countries, currency)


def stored_prices(prices: Iterable[Any], now: float) -> dict[str, str]:
    """The hash fields of a fetched price list (see the module doc)."""
    fields: dict[str, str] = {"at": f"{now:.3f}"}
    for p in prices:
        if p.mccmnc:
            fields[f"op:{p.mccmnc}"] = p.price
        elif p.region:
            fields[f"cc:{p.region.upper()}"] = p.price
        if p.currency and "currency" not in fields:
            fields["currency"] = p.currency
    return fields


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """The account that sends a recipient, and what decided it."""

    account: str
    operator: str | None = None  # MCC+MNC, when known
    price: Decimal | None = None  # of one SMS part, at that account
    currency: str | None = None
    basis: str = "order"  # operator | country | order

    def fields(self) -> dict[str, Any]:
        """What the recipient's record keeps of the decision."""
        out: dict[str, Any] = {"route_account": self.account, "priced_by": self.basis}
        if self.operator:
            out["operator"] = self.operator
        if self.price is not None:
            out["price"] = format(self.price.normalize(), "f")
            if self.currency:
                out["currency"] = self.currency
        return out


def decide(
    route: Sequence[str],
    paused: Iterable[str],
    books: Mapping[str, PriceBook],
    strategy: str,
    operator: str | None,
    region: str | None,
) -> Decision:
    """The account of ``route`` that sends one recipient (see the module doc)."""
    stopped = set(paused)
    usable = [a for a in route if a not in stopped] or list(route)  # all paused: wait in order
    empty = PriceBook()
    if strategy == "cost":
        for basis in ("operator", "country"):
            best: tuple[Decimal, str] | None = None
            for account in usable:  # strict < keeps the route's order on ties
                book = books.get(account, empty)
                price = (
                    book.for_operator(operator) if basis == "operator" else book.for_country(region)
                )
                if price is not None and (best is None or price < best[0]):
                    best = (price, account)
            if best is not None:
                book = books.get(best[1], empty)
                return Decision(best[1], operator, best[0], book.currency, basis)
    # Failover (or nothing priced): the first usable account, with its price when it has one.
    first = usable[0]
    book = books.get(first, empty)
    price = book.for_operator(operator)
    if price is None:
        price = book.for_country(region)
    return Decision(first, operator, price, book.currency if price is not None else None, "order")


def route_recipients(
    rt: Runtime,
    route: Sequence[str],
    policy: RoutePolicy,
    phones: Sequence[str],
    countries: Sequence[str],
) -> tuple[list[Decision], list[str]]:
    """Decide every recipient's account (sync Redis); also the numbers to look up.

    Reads the route's account states, price lists and the operator cache in a few round
    trips. Returns one decision per phone, and (cost routes) the phones whose operator is
    not cached, for the scheduler's lookups.
    """
    client = rt.redis
    keys = rt.keys
    pipe = client.pipeline(transaction=False)
    for account in route:
        pipe.hget(keys.account(account), "state")
        pipe.hgetall(prices_key(keys, account))
    raw = pipe.execute()
    paused = [a for i, a in enumerate(route) if raw[2 * i] == b"paused"]
    books = {
        a: price_book(raw[2 * i + 1], rt.settings.price_overrides.get(a))
        for i, a in enumerate(route)
    }
    operators: list[str | None] = [None] * len(phones)
    wanted: list[str] = []
    if any(books.values()):
        for start in range(0, len(phones), 10_000):
            part = phones[start : start + 10_000]
            values: list[Any] = client.mget([operator_key(keys, p) for p in part])
            for i, value in enumerate(values):
                if value:
                    operators[start + i] = value.decode() if isinstance(value, bytes) else value
                elif policy.strategy == "cost":
                    wanted.append(part[i])
    # A decision depends on the recipient only through its operator and region: decided once
    # for each pair (a bulk job has few), the same frozen Decision shared by its recipients.
    decided: dict[tuple[str | None, str | None], Decision] = {}
    decisions: list[Decision] = []
    for i in range(len(phones)):
        pair = (operators[i], countries[i] if i < len(countries) else None)
        decision = decided.get(pair)
        if decision is None:
            decision = decided[pair] = decide(route, paused, books, policy.strategy, *pair)
        decisions.append(decision)
    return decisions, wanted


# --------------------------------------------------------------------------- keys


def prices_key(keys: Keys, account: str) -> str:
    return keys.prices(account)


def operator_key(keys: Keys, phone: str) -> str:
    return keys.operator(phone)


def wanted_key(keys: Keys) -> str:
    return keys.operators_wanted


def want_lookups(pipe: Any, keys: Keys, phones: Sequence[str], now: float) -> None:
    """Queue (in ``pipe``) numbers for the scheduler's operator lookups."""
    if not phones:
        return
    key = wanted_key(keys)
    for start in range(0, len(phones), 10_000):
        pipe.zadd(key, dict.fromkeys(phones[start : start + 10_000], now), nx=True)
    pipe.zremrangebyrank(key, 0, -WANTED_MAX - 1)


# --------------------------------------------------------------------------- scheduled work


def offers_prices(adapter: object) -> bool:
    """An adapter (or adapter class) with the PriceSource capability."""
    return implements(adapter, PriceSource)


def offers_operators(adapter: object) -> bool:
    """An adapter (or adapter class) with the OperatorSource capability."""
    return implements(adapter, OperatorSource)


async def refresh_prices(rt: Runtime, account: str) -> int:
    """Fetch the account's price list into ``<prefix>:prices:<account>``; returns entries."""
    adapter = rt.adapter(account)
    if not isinstance(adapter, PriceSource):
        return 0
    try:
        prices = await limited_call(rt, account, "prices", "bulk", adapter.price_list)
    except (ProviderError, Reschedule) as exc:
        log.warning("price list of %s not refreshed: %s", account, exc)
        return 0
    fields: dict[Any, Any] = stored_prices(prices, time.time())
    pipe = rt.async_redis().pipeline(transaction=True)
    pipe.delete(prices_key(rt.keys, account))
    pipe.hset(prices_key(rt.keys, account), mapping=fields)
    await pipe.execute()
    return len(prices)


async def lookup_operators(rt: Runtime, account: str) -> dict[str, int]:
    """Look up the operators of waiting numbers through ``account``, within its caps.

    Takes up to ``lookups_per_run`` numbers from ``<prefix>:op:wanted`` (oldest first),
    one request per ``operator_batch``; a permit further away than a short wait ends the
    run (the rest waits for the next one), a failed request puts its numbers back.
    """
    adapter = rt.adapter(account)
    stats = {"asked": 0, "placed": 0}
    if not isinstance(adapter, OperatorSource):
        return stats
    client = rt.async_redis()
    budget = int(rt.settings.routing.lookups_per_run)
    batch = max(1, int(adapter.operator_batch))
    ttl = rt.settings.routing.operator_ttl
    while stats["asked"] < budget:
        taken: list[Any] = await client.zpopmin(
            wanted_key(rt.keys), min(batch, budget - stats["asked"])
        )
        if not taken:
            break
        phones = [p.decode() if isinstance(p, bytes) else str(p) for p, _ in taken]
        try:
            found = await limited_call(
                rt, account, "operator", "bulk", adapter.lookup_operators, phones
            )
        except (ProviderError, Reschedule) as exc:
            await client.zadd(
                wanted_key(rt.keys), dict(zip(phones, (t[1] for t in taken), strict=True))
            )
            log.info("operator lookups through %s stopped: %s", account, exc)
            break
        stats["asked"] += len(phones)
        pipe = client.pipeline(transaction=False)
        for info in found:
            if info.phone in phones:
                store.remember_operator(pipe, rt.keys, info.phone, info.mccmnc, ttl)
                stats["placed"] += 1
        await pipe.execute()
    return stats
