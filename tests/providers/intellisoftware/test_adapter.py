"""IntelliSoftware adapter: the doc's answers parsed, the adapter against real sandboxes
over real HTTP (primary + backup sharing one account), and failover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from producers.segments import ucs2_hex
from producers.status import Status
from worker.providers import provider_spec
from worker.providers.base import (
    AccountConfig,
    Balance,
    BalanceQuery,
    ErrorClass,
    HlrLookup,
    ProviderError,
    SendRequest,
    StatusPolling,
)
from worker.providers.intellisoftware import SPEC
from worker.providers.intellisoftware.adapter import (
    IntelliSoftwareAdapter,
    MmsFile,
    ResponseLine,
    match_outcomes,
    parse_send_response,
)
from worker.providers.intellisoftware.codes import (
    ERROR_CODES,
    MAX_NUMBERS_PER_REQUEST,
    SubscriptionAction,
    canonical_number,
    classify_error,
    gateway_id_of,
    message_key,
)
from worker.providers.intellisoftware.push_formats import parse_status_report
from worker.providers.intellisoftware.sandbox import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    MmsContent,
    SandboxAccount,
    create_sandbox,
    sandbox_of,
)
from worker.providers.sandbox_kit import Fault, OutcomeMix, RunningSandbox, SandboxState, serve

# --- the doc's answers, verbatim -------------------------------------------------------------

DOC_SINGLE_ID = "ID:10011000000000000001"
DOC_SINGLE_ERR = "ERR:INSUFFICIENT_CREDIT"
DOC_MULTILINE = (
    "44771012345,ID:10011000000000000001\n"
    "44771012346,ID:10011000000000000001\n"
    "44771054321,ERR:INVALID_NUMBER\n"
)
DOC_ID = "10011000000000000001"

# Every "Responses:" line of the doc (all pages), code -> the class smsq gives it.
DOC_ERROR_LINES: dict[str, ErrorClass] = {
    "ERR:LOGIN_INVALID": ErrorClass.ACCOUNT,
    "ERR:INSUFFICIENT_CREDIT": ErrorClass.ACCOUNT,
    "ERR:NO_XXXXXXXXXXX": ErrorClass.REQUEST,
    "ERR:INVALID_NUMBER": ErrorClass.RECIPIENT,
    "ERR:INVALID_REQUEST": ErrorClass.REQUEST,
    "ERR:GATEWAY_ERROR": ErrorClass.TRANSIENT,
    "ERR:INTERNAL_ERROR": ErrorClass.TRANSIENT,
    "ERR:PARAMETER_MISSING": ErrorClass.REQUEST,
    "ERR:PARAMETER_INVALID": ErrorClass.REQUEST,
    "ERR:MSGID_INVALID": ErrorClass.REQUEST,
    "ERR:NO_USERNAME": ErrorClass.ACCOUNT,
    "ERR:NO_PASSWORD": ErrorClass.ACCOUNT,
    "ERR:NO_MSGID": ErrorClass.REQUEST,
    "ERR:PPARAMETER_INVALID": ErrorClass.REQUEST,  # sic, the subscription-list page
    # README extras
    "ERR:TOO_MANY_NUMBERS": ErrorClass.REQUEST,
}

BINARY_UDH = "06050415820000"
BINARY_UD = (
    "32F40100480E01000000000000000000000000000000000000000000000000000000000001247803000000E008"
    "0120CC0640000040080120CC06C00000479E7124F0EFFADCF64448892479B6DAC6CD4448F9241DB6DACECF4448"
    "8124CDB6CD96CC44488924CDB6CD96CDE446712478E66D9EC6000000000000000000000000000000000000"
)
WAP_TEXT = "The message text"
WAP_HREF = "http://www.intellisoftware.co.uk/images/IntelliSMS.gif"


def test_single_line_id_parsed() -> None:
    assert parse_send_response(DOC_SINGLE_ID) == [ResponseLine(None, DOC_ID, None)]
    [out] = match_outcomes(["44771012345"], parse_send_response(DOC_SINGLE_ID), parts=1, cost="1")
    assert out.status is Status.SUBMITTED
    assert out.provider_message_id == message_key(DOC_ID, "44771012345")
    assert gateway_id_of(out.provider_message_id) == DOC_ID
    assert (out.parts, out.cost) == (1, "1")


def test_single_line_err_is_a_whole_request_error() -> None:
    lines = parse_send_response(DOC_SINGLE_ERR)
    assert lines == [ResponseLine(None, None, "INSUFFICIENT_CREDIT")]
    with pytest.raises(ProviderError) as exc:
        match_outcomes(["44771012345", "44771054321"], lines)
    assert exc.value.error_class is ErrorClass.ACCOUNT
    assert exc.value.raw_code == "INSUFFICIENT_CREDIT"


def test_multiline_doc_example_matched() -> None:
    requested = ["44771012345", "44771012346", "44771054321"]
    outcomes = match_outcomes(requested, parse_send_response(DOC_MULTILINE), parts=1, cost="1")
    assert [o.phone for o in outcomes] == requested
    assert [o.status for o in outcomes] == [Status.SUBMITTED, Status.SUBMITTED, Status.REJECTED]
    ids = [o.provider_message_id for o in outcomes[:2]]
    # One gateway id for the submission; smsq's ids differ per recipient.
    assert {gateway_id_of(i or "") for i in ids} == {DOC_ID}
    assert len(set(ids)) == 2
    bad = outcomes[2]
    assert (bad.raw_code, bad.error_class) == ("INVALID_NUMBER", ErrorClass.RECIPIENT)
    assert bad.provider_message_id is None


def test_multiline_normalised_and_duplicate_numbers_matched_back() -> None:
    # National, '+', '00' and a duplicate: the gateway answers in international form, once.
    requested = ["0771012345", "+44 771012346", "0044771054321", "44771012345"]
    outcomes = match_outcomes(requested, parse_send_response(DOC_MULTILINE))
    assert [o.status for o in outcomes] == [
        Status.SUBMITTED,
        Status.SUBMITTED,
        Status.REJECTED,
        Status.SUBMITTED,
    ]
    assert outcomes[0].provider_message_id == outcomes[3].provider_message_id
    assert outcomes[0].provider_message_id == message_key(DOC_ID, "44771012345")


def test_number_without_a_line_is_unknown() -> None:
    body = "44771012345,ID:1\n44771054321,ID:1"
    outcomes = match_outcomes(
        ["44771012345", "44771054321", "44779999999"], parse_send_response(body)
    )
    assert [o.status for o in outcomes] == [Status.SUBMITTED, Status.SUBMITTED, Status.UNKNOWN]
    assert outcomes[2].reason and "no line" in outcomes[2].reason
    assert outcomes[2].error_class is ErrorClass.AMBIGUOUS


def test_country_code_added_by_gateway_matched_by_suffix() -> None:
    out = match_outcomes(["771012345", "771054321"], parse_send_response(DOC_MULTILINE))
    assert [o.status for o in out] == [Status.SUBMITTED, Status.REJECTED]
    # The id is built from the gateway's form of the number (what status reports carry).
    assert out[0].provider_message_id == message_key(DOC_ID, "44771012345")


def test_single_line_invalid_number_rejects_the_recipient() -> None:
    [out] = match_outcomes(["44771012345"], parse_send_response("ERR:INVALID_NUMBER"))
    assert out.status is Status.REJECTED and out.error_class is ErrorClass.RECIPIENT


def test_per_line_account_error_with_others_sent_is_an_outcome_not_a_raise() -> None:
    body = "44771012345,ID:7\n44771054321,ERR:INSUFFICIENT_CREDIT"
    out = match_outcomes(["44771012345", "44771054321"], parse_send_response(body))
    assert out[0].status is Status.SUBMITTED
    assert out[1].status is Status.FAILED and out[1].error_class is ErrorClass.ACCOUNT


def test_every_line_a_whole_request_error_raises_the_worst() -> None:
    body = (
        "44771012345,ERR:GATEWAY_ERROR\n44771054321,ERR:INSUFFICIENT_CREDIT\n1,ERR:INVALID_NUMBER"
    )
    with pytest.raises(ProviderError) as exc:
        match_outcomes(["44771012345", "44771054321", "1"], parse_send_response(body))
    assert exc.value.error_class is ErrorClass.ACCOUNT


@pytest.mark.parametrize("body", ["", "<html>\x00garbage{", "44771012345,OK", ",ID:1", "ID:"])
def test_unparseable_answers_refused(body: str) -> None:
    with pytest.raises(ValueError):
        parse_send_response(body)


@pytest.mark.parametrize(("line", "expected"), sorted(DOC_ERROR_LINES.items()))
def test_every_documented_error_line_classified(line: str, expected: ErrorClass) -> None:
    [parsed] = parse_send_response(line)
    assert parsed.error is not None
    assert classify_error(parsed.error).error_class is expected
    if expected is not ErrorClass.RECIPIENT:
        with pytest.raises(ProviderError) as exc:
            match_outcomes(["44771012345"], [parsed])
        assert exc.value.error_class is expected
        assert exc.value.raw_code == parsed.error


def test_error_table_complete() -> None:
    table_codes = set(ERROR_CODES)
    doc_codes = {line.removeprefix("ERR:") for line in DOC_ERROR_LINES} - {"NO_XXXXXXXXXXX"}
    assert doc_codes <= table_codes
    for code, entry in ERROR_CODES.items():
        assert entry.code == code and entry.text
        assert classify_error(code.lower()) is entry  # case-insensitive
    assert classify_error("NO_SOMETHING").error_class is ErrorClass.REQUEST
    assert classify_error("BRAND_NEW").error_class is ErrorClass.REQUEST


@pytest.mark.parametrize(
    ("number", "canonical"),
    [
        ("44771012345", "44771012345"),
        ("0771012345", "44771012345"),
        ("+44 7710-12345", "44771012345"),
        ("0044771012345", "44771012345"),
        ("79001234567", "79001234567"),
    ],
)
def test_canonical_number(number: str, canonical: str) -> None:
    assert canonical_number(number) == canonical


# --- fixtures: two sandboxes sharing one account, real HTTP ----------------------------------


@dataclass
class Gateways:
    account: SandboxAccount
    primary: RunningSandbox
    backup: RunningSandbox


def account_config(base_url: str, *backups: str, **overrides: Any) -> AccountConfig:
    values: dict[str, Any] = {
        "name": "isw",
        "kind": "intellisoftware",
        "base_url": base_url,
        "login": DEFAULT_USERNAME,
        "password": DEFAULT_PASSWORD,
        "timeout": 5.0,
        "backup_urls": tuple(backups),
    }
    values.update(overrides)
    return AccountConfig(**values)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def gw() -> AsyncIterator[Gateways]:
    account = SandboxAccount(balance=100, subscription_lists=["MySubscriptionListName"])
    primary = await serve(
        create_sandbox(SandboxState(OutcomeMix(final_after=0.2, seed=1)), account=account)
    )
    backup = await serve(
        create_sandbox(SandboxState(OutcomeMix(final_after=0.2, seed=2)), account=account)
    )
    yield Gateways(account, primary, backup)
    await primary.stop()
    await backup.stop()


@pytest.fixture
def adapter(gw: Gateways, session: aiohttp.ClientSession) -> IntelliSoftwareAdapter:
    return IntelliSoftwareAdapter(account_config(gw.primary.url, gw.backup.url), session)


def sent_params(sandbox: RunningSandbox, suffix: str = "sendmsg.aspx") -> list[dict[str, str]]:
    return [e.params for e in sandbox.state.log.for_path(suffix)]


def chunk(*recipients: str, text: str = "Hello", **kw: Any) -> SendRequest:
    return SendRequest(chunk_id="job1:0", sender="smsq", text=text, recipients=recipients, **kw)


# --- the port ----------------------------------------------------------------------------------


def test_registry_exposes_the_adapter() -> None:
    spec = provider_spec("intellisoftware")
    assert spec is SPEC and spec.adapter is IntelliSoftwareAdapter
    assert spec.sandbox().create is create_sandbox
    assert spec.sandbox().account == {"login": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}
    assert IntelliSoftwareAdapter.kind == "intellisoftware"


@pytest.mark.parametrize(("batch_size", "expected"), [(0, 100), (20, 20), (100, 100), (500, 100)])
def test_max_batch(session: aiohttp.ClientSession, batch_size: int, expected: int) -> None:
    adapter = IntelliSoftwareAdapter(account_config("http://x", batch_size=batch_size), session)
    assert adapter.max_batch == expected


async def test_send_text(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    [out] = await adapter.send(chunk("447710123456"))
    assert out.status is Status.SUBMITTED and out.parts == 1 and out.cost == "1"
    [p] = sent_params(gw.primary)
    assert p["type"] == "1" and p["text"] == "Hello" and p["maxconcat"] == "1"
    assert p["from"] == "smsq" and p["usercontext"] == "job1:0" and p["to"] == "447710123456"
    entry = gw.primary.state.log.for_path("sendmsg.aspx")[0]
    assert entry.method == "POST"  # the password never goes in a URL
    msg = gw.primary.state.messages[out.provider_message_id or ""]
    assert msg.phone == "447710123456" and msg.text == "Hello"
    assert gw.account.balance == 99


async def test_send_long_text_sets_maxconcat(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    text = "x" * 200
    [out] = await adapter.send(chunk("447710123456", text=text))
    assert out.status is Status.SUBMITTED and out.parts == 2 and out.cost == "2"
    assert sent_params(gw.primary)[0]["maxconcat"] == "2"
    assert gw.account.balance == 98


async def test_text_over_maxconcat_refused(adapter: IntelliSoftwareAdapter) -> None:
    with pytest.raises(ProviderError) as exc:
        await adapter.send_text(["447710123456"], "x" * 200, maxconcat=1)
    assert exc.value.error_class is ErrorClass.REQUEST
    assert exc.value.raw_code == "INVALID_REQUEST"


async def test_unicode_chosen_automatically(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    text = "Привет, мир"
    [out] = await adapter.send(chunk("447710123456", text=text))
    assert out.status is Status.SUBMITTED and out.parts == 1
    [p] = sent_params(gw.primary)
    assert p["type"] == "2" and p["hex"] == ucs2_hex(text) and "text" not in p
    assert p["hex"].startswith("041F0440")
    assert gw.primary.state.messages[out.provider_message_id or ""].text == text


async def test_unicode_doc_example(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    await adapter.send_unicode(["44771012345", "44771054321"], "HELLO")
    assert sent_params(gw.primary)[0]["hex"] == "00480045004C004C004F"


async def test_long_unicode_is_refused_by_the_gateway(
    gw: Gateways, adapter: IntelliSoftwareAdapter
) -> None:
    # Unicode is one SMS at most (intake routes such texts elsewhere or refuses them).
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456", text="ж" * 100))
    assert exc.value.error_class is ErrorClass.REQUEST and exc.value.raw_code == "INVALID_REQUEST"


async def test_non_bmp_refused_before_sending(
    gw: Gateways, adapter: IntelliSoftwareAdapter
) -> None:
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456", text="hi \U0001f600"))
    assert exc.value.error_class is ErrorClass.REQUEST
    assert gw.primary.state.log.entries == []


async def test_binary_doc_example(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    outs = await adapter.send_binary(
        ["44771012345", "44771054321"], bytes.fromhex(BINARY_UD), udh=bytes.fromhex(BINARY_UDH)
    )
    assert [o.status for o in outs] == [Status.SUBMITTED] * 2
    [p] = sent_params(gw.primary)
    assert (p["type"], p["udh"], p["ud"]) == ("3", BINARY_UDH, BINARY_UD)
    msg = gw.primary.state.messages[outs[0].provider_message_id or ""]
    assert msg.extra["udh"] == BINARY_UDH and msg.extra["ud"] == BINARY_UD


async def test_wap_push_doc_example(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    outs = await adapter.send_wap_push(["44771012345", "44771054321"], WAP_TEXT, WAP_HREF)
    assert [o.status for o in outs] == [Status.SUBMITTED] * 2 and outs[0].cost == "1"
    [p] = sent_params(gw.primary)
    assert (p["type"], p["text"], p["href"]) == ("4", WAP_TEXT, WAP_HREF)
    assert gw.account.balance == 98


async def test_wap_push_needing_two_sms_refused(adapter: IntelliSoftwareAdapter) -> None:
    with pytest.raises(ProviderError) as exc:
        await adapter.send_wap_push(["44771012345"], "t" * 80, WAP_HREF)
    assert exc.value.raw_code == "INVALID_REQUEST"


async def test_voice_sms(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    [out] = await adapter.send_voice_sms(["44771012345"], "Your code is 1234")
    assert out.status is Status.SUBMITTED
    assert sent_params(gw.primary)[0]["type"] == "6"


async def test_mms(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    gif = b"GIF89a\x00\x01\xff\xfe" + bytes(range(256))
    files = [
        MmsFile("file1.txt", b"... contents of file1.txt ...", "text/plain"),
        MmsFile("file2.gif", gif, "image/gif"),
    ]
    outs = await adapter.send_mms(["0771012345", "44771054321"], "MMS Message Subject", files)
    assert [o.status for o in outs] == [Status.SUBMITTED] * 2
    [p] = sent_params(gw.primary, "default.aspx")
    assert p["type"] == "5" and p["text"] == "MMS Message Subject"
    assert p["username"] == DEFAULT_USERNAME and p["to"] == "0771012345,44771054321"
    msg = gw.primary.state.messages[outs[0].provider_message_id or ""]
    assert msg.phone == "44771012345"  # normalised by the gateway, matched back
    got = [(f.filename, f.content_type, f.content) for f in msg.extra["files"]]
    assert got == [(f.filename, f.content_type, f.content) for f in files]


async def test_multi_recipient_normalised_and_duplicates(
    gw: Gateways, adapter: IntelliSoftwareAdapter
) -> None:
    requested = ["447710123456", "07710123456", "00447710654321", "12", "447710999888"]
    outs = await adapter.send_text(requested, "Hi all")
    assert [o.phone for o in outs] == requested
    assert [o.status for o in outs] == [
        Status.SUBMITTED,
        Status.SUBMITTED,
        Status.SUBMITTED,
        Status.REJECTED,
        Status.SUBMITTED,
    ]
    assert outs[0].provider_message_id == outs[1].provider_message_id  # de-duplicated
    ids = {o.provider_message_id for o in outs if o.provider_message_id}
    assert len(ids) == 3 and len({gateway_id_of(i) for i in ids}) == 1
    assert outs[3].raw_code == "INVALID_NUMBER" and outs[3].error_class is ErrorClass.RECIPIENT
    assert set(gw.primary.state.messages) == ids
    assert gw.account.balance == 97  # three distinct valid numbers, one part each


async def test_too_many_numbers(gw: Gateways, session: aiohttp.ClientSession) -> None:
    small = await serve(create_sandbox(SandboxState(), max_batch=3))
    try:
        adapter = IntelliSoftwareAdapter(account_config(small.url), session)
        with pytest.raises(ProviderError) as exc:
            await adapter.send_text(
                ["44771012345", "44771012346", "44771012347", "4477101238"], "x"
            )
        assert (exc.value.error_class, exc.value.raw_code) == (
            ErrorClass.REQUEST,
            "TOO_MANY_NUMBERS",
        )
    finally:
        await small.stop()
    # More than the documented 100 is refused locally, without a request.
    adapter = IntelliSoftwareAdapter(account_config(gw.primary.url), session)
    numbers = [f"4477100{i:05d}" for i in range(MAX_NUMBERS_PER_REQUEST + 1)]
    with pytest.raises(ProviderError) as exc:
        await adapter.send_text(numbers, "x")
    assert exc.value.error_class is ErrorClass.REQUEST
    assert gw.primary.state.log.entries == []


async def test_send_edge_cases(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    assert await adapter.send(chunk()) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456", scheduled_at=later))
    assert exc.value.error_class is ErrorClass.REQUEST
    naive_later = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2)
    with pytest.raises(ProviderError):
        await adapter.send(chunk("447710123456", scheduled_at=naive_later))
    nearly_now = datetime.now(UTC) + timedelta(seconds=5)
    [out] = await adapter.send(chunk("447710123456", scheduled_at=nearly_now, validity=3600))
    assert out.status is Status.SUBMITTED


async def test_balance(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    assert await adapter.balance() == Balance(amount="100", currency="credits")  # BALANCE:100
    await adapter.send_text(["447710123456", "447710654321"], "y" * 170)
    assert await adapter.balance() == Balance(amount="96", currency="credits")


async def test_insufficient_credit(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    gw.account.balance = 2
    with pytest.raises(ProviderError) as exc:
        await adapter.send_text(["447710123456", "447710654321", "447710999888"], "Hi")
    assert (exc.value.error_class, exc.value.raw_code) == (
        ErrorClass.ACCOUNT,
        "INSUFFICIENT_CREDIT",
    )
    assert gw.account.balance == 2
    assert gw.backup.state.log.entries == []  # an ERR: answer is final


async def test_login_invalid(gw: Gateways, session: aiohttp.ClientSession) -> None:
    bad = IntelliSoftwareAdapter(
        account_config(gw.primary.url, gw.backup.url, password="wrong"), session
    )
    for call in (bad.send(chunk("447710123456")), bad.balance()):
        with pytest.raises(ProviderError) as exc:
            await call
        assert (exc.value.error_class, exc.value.raw_code) == (ErrorClass.ACCOUNT, "LOGIN_INVALID")
    assert gw.backup.state.log.entries == []


async def test_retrieve_mms(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    gif = b"GIF89a" + bytes(range(256)) * 4
    sandbox_of(gw.primary.app).receive_mms(
        "447710123456",
        "Holiday",
        [
            MmsContent("cid1.gif", "image/gif", gif),
            MmsContent("note.txt", "text/plain", b"ERR-free"),
        ],
        msgid="500110000000001",
    )
    part = await adapter.retrieve_mms("500110000000001", "cid1.gif")
    assert part.content == gif and part.content_type == "image/gif"
    part2 = await adapter.retrieve_mms("500110000000001", 2)
    assert part2.content == b"ERR-free"
    assert sent_params(gw.primary, "retrievemms.aspx")[0]["msgpart"] == "cid1.gif"
    with pytest.raises(ProviderError) as exc:
        await adapter.retrieve_mms("500110000000099", 1)
    assert (exc.value.error_class, exc.value.raw_code) == (ErrorClass.REQUEST, "MSGID_INVALID")
    with pytest.raises(ProviderError) as exc:
        await adapter.retrieve_mms("500110000000001", "missing.png")
    assert exc.value.raw_code == "PARAMETER_INVALID"


async def test_update_subscription_list(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    members = gw.account.subscription_lists["MySubscriptionListName"]
    await adapter.update_subscription_list(
        "MySubscriptionListName", "44771012345", SubscriptionAction.SUBSCRIBE
    )
    assert members == {"44771012345": SubscriptionAction.SUBSCRIBE}
    await adapter.update_subscription_list(
        "MySubscriptionListName", "0771012345", SubscriptionAction.UNSUBSCRIBE
    )
    assert members == {"44771012345": SubscriptionAction.UNSUBSCRIBE}
    await adapter.update_subscription_list(
        "MySubscriptionListName", "44771012345", SubscriptionAction.DELETE
    )
    assert members == {}
    p = sent_params(gw.primary, "updatesubscriptionlist.aspx")[0]
    assert (p["sublistname"], p["msisdn"], p["action"]) == (
        "MySubscriptionListName",
        "44771012345",
        "1",
    )
    with pytest.raises(ProviderError) as exc:
        await adapter.update_subscription_list("NoSuchList", "44771012345", SubscriptionAction(1))
    assert (exc.value.error_class, exc.value.raw_code) == (ErrorClass.REQUEST, "PARAMETER_INVALID")


async def test_status_and_hlr_not_supported(adapter: IntelliSoftwareAdapter) -> None:
    # Capabilities it lacks are protocols it does not implement: the core never asks.
    assert not isinstance(adapter, StatusPolling) and not isinstance(adapter, HlrLookup)
    assert isinstance(adapter, BalanceQuery)


async def test_forwarded_status_reports_match_the_send_ids(session: aiohttp.ClientSession) -> None:
    reports: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        reports.append(parse_status_report(dict(await request.post())))
        return web.Response(text="thanks")

    receiver_app = web.Application()
    receiver_app.router.add_post("/hooks/isw", hook)
    receiver = await serve(receiver_app)
    state = SandboxState(OutcomeMix(delivered=0.5, undeliverable=0.5, expired=0, final_after=0.1))
    sandbox = await serve(create_sandbox(state, status_report_url=receiver.url + "/hooks/isw"))
    try:
        adapter = IntelliSoftwareAdapter(account_config(sandbox.url), session)
        outs = await adapter.send_text(["447710123456", "07710654321", "447710999888"], "Hi")
        for _ in range(100):
            if len(reports) == 3:
                break
            await asyncio.sleep(0.05)
        by_id = {r.provider_message_id: r for r in reports}
        assert set(by_id) == {o.provider_message_id for o in outs}
        for out in outs:
            msg = state.messages[out.provider_message_id or ""]
            report = by_id[out.provider_message_id]
            expected = {"delivered": Status.DELIVERED, "undeliverable": Status.UNDELIVERABLE}
            assert report.status is expected[msg.outcome]
            assert report.raw_status in ("4", "6")
    finally:
        await sandbox.stop()
        await receiver.stop()


# --- failover ----------------------------------------------------------------------------------


async def test_failover_when_primary_is_down(gw: Gateways, session: aiohttp.ClientSession) -> None:
    dead_url = gw.primary.url
    await gw.primary.stop()  # the port is closed now
    adapter = IntelliSoftwareAdapter(account_config(dead_url, gw.backup.url), session)
    [out] = await adapter.send(chunk("447710123456"))
    assert out.status is Status.SUBMITTED
    assert out.provider_message_id in gw.backup.state.messages
    assert len(sent_params(gw.backup)) == 1
    assert await adapter.balance() == Balance("99", "credits")


async def test_failover_on_http_500(gw: Gateways, adapter: IntelliSoftwareAdapter) -> None:
    gw.primary.state.faults = {"sendmsg.aspx": Fault(error_rate=1.0)}
    [out] = await adapter.send(chunk("447710123456"))
    assert out.status is Status.SUBMITTED
    [primary_entry] = gw.primary.state.log.entries
    assert (primary_entry.status, primary_entry.fault) == (500, "error")
    assert len(sent_params(gw.backup)) == 1
    assert out.provider_message_id in gw.backup.state.messages


async def test_mms_failover_rebuilds_the_body(
    gw: Gateways, adapter: IntelliSoftwareAdapter
) -> None:
    gw.primary.state.faults = {"default.aspx": Fault(error_rate=1.0)}
    [out] = await adapter.send_mms(["44771012345"], "S", [MmsFile("a.txt", b"abc", "text/plain")])
    assert out.status is Status.SUBMITTED
    msg = gw.backup.state.messages[out.provider_message_id or ""]
    assert msg.extra["files"][0].content == b"abc"


@pytest.mark.parametrize("code", ["LOGIN_INVALID", "GATEWAY_ERROR", "INTERNAL_ERROR"])
async def test_err_answer_is_never_failed_over(
    gw: Gateways, adapter: IntelliSoftwareAdapter, code: str
) -> None:
    sandbox_of(gw.primary.app).forced_error = code
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456"))
    assert exc.value.raw_code == code
    assert exc.value.error_class is classify_error(code).error_class
    assert len(gw.primary.state.log.entries) == 1
    assert gw.backup.state.log.entries == []


@pytest.mark.parametrize("fault", [Fault(timeout_rate=1.0), Fault(drop_rate=1.0)])
async def test_send_not_failed_over_after_the_request_left(
    gw: Gateways, session: aiohttp.ClientSession, fault: Fault
) -> None:
    adapter = IntelliSoftwareAdapter(
        account_config(gw.primary.url, gw.backup.url, timeout=0.5), session
    )
    gw.primary.state.faults = {"sendmsg.aspx": fault}
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456"))
    assert exc.value.error_class is ErrorClass.AMBIGUOUS
    assert gw.backup.state.log.entries == []


async def test_malformed_send_answer_is_ambiguous(
    gw: Gateways, adapter: IntelliSoftwareAdapter
) -> None:
    gw.primary.state.faults = {"sendmsg.aspx": Fault(malformed_rate=1.0)}
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456"))
    assert exc.value.error_class is ErrorClass.AMBIGUOUS
    assert gw.backup.state.log.entries == []


async def test_idempotent_calls_fail_over_after_a_timeout(
    gw: Gateways, session: aiohttp.ClientSession
) -> None:
    adapter = IntelliSoftwareAdapter(
        account_config(gw.primary.url, gw.backup.url, timeout=0.5), session
    )
    gw.primary.state.faults = {"*": Fault(timeout_rate=1.0)}
    assert await adapter.balance() == Balance("100", "credits")
    await adapter.update_subscription_list(
        "MySubscriptionListName", "44771012345", SubscriptionAction(1)
    )
    assert len(gw.backup.state.log.entries) == 2


async def test_all_gateways_down_is_transient(gw: Gateways, session: aiohttp.ClientSession) -> None:
    urls = (gw.primary.url, gw.backup.url)
    await gw.primary.stop()
    await gw.backup.stop()
    adapter = IntelliSoftwareAdapter(account_config(*urls), session)
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456"))
    assert exc.value.error_class is ErrorClass.TRANSIENT


async def test_500_then_backup_down_is_transient(
    gw: Gateways, session: aiohttp.ClientSession
) -> None:
    """HttpClient says a 5xx means the gateway did not take the request: retry later."""
    gw.primary.state.faults = {"sendmsg.aspx": Fault(error_rate=1.0)}
    backup_url = gw.backup.url
    await gw.backup.stop()
    adapter = IntelliSoftwareAdapter(account_config(gw.primary.url, backup_url), session)
    with pytest.raises(ProviderError) as exc:
        await adapter.send(chunk("447710123456"))
    assert exc.value.error_class is ErrorClass.TRANSIENT
    assert exc.value.raw_code is None  # the last failure was the backup's connect error
    assert len(gw.primary.state.log.entries) == 1


@pytest.mark.parametrize(
    ("error", "fails_over"),
    [
        (ProviderError(ErrorClass.TRANSIENT, "cannot connect: ClientConnectorError"), True),
        (ProviderError(ErrorClass.TRANSIENT, "HTTP 503", raw_code="503"), True),
        # A proxy's 502 on a send may follow an accepted request: the backup could send twice.
        (ProviderError(ErrorClass.AMBIGUOUS, "HTTP 502", raw_code="502"), False),
        (ProviderError(ErrorClass.AMBIGUOUS, "transport failure after sending: X"), False),
        (ProviderError(ErrorClass.THROTTLED, "HTTP 429", raw_code="429"), False),
        (ProviderError(ErrorClass.REQUEST, "HTTP 404", raw_code="404"), False),
        (ProviderError(ErrorClass.ACCOUNT, "bad login", raw_code="LOGIN_INVALID"), False),
    ],
)
def test_failover_rule(error: ProviderError, fails_over: bool) -> None:
    assert IntelliSoftwareAdapter._may_fail_over(error) is fails_over
