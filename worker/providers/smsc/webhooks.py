"""SMSC pushes to ``/hooks/<account>``: verification at receipt, parsing by the actor.

SMSC POSTs message statuses (HLR results among them), incoming SMS and "number
confirmation by call" notices to the handler URL set in the account (see
:mod:`worker.providers.smsc.callbacks` for the wire format). Configure the handler as
``https://<smsq web>/hooks/<account>?md5=<webhook_secret>`` (``sha1`` / ``crc32`` work
too; add ``&charset=utf-8`` or ``&fmt=3`` as you like): SMSC replaces the secret with the
hash of ``id:phone:status:<secret>`` (or ``phone:mes:to`` / ``phone:ts``), which
:func:`verify_webhook` checks in constant time against ``account.webhook_secret``.

Authentication, as for every provider: ``webhook_secret`` (a signature is then required)
and/or ``options.webhook_ips`` (addresses or CIDR networks the push must come from);
with both configured both must pass, with neither every push is refused (403). SMSC
retries on any answer but 200 and 404, so a refusal is 403 (bad signature, source) or
400 (a signed body that cannot be decoded), never 404.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping

from worker.providers.base import (
    AccountConfig,
    HlrResult,
    InboundRequest,
    IncomingMessage,
    StatusReport,
    WebhookAnswer,
    WebhookContent,
    WebhookRejected,
)
from worker.providers.smsc.callbacks import (
    CallbackError,
    CallConfirmation,
    IncomingSms,
    StatusCallback,
    decode_callback,
    handle_callback,
    verify_signature,
)

__all__ = ["parse_webhook", "verify_webhook"]

IPS_OPTION = "webhook_ips"
OK = WebhookAnswer(200, "OK", "text/plain")


def allowed_networks(
    account: AccountConfig,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The account's ``options.webhook_ips`` (a list or a comma-separated string)."""
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


def verify_webhook(account: AccountConfig, request: InboundRequest) -> WebhookAnswer:
    """Check the source and the md5/sha1/crc32 signature; raise WebhookRejected otherwise."""
    networks = allowed_networks(account)
    if not account.webhook_secret and not networks:
        raise WebhookRejected(
            403,
            f"pushes to account {account.name!r} are not authenticated: set "
            f"accounts.{account.name}.webhook_secret (the md5/sha1/crc32 secret of the SMSC "
            f"handler URL) and/or accounts.{account.name}.options.{IPS_OPTION}",
        )
    if networks:
        _check_source(request.remote, networks)
    if account.webhook_secret:
        try:
            decoded = decode_callback(
                request.body, content_type=request.content_type, query=request.query
            )
        except CallbackError as exc:
            raise WebhookRejected(400, f"undecodable SMSC callback: {exc}") from None
        if not verify_signature(decoded.params, account.webhook_secret, charset=decoded.charset):
            raise WebhookRejected(403, "SMSC callback signature missing or wrong")
    return OK


def _incoming_id(sms: IncomingSms) -> str:
    """SMSC's id of the incoming message; a digest of its fields if the push lacks one."""
    if sms.id.strip():
        return sms.id.strip()
    stamp = sms.time or sms.sent
    seed = f"{sms.phone}:{sms.to or ''}:{stamp.timestamp() if stamp else ''}:{sms.mes}"
    return "h" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:24]


def _status(cb: StatusCallback) -> tuple[list[StatusReport], list[HlrResult]]:
    hlr = [cb.hlr] if cb.hlr is not None else []
    return [cb.report], hlr


def _incoming(sms: IncomingSms) -> IncomingMessage:
    extra: dict[str, str] = {}
    if sms.sms_id:
        extra["reply_to"] = sms.sms_id  # SMSC's id of the message this answers
    if sms.smsc:
        extra["smsc"] = sms.smsc
    if sms.sent is not None:
        extra["sent"] = sms.sent.isoformat()
    return IncomingMessage(
        provider_message_id=_incoming_id(sms),
        sender=sms.phone,
        text=sms.mes,
        recipient=sms.to,
        received_at=sms.time or sms.sent,
        extra=extra,
    )


def _call(call: CallConfirmation) -> Mapping[str, str]:
    event = {"type": "call_confirmation", "provider": "smsc", "phone": call.phone}
    if call.ts:
        event["ts"] = call.ts
    return event


def parse_webhook(account: AccountConfig, request: InboundRequest) -> WebhookContent:
    """The content of a stored SMSC push (verified at receipt; not verified again here).

    Status → a :class:`StatusReport` with the adapter's id ``"<id>:<phone>"`` (and an
    :class:`HlrResult` for HLR lookups); incoming SMS → :class:`IncomingMessage`;
    call confirmation → an event. Raises ValueError (``CallbackError``) for a body that
    cannot be read.
    """
    callback = handle_callback(
        request.body, secret=None, content_type=request.content_type, query=request.query
    )
    if isinstance(callback, StatusCallback):
        reports, hlr = _status(callback)
        return WebhookContent(reports=reports, hlr=hlr)
    if isinstance(callback, IncomingSms):
        return WebhookContent(incoming=[_incoming(callback)])
    return WebhookContent(events=[_call(callback)])
