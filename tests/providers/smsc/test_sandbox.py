"""The SMSC sandbox over raw HTTP: auth, answer formats, ids, parts and money, statuses over
time, caps (error 9), history / incoming / data calls, and the kit's log and faults."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from xml.etree import ElementTree

import aiohttp
import pytest

from worker.providers.sandbox_kit import Fault, OutcomeMix, RunningSandbox, SandboxState, serve
from worker.providers.smsc.sandbox import SmscCaps, create_sandbox, sandbox_of

AUTH = {"login": "testuser", "psw": "testpass"}
RU, UK = "79161234567", "447400123123"


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def raw(
        self, script: str, params: dict[str, Any], *, method: str = "GET", auth: bool = True
    ) -> tuple[int, str, str]:
        query = {**(AUTH if auth else {}), **{k: str(v) for k, v in params.items()}}
        url = f"{self.url}/sys/{script}"
        if method == "GET":
            ctx = self.session.get(url, params=query)
        else:
            ctx = self.session.post(url, data=query)
        async with ctx as resp:
            return resp.status, await resp.text(), resp.headers.get("Content-Type", "")

    async def json(self, script: str, params: dict[str, Any], **kw: Any) -> Any:
        status, text, _ = await self.raw(script, {"fmt": 3, "charset": "utf-8", **params}, **kw)
        assert status == 200
        return json.loads(text)


MIX = OutcomeMix(delivered=1.0, undeliverable=0.0, expired=0.0, final_after=0.4, seed=5)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def start(**options: Any) -> RunningSandbox:
    options.setdefault("caps", False)
    return await serve(create_sandbox(SandboxState(options.pop("mix", MIX)), **options))


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    running = await start(api_key="APIKEY1", blocked_phones=["79990000013"])
    yield running
    await running.stop()


@pytest.fixture
def client(sandbox: RunningSandbox, session: aiohttp.ClientSession) -> Client:
    return Client(session, sandbox.url)


# --------------------------------------------------------------------------- auth


async def test_auth_variants(client: Client) -> None:
    assert "balance" in await client.json("balance.php", {})
    md5 = hashlib.md5(b"testpass").hexdigest()
    ok = await client.json("balance.php", {"login": "testuser", "psw": md5})
    assert "balance" in ok
    by_key = await client.json("balance.php", {"apikey": "APIKEY1"}, auth=False)
    assert "balance" in by_key
    bad = await client.json("balance.php", {"login": "testuser", "psw": "nope"})
    assert bad["error_code"] == 2 and bad["error"]
    assert (await client.json("balance.php", {}, auth=False))["error_code"] == 2


async def test_login_errors_block_the_ip(session: aiohttp.ClientSession) -> None:
    running = await start(caps=SmscCaps().scaled(0.001))  # 30 min → 1.8 s
    try:
        client = Client(session, running.url)
        for _ in range(5):
            assert (await client.json("balance.php", {"psw": "x"}))["error_code"] == 2
        assert (await client.json("balance.php", {}))["error_code"] == 4  # even good credentials
        await asyncio.sleep(1.9)
        assert "balance" in await client.json("balance.php", {})
    finally:
        await running.stop()


# --------------------------------------------------------------------------- send.php


async def test_send_fmt3_ids_and_client_id(client: Client) -> None:
    first = await client.json("send.php", {"phones": RU, "mes": "a"})
    second = await client.json("send.php", {"phones": RU, "mes": "b"})
    assert (first, second) == ({"id": 1, "cnt": 1}, {"id": 2, "cnt": 1})
    own = await client.json("send.php", {"phones": RU, "mes": "c", "id": 4242})
    assert own["id"] == 4242
    assert (await client.json("send.php", {"phones": RU, "mes": "d", "id": 0}))["error_code"] == 1


async def test_send_cost_modes_and_balance(client: Client) -> None:
    estimate = await client.json("send.php", {"phones": f"{RU},{UK}", "mes": "x", "cost": 1})
    assert estimate == {"cnt": 2, "cost": "3.00"}
    assert (await client.json("balance.php", {}))["balance"] == "1000.00"  # cost=1 sends nothing
    with_cost = await client.json("send.php", {"phones": RU, "mes": "x", "cost": 2})
    assert with_cost["cost"] == "1.50" and "balance" not in with_cost
    full = await client.json("send.php", {"phones": f"{RU};{UK}", "mes": "x", "cost": 3})
    assert (full["cnt"], full["cost"], full["balance"]) == (2, "3.00", "995.50")
    assert (await client.json("balance.php", {"cur": 1})) == {
        "balance": "995.50",
        "currency": "RUB",
    }


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("x" * 160, 1),
        ("x" * 161, 2),
        ("{" * 80, 1),  # extension characters count two
        ("{" * 81, 2),
        ("Ж" * 70, 1),
        ("Ж" * 71, 2),
        ("Ж" * 135, 3),
    ],
)
async def test_cnt_is_parts_times_recipients(client: Client, text: str, parts: int) -> None:
    answer = await client.json(
        "send.php", {"phones": f"{RU},{UK},79160000001", "mes": text, "cost": 2}
    )
    assert answer["cnt"] == parts * 3
    assert answer["cost"] == f"{parts * 3 * 1.5:.2f}"


async def test_send_op1_and_err1(client: Client) -> None:
    answer = await client.json(
        "send.php", {"phones": f"{RU},12ab,79990000013", "mes": "x", "op": 1, "cost": 3}
    )
    assert answer["cnt"] == 1
    phones = {p["phone"]: p for p in answer["phones"]}
    assert phones[RU] == {
        "phone": RU,
        "mccmnc": "25001",
        "cost": "1.50",
        "status": "0",
        "error": "0",
    }
    assert phones["12ab"]["error"] == "7" and phones["12ab"]["status"] == "22"
    assert phones["79990000013"]["error"] == "8"
    only_bad = await client.json("send.php", {"phones": f"{UK},12ab", "mes": "y", "err": 1})
    assert [p["phone"] for p in only_bad["phones"]] == ["12ab"]


async def test_send_errors(client: Client) -> None:
    assert (await client.json("send.php", {"mes": "x"}))["error_code"] == 1
    assert (await client.json("send.php", {"phones": RU}))["error_code"] == 1
    assert (await client.json("send.php", {"phones": RU, "mes": "x" * 1001}))["error_code"] == 1
    bad_time = await client.json("send.php", {"phones": RU, "mes": "x", "time": "tomorrow"})
    assert bad_time["error_code"] == 5
    bad_valid = await client.json("send.php", {"phones": RU, "mes": "x", "valid": "25"})
    assert bad_valid["error_code"] == 1
    denied = await client.json("send.php", {"phones": RU, "mes": "FORBIDDEN", "id": 9})
    assert denied == {"error": "message is denied", "error_code": 6, "id": 9}
    assert (await client.json("send.php", {"phones": "123", "mes": "x"}))["error_code"] == 7
    assert (await client.json("send.php", {"phones": "123,456", "mes": "x"}))["error_code"] == 7
    assert (await client.json("send.php", {"phones": "79990000013", "mes": "x"}))["error_code"] == 8


async def test_insufficient_funds(session: aiohttp.ClientSession) -> None:
    running = await start(balance="2.00")
    try:
        client = Client(session, running.url)
        assert "id" in await client.json("send.php", {"phones": RU, "mes": "x"})
        answer = await client.json("send.php", {"phones": RU, "mes": "y", "id": 77})
        assert answer == {"error": "no money", "error_code": 3, "id": 77}
        assert (await client.json("balance.php", {}))["balance"] == "0.50"
        admin = running.url + "/__sandbox/smsc/balance"
        async with session.put(admin, json={"balance": "10"}) as resp:
            assert (await resp.json())["balance"] == "10.00"
        assert "id" in await client.json("send.php", {"phones": RU, "mes": "y"})
    finally:
        await running.stop()


async def test_max_batch(session: aiohttp.ClientSession) -> None:
    running = await start(max_batch="2")  # text, as from the CLI
    try:
        client = Client(session, running.url)
        assert "id" in await client.json("send.php", {"phones": f"{RU},{UK}", "mes": "x"})
        three = await client.json("send.php", {"phones": f"{RU},{UK},79160000001", "mes": "x"})
        assert three["error_code"] == 1
    finally:
        await running.stop()


@pytest.mark.parametrize("fmt", ["0", "1", "2"])
async def test_send_other_formats(client: Client, fmt: str) -> None:
    status, text, content_type = await client.raw(
        "send.php", {"phones": RU, "mes": "x", "cost": 3, "fmt": fmt}
    )
    assert status == 200 and "windows-1251" in content_type  # SMSC's default charset
    if fmt == "0":
        assert text == "OK - 1 SMS, ID - 1, COST - 1.50, BALANCE - 998.50"
    elif fmt == "1":
        assert text == "1,1,1.50,998.50"
    else:
        root = ElementTree.fromstring(text)
        assert root.tag == "result" and root.findtext("id") == "1"
        assert root.findtext("cnt") == "1" and root.findtext("balance") == "998.50"
    _, err, _ = await client.raw("send.php", {"phones": "1", "mes": "x", "fmt": fmt, "id": 5})
    expected = {
        "0": "ERROR = 7 (invalid number), ID - 5",
        "1": "0,-7",
    }
    if fmt == "2":
        root = ElementTree.fromstring(err)
        assert root.findtext("error_code") == "7" and root.findtext("error") == "invalid number"
    else:
        assert err == expected[fmt]


async def test_get_and_post(client: Client) -> None:
    posted = await client.json("send.php", {"phones": RU, "mes": "posted"}, method="POST")
    assert posted["id"] == 1
    status = await client.json("status.php", {"id": 1, "phone": RU}, method="POST")
    assert status["status"] == -1


# --------------------------------------------------------------------------- status.php


async def test_statuses_advance(client: Client, sandbox: RunningSandbox) -> None:
    sent = await client.json("send.php", {"phones": f"{RU},{UK},79160000001", "mes": "x"})
    msgs = sandbox.state.messages
    msgs[f"{sent['id']}:{UK}"].outcome = "undeliverable"
    msgs[f"{sent['id']}:79160000001"].outcome = "expired"
    query = {"id": f"{sent['id']},{sent['id']},{sent['id']}", "phone": f"{RU},{UK},79160000001"}
    early = await client.json("status.php", query)
    assert [s["status"] for s in early] == [-1, -1, -1]
    await asyncio.sleep(0.25)
    middle = await client.json("status.php", query)
    assert [s["status"] for s in middle] == [0, 0, 0]
    await asyncio.sleep(0.25)
    final = await client.json("status.php", query)
    assert [(s["status"], s["err"]) for s in final] == [(1, 0), (20, 1), (3, 6)]
    assert [s["phone"] for s in final] == [RU, UK, "79160000001"]
    assert all(s["id"] == sent["id"] for s in final)
    single = await client.json("status.php", {"id": sent["id"], "phone": RU})
    assert set(single) == {"status", "last_date", "last_timestamp", "flag", "err"}
    assert abs(single["last_timestamp"] - time.time()) < 5


async def test_status_all_levels_and_unknown(client: Client) -> None:
    sent = await client.json("send.php", {"phones": RU, "mes": "Привет", "sender": "Shop"})
    one = await client.json("status.php", {"id": sent["id"], "phone": RU, "all": 1})
    assert one["status_name"] == "Ожидает отправки" and one["message"] == "Привет"
    assert (one["sender_id"], one["sms_cnt"], one["cost"], one["type"]) == ("Shop", 1, "1.50", 0)
    assert one["send_date"] and one["send_timestamp"]
    two = await client.json("status.php", {"id": f"{sent['id']},", "phone": f"{RU},", "all": 2})
    assert isinstance(two, list) and two[0]["country"] == "Россия" and two[0]["operator"]
    missing = await client.json("status.php", {"id": 999, "phone": RU})
    assert missing["status"] == -3
    mismatched = await client.json("status.php", {"id": "1,2", "phone": RU})
    assert mismatched["error_code"] == 1


async def test_status_formats(client: Client) -> None:
    sent = await client.json("send.php", {"phones": RU, "mes": "x"})
    _, text0, _ = await client.raw("status.php", {"id": sent["id"], "phone": RU})
    assert text0.startswith("Status = -1, check_time = ") and text0.endswith("err = 0")
    _, text1, _ = await client.raw("status.php", {"id": sent["id"], "phone": RU, "fmt": 1})
    status, stamp, err = text1.split(",")
    assert (status, err) == ("-1", "0") and stamp.isdigit()
    _, text2, _ = await client.raw("status.php", {"id": sent["id"], "phone": RU, "fmt": 2})
    root = ElementTree.fromstring(text2)
    assert root.tag == "sms" and root.findtext("status") == "-1" and root.findtext("flag") == "0"


async def test_status_delete(client: Client) -> None:
    sent = await client.json("send.php", {"phones": RU, "mes": "x"})
    assert "error" not in await client.json("status.php", {"id": sent["id"], "phone": RU, "del": 1})
    assert (await client.json("status.php", {"id": sent["id"], "phone": RU}))["status"] == -3
    again = await client.json("status.php", {"id": sent["id"], "phone": RU, "del": 1})
    assert again["error_code"] == 5


async def test_hlr_status_fields(client: Client, sandbox: RunningSandbox) -> None:
    sent = await client.json("send.php", {"phones": RU, "hlr": 1, "cost": 2})
    assert sent["cnt"] == 1 and sent["cost"] == "1.50"
    pending = await client.json("status.php", {"id": sent["id"], "phone": RU})
    assert pending["status"] == -1 and pending["flag"] == 4 and "imsi" not in pending
    await asyncio.sleep(0.45)
    done = await client.json("status.php", {"id": sent["id"], "phone": RU})
    assert done["status"] == 1
    assert set(done) >= {"imsi", "msc", "mcc", "mnc", "cn", "net", "rcn", "rnet"}
    assert (done["mcc"], done["mnc"], done["cn"]) == ("250", "01", "Россия")


async def test_scheduled_time_forms(client: Client) -> None:
    future = int(time.time()) + 3600
    for value in (f"0{future}", "+60", "0101351200", "01.01.35 12:00"):
        sent = await client.json("send.php", {"phones": RU, "mes": value, "time": value})
        assert "id" in sent, value
        status = await client.json("status.php", {"id": sent["id"], "phone": RU})
        assert status["status"] == -1
    await asyncio.sleep(0.5)
    assert (await client.json("status.php", {"id": sent["id"], "phone": RU}))["status"] == -1


# --------------------------------------------------------------------------- caps


@pytest.fixture
async def capped(session: aiohttp.ClientSession) -> AsyncIterator[Client]:
    """SMSC's real windows: counting tests cannot be upset by a slow machine."""
    running = await start(caps=True)
    yield Client(session, running.url)
    await running.stop()


