"""Price lists for the routing tests: per-operator prices of the Intis and SMSC sandboxes."""

from __future__ import annotations

# mccmnc -> (network, Intis price, SMSC price); None: that provider lists no such tariff.
NETWORKS: dict[str, tuple[str, str, str | None]] = {
    "25001": ("MTS", "0.40", "0.80"),
    "25002": ("MEGAFON", "1.20", "0.60"),
    "25099": ("BEELINE", "0.90", "0.95"),
    "25020": ("TELE2", "1.50", "0.70"),
    "23430": ("EE", "3.00", None),
}


def intis_prices() -> dict[str, dict[str, str]]:
    return {
        mccmnc: {
            "NETWORK_NAME": name,
            "COUNTRY": "UNITED KINGDOM" if mccmnc.startswith("234") else "RUSSIAN FEDERATION",
            "PRICE": intis,
            "CURRENCY": "RUB",
        }
        for mccmnc, (name, intis, _) in NETWORKS.items()
    }


def smsc_prices() -> dict[str, str]:
    return {mccmnc: smsc for mccmnc, (_, _, smsc) in NETWORKS.items() if smsc is not None}
