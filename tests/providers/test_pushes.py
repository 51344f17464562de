"""Each provider's ``verify_push`` / ``parse_push`` on the documented push examples:
what is accepted, what is refused (forged signature, wrong key, wrong source, no
authentication configured), and what a push becomes (reports, incoming, HLR, events)."""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from typing import Any
from urllib.parse import urlencode

import pytest

from producers.status import Status
from worker.providers import known_kinds, provider_spec
from worker.providers.base import (
    AccountConfig,
    InboundRequest,
    PushAnswer,
    PushContent,
    PushRejected,
)
from worker.providers.intellisoftware.codes import gateway_id_of, message_key
from worker.providers.smsc.adapter import make_message_id

SECRET = "s3cret-Key_42"
FORM = "application/x-www-form-urlencoded"


def account(kind: str, secret: str = SECRET, **options: Any) -> AccountConfig:
    return AccountConfig(
        name=f"{kind}-main",
        kind=kind,
        base_url="https://provider.example",
        webhook_secret=secret,
        options=options,
    )


def request(
    body: bytes = b"",
    *,
    query: dict[str, str] | None = None,
    content_type: str = FORM,
    method: str = "POST",
    remote: str = "203.0.113.7",
) -> InboundRequest:
    return InboundRequest(method, "", query or {}, content_type, body, remote, time.time())


def refused(kind: str, acc: AccountConfig, req: InboundRequest) -> PushRejected:
    with pytest.raises(PushRejected) as info:
        provider_spec(kind).verify_push(acc, req)
    return info.value


def accepted(kind: str, acc: AccountConfig, req: InboundRequest) -> PushContent:
    answer = provider_spec(kind).verify_push(acc, req)
    assert answer == PushAnswer(200, "OK", "text/plain")
    content = provider_spec(kind).parse_push(acc, req)
    assert isinstance(content, PushContent)
    return content


# --------------------------------------------------------------------------- every provider


@pytest.mark.parametrize("kind", known_kinds())
def test_every_provider_exports_the_webhook_functions(kind: str) -> None:
    module = provider_spec(kind)
    assert callable(module.verify_push) and callable(module.parse_push)


@pytest.mark.parametrize("kind", known_kinds())
def test_no_secret_and_no_allow_list_refuses_every_push(kind: str) -> None:
    acc = account(kind, secret="")
    body = urlencode({"id": "1", "phone": "79999999999", "status": "1"}).encode()
    error = refused(kind, acc, request(body, query={"key": "anything", "md5": "x"}))
    assert error.status == 403
    assert "webhook_secret" in error.reason and "webhook_ips" in error.reason
    assert acc.name in error.reason


# --------------------------------------------------------------------------- SMSC


def smsc_sign(algorithm: str, text: str, codec: str = "cp1251") -> str:
    data = text.encode(codec)
    if algorithm == "md5":
        return hashlib.md5(data).hexdigest()
    if algorithm == "sha1":
        return hashlib.sha1(data).hexdigest()
    return str(zlib.crc32(data))


# The doc's status table, with values.
SMSC_STATUS = {
    "id": "14",
    "phone": "79999999999",
    "status": "1",
    "time": "28.12.21 19:27:42",
    "ts": "1640708862",
    "cnt": "1",
    "type": "0",
    "cost": "4.1",
    "flag": "0",
    "sender": "SMSC.RU",
}
SMSC_INCOMING = {
    "id": "1234568",
    "sms_id": "14",
    "phone": "79999999999",
    "mes": "Да, подтверждаю",
    "to": "79990000000",
    "smsc": "79168999100",
    "sent": "1640708860",
    "time": "1640708862",
}
SMSC_CALL = {"waitcall": "1", "phone": "79999999999", "ts": "1640708862"}
CODECS = {"windows-1251": "cp1251", "utf-8": "utf-8", "koi8-r": "koi8_r"}