@pytest.fixture
async def fast_caps(session: aiohttp.ClientSession) -> AsyncIterator[Client]:
    """Windows shrunk to 1/40 (a minute is 1.5 s) for tests that wait for one to pass."""
    running = await start(caps=SmscCaps().scaled(1 / 40))
    yield Client(session, running.url)
    await running.stop()


async def test_cap_identical_send(fast_caps: Client) -> None:
    capped = fast_caps
    assert "id" in await capped.json("send.php", {"phones": RU, "mes": "x"})
    assert (await capped.json("send.php", {"phones": RU, "mes": "x"}))["error_code"] == 9
    assert "id" in await capped.json("send.php", {"phones": RU, "mes": "other"})
    await asyncio.sleep(1.6)
    assert "id" in await capped.json("send.php", {"phones": RU, "mes": "x"})


async def test_cap_identical_cost(capped: Client) -> None:
    for _ in range(5):
        assert "cost" in await capped.json("send.php", {"phones": RU, "mes": "x", "cost": 1})
    assert (await capped.json("send.php", {"phones": RU, "mes": "x", "cost": 1}))["error_code"] == 9


async def test_cap_status(fast_caps: Client) -> None:
    capped = fast_caps
    sent = await capped.json("send.php", {"phones": f"{RU},{UK}", "mes": "x"})
    one = {"id": sent["id"], "phone": RU}
    for _ in range(5):
        assert "status" in await capped.json("status.php", one)
    assert (await capped.json("status.php", one))["error_code"] == 9
    assert "status" in await capped.json("status.php", {"id": sent["id"], "phone": UK})
    bulk = {"id": f"{sent['id']},{sent['id']}", "phone": f"{RU},{UK}"}
    assert isinstance(await capped.json("status.php", bulk), list)
    assert (await capped.json("status.php", bulk))["error_code"] == 9  # one bulk a minute
    await asyncio.sleep(1.6)
    assert isinstance(await capped.json("status.php", bulk), list)


