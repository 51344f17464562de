"""IntelliSoftware pushes: every documented push parsed, the code tables, verification,
and the sandbox forwarding real pushes over HTTP to a receiver built on these parsers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from producers.status import Status
from worker.providers.base import AccountConfig, StatusReport
from worker.providers.intellisoftware.adapter import IntelliSoftwareAdapter
from worker.providers.intellisoftware.codes import (
    NETWORK_CODES,
    REPORT_STATUSES,
    SUBSCRIPTION_ACTION_TEXT,
    SUBSCRIPTION_LIST_TYPE_TEXT,
    SUBSCRIPTION_SOURCE_TEXT,
    MessageType,
    SubscriptionAction,
    SubscriptionListType,
    SubscriptionSource,
    message_key,
    report_status,
)
from worker.providers.intellisoftware.push_formats import (
    InboundMms,
    InboundSms,
    SubscriptionEvent,
    parse_inbound_mms,
    parse_inbound_sms,
    parse_push_fields,
    parse_status_report,
    parse_subscription_event,
    parse_w3cdtf,
)
from worker.providers.intellisoftware.sandbox import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    MmsContent,
    create_sandbox,
    sandbox_of,
)
from worker.providers.push_auth import check_shared_secret, check_source, parse_networks
from worker.providers.sandbox_kit import ADMIN_PREFIX, RunningSandbox, SandboxState, serve

BST = timezone(timedelta(hours=1))

# --- the doc's date examples ---------------------------------------------------------------

DOC_DATES = {
    "2010-02-03T13:50:05-00:00": datetime(2010, 2, 3, 13, 50, 5, tzinfo=UTC),
    "2010-06-10T14:45:12+01:00": datetime(2010, 6, 10, 14, 45, 12, tzinfo=BST),
}


@pytest.mark.parametrize(("text", "expected"), sorted(DOC_DATES.items()))
def test_doc_dates(text: str, expected: datetime) -> None:
    parsed = parse_w3cdtf(text)
    assert parsed == expected and parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2010-06-10T14:45:12 01:00", datetime(2010, 6, 10, 14, 45, 12, tzinfo=BST)),  # '+' lost
        ("2010-06-10T13:45:12Z", datetime(2010, 6, 10, 13, 45, 12, tzinfo=UTC)),
        ("2010-06-10T14:45+01:00", datetime(2010, 6, 10, 14, 45, tzinfo=BST)),
        ("2010-06-10T13:45:12.25Z", datetime(2010, 6, 10, 13, 45, 12, 250000, tzinfo=UTC)),
        ("2010-06-10", datetime(2010, 6, 10, tzinfo=UTC)),
    ],
)
def test_w3cdtf_variants(text: str, expected: datetime) -> None:
    assert parse_w3cdtf(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2010-13-40T00:00:00Z"])
def test_w3cdtf_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_w3cdtf(text)


# --- Receive SMS Message -------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "expected"), sorted(DOC_DATES.items()))
def test_inbound_sms(sent: str, expected: datetime) -> None:
    fields = {
        "from": "447710123456",
        "text": "Hello there",
        "msgid": "500110000000001",
        "sent": sent,
    }
    sms = parse_inbound_sms(fields)
    assert sms == InboundSms(
        sender="447710123456",
        text="Hello there",
        msgid="500110000000001",
        sent=expected,
        raw=fields,
    )
    assert parse_push_fields(fields) == sms


@pytest.mark.parametrize(("code", "name"), sorted(NETWORK_CODES.items()))
def test_inbound_sms_network_codes(code: str, name: str) -> None:
    sms = parse_inbound_sms(
        {
            "from": "447710123456",
            "text": "STOP",
            "msgid": "1",
            "networkcode": code,
            "usercontext": "job1:0",
        }
    )
    assert (sms.networkcode, sms.network, sms.usercontext) == (code, name, "job1:0")


def test_inbound_sms_unknown_network_and_empty_text() -> None:
    sms = parse_inbound_sms({"from": "44771", "text": "", "msgid": "1", "networkcode": "999999"})
    assert sms.text == "" and sms.network is None and sms.sent is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text": "x", "msgid": "1"}, "'from'"),
        ({"from": "4477", "msgid": "1"}, "'text'"),
        ({"from": "4477", "text": "x"}, "'msgid'"),
        ({"from": "4477", "text": "x", "msgid": "1", "sent": "tomorrow"}, "'sent'"),
        ({"from": "4477", "text": "x", "msgid": "1", "extra": 5}, "'extra'"),
    ],
)
def test_inbound_sms_bad_input(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_inbound_sms(fields)


# --- Message Status Report -----------------------------------------------------------------

DOC_STATUSES = {
    0: ("Unknown", Status.SUBMITTED),
    1: ("OK", Status.SUBMITTED),
    2: ("Message Queued", Status.SUBMITTED),
    3: ("Message Sent", Status.SUBMITTED),
    4: ("Message Delivered", Status.DELIVERED),
    5: ("Error With Request", Status.REJECTED),
    6: ("Unable To Deliver", Status.UNDELIVERABLE),
    7: ("Routing Error", Status.REJECTED),
    8: ("Message Expired", Status.EXPIRED),
    11: ("Acknowledged By Recipient (Voice-SMS Only)", Status.DELIVERED),
    12: ("Rejected By Recipient (Voice-SMS Only)", Status.UNDELIVERABLE),
}


def test_status_table_is_the_docs() -> None:
    assert {v: (e.text, e.status) for v, e in REPORT_STATUSES.items()} == DOC_STATUSES


@pytest.mark.parametrize(("value", "expected"), sorted(DOC_STATUSES.items()))
def test_status_report(value: int, expected: tuple[str, Status]) -> None:
    fields = {"msgid": "10011000000000000001", "status": str(value), "toaddr": "44771012345"}
    report = parse_status_report(fields)
    assert report == StatusReport(
        provider_message_id=message_key("10011000000000000001", "44771012345"),
        status=expected[1],
        raw_status=str(value),
        extra={
            "gateway_msgid": "10011000000000000001",
            "toaddr": "44771012345",
            "status_text": expected[0],
        },
    )
    assert parse_push_fields(fields) == report


def test_status_report_matches_the_adapters_id_for_national_toaddr() -> None:
    a = parse_status_report({"msgid": "7", "status": "4", "toaddr": "0771012345"})
    b = parse_status_report({"msgid": "7", "status": "4", "toaddr": "+44771012345"})
    assert a.provider_message_id == b.provider_message_id == message_key("7", "44771012345")


def test_status_report_unknown_value_kept_not_final() -> None:
    report = parse_status_report({"msgid": "7", "status": "99", "toaddr": "44771012345"})
    assert report.status is Status.SUBMITTED and report.raw_status == "99"
    assert report_status(99).text == "Unrecognised status"


def test_status_report_msgparts_extra() -> None:
    report = parse_status_report({"msgid": "7", "status": "4", "toaddr": "447710", "msgparts": "3"})
    assert report.extra["msgparts"] == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"status": "4", "toaddr": "4477"}, "'msgid'"),
        ({"msgid": "7", "toaddr": "4477"}, "'status'"),
        ({"msgid": "7", "status": "4"}, "'toaddr'"),
        ({"msgid": "7", "status": "delivered", "toaddr": "4477"}, "'status' is not an integer"),
        ({"msgid": "7", "status": "4", "toaddr": "4477", "msgparts": "x"}, "'msgparts'"),
    ],
)
def test_status_report_bad_input(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_status_report(fields)


# --- Receive MMS Message -------------------------------------------------------------------


def test_inbound_mms() -> None:
    fields = {
        "from": "447710123456",
        "text": "MMS Message Subject",
        "msgid": "500110000000001",
        "type": "5",
        "filelist": "file1.txt,file2.gif",
    }
    mms = parse_inbound_mms(fields)
    assert mms == InboundMms(
        sender="447710123456",
        subject="MMS Message Subject",
        msgid="500110000000001",
        type=MessageType.MMS,
        filelist=("file1.txt", "file2.gif"),
        raw=fields,
    )
    assert parse_push_fields(fields) == mms


def test_inbound_mms_type_1_is_a_text_message() -> None:
    mms = parse_inbound_mms({"from": "4477", "text": "hi", "msgid": "1", "type": "1"})
    assert mms.type is MessageType.TEXT and mms.filelist == ()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"from": "4477", "msgid": "1", "type": "3", "filelist": "a"}, "unexpected value 3"),
        ({"from": "4477", "msgid": "1", "type": "9", "filelist": "a"}, "unknown value 9"),
        ({"from": "4477", "msgid": "1", "type": "5"}, "'filelist'"),
        ({"from": "4477", "type": "5", "filelist": "a"}, "'msgid'"),
    ],
)
def test_inbound_mms_bad_input(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_inbound_mms(fields)


# --- Subscription List Event ----------------------------------------------------------------


def test_subscription_tables_cover_the_enums() -> None:
    assert set(SUBSCRIPTION_ACTION_TEXT) == set(SubscriptionAction)
    assert set(SUBSCRIPTION_LIST_TYPE_TEXT) == set(SubscriptionListType)
    assert set(SUBSCRIPTION_SOURCE_TEXT) == set(SubscriptionSource)
    assert [s.value for s in SubscriptionSource] == list(range(1, 13))
    assert SUBSCRIPTION_SOURCE_TEXT[SubscriptionSource.PLATFORM_EVENT].startswith("Platform Level")


@pytest.mark.parametrize("source", list(SubscriptionSource))
@pytest.mark.parametrize("action", list(SubscriptionAction))
def test_subscription_event(action: SubscriptionAction, source: SubscriptionSource) -> None:
    fields = {
        "sublistname": "MySubscriptionListName",
        "sublisttype": "2",
        "msisdn": "44771012345",
        "action": str(action.value),
        "source": str(source.value),
        "timestamp": "2010-06-10T14:45:12+01:00",
    }
    event = parse_subscription_event(fields)
    assert event == SubscriptionEvent(
        sublistname="MySubscriptionListName",
        sublisttype=SubscriptionListType.USER,
        msisdn="44771012345",
        action=action,
        source=source,
        timestamp=DOC_DATES["2010-06-10T14:45:12+01:00"],
        raw=fields,
    )
    assert parse_push_fields(fields) == event


def test_subscription_event_premium_list() -> None:
    event = parse_subscription_event(
        {"sublistname": "ARB", "sublisttype": "1", "msisdn": "4477", "action": "2", "source": "8"}
    )
    assert event.sublisttype is SubscriptionListType.PREMIUM_RATE and event.timestamp is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("sublisttype", "3"), ("action", "4"), ("source", "13"), ("action", "x"), ("msisdn", "")],
)
def test_subscription_event_bad_input(field: str, value: str) -> None:
    fields = {
        "sublistname": "L",
        "sublisttype": "2",
        "msisdn": "4477",
        "action": "1",
        "source": "7",
    }
    fields[field] = value
    with pytest.raises(ValueError, match=field):
        parse_subscription_event(fields)


def test_parse_push_unrecognised() -> None:
    with pytest.raises(ValueError, match="not a recognised"):
        parse_push_fields({"hello": "world"})


# --- verification ------------------------------------------------------------------------------


def test_shared_secret() -> None:
    check_shared_secret("s3cret-value", "s3cret-value")
    for provided, message in [
        (None, "no shared secret"),
        ("", "no shared secret"),
        ("nope", "wrong"),
    ]:
        with pytest.raises(ValueError, match=message) as exc:
            check_shared_secret(provided, "s3cret-value")
        assert "s3cret" not in str(exc.value)


def test_source_ip_allow_list() -> None:
    allowed = parse_networks(["192.0.2.10", "198.51.100.0/24", "2001:db8::/32"])
    for ok in ["192.0.2.10", "198.51.100.77", "2001:db8::1", "::ffff:192.0.2.10"]:
        check_source(ok, allowed)
    for bad, message in [
        ("192.0.2.11", "not in the allow-list"),
        ("2001:db9::1", "not in the allow-list"),
        ("", "no source address"),
        (None, "no source address"),
        ("not-an-ip", "not an IP address"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_source(bad, allowed)
    with pytest.raises(ValueError, match="is not an address"):
        parse_networks(["example.com"])


# --- real pushes from the sandbox ----------------------------------------------------------------


class Receiver:
    """A tiny webhook app built on the parsers, checking the shared secret."""

    def __init__(self, secret: str = "hook-secret") -> None:
        self.secret = secret
        self.pushes: list[Any] = []
        self.app = web.Application()
        self.app.router.add_post("/hooks/intellisoftware", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            check_shared_secret(request.query.get("key"), self.secret)
            check_source(request.remote, parse_networks(["127.0.0.0/8", "::1"]))
            form = await request.post()
            self.pushes.append(parse_push_fields({**request.query, **form, "key": ""}))
        except ValueError as exc:
            return web.Response(status=403, text=str(exc))
        return web.Response(text="ok")

    async def wait_for(self, n: int) -> list[Any]:
        for _ in range(200):
            if len(self.pushes) >= n:
                break
            await asyncio.sleep(0.02)
        return self.pushes


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, RunningSandbox]]:
    rec = Receiver()
    running = await serve(rec.app)
    yield rec, running
    await running.stop()


async def test_sandbox_forwards_every_push_kind(
    receiver: tuple[Receiver, RunningSandbox],
) -> None:
    rec, running = receiver
    hook = running.url + "/hooks/intellisoftware?key=hook-secret"
    sandbox = await serve(
        create_sandbox(
            SandboxState(),
            forward_url=hook,
            subscription_event_url=hook,
            subscription_lists=["Club"],
        )
    )
    try:
        gateway = sandbox_of(sandbox.app)
        sms_id = gateway.receive_sms(
            "447710123456", "Yes please", usercontext="job1:0", networkcode="234015"
        )
        async with aiohttp.ClientSession() as session:
            gif = bytes(range(256))
            async with session.post(
                sandbox.url + ADMIN_PREFIX + "intellisoftware/inbound-mms",
                json={
                    "from": "447710123456",
                    "subject": "Photo",
                    "parts": [
                        {
                            "filename": "cid1.gif",
                            "content_type": "image/gif",
                            "content_base64": base64.b64encode(gif).decode(),
                        },
                    ],
                },
            ) as resp:
                mms_id = (await resp.json())["msgid"]
            adapter = IntelliSoftwareAdapter(
                AccountConfig(
                    name="isw",
                    kind="intellisoftware",
                    base_url=sandbox.url,
                    login=DEFAULT_USERNAME,
                    password=DEFAULT_PASSWORD,
                ),
                session,
            )
            await adapter.update_subscription_list(
                "Club", "0771012345", SubscriptionAction.SUBSCRIBE
            )
            pushes = await rec.wait_for(3)
            sms = next(p for p in pushes if isinstance(p, InboundSms))
            assert (sms.msgid, sms.text, sms.usercontext) == (sms_id, "Yes please", "job1:0")
            assert sms.network == "Vodafone (UK)" and sms.sent is not None
            mms = next(p for p in pushes if isinstance(p, InboundMms))
            assert (mms.msgid, mms.subject, mms.filelist) == (mms_id, "Photo", ("cid1.gif",))
            part = await adapter.retrieve_mms(mms.msgid, mms.filelist[0])  # the PHP SDK's flow
            assert part.content == gif
            event = next(p for p in pushes if isinstance(p, SubscriptionEvent))
            assert (event.sublistname, event.msisdn, event.action, event.source) == (
                "Club",
                "44771012345",
                SubscriptionAction.SUBSCRIBE,
                SubscriptionSource.API,
            )
            assert event.timestamp is not None
    finally:
        await sandbox.stop()


async def test_rejected_push_is_retried_until_accepted(
    receiver: tuple[Receiver, RunningSandbox],
) -> None:
    rec, running = receiver
    rec.secret = "rotated"  # the sandbox still uses the old key: 403 until it matches
    sandbox = await serve(
        create_sandbox(
            SandboxState(),
            forward_url=running.url + "/hooks/intellisoftware?key=hook-secret",
            push_retry_interval=0.1,
        )
    )
    try:
        gateway = sandbox_of(sandbox.app)
        gateway.receive_sms("447710123456", "hi")
        for _ in range(100):
            if len(gateway.pushes) >= 2:
                break
            await asyncio.sleep(0.02)
        assert [p.status for p in gateway.pushes[:2]] == [403, 403]
        rec.secret = "hook-secret"
        [sms] = await rec.wait_for(1)
        assert isinstance(sms, InboundSms) and sms.text == "hi"
        assert gateway.pushes[-1].status == 200
    finally:
        await sandbox.stop()


async def test_mms_parts_stored_for_retrieval() -> None:
    sandbox = await serve(create_sandbox(SandboxState()))
    try:
        gateway = sandbox_of(sandbox.app)
        msgid = gateway.receive_mms("4477", "S", [MmsContent("a.txt", "text/plain", b"A")])
        assert gateway.account.received_mms[msgid].parts[0].content == b"A"
        assert gateway.pending_pushes == 0  # no forwarding URL configured
    finally:
        await sandbox.stop()