def smsc_body(params: dict[str, str], fmt: int, codec: str) -> tuple[bytes, str]:
    if fmt == 3:
        return json.dumps(params, ensure_ascii=False).encode(codec), "application/json"
    if fmt == 2:
        items = "".join(f"<{k}>{v}</{k}>" for k, v in params.items())
        return f"<data>{items}</data>".encode(codec), "text/xml"
    return urlencode(params, encoding=codec).encode("ascii"), FORM


@pytest.mark.parametrize("fmt", [0, 2, 3])
@pytest.mark.parametrize("algorithm", ["md5", "sha1", "crc32"])
def test_smsc_status_callback_verified_and_parsed(algorithm: str, fmt: int) -> None:
    check = smsc_sign(algorithm, f"14:79999999999:1:{SECRET}", "utf-8")
    params = dict(SMSC_STATUS, charset="utf-8", **{algorithm: check})
    body, ctype = smsc_body(params, fmt, "utf-8")
    configured = account("smsc", callback_algorithm=algorithm)
    content = accepted("smsc", configured, request(body, content_type=ctype))
    assert [r.provider_message_id for r in content.reports] == [make_message_id(14, "79999999999")]
    assert content.reports[0].provider_message_id == "14:79999999999"
    report = content.reports[0]
    assert report.status is Status.DELIVERED and report.raw_status == "1"
    assert report.at is not None and int(report.at.timestamp()) == 1640708862
    assert content.incoming == [] and content.hlr == [] and content.events == []


@pytest.mark.parametrize("charset", ["windows-1251", "utf-8", "koi8-r"])
def test_smsc_incoming_sms_each_charset(charset: str) -> None:
    codec = CODECS[charset]
    check = smsc_sign("md5", f"79999999999:Да, подтверждаю:79990000000:{SECRET}", codec)
    params = dict(SMSC_INCOMING, charset=charset, md5=check)
    body, ctype = smsc_body(params, 0, codec)
    content = accepted("smsc", account("smsc"), request(body, content_type=ctype))
    assert content.reports == [] and len(content.incoming) == 1
    msg = content.incoming[0]
    assert (msg.provider_message_id, msg.sender, msg.text, msg.recipient) == (
        "1234568",
        "79999999999",
        "Да, подтверждаю",
        "79990000000",
    )
    assert msg.received_at is not None and int(msg.received_at.timestamp()) == 1640708862
    assert msg.extra["reply_to"] == "14"


def test_smsc_call_confirmation_becomes_an_event() -> None:
    params = dict(SMSC_CALL, sha1=smsc_sign("sha1", f"79999999999:1640708862:{SECRET}"))
    body, ctype = smsc_body(params, 0, "cp1251")
    content = accepted(
        "smsc", account("smsc", callback_algorithm="sha1"), request(body, content_type=ctype)
    )
    assert content.events == [
        {
            "type": "call_confirmation",
            "provider": "smsc",
            "phone": "79999999999",
            "ts": "1640708862",
        }
    ]
    assert content.reports == [] and content.incoming == []


def test_smsc_hlr_callback_gives_report_and_hlr_result() -> None:
    params = dict(
        SMSC_STATUS,
        type="4",
        imsi="250010000000000",
        mcc="250",
        mnc="01",
        cn="Russia",
        net="MTS",
    )
    params["md5"] = smsc_sign("md5", f"14:79999999999:1:{SECRET}")
    body, ctype = smsc_body(params, 0, "cp1251")
    content = accepted("smsc", account("smsc"), request(body, content_type=ctype))
    assert [r.provider_message_id for r in content.reports] == ["14:79999999999"]
    [hlr] = content.hlr
    assert hlr.provider_message_id == "14:79999999999" and hlr.ok and not hlr.pending
    assert (hlr.imsi, hlr.mcc, hlr.mnc) == ("250010000000000", "250", "01")


@pytest.mark.parametrize(
    "change",
    [
        {"md5": smsc_sign("md5", "14:79999999999:1:guess")},  # another secret
        {"status": "20"},  # tampered after signing
        {"md5": ""},  # unsigned
    ],
)
def test_smsc_forged_callback_is_refused_with_403(change: dict[str, str]) -> None:
    params = dict(SMSC_STATUS, md5=smsc_sign("md5", f"14:79999999999:1:{SECRET}"))
    params.update(change)
    body, ctype = smsc_body(params, 0, "cp1251")
    error = refused("smsc", account("smsc"), request(body, content_type=ctype))
    assert error.status == 403 and "signature" in error.reason


