"""SMSC adapter: the docs' examples, the code tables, and the adapter against the sandbox
over real HTTP (send, status, HLR, history, incoming, balance, caps, failover)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from producers.status import Status
from worker.providers import failover
from worker.providers.base import AccountConfig, ErrorClass, ProviderError, SendRequest
from worker.providers.sandbox_kit import (
    Fault,
    OutcomeMix,
    RunningSandbox,
    SandboxState,
    request_params,
    serve,
)
from worker.providers.smsc import SPEC, codes
from worker.providers.smsc.adapter import (
    DEFAULT_BACKUP_URLS,
    DEFAULT_BATCH,
    FAILBACK_AFTER,
    MAX_BATCH,
    PhoneResult,
    SmscAdapter,
    expected_message_ids,
    hlr_from_status,
    make_message_id,
    schedule_param,
    split_message_id,
    validity_param,
)
from worker.providers.smsc.sandbox import SmscCaps, create_sandbox, sandbox_of

PHONE_RU = "79161234567"
PHONE_UK = "447400123123"


def account(url: str, **kw: Any) -> AccountConfig:
    base: dict[str, Any] = {
        "name": "smsc-test",
        "kind": "smsc",
        "base_url": url,
        "login": "testuser",
        "password": "testpass",
        "timeout": 5.0,
    }
    base.update(kw)
    return AccountConfig(**base)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def mix() -> OutcomeMix:
    return OutcomeMix(delivered=1.0, undeliverable=0.0, expired=0.0, final_after=0.3, seed=3)


@pytest.fixture
async def sandbox(mix: OutcomeMix) -> AsyncIterator[RunningSandbox]:
    running = await serve(
        create_sandbox(SandboxState(mix), caps=False, blocked_phones=["79990000013"])
    )
    yield running
    await running.stop()


@pytest.fixture
def adapter(sandbox: RunningSandbox, session: aiohttp.ClientSession) -> SmscAdapter:
    return SmscAdapter(account(sandbox.url), session)


def chunk(recipients: list[str], text: str = "Hello", **kw: Any) -> SendRequest:
    return SendRequest(chunk_id="chunk-1", sender="MyShop", text=text, recipients=recipients, **kw)


# --------------------------------------------------------------------------- registry / ids


def test_registry_exports() -> None:
    from worker.providers import provider_spec

    spec = provider_spec("smsc")
    assert spec is SPEC and spec.adapter is SmscAdapter and SmscAdapter.kind == "smsc"
    assert callable(spec.sandbox().create)
    assert spec.sandbox().account["login"] == "testuser"


def test_message_id_round_trip() -> None:
    assert make_message_id(14, "+79161234567") == "14:79161234567"
    assert split_message_id("14:79161234567") == ("14", "79161234567")
    for bad in ("14", ":79161234567", "14:", "1:2:3"):
        with pytest.raises(ValueError):
            split_message_id(bad)


def test_schedule_and_validity_params() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert schedule_param(at) == f"0{int(at.timestamp())}"
    with pytest.raises(ValueError):
        schedule_param(datetime(2030, 1, 1))
    assert validity_param(3600) == "01:00"
    assert validity_param(90) == "00:02"  # rounded up to a minute
    assert validity_param(1) == "00:01"
    assert validity_param(10 * 86400) == "24:00"  # SMSC's maximum


def test_max_batch(session: aiohttp.ClientSession) -> None:
    assert SmscAdapter(account("http://x"), session).max_batch == DEFAULT_BATCH
    assert SmscAdapter(account("http://x", batch_size=10), session).max_batch == 10
    assert SmscAdapter(account("http://x", batch_size=10**6), session).max_batch == MAX_BATCH


def test_default_backup_hosts(session: aiohttp.ClientSession) -> None:
    real = SmscAdapter(account("https://smsc.ru"), session)
    assert real.hosts == ("https://smsc.ru", *DEFAULT_BACKUP_URLS)
    assert DEFAULT_BACKUP_URLS[0] == "https://www2.smsc.ru" and len(DEFAULT_BACKUP_URLS) == 4
    assert SmscAdapter(account("https://smsc.ru/sys/"), session).hosts[0] == "https://smsc.ru"
    centre = SmscAdapter(account("https://smscentre.com"), session)
    assert centre.hosts[1] == "https://www2.smscentre.com"
    local = SmscAdapter(account("http://127.0.0.1:1"), session)
    assert local.hosts == ("http://127.0.0.1:1",)
    custom = SmscAdapter(account("https://smsc.ru", backup_urls=("https://b.example",)), session)
    assert custom.hosts == ("https://smsc.ru", "https://b.example")


# --------------------------------------------------------------------------- code tables


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (-3, Status.UNKNOWN),
        (-2, Status.REJECTED),
        (-1, Status.SUBMITTED),
        (0, Status.SUBMITTED),
        (1, Status.DELIVERED),
        (2, Status.DELIVERED),
        (3, Status.EXPIRED),
        (4, Status.DELIVERED),
        (20, Status.UNDELIVERABLE),
        (22, Status.REJECTED),
        (23, Status.REJECTED),
        (24, Status.FAILED),
        (25, Status.UNDELIVERABLE),
    ],
)
def test_status_table(code: int, status: Status) -> None:
    row = codes.status_code(code)
    assert row.code == code and row.status is status and row.text
    assert codes.map_status(str(code)) is status


def test_status_table_is_complete_and_unknowns_are_not_final() -> None:
    assert set(codes.STATUS_CODES) == {-3, -2, -1, 0, 1, 2, 3, 4, 20, 22, 23, 24, 25}
    assert codes.status_code(99).status is Status.UNKNOWN
    assert codes.status_code("x").status is Status.UNKNOWN


@pytest.mark.parametrize(
    ("code", "text", "permanent"),
    [
        (1, "subscriber does not exist", True),
        (6, "subscriber offline", False),
        (11, "no SMS service", True),
        (13, "subscriber blocked", True),
        (200, "virtual (test) sending", False),
        (219, "SIM card replaced", False),
        (220, "operator queue overflow", False),
        (242, "answering machine detected", False),
        (246, "time restriction", False),
        (247, "message limit exceeded", False),
        (248, "no route", True),
        (249, "bad number format", True),
        (253, "rejected by spam filter", True),
        (254, "unregistered sender id", True),
        (255, "rejected by operator", True),
    ],
)
def test_delivery_error_table(code: int, text: str, permanent: bool) -> None:
    row = codes.delivery_error(code)
    assert row is not None and row.text == text and row.permanent is permanent
    assert codes.delivery_error(str(code)) == row


def test_delivery_error_edges() -> None:
    assert codes.delivery_error(0) is None and codes.delivery_error(None) is None
    assert codes.delivery_error("") is None
    unknown = codes.delivery_error(777)
    assert unknown is not None and "777" in unknown.text


@pytest.mark.parametrize(
    ("group", "code", "recipients", "cls"),
    [
        (codes.SEND, 1, 1, ErrorClass.REQUEST),
        (codes.SEND, 2, 1, ErrorClass.ACCOUNT),
        (codes.SEND, 3, 1, ErrorClass.ACCOUNT),
        (codes.SEND, 4, 1, ErrorClass.ACCOUNT),
        (codes.SEND, 5, 1, ErrorClass.REQUEST),
        (codes.SEND, 6, 1, ErrorClass.REQUEST),
        (codes.SEND, 7, 1, ErrorClass.RECIPIENT),
        (codes.SEND, 7, 5, ErrorClass.REQUEST),
        (codes.SEND, 8, 1, ErrorClass.RECIPIENT),
        (codes.SEND, 8, 5, ErrorClass.RECIPIENT),
        (codes.SEND, 9, 1, ErrorClass.THROTTLED),
        (codes.STATUS, 1, 1, ErrorClass.REQUEST),
        (codes.STATUS, 2, 1, ErrorClass.ACCOUNT),
        (codes.STATUS, 4, 1, ErrorClass.ACCOUNT),
        (codes.STATUS, 5, 1, ErrorClass.REQUEST),
        (codes.STATUS, 9, 1, ErrorClass.THROTTLED),
        (codes.BALANCE, 2, 1, ErrorClass.ACCOUNT),
        (codes.DATA, 3, 1, ErrorClass.REQUEST),
        (codes.DATA, 9, 1, ErrorClass.THROTTLED),
        (codes.SEND, 42, 1, ErrorClass.REQUEST),
    ],
)
def test_error_classification(group: str, code: int, recipients: int, cls: ErrorClass) -> None:
    assert codes.classify_error(group, code, recipients=recipients).error_class is cls


@pytest.mark.parametrize(
    "data",
    [
        {"phone": "+79161234567", "mccmnc": "25001", "cost": "1.50", "status": "0", "error": "0"},
        {"phone": " 7916 ", "mccmnc": "", "cost": 0, "status": "-2", "error": 7},
        {"phone": 79161234567, "status": " 20 ", "error": ""},
        {"status": "1.0", "cost": None},
        {"status": "²", "mccmnc": 25001},
        {},
    ],
)
def test_phone_result_parse_is_the_constructor(data: dict[str, Any]) -> None:
    parsed = PhoneResult.parse(data)
    status = data.get("status")
    expected_status = None
    if status not in (None, ""):
        try:
            expected_status = int(str(status).strip())
        except ValueError:
            try:
                expected_status = int(float(str(status)))
            except ValueError:
                expected_status = None
    built = PhoneResult(
        phone=str(data.get("phone", "")).strip().lstrip("+"),
        mccmnc=None if data.get("mccmnc") in (None, "") else str(data.get("mccmnc")),
        cost=None if data.get("cost") in (None, "") else str(data.get("cost")),
        status=expected_status,
        error=None if data.get("error") in (None, "") else str(data.get("error")),
    )
    assert parsed == built and hash(parsed) == hash(built) and repr(parsed) == repr(built)
    assert set(vars(parsed)) == {f.name for f in dataclasses.fields(PhoneResult)}


def test_flag_tables() -> None:
    assert codes.MESSAGE_TYPES[4] == "hlr" and codes.MESSAGE_TYPES[0] == "sms"
    assert set(codes.MESSAGE_TYPES) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12}
    assert dict(codes.TEMPLATE_KINDS) == {
        0: "service",
        1: "transactional",
        2: "authorization",
        3: "advertising",
    }


# --------------------------------------------------------------------------- doc examples


class Canned:
    """A real HTTP server answering every request with one body, recording the params."""

    def __init__(self) -> None:
        self.body = "{}"
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.running: RunningSandbox | None = None

    async def handle(self, request: web.Request) -> web.Response:
        params = await request_params(request)
        self.requests.append((request.method, request.path, params))
        return web.Response(text=self.body, content_type="application/json", charset="utf-8")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.running = await serve(app)
        return self.running.url


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    server = Canned()
    await server.start()
    yield server
    assert server.running is not None
    await server.running.stop()


@pytest.fixture
def doc_adapter(canned: Canned, session: aiohttp.ClientSession) -> SmscAdapter:
    assert canned.running is not None
    return SmscAdapter(account(canned.running.url, login="alex", password="123"), session)


async def test_doc_send_success(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = '{"id":14,"cnt":1,"cost":"4.1","balance":"83.6"}'  # README, fmt=3
    result = await doc_adapter.send_sms(["79999999999"], "Hello")
    assert (result.id, result.cnt, result.cost, result.balance) == (14, 1, "4.1", "83.6")
    method, path, params = canned.requests[-1]
    assert (method, path) == ("GET", "/sys/send.php")
    assert params["login"] == "alex" and params["psw"] == "123"
    assert params["phones"] == "79999999999" and params["mes"] == "Hello"
    assert params["fmt"] == "3" and params["charset"] == "utf-8"
    assert params["op"] == "1" and params["err"] == "1" and params["cost"] == "3"
    out = await doc_adapter.send(chunk(["79999999999"]))
    assert out[0].status is Status.SUBMITTED
    assert out[0].provider_message_id == "14:79999999999"
    assert out[0].parts == 1 and out[0].cost == "4.1"


async def test_doc_send_op1_per_phone(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = json.dumps(
        {
            "id": 15,
            "cnt": 4,
            "cost": "8.2",
            "balance": "75.4",
            "phones": [
                {
                    "phone": "79999999999",
                    "mccmnc": "25001",
                    "cost": "4.1",
                    "status": "0",
                    "error": "0",
                },
                {
                    "phone": "79999999998",
                    "mccmnc": "25002",
                    "cost": "4.1",
                    "status": "0",
                    "error": "0",
                },
                {"phone": "7999", "mccmnc": "", "cost": "0", "status": "22", "error": "7"},
            ],
        }
    )
    out = await doc_adapter.send(chunk(["79999999999", "79999999998", "7999"], text="x" * 200))
    assert [o.status for o in out] == [Status.SUBMITTED, Status.SUBMITTED, Status.REJECTED]
    assert out[0].provider_message_id == "15:79999999999" and out[0].parts == 2
    assert out[0].cost == "4.1"
    assert out[2].raw_code == "7" and out[2].error_class is ErrorClass.RECIPIENT
    assert out[2].reason == "bad phone number format" and out[2].provider_message_id is None


async def test_doc_send_phone_missing_from_details_is_unknown(
    canned: Canned, doc_adapter: SmscAdapter
) -> None:
    canned.body = json.dumps(
        {"id": 16, "cnt": 1, "phones": [{"phone": "79999999999", "status": "0", "error": "0"}]}
    )
    out = await doc_adapter.send(chunk(["79999999999", "79999999997"]))
    assert out[0].status is Status.SUBMITTED
    assert out[1].status is Status.UNKNOWN and out[1].provider_message_id == "16:79999999997"


@pytest.mark.parametrize(
    ("body", "recipients", "cls", "code"),
    [
        ('{"error":"parameters error","error_code":1}', 1, ErrorClass.REQUEST, "1"),
        ('{"error":"authorise error","error_code":2}', 1, ErrorClass.ACCOUNT, "2"),
        ('{"error":"no money","error_code":3,"id":14}', 1, ErrorClass.ACCOUNT, "3"),
        ('{"error":"IP is blocked","error_code":4}', 1, ErrorClass.ACCOUNT, "4"),
        ('{"error":"wrong date format","error_code":5}', 1, ErrorClass.REQUEST, "5"),
        ('{"error":"message is denied","error_code":6,"id":14}', 1, ErrorClass.REQUEST, "6"),
        ('{"error":"invalid number","error_code":7,"id":14}', 1, ErrorClass.RECIPIENT, "7"),
        ('{"error":"invalid number","error_code":7,"id":14}', 3, ErrorClass.REQUEST, "7"),
        ('{"error":"can\'t send message","error_code":8,"id":14}', 1, ErrorClass.RECIPIENT, "8"),
        (
            '{"error":"duplicate request, wait a minute","error_code":9}',
            1,
            ErrorClass.THROTTLED,
            "9",
        ),
        ('{"error":"x","error_code":"9"}', 1, ErrorClass.THROTTLED, "9"),
    ],
)
async def test_doc_send_errors(
    canned: Canned,
    doc_adapter: SmscAdapter,
    body: str,
    recipients: int,
    cls: ErrorClass,
    code: str,
) -> None:
    canned.body = body
    phones = [f"7999999999{i}" for i in range(recipients)]
    with pytest.raises(ProviderError) as info:
        await doc_adapter.send(chunk(phones))
    assert info.value.error_class is cls and info.value.raw_code == code
    if cls is ErrorClass.THROTTLED:
        assert info.value.retry_after == 60.0
    assert len(canned.requests) == 1  # an error answer is never failed over or retried


async def test_doc_status_single_and_list(canned: Canned, doc_adapter: SmscAdapter) -> None:
    # README fmt=3 shape, with values; a list request answers an array.
    canned.body = (
        '{"status":1,"last_date":"28.12.2021 19:27:42","last_timestamp":1640708862,'
        '"flag":0,"err":0}'
    )
    [report] = await doc_adapter.status(["999:79999999999"])
    assert report.status is Status.DELIVERED and report.raw_status == "1"
    assert report.provider_message_id == "999:79999999999"
    assert report.at == datetime.fromtimestamp(1640708862, UTC)
    assert report.extra["last_date"] == "28.12.2021 19:27:42"
    _, path, params = canned.requests[-1]
    assert path == "/sys/status.php"
    assert params["id"] == "999," and params["phone"] == "79999999999,"  # list form for one
    canned.body = json.dumps(
        [
            {"status": 20, "last_date": "", "last_timestamp": 1640708862, "flag": 0, "err": 1},
            {"status": -1, "last_date": "", "last_timestamp": 1640708800, "flag": 0, "err": 0},
        ]
    )
    reports = await doc_adapter.status(["1:79999999999", "2:79999999998"])
    assert [r.status for r in reports] == [Status.UNDELIVERABLE, Status.SUBMITTED]
    assert (
        reports[0].raw_error == "1" and reports[0].extra["err_text"] == "subscriber does not exist"
    )
    assert reports[1].provider_message_id == "2:79999999998"
    assert canned.requests[-1][2]["id"] == "1,2"
    assert canned.requests[-1][2]["phone"] == "79999999999,79999999998"


async def test_doc_status_hlr_fields(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = json.dumps(
        [
            {
                "status": 1,
                "last_date": "28.12.2021 19:27:42",
                "last_timestamp": 1640708862,
                "flag": 4,
                "err": 0,
                "imsi": "250010000000001",
                "msc": "79161000000",
                "mcc": "250",
                "mnc": "01",
                "cn": "Россия",
                "net": "МТС",
                "rcn": "Finland",
                "rnet": "Elisa",
            }
        ]
    )
    [hlr] = await doc_adapter.hlr_results(["7:79999999999"])
    assert hlr.ok and not hlr.pending and hlr.imsi == "250010000000001"
    assert (hlr.mcc, hlr.mnc, hlr.network, hlr.roaming) == ("250", "01", "МТС", True)
    assert hlr.raw["msc"] == "79161000000" and hlr.raw["cn"] == "Россия"
    assert hlr.provider_message_id == "7:79999999999"


def test_hlr_from_status_variants() -> None:
    pending = hlr_from_status(PHONE_RU, {"status": -1, "err": 0})
    assert pending.pending and not pending.ok and pending.error is None
    failed = hlr_from_status(PHONE_RU, {"status": 20, "err": 1})
    assert not failed.ok and failed.error == "subscriber does not exist"
    home = hlr_from_status(PHONE_RU, {"status": 1, "err": 0, "imsi": "1", "net": "MTS"})
    assert home.ok and home.roaming is False and home.ported is None


async def test_doc_balance(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = '{"balance":"123.45","currency":"RUB"}'
    balance = await doc_adapter.balance()
    assert (balance.amount, balance.currency) == ("123.45", "RUB")
    assert canned.requests[-1][1] == "/sys/balance.php" and canned.requests[-1][2]["cur"] == "1"


GET_MESSAGES_DOC = """[{
"status": 1,
"last_date": "10.10.2021 10:10:12",
"last_timestamp": 1633849812,
"err": 0,
"send_date": "10.10.2021 10:10:10",
"send_timestamp": 1633849810,
"phone": "79999999999",
"cost": "4.1",
"sender_id": "SMSC.RU",
"status_name": "Доставлено",
"message": "Test",
"mccmnc": "25001",
"country": "Россия",
"operator": "МТС",
"region": "Москва",
"type": 0,
"id": 14,
"int_id": "1234567",
"sms_cnt": 1,
"format": 0,
"crc": 0
}]"""


async def test_doc_get_messages(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = GET_MESSAGES_DOC
    # "Receiving the last ten outgoing SMS messages": get_messages=1&login=alex&psw=123&cnt=10
    [msg] = await doc_adapter.get_messages(cnt=10)
    params = canned.requests[-1][2]
    assert canned.requests[-1][1] == "/sys/get.php"
    assert (params["get_messages"], params["login"], params["psw"], params["cnt"]) == (
        "1",
        "alex",
        "123",
        "10",
    )
    assert msg.int_id == 1234567 and msg.id == 14 and msg.status_name == "Доставлено"
    assert msg.mapped is Status.DELIVERED and msg.provider_message_id == "14:79999999999"
    assert msg.operator == "МТС" and msg.sms_cnt == 1 and msg.cost == "4.1"
    # "…the last outgoing SMS message sent to the number 79999999999"
    await doc_adapter.get_messages(phones=["79999999999"])
    assert canned.requests[-1][2]["phone"] == "79999999999"


async def test_doc_get_messages_not_found_is_empty(
    canned: Canned, doc_adapter: SmscAdapter
) -> None:
    canned.body = '{"error": "message not found", "error_code": 3}'
    assert await doc_adapter.get_messages() == []


async def test_doc_get_answers(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = json.dumps(
        [
            {
                "id": 1234568,
                "received": "10.10.2021 10:10:10",
                "phone": "79999999999",
                "message": "Да",
                "to_phone": "79990000000",
                "sent": "10.10.2021 10:10:09",
            }
        ],
        ensure_ascii=False,
    )
    [incoming] = await doc_adapter.get_answers(cnt=10)
    assert incoming.id == 1234568 and incoming.message == "Да"
    assert incoming.to_phone == "79990000000"
    await doc_adapter.get_answers(hour=48, cnt=15)
    assert canned.requests[-1][2]["hour"] == "48" and canned.requests[-1][2]["cnt"] == "15"
    await doc_adapter.get_answers(after_id=1234567, cnt=20)
    params = canned.requests[-1][2]
    assert params["get_answers"] == "1" and params["after_id"] == "1234567"


async def test_doc_get_stat(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = (
        '[{"login": "alex", "sms": "120", "credit": "492.00", "debit": "0", "currency": "RUB"}]'
    )
    [row] = await doc_adapter.get_stat("01.01.2014", "01.02.2014", mycur=True)
    assert (row.login, row.sms, row.credit, row.currency) == ("alex", 120, "492.00", "RUB")
    params = canned.requests[-1][2]
    assert (params["get_stat"], params["mycur"], params["start"], params["end"]) == (
        "1",
        "1",
        "01.01.2014",
        "01.02.2014",
    )


async def test_doc_get_price(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = json.dumps(
        {
            "zones": [
                {
                    "zone": "1",
                    "name": "Россия",
                    "api": "4.1",
                    "mass": "4.1",
                    "mms": "9",
                    "hlr": "0.3",
                    "call": "2",
                }
            ],
            "codes": [{"mccmnc": "25001", "cost": "3.5"}],
            "mail": "0.1",
        },
        ensure_ascii=False,
    )
    prices = await doc_adapter.get_prices()
    assert prices.zones[0].name == "Россия" and prices.zones[0].hlr == "0.3"
    assert prices.codes == {"25001": "3.5"} and prices.mail == "0.1"
    assert canned.requests[-1][2]["get_price"] == "1"


async def test_doc_info_operator(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = (
        '{"country": "Россия", "operator": "МТС", "region": "Москва", "mcc": "250",'
        ' "mnc": "01", "tz": "3"}'
    )
    [info] = await doc_adapter.get_operator(["79999999999"])
    assert info.phone == "79999999999" and info.operator == "МТС" and info.tz == "3"
    _, path, params = canned.requests[-1]
    assert path == "/sys/info.php" and params["get_operator"] == "1"
    assert params["phone"] == "79999999999"


async def test_doc_short_link(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = (
        '{"id": "145142", "cnt": "10", "cnt_mon": "5", "cnt_day": "1", "cnt_yes": "2",'
        ' "cnt_pmon": "3", "link": "https://smsc.ru/~abc"}'
    )
    info = await doc_adapter.get_short_link(link_id=145142)
    assert (info.id, info.cnt, info.cnt_mon, info.cnt_day, info.cnt_yes, info.cnt_pmon) == (
        "145142",
        10,
        5,
        1,
        2,
        3,
    )
    assert canned.requests[-1][1] == "/sys/tinyurls.php"
    assert canned.requests[-1][2]["id"] == "145142" and canned.requests[-1][2]["get"] == "1"
    await doc_adapter.get_short_link(link="mywebsite.ru")
    assert canned.requests[-1][2]["link"] == "mywebsite.ru"
    with pytest.raises(ValueError):
        await doc_adapter.get_short_link()


async def test_malformed_answers(canned: Canned, doc_adapter: SmscAdapter) -> None:
    canned.body = "<html>oops"
    with pytest.raises(ProviderError) as info:
        await doc_adapter.send(chunk([PHONE_RU]))
    assert info.value.error_class is ErrorClass.AMBIGUOUS  # the send may have happened
    with pytest.raises(ProviderError) as info:
        await doc_adapter.balance()
    assert info.value.error_class is ErrorClass.TRANSIENT
    canned.body = '{"cnt": 1}'  # a "success" without an id
    with pytest.raises(ProviderError) as info:
        await doc_adapter.send(chunk([PHONE_RU]))
    assert info.value.error_class is ErrorClass.AMBIGUOUS


async def test_apikey_and_always_post(canned: Canned, session: aiohttp.ClientSession) -> None:
    assert canned.running is not None
    adapter = SmscAdapter(
        account(canned.running.url, api_key="KEY123", options={"always_post": True}), session
    )
    canned.body = '{"balance":"1.00"}'
    await adapter.balance()
    method, _, params = canned.requests[-1]
    assert method == "POST" and params["apikey"] == "KEY123"
    assert "login" not in params and "psw" not in params


# --------------------------------------------------------------------------- against the sandbox


async def test_send_per_phone_outcomes(adapter: SmscAdapter, sandbox: RunningSandbox) -> None:
    out = await adapter.send(chunk([PHONE_RU, "12345", PHONE_UK, "79990000013"]))
    assert [o.status for o in out] == [
        Status.SUBMITTED,
        Status.REJECTED,
        Status.SUBMITTED,
        Status.REJECTED,
    ]
    assert out[0].provider_message_id == f"1:{PHONE_RU}" and out[0].parts == 1
    assert out[0].cost == "1.50"
    assert out[1].raw_code == "7" and out[1].error_class is ErrorClass.RECIPIENT
    assert out[3].raw_code == "8" and out[3].reason == "cannot deliver to this number"
    params = sandbox.state.log.for_path("send.php")[-1].params
    assert params["op"] == "1" and params["sender"] == "MyShop"


async def test_send_client_id_schedule_validity(
    adapter: SmscAdapter, sandbox: RunningSandbox
) -> None:
    at = datetime(2035, 5, 1, 12, 0, tzinfo=UTC)
    out = await adapter.send(chunk([PHONE_RU], client_id=777, scheduled_at=at, validity=7200))
    assert out[0].provider_message_id == f"777:{PHONE_RU}"
    params = sandbox.state.log.for_path("send.php")[-1].params
    assert params["id"] == "777" and params["time"] == f"0{int(at.timestamp())}"
    assert params["valid"] == "02:00"
    [report] = await adapter.status([out[0].provider_message_id or ""])
    assert report.raw_status == "-1"  # scheduled: waiting to be sent


async def test_send_parts_and_cost(adapter: SmscAdapter) -> None:
    out = await adapter.send(chunk([PHONE_RU, PHONE_UK], text="Привет, " * 20))  # UCS-2, 160 chars
    assert all(o.parts == 3 for o in out)  # 160 UCS-2 chars: 67 per part
    assert out[0].cost == "4.50"


async def test_send_single_bad_phone_is_recipient(adapter: SmscAdapter) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(["123"]))
    assert info.value.error_class is ErrorClass.RECIPIENT and info.value.raw_code == "7"
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(["123", "456"]))
    assert info.value.error_class is ErrorClass.REQUEST and info.value.raw_code == "7"
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(["79990000013"]))
    assert info.value.error_class is ErrorClass.RECIPIENT and info.value.raw_code == "8"


async def test_forbidden_text_is_request(adapter: SmscAdapter) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk([PHONE_RU], text="FORBIDDEN words"))
    assert info.value.error_class is ErrorClass.REQUEST and info.value.raw_code == "6"


async def test_big_send_goes_as_post(adapter: SmscAdapter, sandbox: RunningSandbox) -> None:
    phones = [f"7916{n:07d}" for n in range(300)]
    out = await adapter.send(chunk(phones))
    assert len(out) == 300 and all(o.status is Status.SUBMITTED for o in out)
    entry = sandbox.state.log.for_path("send.php")[-1]
    assert entry.method == "POST" and entry.params["phones"].count(",") == 299
    assert len(set(o.provider_message_id for o in out)) == 300


async def test_status_batching_order(
    adapter: SmscAdapter, sandbox: RunningSandbox, mix: OutcomeMix
) -> None:
    first = await adapter.send(chunk([PHONE_RU, PHONE_UK]))
    second = await adapter.send(chunk([PHONE_RU], text="second"))
    ids = [o.provider_message_id or "" for o in [*first, *second]]
    ids.append("999:79160000000")  # not known to SMSC
    reports = await adapter.status(ids)
    assert [r.provider_message_id for r in reports] == ids
    assert [r.raw_status for r in reports] == ["-1", "-1", "-1", "-3"]
    assert reports[3].status is Status.UNKNOWN
    assert len(sandbox.state.log.for_path("status.php")) == 1  # one bulk request
    await asyncio.sleep(mix.final_after + 0.1)
    reports = await adapter.status(ids[:3])
    assert all(r.status is Status.DELIVERED for r in reports)
    assert all(r.at is not None for r in reports)


async def test_status_outcomes_over_time(adapter: SmscAdapter, sandbox: RunningSandbox) -> None:
    out = await adapter.send(chunk([PHONE_RU, PHONE_UK, "79161112233"]))
    msgs = sandbox.state.messages
    msgs[f"1:{PHONE_UK}"].outcome = "undeliverable"
    msgs["1:79161112233"].outcome = "expired"
    for m in msgs.values():
        m.final_at = m.accepted_at + 0.2
    await asyncio.sleep(0.3)
    reports = await adapter.status([o.provider_message_id or "" for o in out])
    assert [(r.status, r.raw_status, r.raw_error) for r in reports] == [
        (Status.DELIVERED, "1", None),
        (Status.UNDELIVERABLE, "20", "1"),
        (Status.EXPIRED, "3", "6"),
    ]


async def test_hlr_via_status(adapter: SmscAdapter, mix: OutcomeMix) -> None:
    started = await adapter.hlr([PHONE_RU, "12"])
    assert started[0].pending and started[0].ok and started[0].provider_message_id
    assert not started[1].ok and started[1].error == "bad phone number format"
    [pending] = await adapter.hlr_results([started[0].provider_message_id])
    assert pending.pending
    await asyncio.sleep(mix.final_after + 0.1)
    [done] = await adapter.hlr_results([started[0].provider_message_id])
    assert done.ok and not done.pending and done.mcc == "250" and done.network == "МТС"
    assert done.imsi and done.imsi.startswith("25001")


async def test_history_paging(adapter: SmscAdapter, sandbox: RunningSandbox) -> None:
    for n in range(5):
        await adapter.send(chunk([f"7916000000{n}"], text=f"m{n}"))
    page = await adapter.get_messages(cnt=2)
    assert [m.message for m in page] == ["m4", "m3"]
    walked = [m async for m in adapter.iter_messages(page_size=2)]
    assert [m.message for m in walked] == ["m4", "m3", "m2", "m1", "m0"]
    prev_ids = [e.params.get("prev_id") for e in sandbox.state.log.for_path("get.php")[1:]]
    assert prev_ids[0] is None and all(p for p in prev_ids[1:])
    assert await adapter.get_messages(phones=["79999999999"]) == []


async def test_incoming_after_id(adapter: SmscAdapter, sandbox: RunningSandbox) -> None:
    smsc = sandbox_of(sandbox.app)
    first = smsc.add_incoming(PHONE_RU, "Да")
    smsc.add_incoming(PHONE_UK, "Stop")
    answers = await adapter.get_answers()
    assert [a.message for a in answers] == ["Да", "Stop"]
    later = await adapter.get_answers(after_id=first.id)
    assert [a.phone for a in later] == [PHONE_UK]


async def test_balance_and_insufficient_funds(
    session: aiohttp.ClientSession, mix: OutcomeMix
) -> None:
    running = await serve(
        create_sandbox(SandboxState(mix), balance="4.00", price="1.5", caps=False)
    )
    try:
        adapter = SmscAdapter(account(running.url), session)
        assert (await adapter.balance()).amount == "4.00"
        await adapter.send(chunk([PHONE_RU, PHONE_UK]))
        assert (await adapter.balance()).amount == "1.00"
        with pytest.raises(ProviderError) as info:
            await adapter.send(chunk([PHONE_RU], text="again"))
        assert info.value.error_class is ErrorClass.ACCOUNT and info.value.raw_code == "3"
        assert (await adapter.balance()).amount == "1.00"
    finally:
        await running.stop()


async def test_bad_credentials_are_account(
    sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    adapter = SmscAdapter(account(sandbox.url, password="wrong"), session)
    with pytest.raises(ProviderError) as info:
        await adapter.balance()
    assert info.value.error_class is ErrorClass.ACCOUNT and info.value.raw_code == "2"


async def test_data_calls_against_sandbox(adapter: SmscAdapter, sandbox: RunningSandbox) -> None:
    infos = await adapter.get_operator([PHONE_RU, PHONE_UK])
    assert [(i.phone, i.mcc) for i in infos] == [(PHONE_RU, "250"), (PHONE_UK, "234")]
    with pytest.raises(ProviderError) as info:
        await adapter.get_operator(["99912345678"])
    assert info.value.error_class is ErrorClass.REQUEST and info.value.raw_code == "3"
    prices = await adapter.get_prices()
    assert prices.zones and prices.codes
    await adapter.send_sms([PHONE_RU], "See https://example.com/a", tinyurl=True)
    link_id = next(iter(sandbox_of(sandbox.app).short_links))
    link = await adapter.get_short_link(link_id=link_id)
    assert link.cnt == 0 and link.link
    today = datetime.now(UTC).astimezone().date()
    [stat] = await adapter.get_stat(today)
    assert stat.sms >= 1
    estimate = await adapter.get_cost([PHONE_RU, PHONE_UK], "Hi")
    assert (estimate.cnt, estimate.cost) == (2, "3.00")


# --------------------------------------------------------------------------- caps


@pytest.fixture
async def capped(mix: OutcomeMix) -> AsyncIterator[RunningSandbox]:
    running = await serve(create_sandbox(SandboxState(mix), caps=SmscCaps().scaled(1 / 40)))
    yield running
    await running.stop()


async def test_caps_are_throttled(capped: RunningSandbox, session: aiohttp.ClientSession) -> None:
    adapter = SmscAdapter(account(capped.url), session)
    request = chunk([PHONE_RU], client_id=5)
    await adapter.send(request)
    with pytest.raises(ProviderError) as info:
        await adapter.send(request)  # an identical send within the minute
    assert info.value.error_class is ErrorClass.THROTTLED and info.value.raw_code == "9"
    assert info.value.retry_after == 60.0
    ids = [f"5:{PHONE_RU}"]
    for _ in range(5):
        await adapter.status(ids)
    with pytest.raises(ProviderError) as info:
        await adapter.status(ids)  # a sixth status request for one message
    assert info.value.error_class is ErrorClass.THROTTLED
    await asyncio.sleep(1.6)  # the (scaled) minute passes
    await adapter.send(request)
    await adapter.status(ids)


async def test_history_cap(capped: RunningSandbox, session: aiohttp.ClientSession) -> None:
    adapter = SmscAdapter(account(capped.url), session)
    for _ in range(3):
        await adapter.get_messages(cnt=5)
    with pytest.raises(ProviderError) as info:
        await adapter.get_messages(cnt=5)
    assert info.value.error_class is ErrorClass.THROTTLED


# --------------------------------------------------------------------------- failover


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_failover_when_primary_is_down(
    sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    primary = closed_port_url()
    adapter = SmscAdapter(account(primary, backup_urls=(sandbox.url,)), session)
    out = await adapter.send(chunk([PHONE_RU]))  # a connect error: safe to send elsewhere
    assert out[0].status is Status.SUBMITTED
    assert (await adapter.balance()).amount
    assert len(sandbox.state.log.for_path("send.php")) == 1


async def test_failover_on_5xx_between_two_sandboxes(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, mix: OutcomeMix
) -> None:
    broken_state = SandboxState(mix, faults={"*": Fault(error_rate=1.0)})
    broken = await serve(create_sandbox(broken_state, caps=False))
    try:
        adapter = SmscAdapter(account(broken.url, backup_urls=(sandbox.url,)), session)
        out = await adapter.send(chunk([PHONE_RU]))
        assert out[0].status is Status.SUBMITTED
        assert len(broken_state.log.for_path("send.php")) == 1
        assert len(sandbox.state.log.for_path("send.php")) == 1
        # The backup stays preferred: the next call goes straight to it.
        await adapter.balance()
        assert broken_state.log.for_path("balance.php") == []
    finally:
        await broken.stop()


async def test_primary_is_tried_first_again_after_failback_after(
    sandbox: RunningSandbox,
    session: aiohttp.ClientSession,
    mix: OutcomeMix,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(failover, "time", SimpleNamespace(monotonic=lambda: now[0]))
    broken_state = SandboxState(mix, faults={"*": Fault(error_rate=1.0)})
    broken = await serve(create_sandbox(broken_state, caps=False))
    try:
        adapter = SmscAdapter(account(broken.url, backup_urls=(sandbox.url,)), session)
        await adapter.balance()  # the primary fails, the backup answers and is preferred
        now[0] += FAILBACK_AFTER
        await adapter.balance()
        assert len(broken_state.log.for_path("balance.php")) == 1
        now[0] += 1.0
        await adapter.balance()  # past FAILBACK_AFTER: the primary first again
        assert len(broken_state.log.for_path("balance.php")) == 2
        assert len(sandbox.state.log.for_path("balance.php")) == 3
    finally:
        await broken.stop()


async def test_no_failover_on_error_answer(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, mix: OutcomeMix
) -> None:
    other = await serve(create_sandbox(SandboxState(mix), caps=False))
    try:
        adapter = SmscAdapter(
            account(sandbox.url, password="bad", backup_urls=(other.url,)), session
        )
        with pytest.raises(ProviderError) as info:
            await adapter.send(chunk([PHONE_RU]))
        assert info.value.raw_code == "2"
        assert other.state.log.entries == []
    finally:
        await other.stop()


async def test_send_timeout_is_ambiguous_and_not_failed_over(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, mix: OutcomeMix
) -> None:
    slow_state = SandboxState(mix, faults={"send.php": Fault(timeout_rate=1.0)})
    slow = await serve(create_sandbox(slow_state, caps=False))
    try:
        adapter = SmscAdapter(account(slow.url, timeout=0.5, backup_urls=(sandbox.url,)), session)
        with pytest.raises(ProviderError) as info:
            await adapter.send(chunk([PHONE_RU]))
        assert info.value.error_class is ErrorClass.AMBIGUOUS
        assert sandbox.state.log.for_path("send.php") == []
        # An idempotent call that times out does fail over.
        slow_state.faults = {"balance.php": Fault(timeout_rate=1.0)}
        assert (await adapter.balance()).amount
    finally:
        await slow.stop()


async def test_all_hosts_down(session: aiohttp.ClientSession) -> None:
    adapter = SmscAdapter(account(closed_port_url(), backup_urls=(closed_port_url(),)), session)
    with pytest.raises(ProviderError) as info:
        await adapter.balance()
    assert info.value.error_class is ErrorClass.TRANSIENT


async def test_ambiguous_send_reconciled_by_client_id(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, mix: OutcomeMix
) -> None:
    """A send whose answer is lost: the ids are known from client_id; status() tells."""
    lost_state = SandboxState(mix, faults={"send.php": Fault(drop_rate=1.0)})
    lost = await serve(create_sandbox(lost_state, caps=False))
    try:
        request = chunk([PHONE_RU, PHONE_UK], client_id=31337)
        assert expected_message_ids(chunk([PHONE_RU])) is None
        ids = expected_message_ids(request)
        assert ids == [f"31337:{PHONE_RU}", f"31337:{PHONE_UK}"]
        adapter = SmscAdapter(account(lost.url), session)
        with pytest.raises(ProviderError) as info:
            await adapter.send(request)
        assert info.value.error_class is ErrorClass.AMBIGUOUS
        # Never sent (the sandbox dropped it before handling): SMSC does not know the ids.
        reports = await SmscAdapter(account(lost.url), session).status(ids)
        assert [r.raw_status for r in reports] == ["-3", "-3"]
        # Sent: the same ids are found.
        sent = SmscAdapter(account(sandbox.url), session)
        await sent.send(request)
        assert [r.raw_status for r in await sent.status(ids)] == ["-1", "-1"]
    finally:
        await lost.stop()
