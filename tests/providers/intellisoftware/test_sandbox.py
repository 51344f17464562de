"""The IntelliSoftware sandbox over raw HTTP: the doc's example requests verbatim, its
answer formats, validation, credits, statuses over time, pushes, primary + backup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from worker.devtools.sandboxes import start_sandboxes
from worker.providers.intellisoftware import SPEC
from worker.providers.intellisoftware.codes import message_key
from worker.providers.intellisoftware.sandbox import (
    MmsContent,
    SandboxAccount,
    create_sandbox,
    sandbox_of,
)
from worker.providers.sandbox_kit import Fault, OutcomeMix, RunningSandbox, SandboxState, serve

SANDBOX_ACCOUNT = SPEC.sandbox().account
DOC_HOST = "http://www.intellisoftware.co.uk"
SANDBOX_ACCOUNT_FORM = {
    "username": SANDBOX_ACCOUNT["login"],
    "password": SANDBOX_ACCOUNT["password"],
}

# The doc's example requests, verbatim.
DOC_SEND = (
    "http://www.intellisoftware.co.uk/smsgateway/sendmsg.aspx?username=MyUsername"
    "&password=MyPassword&to=44771012345,44771054321&text=The+Message"
)
DOC_UNICODE = (
    "http://www.intellisoftware.co.uk/smsgateway/sendmsg.aspx?username=MyUsername"
    "&password=MyPassword&to=44771012345,44771054321&type=2&hex=00480045004C004C004F"
)
DOC_BINARY = (
    "http://www.intellisoftware.co.uk/smsgateway/sendmsg.aspx?username=MyUsername"
    "&password=MyPassword&to=44771012345,44771054321&type=3&udh=06050415820000"
    "&ud=32F40100480E01000000000000000000000000000000000000000000000000000000000001247803000000"
    "E0080120CC0640000040080120CC06C00000479E7124F0EFFADCF64448892479B6DAC6CD4448F9241DB6DACECF"
    "44488124CDB6CD96CC44488924CDB6CD96CDE446712478E66D9EC6000000000000000000000000000000000000"
)
DOC_WAP = (
    "http://www.intellisoftware.co.uk/smsgateway/sendmsg.aspx?username=MyUsername"
    "&password=MyPassword&to=44771012345,44771054321&type=4&text=The+message+text"
    "&href=http://www.intellisoftware.co.uk/images/IntelliSMS.gif"
)
DOC_BALANCE = (
    "http://www.intellisoftware.co.uk/smsgateway/getbalance.aspx?username=MyUsername"
    "&password=MyPassword"
)
DOC_RETRIEVE = (
    "http://www.intellisoftware.co.uk/smsgateway/retrievemms.aspx?username=MyUsername"
    "&password=MyPassword&msgid=500110000000001&msgpart=cid1.gif"
)
DOC_SUBSCRIPTION = (
    "http://www.intellisoftware.co.uk/smsgateway/updatesubscriptionlist.aspx?username=MyUsername"
    "&password=MyPassword&sublistname=MySubscriptionListName&msisdn=44771012345&action=1"
)

# The doc's MMS multipart example, with a `name` added to the file parts: the doc's parts
# carry only a filename, which RFC 7578 forbids and aiohttp's form parser refuses.
DOC_MMS_BODY = (
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="username"\r\nContent-Type: text/plain\r\n\r\n'
    "MyUsername\r\n"
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="password"\r\nContent-Type: text/plain\r\n\r\n'
    "MyPassword\r\n"
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="to"\r\nContent-Type: text/plain\r\n\r\n'
    "0771012345\r\n"
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="from"\r\nContent-Type: text/plain\r\n\r\n'
    "0771054321\r\n"
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="type"\r\nContent-Type: text/plain\r\n\r\n'
    "5\r\n"
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="text"\r\nContent-Type: text/plain\r\n\r\n'
    "MMS Message Subject\r\n"
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="file1"; filename="file1.txt"\r\n'
    "Content-Type: text/plain\r\n\r\n"
    "... contents of file1.txt ...\r\n"
    "--AaB03x\r\n"
    'Content-Disposition: form-data; name="file2"; filename="file2.gif"\r\n'
    "Content-Type: image/gif\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    "...contents of file2.gif...\r\n"
    "--AaB03x--\r\n"
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def gateway() -> AsyncIterator[RunningSandbox]:
    app = create_sandbox(
        SandboxState(OutcomeMix(final_after=0.2, seed=3)),
        username="MyUsername",
        password="MyPassword",
        subscription_lists=["MySubscriptionListName"],
    )
    running = await serve(app)
    yield running
    await running.stop()


def doc_url(sandbox: RunningSandbox, example: str) -> str:
    assert example.startswith(DOC_HOST)
    return sandbox.url + example[len(DOC_HOST) :]


async def get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()


async def call(
    session: aiohttp.ClientSession,
    sandbox: RunningSandbox,
    path: str = "sendmsg.aspx",
    *,
    method: str = "POST",
    auth: bool = True,
    form: dict[str, str] | None = None,
    **fields: str,
) -> str:
    data = {"username": "MyUsername", "password": "MyPassword"} if auth else {}
    data.update(form or {})
    data.update(fields)
    url = f"{sandbox.url}/smsgateway/{path}"
    if method == "GET":
        async with session.get(url, params=data) as resp:
            return await resp.text()
    async with session.post(url, data=data) as resp:
        return await resp.text()


def balance(sandbox: RunningSandbox) -> int:
    return sandbox_of(sandbox.app).account.balance


# --- the doc's examples ----------------------------------------------------------------------


@pytest.mark.parametrize("example", [DOC_SEND, DOC_UNICODE, DOC_BINARY, DOC_WAP])
async def test_doc_send_examples(
    gateway: RunningSandbox, session: aiohttp.ClientSession, example: str
) -> None:
    body = await get(session, doc_url(gateway, example))
    lines = body.splitlines()
    assert len(lines) == 2
    first, second = (line.split(",", 1) for line in lines)
    assert [first[0], second[0]] == ["44771012345", "44771054321"]
    assert first[1] == second[1] == "ID:10011000000000000001"  # one id per submission
    assert balance(gateway) == 98
    keys = {message_key("10011000000000000001", n) for n in ("44771012345", "44771054321")}
    assert set(gateway.state.messages) == keys


async def test_doc_example_message_contents(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    for example in (DOC_SEND, DOC_UNICODE, DOC_WAP):
        await get(session, doc_url(gateway, example))
    texts = sorted({m.text for m in gateway.state.messages.values()})
    assert texts == ["HELLO", "The Message", "The message text"]
    wap = next(m for m in gateway.state.messages.values() if m.extra["type"] == 4)
    assert wap.extra["href"] == "http://www.intellisoftware.co.uk/images/IntelliSMS.gif"


async def test_doc_balance(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    assert await get(session, doc_url(gateway, DOC_BALANCE)) == "BALANCE:100"


async def test_doc_retrievemms(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    url = doc_url(gateway, DOC_RETRIEVE)
    assert await get(session, url) == "ERR:MSGID_INVALID"
    gif = b"GIF89a\x00\xff" + bytes(range(256))
    sandbox_of(gateway.app).receive_mms(
        "447710123456",
        "Hi",
        [MmsContent("cid1.gif", "image/gif", gif), MmsContent("t.txt", "text/plain", b"T")],
        msgid="500110000000001",
    )
    async with session.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "image/gif"
        assert await resp.read() == gif
    assert (
        await call(session, gateway, "retrievemms.aspx", msgid="500110000000001", msgpart="2")
        == "T"
    )
    entry = gateway.state.log.for_path("retrievemms.aspx")[-1]
    assert entry.status == 200 and entry.params["msgpart"] == "2"


async def test_doc_updatesubscriptionlist(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    assert await get(session, doc_url(gateway, DOC_SUBSCRIPTION)) == "OK"
    members = sandbox_of(gateway.app).account.subscription_lists["MySubscriptionListName"]
    assert members == {"44771012345": 1}


async def test_doc_mms_example(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    async with session.post(
        gateway.url + "/smsgateway/default.aspx",
        data=DOC_MMS_BODY.encode(),
        headers={"Content-Type": "multipart/form-data; boundary=AaB03x"},
    ) as resp:
        body = await resp.text()
    assert body == "ID:10011000000000000001"  # one recipient: a single line
    [msg] = gateway.state.messages.values()
    assert msg.phone == "44771012345" and msg.sender == "0771054321"
    assert msg.text == "MMS Message Subject" and msg.extra["type"] == 5
    assert [(f.filename, f.content_type, f.content) for f in msg.extra["files"]] == [
        ("file1.txt", "text/plain", b"... contents of file1.txt ..."),
        ("file2.gif", "image/gif", b"...contents of file2.gif..."),
    ]
    assert balance(gateway) == 99


# --- answers and validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["sendmsg.aspx", "default.aspx", "getbalance.aspx", "retrievemms.aspx",
             "updatesubscriptionlist.aspx"],
)  # fmt: skip
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_auth_errors(
    gateway: RunningSandbox, session: aiohttp.ClientSession, path: str, method: str
) -> None:
    assert await call(session, gateway, path, method=method, auth=False) == "ERR:NO_USERNAME"
    assert (
        await call(session, gateway, path, method=method, auth=False, username="MyUsername")
        == "ERR:NO_PASSWORD"
    )
    assert (
        await call(
            session, gateway, path, method=method, auth=False, username="MyUsername", password="x"
        )
        == "ERR:LOGIN_INVALID"
    )


async def test_get_and_post_alike(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    a = await call(session, gateway, method="GET", to="44771012345", text="hi")
    b = await call(session, gateway, method="POST", to="44771012345", text="hi")
    assert (a, b) == ("ID:10011000000000000001", "ID:10011000000000000002")
    assert [e.method for e in gateway.state.log.entries] == ["GET", "POST"]


async def test_normalised_and_deduplicated(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    body = await call(
        session,
        gateway,
        to="0771012345,44771012345,+44 771054321,0044771099999,12,abc,12",
        text="hi",
    )
    assert body.split("\r\n") == [
        "44771012345,ID:10011000000000000001",
        "44771054321,ID:10011000000000000001",
        "44771099999,ID:10011000000000000001",
        "12,ERR:INVALID_NUMBER",
        "abc,ERR:INVALID_NUMBER",
    ]
    assert balance(gateway) == 97


async def test_invalid_numbers_only(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    assert await call(session, gateway, to="12", text="hi") == "ERR:INVALID_NUMBER"
    assert await call(session, gateway, to="12,34", text="hi") == (
        "12,ERR:INVALID_NUMBER\r\n34,ERR:INVALID_NUMBER"
    )
    assert balance(gateway) == 100 and gateway.state.messages == {}


@pytest.mark.parametrize(
    ("fields", "answer"),
    [
        ({"text": "hi"}, "ERR:NO_RECIPIENTS"),
        ({"to": " , ", "text": "hi"}, "ERR:NO_RECIPIENTS"),
        ({"to": "44771012345"}, "ERR:NO_TEXT"),
        ({"to": "44771012345", "text": "hi", "type": "5"}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "text": "hi", "type": "9"}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "text": "hi", "type": "x"}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "text": "x" * 161}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "text": "x" * 307, "maxconcat": "2"}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "text": "€" * 81}, "ERR:INVALID_REQUEST"),  # 162 septets
        ({"to": "44771012345", "text": "hi", "maxconcat": "0"}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "text": "hi", "maxconcat": "two"}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "type": "2"}, "ERR:PARAMETER_MISSING"),
        ({"to": "44771012345", "type": "2", "hex": "0048004"}, "ERR:PARAMETER_INVALID"),
        ({"to": "44771012345", "type": "2", "hex": "00GG"}, "ERR:PARAMETER_INVALID"),
        ({"to": "44771012345", "type": "2", "hex": "D83DDE00"}, "ERR:PARAMETER_INVALID"),
        ({"to": "44771012345", "type": "2", "hex": "0436" * 71}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "type": "3"}, "ERR:PARAMETER_MISSING"),
        ({"to": "44771012345", "type": "3", "ud": "ABC"}, "ERR:PARAMETER_INVALID"),
        ({"to": "44771012345", "type": "3", "ud": "00", "udh": "ZZ"}, "ERR:PARAMETER_INVALID"),
        ({"to": "44771012345", "type": "3", "ud": "00" * 141}, "ERR:PARAMETER_INVALID"),
        ({"to": "44771012345", "type": "3", "ud": "00" * 134, "udh": "06050415820000"},
         "ERR:PARAMETER_INVALID"),
        ({"to": "44771012345", "type": "4", "text": "t"}, "ERR:PARAMETER_MISSING"),
        ({"to": "44771012345", "type": "4", "href": "http://www.x.uk"}, "ERR:NO_TEXT"),
        ({"to": "44771012345", "type": "4", "text": "t", "href": "ftp://x"}, "ERR:INVALID_REQUEST"),
        ({"to": "44771012345", "type": "4", "text": "t" * 100, "href": "http://www.x.co.uk/"},
         "ERR:INVALID_REQUEST"),
    ],
)  # fmt: skip
async def test_send_validation(
    gateway: RunningSandbox, session: aiohttp.ClientSession, fields: dict[str, str], answer: str
) -> None:
    assert await call(session, gateway, form=fields) == answer
    assert balance(gateway) == 100


@pytest.mark.parametrize(
    ("fields", "credits"),
    [
        ({"text": "x" * 160}, 1),
        ({"text": "x" * 161, "maxconcat": "2"}, 2),
        ({"text": "€" * 80}, 1),
        ({"text": "x" * 459, "maxconcat": "3"}, 3),
        ({"type": "2", "hex": "0436" * 70}, 1),
        ({"type": "3", "ud": "00" * 140}, 1),
        ({"type": "4", "text": "t" * 60, "href": "https://www.intellisoftware.co.uk/"}, 1),
        ({"type": "6", "text": "x" * 300}, 1),
    ],
)
async def test_credits_per_part(
    gateway: RunningSandbox, session: aiohttp.ClientSession, fields: dict[str, str], credits: int
) -> None:
    body = await call(session, gateway, to="44771012345,44771054321", form=fields)
    assert "ERR" not in body
    assert balance(gateway) == 100 - 2 * credits
    assert {m.parts for m in gateway.state.messages.values()} == {credits}


async def test_unicode_is_one_sms_whatever_maxconcat_says(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    # The doc: hex is "140 octets max, 70 unicode characters", no maxconcat for type=2.
    form = {"type": "2", "hex": "0436" * 71, "maxconcat": "2"}  # the PHP SDK's way
    body = await call(session, gateway, to="44771012345", form=form)
    assert body == "ERR:INVALID_REQUEST"
    assert balance(gateway) == 100


async def test_insufficient_credit(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    sandbox_of(gateway.app).account.balance = 3
    body = await call(session, gateway, to="44771012345,44771054321", text="x" * 200, maxconcat="2")
    assert body == "ERR:INSUFFICIENT_CREDIT"  # the whole submission fails: one line
    assert balance(gateway) == 3
    assert await call(session, gateway, to="44771012345,44771054321,12", text="x") != (
        "ERR:INSUFFICIENT_CREDIT"
    )
    assert balance(gateway) == 1
    assert await call(session, gateway, to="44771012345", text="x") == "ID:10011000000000000002"
    assert balance(gateway) == 0
    assert await call(session, gateway, to="44771012345", text="x") == "ERR:INSUFFICIENT_CREDIT"
    assert await call(session, gateway, "getbalance.aspx") == "BALANCE:0"


async def test_too_many_numbers(session: aiohttp.ClientSession) -> None:
    running = await serve(create_sandbox(SandboxState(), username="u", password="p", max_batch=2))
    try:
        url = running.url + "/smsgateway/sendmsg.aspx"
        data = {
            "username": "u",
            "password": "p",
            "to": "44771012345,44771012346,44771012347",
            "text": "x",
        }
        async with session.post(url, data=data) as resp:
            assert await resp.text() == "ERR:TOO_MANY_NUMBERS"
    finally:
        await running.stop()
    assert sandbox_of(create_sandbox(SandboxState())).max_batch == 100


async def test_usercontext_kept(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    await call(
        session,
        gateway,
        to="44771012345",
        text="Reply YES",
        usercontext="job7:3",
        form={"from": "Shop"},
    )
    [msg] = gateway.state.messages.values()
    assert msg.extra["usercontext"] == "job7:3" and msg.sender == "Shop"


@pytest.mark.parametrize(
    ("fields", "answer"),
    [
        ({"to": "44771012345", "type": "5", "text": "S"}, "ERR:INVALID_REQUEST"),  # no files
        ({"to": "44771012345", "type": "1", "text": "S"}, "ERR:INVALID_REQUEST"),
        ({"type": "5", "text": "S"}, "ERR:NO_RECIPIENTS"),
    ],
)
async def test_mms_validation(
    gateway: RunningSandbox, session: aiohttp.ClientSession, fields: dict[str, str], answer: str
) -> None:
    assert await call(session, gateway, "default.aspx", form=fields) == answer


async def test_mms_alphanumeric_sender_refused(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    for k, v in {"username": "MyUsername", "password": "MyPassword", "to": "44771012345",
                 "type": "5", "text": "S", "from": "Shop"}.items():  # fmt: skip
        form.add_field(k, v)
    form.add_field("file1", b"x", filename="a.txt", content_type="text/plain")
    async with session.post(gateway.url + "/smsgateway/default.aspx", data=form) as resp:
        assert await resp.text() == "ERR:INVALID_REQUEST"


@pytest.mark.parametrize(
    ("fields", "answer"),
    [
        ({}, "ERR:NO_MSGID"),
        ({"msgid": "500110000000001"}, "ERR:PARAMETER_MISSING"),
        ({"msgid": "1", "msgpart": "1"}, "ERR:MSGID_INVALID"),
        ({"msgid": "500110000000001", "msgpart": "3"}, "ERR:PARAMETER_INVALID"),
        ({"msgid": "500110000000001", "msgpart": "0"}, "ERR:PARAMETER_INVALID"),
        ({"msgid": "500110000000001", "msgpart": "x.gif"}, "ERR:PARAMETER_INVALID"),
    ],
)
async def test_retrievemms_errors(
    gateway: RunningSandbox, session: aiohttp.ClientSession, fields: dict[str, str], answer: str
) -> None:
    sandbox_of(gateway.app).receive_mms(
        "4477", "S", [MmsContent("a.txt", "text/plain", b"A")], msgid="500110000000001"
    )
    assert await call(session, gateway, "retrievemms.aspx", form=fields) == answer


@pytest.mark.parametrize(
    ("fields", "answer"),
    [
        ({"msisdn": "44771012345", "action": "1"}, "ERR:PARAMETER_MISSING"),
        ({"sublistname": "MySubscriptionListName", "action": "1"}, "ERR:PARAMETER_MISSING"),
        ({"sublistname": "MySubscriptionListName", "msisdn": "44771012345"}, "ERR:PARAMETER_MISSING"),
        ({"sublistname": "Other", "msisdn": "44771012345", "action": "1"}, "ERR:PARAMETER_INVALID"),
        ({"sublistname": "MySubscriptionListName", "msisdn": "44771012345", "action": "4"},
         "ERR:PARAMETER_INVALID"),
        ({"sublistname": "MySubscriptionListName", "msisdn": "12", "action": "1"},
         "ERR:INVALID_REQUEST"),
    ],
)  # fmt: skip
async def test_subscription_errors(
    gateway: RunningSandbox, session: aiohttp.ClientSession, fields: dict[str, str], answer: str
) -> None:
    assert await call(session, gateway, "updatesubscriptionlist.aspx", form=fields) == answer


async def test_subscription_actions(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    members = sandbox_of(gateway.app).account.subscription_lists["MySubscriptionListName"]
    for action, expected in [("1", {"44771012345": 1}), ("2", {"44771012345": 2}), ("3", {})]:
        body = await call(
            session,
            gateway,
            "updatesubscriptionlist.aspx",
            sublistname="MySubscriptionListName",
            msisdn="0771012345",
            action=action,
        )
        assert body == "OK" and members == expected


async def test_forced_error(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    sandbox_of(gateway.app).forced_error = "GATEWAY_ERROR"
    assert await call(session, gateway, to="44771012345", text="x") == "ERR:GATEWAY_ERROR"
    assert await call(session, gateway, "getbalance.aspx") == "ERR:GATEWAY_ERROR"
    assert await call(session, gateway, "getbalance.aspx", auth=False) == "ERR:NO_USERNAME"


# --- statuses over time and status reports ---------------------------------------------------------


async def test_statuses_advance(gateway: RunningSandbox, session: aiohttp.ClientSession) -> None:
    await call(session, gateway, to="44771012345,44771054321", text="x")
    msgs = list(gateway.state.messages.values())
    assert {m.state() for m in msgs} == {"pending"}
    await asyncio.sleep(0.3)
    assert all(m.state() in ("delivered", "undeliverable", "expired") for m in msgs)


class Hook:
    """A status-report endpoint: answers 500 to the first ``failures`` posts."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/dr", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500)
        self.received.append({k: str(v) for k, v in (await request.post()).items()})
        return web.Response(text="ignored content")