def test_smsc_signed_but_undecodable_body_is_400_not_404() -> None:
    error = refused("smsc", account("smsc"), request(b"{not json", content_type="application/json"))
    assert error.status == 400


def test_smsc_ip_allow_list_alone_and_with_signature() -> None:
    unsigned, ctype = smsc_body(SMSC_STATUS, 0, "cp1251")
    only_ips = account("smsc", secret="", webhook_ips=["198.51.100.0/24", "2001:db8::1"])
    content = accepted(
        "smsc", only_ips, request(unsigned, content_type=ctype, remote="198.51.100.9")
    )
    assert content.reports[0].provider_message_id == "14:79999999999"
    accepted("smsc", only_ips, request(unsigned, content_type=ctype, remote="::ffff:198.51.100.9"))
    accepted("smsc", only_ips, request(unsigned, content_type=ctype, remote="2001:db8::1"))
    assert refused("smsc", only_ips, request(unsigned, remote="203.0.113.7")).status == 403
    both = account("smsc", webhook_ips="198.51.100.0/24")  # a comma-separated string works too
    # From an allowed source, a signature is still required when a secret is set ...
    assert refused("smsc", both, request(unsigned, remote="198.51.100.9")).status == 403
    signed, _ = smsc_body(
        dict(SMSC_STATUS, md5=smsc_sign("md5", f"14:79999999999:1:{SECRET}")), 0, "cp1251"
    )
    accepted("smsc", both, request(signed, remote="198.51.100.9"))
    # ... and a good signature from elsewhere is refused.
    assert refused("smsc", both, request(signed, remote="203.0.113.7")).status == 403


def test_smsc_unparseable_push_raises_value_error() -> None:
    acc = account("smsc", secret="", webhook_ips=["127.0.0.1"])
    req = request(urlencode({"id": "14"}).encode(), remote="127.0.0.1")  # no phone, no status
    provider_spec("smsc").verify_push(acc, req)
    with pytest.raises(ValueError, match="lacks"):
        provider_spec("smsc").parse_push(acc, req)


# --------------------------------------------------------------------------- IntelliSoftware


def is_request(fields: dict[str, str], key: str | None = SECRET, **kw: Any) -> InboundRequest:
    query = {"key": key} if key is not None else {}
    return request(urlencode(fields).encode(), query=query, **kw)


def test_intellisoftware_status_report_has_the_adapters_id() -> None:
    fields = {"msgid": "10011000000000000001", "status": "4", "toaddr": "447771012345"}
    content = accepted("intellisoftware", account("intellisoftware"), is_request(fields))
    [report] = content.reports
    assert report.provider_message_id == message_key("10011000000000000001", "447771012345")
    assert gateway_id_of(report.provider_message_id) == "10011000000000000001"
    assert report.status is Status.DELIVERED and report.raw_status == "4"
    assert "key" not in json.dumps(dict(report.extra))


@pytest.mark.parametrize(("value", "status"), [("6", Status.UNDELIVERABLE), ("8", Status.EXPIRED)])
def test_intellisoftware_final_failures(value: str, status: Status) -> None:
    fields = {"msgid": "7", "status": value, "toaddr": "447771012345"}
    [report] = accepted("intellisoftware", account("intellisoftware"), is_request(fields)).reports
    assert report.status is status


def test_intellisoftware_forwarded_sms() -> None:
    fields = {
        "from": "447771012345",
        "text": "Hello there",
        "msgid": "500110000000001",
        "sent": "2010-06-10T14:45:12+01:00",
        "networkcode": "234015",
    }
    content = accepted("intellisoftware", account("intellisoftware"), is_request(fields))
    [msg] = content.incoming
    assert (msg.provider_message_id, msg.sender, msg.text) == (
        "500110000000001",
        "447771012345",
        "Hello there",
    )
    assert (
        msg.received_at is not None and msg.received_at.isoformat() == "2010-06-10T14:45:12+01:00"
    )
    assert msg.extra["network"] == "Vodafone (UK)" and "key" not in msg.extra


