"""Intis delivery reports to ``/hooks/<account>``: verification at receipt, parsing later.

Intis GETs the client's handler URL with ``message-id`` (the ``id_sms`` that send.php
returned, which the adapter records as the provider message id), ``state``, ``price``,
``currency``, ``mcc`` and ``mnc`` (see :mod:`.receivers`). None of these is a signature,
and the doc names no source addresses, so smsq authenticates a report as
:mod:`worker.providers.push_auth` does for every provider:

- a shared secret in the URL: configure ``https://<smsq web>/hooks/<account>?key=<secret>``
  as the handler and ``accounts.<account>.webhook_secret`` with the same secret (compared
  in constant time), and/or
- an allow-list of source addresses or CIDR networks: ``accounts.<account>.options.webhook_ips``.

With both configured both must pass; with neither, every push is refused (403).
The report's retry policy is not documented; status.php reconciliation stays the
source of truth for anything a report never brings.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from worker.providers.base import (
    AccountConfig,
    InboundRequest,
    PushAnswer,
    PushContent,
)
from worker.providers.intis.push_formats import parse_delivery_report
from worker.providers.push_auth import KEY_PARAM, verify_push_request

__all__ = ["KEY_PARAM", "parse_push", "verify_push"]


def verify_push(account: AccountConfig, request: InboundRequest) -> PushAnswer:
    """Check the ``key`` query parameter and/or the source address; PushRejected(403) else."""
    return verify_push_request(
        account, request, secret_use=f"and put it in the handler URL as ?{KEY_PARAM}=<secret>"
    )


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


def parse_push(account: AccountConfig, request: InboundRequest) -> PushContent:
    """One :class:`StatusReport` keyed by ``message-id`` (= ``id_sms``); ValueError if malformed."""
    return PushContent(reports=[parse_delivery_report(_params(request))])