async def test_cap_history(session: aiohttp.ClientSession) -> None:
    running = await start(caps=SmscCaps(minute=60.0, hour=3.0))
    try:
        client = Client(session, running.url)
        await client.json("send.php", {"phones": RU, "mes": "x"})
        started = time.monotonic()
        for _ in range(3):
            assert isinstance(await client.json("get.php", {"get_messages": 1}), list)
        assert (await client.json("get.php", {"get_messages": 1}))["error_code"] == 9
        # 30 an hour, whatever the parameters (a refused request does not count).
        for n in range(27):
            assert isinstance(await client.json("get.php", {"get_messages": 1, "cnt": n + 1}), list)
        assert (await client.json("get.php", {"get_messages": 1, "cnt": 99}))["error_code"] == 9
        await asyncio.sleep(max(0.0, 3.3 - (time.monotonic() - started)))
        assert isinstance(await client.json("get.php", {"get_messages": 1, "cnt": 99}), list)
    finally:
        await running.stop()


async def test_cap_data_calls(capped: Client) -> None:
    for _ in range(3):
        assert isinstance(await capped.json("get.php", {"get_answers": 1}), list)
    assert (await capped.json("get.php", {"get_answers": 1}))["error_code"] == 9
    for n in range(3):
        await capped.json("get.php", {"get_stat": 1, "start": f"0{n + 1}.01.2024"})
    assert (await capped.json("get.php", {"get_stat": 1, "start": "09.01.2024"}))["error_code"] == 9
    for _ in range(3):
        assert "zones" in await capped.json("get.php", {"get_price": 1})
    assert (await capped.json("get.php", {"get_price": 1}))["error_code"] == 9
    for _ in range(3):
        await capped.json("info.php", {"get_operator": 1, "phone": RU})
    assert (await capped.json("info.php", {"get_operator": 1, "phone": RU}))["error_code"] == 9


