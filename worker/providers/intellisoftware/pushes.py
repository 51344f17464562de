"""IntelliSoftware pushes to ``/hooks/<account>``: verification at receipt, parsing later.

The gateway POSTs form fields for forwarded SMS, status reports, MMS notifications and
subscription-list events (see :mod:`.receivers`), to the URLs set on the Forwarding tab
of the account's Preferences. It signs nothing, so smsq authenticates a push as
:mod:`worker.providers.push_auth` does for every provider:

- a shared secret in the URL: configure ``https://<smsq web>/hooks/<account>?key=<secret>``
  and ``accounts.<account>.webhook_secret`` with the same secret (compared in constant
  time), and/or
- the gateway's source addresses: ``accounts.<account>.options.webhook_ips``, a list of
  addresses or CIDR networks.

With both configured both must pass; with neither, every push is refused (403). The
gateway retries anything but 200 every 5 minutes, so a refused push is retried until the
configuration is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

from worker.providers.base import (
    AccountConfig,
    InboundRequest,
    IncomingMessage,
    PushAnswer,
    PushContent,
    StatusReport,
)
from worker.providers.intellisoftware.push_formats import (
    InboundMms,
    InboundSms,
    SubscriptionEvent,
    parse_push_fields,
)
from worker.providers.push_auth import KEY_PARAM, verify_push_request

__all__ = ["KEY_PARAM", "parse_push", "push_fields", "verify_push"]


def verify_push(account: AccountConfig, request: InboundRequest) -> PushAnswer:
    """Check the ``key`` query parameter and/or the source address; PushRejected(403) else."""
    return verify_push_request(
        account, request, secret_use=f"and put it in the forwarding URL as ?{KEY_PARAM}=<secret>"
    )


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def _form(request: InboundRequest) -> dict[str, str]:
    media = request.content_type.split(";", 1)[0].strip().lower()
    if not request.body:
        return {}
    if media == "multipart/form-data":
        head = f"Content-Type: {request.content_type}\r\n\r\n".encode("latin-1")
        message = BytesParser(policy=HTTP).parsebytes(head + request.body)
        fields: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str) and part.get_filename() is None:
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    charset = part.get_content_charset() or "utf-8"
                    fields[name] = payload.decode(charset, errors="replace")
        return fields
    # application/x-www-form-urlencoded (also assumed when the type is missing or other)
    try:
        text = request.body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("form body is not URL-encoded") from None
    return dict(parse_qsl(text, keep_blank_values=True, encoding=_charset(request.content_type)))


def push_fields(request: InboundRequest) -> dict[str, str]:
    """Query and form fields merged (form wins), without the shared secret."""
    fields = {k: v for k, v in request.query.items() if k != KEY_PARAM}
    fields.update({k: v for k, v in _form(request).items() if k != KEY_PARAM})
    return fields


def _sms(push: InboundSms) -> IncomingMessage:
    extra: dict[str, str] = {}
    for name in ("networkcode", "network", "usercontext"):
        value = getattr(push, name)
        if value:
            extra[name] = value
    return IncomingMessage(
        provider_message_id=push.msgid,
        sender=push.sender.lstrip("+"),
        text=push.text,
        received_at=push.sent,
        extra=extra,
    )


def _mms(push: InboundMms) -> IncomingMessage:
    extra: dict[str, object] = {"kind": "mms", "type": int(push.type), "files": list(push.filelist)}
    if push.usercontext:
        extra["usercontext"] = push.usercontext
    return IncomingMessage(
        provider_message_id=push.msgid,
        sender=push.sender.lstrip("+"),
        text=push.subject,
        extra=extra,
    )


def _subscription(push: SubscriptionEvent) -> Mapping[str, str]:
    event = {
        "type": "subscription",
        "provider": "intellisoftware",
        "list": push.sublistname,
        "list_type": push.sublisttype.name.lower(),
        "phone": push.msisdn.lstrip("+"),
        "action": push.action.name.lower(),
        "change_source": push.source.name.lower(),
    }
    if push.timestamp is not None:
        event["changed_at"] = push.timestamp.isoformat()
    return event


def parse_push(account: AccountConfig, request: InboundRequest) -> PushContent:
    """The content of a stored push (verified at receipt; not verified again here).

    Status report → :class:`StatusReport` whose id is the adapter's per-recipient
    :func:`.codes.message_key`; forwarded SMS / MMS → :class:`IncomingMessage` (MMS with
    ``extra.kind = "mms"`` and its file list); subscription event → an event. Raises
    ValueError for a push that is none of these or is malformed.
    """
    push = parse_push_fields(push_fields(request))
    if isinstance(push, StatusReport):
        return PushContent(reports=[push])
    if isinstance(push, InboundSms):
        return PushContent(incoming=[_sms(push)])
    if isinstance(push, InboundMms):
        return PushContent(incoming=[_mms(push)])
    return PushContent(events=[_subscription(push)])
