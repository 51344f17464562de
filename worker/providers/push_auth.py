"""How a provider's push to ``/hooks/<account>`` is authenticated: one rule for all.

Two means, configured per account:

- a secret, ``accounts.<account>.webhook_secret``: by default a shared secret the push
  carries in the URL (``?key=<secret>``, compared in constant time); a provider that
  signs its pushes checks its signature with the secret instead (SMSC);
- an allow-list of source addresses, ``accounts.<account>.options.webhook_ips``: a list
  or a comma-separated string of addresses or CIDR networks (an IPv4-mapped IPv6 source
  is matched as IPv4).

With both configured both must pass; with neither, every push is refused (403, with what
to configure). :func:`verify_push` applies the rule; the checks below it raise ValueError
(never echoing a secret), for callers outside the web layer.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable, Sequence

from worker.providers.base import (
    AccountConfig,
    InboundRequest,
    ProviderOptions,
    PushAnswer,
    PushRejected,
)

__all__ = [
    "IPS_OPTION",
    "KEY_PARAM",
    "OK",
    "allowed_networks",
    "check_key",
    "check_shared_secret",
    "check_source",
    "parse_networks",
    "verify_push_request",
]

KEY_PARAM = "key"  # the shared secret's query parameter
IPS_OPTION = "webhook_ips"
OK = PushAnswer(200, "OK", "text/plain")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SecretCheck = Callable[[str, InboundRequest], None]


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """Addresses or CIDR networks; ValueError naming the first entry that is neither."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"allow-list entry {entry!r} is not an address or network") from None
    return networks


def check_source(remote: str | None, networks: Sequence[Network]) -> None:
    """ValueError unless ``remote`` is an IP address inside one of ``networks``."""
    if not remote:
        raise ValueError("push has no source address")
    try:
        address = ipaddress.ip_address(remote.strip())
    except ValueError:
        raise ValueError("push source is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not any(address.version == n.version and address in n for n in networks):
        raise ValueError(f"push source {address} is not in the allow-list")


def check_shared_secret(provided: str | None, expected: str) -> None:
    """ValueError unless ``provided`` equals ``expected`` (compared in constant time)."""
    if not provided:
        raise ValueError("push carries no shared secret")
    if not hmac.compare_digest(provided.encode("utf-8"), expected.encode("utf-8")):
        raise ValueError("push carries a wrong shared secret")


def listed_ips(account: AccountConfig) -> list[str]:
    """The account's ``options.webhook_ips`` as written (typed options or a plain mapping)."""
    options = account.options
    raw = options.webhook_ips if isinstance(options, ProviderOptions) else options.get(IPS_OPTION)
    entries = raw.split(",") if isinstance(raw, str) else [str(e) for e in raw or ()]
    return [e.strip() for e in entries if e.strip()]


def allowed_networks(account: AccountConfig) -> list[Network]:
    """The account's ``options.webhook_ips``; PushRejected(403) if an entry is no address."""
    try:
        return parse_networks(listed_ips(account))
    except ValueError as exc:
        raise PushRejected(403, f"accounts.{account.name}.options.{IPS_OPTION}: {exc}") from None


def check_key(secret: str, request: InboundRequest) -> None:
    """The default secret check: the ``key`` query parameter; PushRejected(403) else."""
    provided = request.query.get(KEY_PARAM)
    if not provided:
        raise PushRejected(403, f"push carries no shared secret ({KEY_PARAM} parameter)")
    try:
        check_shared_secret(provided, secret)
    except ValueError as exc:
        raise PushRejected(403, str(exc)) from None


def verify_push_request(
    account: AccountConfig,
    request: InboundRequest,
    *,
    secret_use: str,
    check_secret: SecretCheck = check_key,
) -> PushAnswer:
    """Apply the rule (module doc) to one push; raise PushRejected, or answer 200 OK.

    ``secret_use`` tells, in the refusal of an unauthenticated account, what to do with
    the secret ("and put it in the handler URL as ?key=<secret>"); ``check_secret(secret,
    request)`` checks the secret when one is configured (default: :func:`check_key`).
    """
    networks = allowed_networks(account)
    if not account.webhook_secret and not networks:
        raise PushRejected(
            403,
            f"pushes to account {account.name!r} are not authenticated: set "
            f"accounts.{account.name}.webhook_secret {secret_use}, and/or set "
            f"accounts.{account.name}.options.{IPS_OPTION}",
        )
    if networks:
        try:
            check_source(request.remote, networks)
        except ValueError as exc:
            raise PushRejected(403, str(exc)) from None
    if account.webhook_secret:
        check_secret(account.webhook_secret, request)
    return OK