async def _wait(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.parametrize(
    ("kind", "mix", "expected"),
    [
        ("1", OutcomeMix(1, 0, 0, final_after=0.1), "4"),
        ("1", OutcomeMix(0, 1, 0, final_after=0.1), "6"),
        ("1", OutcomeMix(0, 0, 1, final_after=0.1), "8"),
        ("6", OutcomeMix(1, 0, 0, final_after=0.1), "11"),
        ("6", OutcomeMix(0, 1, 0, final_after=0.1), "12"),
    ],
)
async def test_status_reports_pushed(
    session: aiohttp.ClientSession, kind: str, mix: OutcomeMix, expected: str
) -> None:
    hook = Hook(failures=1)
    receiver = await serve(hook.app)
    app = create_sandbox(
        SandboxState(mix), status_report_url=receiver.url + "/dr", push_retry_interval=0.05
    )
    running = await serve(app)
    try:
        data = {**SANDBOX_ACCOUNT_FORM, "to": "44771012345,0771054321", "text": "x", "type": kind}
        async with session.post(running.url + "/smsgateway/sendmsg.aspx", data=data) as resp:
            gateway_id = (await resp.text()).splitlines()[0].split("ID:")[1]
        assert sandbox_of(app).pending_pushes == 2
        await _wait(lambda: len(hook.received) == 2)
        assert sorted(hook.received, key=lambda r: r["toaddr"]) == [
            {"msgid": gateway_id, "status": expected, "toaddr": "44771012345"},
            {"msgid": gateway_id, "status": expected, "toaddr": "44771054321"},
        ]
        # The sandbox logs a push once its answer is back, just after the hook saw it.
        await _wait(lambda: [p.status for p in sandbox_of(app).pushes].count(200) == 2)
        statuses = [p.status for p in sandbox_of(app).pushes]
        assert statuses.count(500) == 1 and statuses.count(200) == 2  # retried after the 500
        for m in running.state.messages.values():
            assert m.state() != "pending"
    finally:
        await running.stop()
        await receiver.stop()


# --- primary and backup, faults, registry -----------------------------------------------------------


async def test_primary_and_backup_share_the_account(session: aiohttp.ClientSession) -> None:
    account = SandboxAccount("MyUsername", "MyPassword", balance=10)
    primary = await serve(create_sandbox(SandboxState(), account=account))
    backup = await serve(create_sandbox(SandboxState(), account=account))
    try:
        assert primary.url != backup.url
        a = await call(session, primary, to="44771012345", text="x")
        b = await call(session, backup, to="44771012345", text="x")
        assert (a, b) == ("ID:10011000000000000001", "ID:10011000000000000002")
        assert account.balance == 8
        assert await call(session, backup, "getbalance.aspx") == "BALANCE:8"
        assert len(primary.state.log.entries) == 1 and len(backup.state.log.entries) == 2
        assert len(primary.state.messages) == len(backup.state.messages) == 1
    finally:
        await primary.stop()
        await backup.stop()


async def test_kit_faults_apply_per_endpoint(
    gateway: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    async with session.put(
        gateway.url + "/__sandbox/faults", json={"sendmsg.aspx": {"error_rate": 1.0}}
    ) as resp:
        assert resp.status == 200
    async with session.post(
        gateway.url + "/smsgateway/sendmsg.aspx",
        data={"username": "MyUsername", "password": "MyPassword", "to": "44771012345", "text": "x"},
    ) as resp:
        assert resp.status == 500
    assert await call(session, gateway, "getbalance.aspx") == "BALANCE:100"
    assert [e.fault for e in gateway.state.log.entries] == ["error", None]
    assert balance(gateway) == 100 and gateway.state.messages == {}
    gateway.state.faults = {"*": Fault(malformed_rate=1.0)}
    assert "garbage" in await call(session, gateway, "getbalance.aspx")


async def test_starts_from_the_registry() -> None:
    running = await start_sandboxes(
        ["intellisoftware"],
        options={"intellisoftware": {"balance": "5e0", "subscription_lists": "A, B"}},
    )
    sandbox = running["intellisoftware"]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                sandbox.url + "/smsgateway/getbalance.aspx", data=SANDBOX_ACCOUNT_FORM
            ) as resp,
        ):
            assert await resp.text() == "BALANCE:5"
    finally:
        await sandbox.stop()