def test_intellisoftware_mms_notification() -> None:
    fields = {
        "from": "447771012345",
        "text": "Holiday",
        "msgid": "500110000000002",
        "type": "5",
        "filelist": "photo.jpg,text.txt",
    }
    [msg] = accepted("intellisoftware", account("intellisoftware"), is_request(fields)).incoming
    assert msg.provider_message_id == "500110000000002" and msg.text == "Holiday"
    assert msg.extra["kind"] == "mms" and msg.extra["files"] == ["photo.jpg", "text.txt"]


def test_intellisoftware_subscription_event() -> None:
    fields = {
        "sublistname": "News",
        "sublisttype": "2",
        "msisdn": "447771012345",
        "action": "2",
        "source": "1",
        "timestamp": "2010-02-03T13:50:05-00:00",
    }
    content = accepted("intellisoftware", account("intellisoftware"), is_request(fields))
    [event] = content.events
    assert event["type"] == "subscription" and event["list"] == "News"
    assert (event["action"], event["change_source"], event["phone"]) == (
        "unsubscribe",
        "inbound_sms",
        "447771012345",
    )
    assert content.reports == [] and content.incoming == []


def test_intellisoftware_multipart_form_is_read() -> None:
    boundary = "XyZ"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in {"msgid": "9", "status": "4", "toaddr": "447771012345"}.items()
    )
    body = (parts + f"--{boundary}--\r\n").encode()
    req = request(
        body, query={"key": SECRET}, content_type=f"multipart/form-data; boundary={boundary}"
    )
    [report] = accepted("intellisoftware", account("intellisoftware"), req).reports
    assert report.provider_message_id == message_key("9", "447771012345")


@pytest.mark.parametrize("key", [None, "", "wrong", SECRET + "x", SECRET.upper()])
def test_intellisoftware_wrong_or_missing_key_is_refused(key: str | None) -> None:
    fields = {"msgid": "7", "status": "4", "toaddr": "447771012345"}
    error = refused("intellisoftware", account("intellisoftware"), is_request(fields, key=key))
    assert error.status == 403 and SECRET not in error.reason


def test_intellisoftware_ip_allow_list() -> None:
    fields = {"msgid": "7", "status": "4", "toaddr": "447771012345"}
    only_ips = account("intellisoftware", secret="", webhook_ips=["192.0.2.0/28"])
    accepted("intellisoftware", only_ips, is_request(fields, key=None, remote="192.0.2.5"))
    error = refused("intellisoftware", only_ips, is_request(fields, key=None, remote="192.0.2.16"))
    assert error.status == 403 and "allow-list" in error.reason
    both = account("intellisoftware", webhook_ips=["192.0.2.0/28"])
    accepted("intellisoftware", both, is_request(fields, remote="192.0.2.5"))
    assert refused("intellisoftware", both, is_request(fields, remote="192.0.2.99")).status == 403
    assert (
        refused("intellisoftware", both, is_request(fields, "bad", remote="192.0.2.5")).status
        == 403
    )


def test_intellisoftware_unrecognised_push_raises_value_error() -> None:
    req = is_request({"hello": "world"})
    provider_spec("intellisoftware").verify_push(account("intellisoftware"), req)
    with pytest.raises(ValueError, match="not a recognised"):
        provider_spec("intellisoftware").parse_push(account("intellisoftware"), req)


# --------------------------------------------------------------------------- Intis


def intis_request(params: dict[str, str], key: str | None = SECRET, **kw: Any) -> InboundRequest:
    query = dict(params, **({"key": key} if key is not None else {}))
    return request(query=query, method="GET", content_type="", **kw)


INTIS_REPORT = {
    "message-id": "4092112510348380960001",
    "state": "2",
    "price": "0.65",
    "currency": "RUB",
    "mcc": "250",
    "mnc": "01",
}


