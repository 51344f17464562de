"""Intis delivery reports to ``/hooks/<account>``: verification at receipt, parsing later.

Intis GETs the client's handler URL with ``message-id`` (the ``id_sms`` that send.php
returned, which the adapter records as the provider message id), ``state``, ``price``,
``currency``, ``mcc`` and ``mnc`` (see :mod:`.receivers`). None of these is a signature,
and the doc names no source addresses, so smsq authenticates a report by

- a shared secret in the URL: configure ``https://<smsq web>/hooks/<account>?key=<secret>``
  as the handler and ``accounts.<account>.webhook_secret`` with the same secret (compared
  in constant time), and/or
- an allow-list of source addresses or CIDR networks: ``accounts.<account>.options.webhook_ips``.

With both configured both must pass; with neither, every push is refused (403).
The report's retry policy is not documented; status.php reconciliation stays the
source of truth for anything a report never brings.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qsl

from worker.providers.base import (
    AccountConfig,
    InboundRequest,
    WebhookAnswer,
    WebhookContent,
    WebhookRejected,
)
from worker.providers.intis.receivers import parse_delivery_report

__all__ = ["KEY_PARAM", "parse_webhook", "verify_webhook"]

KEY_PARAM = "key"  # the shared secret's query parameter
IPS_OPTION = "webhook_ips"
OK = WebhookAnswer(200, "OK", "text/plain")


def _networks(account: AccountConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    raw = account.options.get(IPS_OPTION) or []
    entries = raw.split(",") if isinstance(raw, str) else [str(e) for e in raw]
    networks = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise WebhookRejected(
                403, f"accounts.{account.name}.options.{IPS_OPTION}: {entry!r} is not an address"
            ) from None
    return networks


def _check_source(
    remote: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> None:
    try:
        address = ipaddress.ip_address(remote.strip())
    except ValueError:
        raise WebhookRejected(403, "push source is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not any(address.version == n.version and address in n for n in networks):
        raise WebhookRejected(403, f"push source {address} is not in {IPS_OPTION}")


def _check_key(provided: str | None, expected: str) -> None:
    if not provided:
        raise WebhookRejected(403, f"push carries no shared secret ({KEY_PARAM} parameter)")
    if not hmac.compare_digest(provided.encode("utf-8"), expected.encode("utf-8")):
        raise WebhookRejected(403, "push carries a wrong shared secret")


def verify_webhook(account: AccountConfig, request: InboundRequest) -> WebhookAnswer:
    """Check the ``key`` query parameter and/or the source address; WebhookRejected(403) else."""
    networks = _networks(account)
    if not account.webhook_secret and not networks:
        raise WebhookRejected(
            403,
            f"pushes to account {account.name!r} are not authenticated: set "
            f"accounts.{account.name}.webhook_secret and put it in the handler URL as "
            f"?{KEY_PARAM}=<secret>, and/or set accounts.{account.name}.options.{IPS_OPTION}",
        )
    if networks:
        _check_source(request.remote, networks)
    if account.webhook_secret:
        _check_key(request.query.get(KEY_PARAM), account.webhook_secret)
    return OK


def _params(request: InboundRequest) -> dict[str, str]:
    """Query parameters (and a URL-encoded form body, should Intis ever POST), without the key."""
    params = {k: v for k, v in request.query.items() if k != KEY_PARAM}
    media = request.content_type.split(";", 1)[0].strip().lower()
    if request.body and media == "application/x-www-form-urlencoded":
        try:
            text = request.body.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("Intis delivery report: form body is not URL-encoded") from None
        params.update((k, v) for k, v in parse_qsl(text, keep_blank_values=True) if k != KEY_PARAM)
    return params


def parse_webhook(account: AccountConfig, request: InboundRequest) -> WebhookContent:
    """One :class:`StatusReport` keyed by ``message-id`` (= ``id_sms``); ValueError if malformed."""
    return WebhookContent(reports=[parse_delivery_report(_params(request))])