async def test_cap_info_per_minute(capped: Client) -> None:
    for n in range(97):  # 3 above + 97 = 100 different numbers
        assert "operator" in await capped.json(
            "info.php", {"get_operator": 1, "phone": f"7916{n:07d}"}
        )
    assert "operator" in await capped.json("info.php", {"get_operator": 1, "phone": RU})
    assert "operator" in await capped.json("info.php", {"get_operator": 1, "phone": UK})
    assert "operator" in await capped.json("info.php", {"get_operator": 1, "phone": "79160009999"})
    over = await capped.json("info.php", {"get_operator": 1, "phone": "79160008888"})
    assert over["error_code"] == 9


async def test_caps_off(client: Client) -> None:
    for _ in range(3):
        assert "id" in await client.json("send.php", {"phones": RU, "mes": "same"})
    for _ in range(10):
        assert isinstance(await client.json("get.php", {"get_messages": 1}), list)


def test_caps_from_text(session: aiohttp.ClientSession) -> None:
    assert sandbox_of(create_sandbox(SandboxState(), caps="off")).caps.enabled is False
    assert sandbox_of(create_sandbox(SandboxState(), caps="on")).caps.minute == 60.0
    assert sandbox_of(create_sandbox(SandboxState(), caps="0.5")).caps.minute == 30.0
    assert sandbox_of(create_sandbox(SandboxState(), caps=0.1)).caps.hour == 360.0
    blocked = sandbox_of(create_sandbox(SandboxState(), blocked_phones="1,2")).blocked_phones
    assert blocked == {"1", "2"}