def test_intis_delivery_report_keyed_by_id_sms() -> None:
    content = accepted("intis", account("intis"), intis_request(INTIS_REPORT))
    [report] = content.reports
    assert report.provider_message_id == "4092112510348380960001"
    assert report.status is Status.DELIVERED and report.raw_status == "2"
    assert dict(report.extra) == {
        "state_name": "delivered",
        "price": "0.65",
        "currency": "RUB",
        "mcc": "250",
        "mnc": "01",
    }


@pytest.mark.parametrize(
    ("state", "status"),
    [("5", Status.UNDELIVERABLE), ("3", Status.EXPIRED), ("1", Status.SUBMITTED)],
)
def test_intis_states(state: str, status: Status) -> None:
    [report] = accepted(
        "intis", account("intis"), intis_request(dict(INTIS_REPORT, state=state))
    ).reports
    assert report.status is status


@pytest.mark.parametrize("key", [None, "", "wrong", SECRET[:-1]])
def test_intis_wrong_or_missing_key_is_refused(key: str | None) -> None:
    error = refused("intis", account("intis"), intis_request(INTIS_REPORT, key=key))
    assert error.status == 403 and SECRET not in error.reason


def test_intis_ip_allow_list() -> None:
    only_ips = account("intis", secret="", webhook_ips=["10.1.0.0/16"])
    accepted("intis", only_ips, intis_request(INTIS_REPORT, key=None, remote="10.1.2.3"))
    assert refused("intis", only_ips, intis_request(INTIS_REPORT, remote="10.2.0.1")).status == 403
    assert refused("intis", only_ips, intis_request(INTIS_REPORT, remote="not-an-ip")).status == 403
    both = account("intis", webhook_ips="10.1.0.0/16, 10.3.0.1")
    accepted("intis", both, intis_request(INTIS_REPORT, remote="10.3.0.1"))
    assert (
        refused("intis", both, intis_request(INTIS_REPORT, "no", remote="10.3.0.1")).status == 403
    )


def test_intis_malformed_report_raises_value_error() -> None:
    req = intis_request(dict(INTIS_REPORT, state="42"))
    provider_spec("intis").verify_push(account("intis"), req)
    with pytest.raises(ValueError, match="state"):
        provider_spec("intis").parse_push(account("intis"), req)


def test_smsc_signature_algorithm_is_pinned_per_account() -> None:
    # crc32 alone (forgeable by anyone who saw one signed push) against the default md5 account
    params = dict(SMSC_STATUS, crc32=smsc_sign("crc32", f"14:79999999999:1:{SECRET}"))
    body, ctype = smsc_body(params, 0, "cp1251")
    error = refused("smsc", account("smsc"), request(body, content_type=ctype))
    assert error.status == 403 and "md5" in error.reason
    # a wrong md5 next to a right crc32: only the configured md5 counts
    params["md5"] = smsc_sign("md5", "14:79999999999:1:guess")
    body, ctype = smsc_body(params, 0, "cp1251")
    assert refused("smsc", account("smsc"), request(body, content_type=ctype)).status == 403
    # crc32 when the operator chose it explicitly
    del params["md5"]
    body, ctype = smsc_body(params, 0, "cp1251")
    accepted("smsc", account("smsc", callback_algorithm="crc32"), request(body, content_type=ctype))
    # an unknown algorithm in the configuration is refused with the key to fix
    error = refused(
        "smsc", account("smsc", callback_algorithm="sha256"), request(body, content_type=ctype)
    )
    assert error.status == 403 and "callback_algorithm" in error.reason


def test_a_captured_status_signature_cannot_be_recut_as_a_call_confirmation() -> None:
    status_signature = smsc_sign("md5", f"14:79999999999:1:{SECRET}")
    forged = dict(SMSC_CALL, phone="14", ts="79999999999:1", md5=status_signature)
    body, ctype = smsc_body(forged, 0, "cp1251")
    error = refused("smsc", account("smsc"), request(body, content_type=ctype))
    assert error.status == 403 and "not a number" in error.reason
