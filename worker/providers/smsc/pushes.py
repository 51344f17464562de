"""SMSC pushes to ``/hooks/<account>``: verification at receipt, parsing by the actor.

SMSC POSTs message statuses (HLR results among them), incoming SMS and "number
confirmation by call" notices to the handler URL set in the account (see
:mod:`worker.providers.smsc.push_formats` for the wire format). Configure the handler as
``https://<smsq web>/hooks/<account>?md5=<webhook_secret>`` (``sha1`` / ``crc32`` work
too; add ``&charset=utf-8`` or ``&fmt=3`` as you like): SMSC replaces the secret with the
hash of ``id:phone:status:<secret>`` (or ``phone:mes:to`` / ``phone:ts``), which
:func:`verify_push` checks in constant time against ``account.webhook_secret``.

Authentication, as for every provider (:mod:`worker.providers.push_auth`):
``webhook_secret`` (a signature is then required) and/or ``options.webhook_ips``
(addresses or CIDR networks the push must come from); with both configured both must
pass, with neither every push is refused (403). SMSC
retries on any answer but 200 and 404, so a refusal is 403 (bad signature, source) or
400 (a signed body that cannot be decoded), never 404.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from worker.providers.base import (
    AccountConfig,
    HlrResult,
    InboundRequest,
    IncomingMessage,
    PushAnswer,
    PushContent,
    PushRejected,
    StatusReport,
    options_of,
)
from worker.providers.push_auth import verify_push_request
from worker.providers.smsc.options import SmscOptions
from worker.providers.smsc.push_formats import (
    SIGNATURE_PARAMS,
    CallbackError,
    CallConfirmation,
    IncomingSms,
    StatusCallback,
    decode_callback,
    handle_callback,
    verify_signature,
)

__all__ = ["parse_push", "verify_push"]


ALGORITHM_OPTION = "callback_algorithm"
DEFAULT_ALGORITHM = "md5"
# Signed fields that are numbers: requiring digits stops a captured signature of one kind of
# callback from verifying another (the signed string joins fields with ':').
NUMERIC_FIELDS = ("id", "phone", "status", "ts", "to")


def _algorithm(account: AccountConfig) -> str:
    """The one signature algorithm this account accepts (``options.callback_algorithm``).

    md5 by default; crc32 only when configured, being no protection against a forger
    who has seen one signed push.
    """
    try:
        value = options_of(account, SmscOptions).callback_algorithm.strip().lower()
    except ValueError as exc:
        raise PushRejected(403, str(exc)) from None
    if value not in SIGNATURE_PARAMS:
        raise PushRejected(
            403,
            f"accounts.{account.name}.options.{ALGORITHM_OPTION} must be one of "
            f"{', '.join(SIGNATURE_PARAMS)}",
        )
    return value


def _signature_check(algorithm: str) -> Callable[[str, InboundRequest], None]:
    def check(secret: str, request: InboundRequest) -> None:
        """The signature: 400 if the body cannot be decoded, 403 if it is wrong."""
        try:
            decoded = decode_callback(
                request.body, content_type=request.content_type, query=request.query
            )
        except CallbackError as exc:
            raise PushRejected(400, f"undecodable SMSC callback: {exc}") from None
        params = decoded.params
        if not params.get(algorithm):
            raise PushRejected(403, f"SMSC callback signature ({algorithm}) missing")
        for name in NUMERIC_FIELDS:
            value = params.get(name, "")
            if value and not value.lstrip("-").isdigit():
                raise PushRejected(403, f"SMSC callback field {name!r} is not a number")
        # Only the configured algorithm counts: a weaker one in the same push is ignored.
        chosen = {k: v for k, v in params.items() if k not in SIGNATURE_PARAMS or k == algorithm}
        if not verify_signature(chosen, secret, charset=decoded.charset):
            raise PushRejected(403, "SMSC callback signature wrong")

    return check


def verify_push(account: AccountConfig, request: InboundRequest) -> PushAnswer:
    """Check the source and the signature (one configured algorithm); raise PushRejected."""
    return verify_push_request(
        account,
        request,
        secret_use="(the md5/sha1/crc32 secret of the SMSC handler URL)",
        check_secret=_signature_check(_algorithm(account)),
    )


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


def parse_push(account: AccountConfig, request: InboundRequest) -> PushContent:
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
        return PushContent(reports=reports, hlr=hlr)
    if isinstance(callback, IncomingSms):
        return PushContent(incoming=[_incoming(callback)])
    return PushContent(events=[_call(callback)])