# --------------------------------------------------------------------------- get.php / info / links


async def test_history_paging_and_filters(client: Client) -> None:
    for n in range(5):
        await client.json("send.php", {"phones": f"7916000000{n}", "mes": f"m{n}"})
    page = await client.json("get.php", {"get_messages": 1, "cnt": 2})
    assert [m["message"] for m in page] == ["m4", "m3"]
    assert isinstance(page[0]["int_id"], str) and isinstance(page[0]["id"], int)  # as the doc
    fields = {
        "status",
        "last_date",
        "last_timestamp",
        "err",
        "send_date",
        "send_timestamp",
        "phone",
        "cost",
        "sender_id",
        "status_name",
        "message",
        "mccmnc",
        "country",
        "operator",
        "region",
        "type",
        "id",
        "int_id",
        "sms_cnt",
        "format",
        "crc",
    }
    assert set(page[0]) == fields
    older = await client.json(
        "get.php", {"get_messages": 1, "cnt": 2, "prev_id": page[-1]["int_id"]}
    )
    assert [m["message"] for m in older] == ["m2", "m1"]
    by_phone = await client.json("get.php", {"get_messages": 1, "phone": "79160000003"})
    assert [m["message"] for m in by_phone] == ["m3"]
    none = await client.json("get.php", {"get_messages": 1, "phone": "79999999999"})
    assert none["error_code"] == 3
    old = await client.json(
        "get.php", {"get_messages": 1, "start": "01.01.2020", "end": "02.01.2020"}
    )
    assert old["error_code"] == 3


async def test_incoming(
    client: Client, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        sandbox.url + "/__sandbox/smsc/incoming", json={"phone": RU, "mes": "Да", "sms_id": "1"}
    ) as resp:
        first = (await resp.json())["id"]
    sandbox_of(sandbox.app).add_incoming(UK, "Stop", to_phone="79990000001")
    answers = await client.json("get.php", {"get_answers": 1})
    assert [a["message"] for a in answers] == ["Да", "Stop"]
    assert set(answers[0]) == {"id", "received", "phone", "message", "to_phone", "sent"}
    after = await client.json("get.php", {"get_answers": 1, "after_id": first})
    assert [a["phone"] for a in after] == [UK]
    to = await client.json("get.php", {"get_answers": 1, "to_phone": "79990000001", "hour": 48})
    assert [a["phone"] for a in to] == [UK]
    assert len(await client.json("get.php", {"get_answers": 1, "cnt": 1})) == 1


async def test_stat_price_info_links(
    client: Client, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    await client.json("send.php", {"phones": f"{RU},{UK}", "mes": "x" * 200})
    today = time.strftime("%d.%m.%Y", time.gmtime(time.time() + 3 * 3600))
    [stat] = await client.json("get.php", {"get_stat": 1, "start": today})
    assert (stat["login"], stat["sms"], stat["credit"], stat["currency"]) == (
        "testuser",
        "4",
        "6.00",
        "RUB",
    )
    assert (await client.json("get.php", {"get_stat": 1}))["error_code"] == 1
    prices = await client.json("get.php", {"get_price": 1})
    assert set(prices) == {"zones", "codes", "mail"}
    assert set(prices["zones"][0]) == {"zone", "name", "api", "mass", "mms", "hlr", "call"}
    info = await client.json("info.php", {"get_operator": 1, "phone": RU})
    assert set(info) == {"country", "operator", "region", "mcc", "mnc", "tz"}
    many = await client.json("info.php", {"get_operator": 1, "phone": f"{RU},{UK}"})
    assert [i["phone"] for i in many] == [RU, UK]
    assert (await client.json("info.php", {"get_operator": 1, "phone": "999"}))["error_code"] == 3
    assert (await client.json("get.php", {}))["error_code"] == 1
    sent = await client.json(
        "send.php", {"phones": RU, "mes": "Go https://shop.example/p/1", "tinyurl": 1, "all": 1}
    )
    stored = await client.json("status.php", {"id": sent["id"], "phone": RU, "all": 1})
    assert "https://smsc.ru/~" in stored["message"]
    [link_id] = sandbox_of(sandbox.app).short_links
    async with session.post(sandbox.url + "/__sandbox/smsc/click", json={"id": link_id}) as r:
        assert r.status == 200
    link = await client.json("tinyurls.php", {"get": 1, "id": link_id})
    assert (link["cnt"], link["cnt_day"], link["cnt_mon"]) == ("1", "1", "1")
    by_link = await client.json("tinyurls.php", {"get": 1, "link": "https://shop.example/p/1"})
    assert by_link["id"] == str(link_id)
    assert (await client.json("tinyurls.php", {"get": 1, "id": 1}))["error_code"] == 3


async def test_other_formats_for_data(client: Client) -> None:
    await client.json("send.php", {"phones": RU, "mes": "x"})
    _, text, _ = await client.raw("get.php", {"get_messages": 1, "fmt": 2, "charset": "utf-8"})
    root = ElementTree.fromstring(text)
    assert root.tag == "list" and root.find("sms") is not None
    _, line, _ = await client.raw("balance.php", {"fmt": 0})
    assert line == "998.50"
    _, line, _ = await client.raw("balance.php", {"fmt": 1, "cur": 1})
    assert line == "998.50,RUB"
    _, err, _ = await client.raw("get.php", {"get_messages": 1, "phone": "7000", "fmt": 1})
    assert err == "0,-3"


# --------------------------------------------------------------------------- sandbox kit


async def test_request_log_and_faults(
    client: Client, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    await client.json("balance.php", {})
    [entry] = sandbox.state.log.for_path("balance.php")
    assert entry.method == "GET" and entry.status == 200 and "balance" in entry.body
    async with session.put(
        sandbox.url + "/__sandbox/faults", json={"send.php": {"error_rate": 1.0}}
    ) as resp:
        assert resp.status == 200
    status, _, _ = await client.raw("send.php", {"phones": RU, "mes": "x"})
    assert status == 500
    assert sandbox.state.log.for_path("send.php")[-1].fault == "error"
    assert (await client.json("balance.php", {}))["balance"] == "1000.00"  # nothing was sent
    sandbox.state.faults = {"*": Fault(malformed_rate=1.0)}
    status, text, _ = await client.raw("balance.php", {})
    assert status == 200 and text.startswith("<html>")
