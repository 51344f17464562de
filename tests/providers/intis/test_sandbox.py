"""The Intis sandbox itself, over raw HTTP: authentication, documented error codes, XML
shapes, ids, balance, and the shared sandbox kit (request log, faults) on its routes."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from worker.providers.intis.adapter import ENDPOINTS
from worker.providers.intis.sandbox import DEFAULT_API_KEY, INTIS_KEY, IntisSandbox, create_sandbox
from worker.providers.intis.signing import signed_params
from worker.providers.sandbox_kit import Fault, OutcomeMix, RunningSandbox, SandboxState, serve

LOGIN = "testuser"


class Client:
    """Raw signed calls to one running sandbox."""

    def __init__(self, sandbox: RunningSandbox, session: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.session = session

    @property
    def intis(self) -> IntisSandbox:
        return self.sandbox.app[INTIS_KEY]

    async def raw(
        self, name: str, params: dict[str, str], *, method: str = "GET"
    ) -> tuple[int, str]:
        url = f"{self.sandbox.url}/external/get/{name}.php"
        if method == "GET":
            async with self.session.get(url, params=params) as resp:
                return resp.status, await resp.text()
        async with self.session.post(url, data=params) as resp:
            return resp.status, await resp.text()

    async def call(
        self,
        name: str,
        params: dict[str, str] | None = None,
        *,
        fmt: str | None = "json",
        key: str = DEFAULT_API_KEY,
        login: str = LOGIN,
        timestamp: str | None = None,
        method: str = "GET",
    ) -> Any:
        query = dict(params or {})
        if fmt is not None:
            query["return"] = fmt
        signed = signed_params(query, login=login, api_key=key, timestamp=timestamp)
        status, text = await self.raw(name, signed, method=method)
        assert status == 200, text
        return ET.fromstring(text) if fmt == "xml" else json.loads(text)


MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    running: list[RunningSandbox] = []
    session = aiohttp.ClientSession()

    async def make(*, mix: OutcomeMix | None = None, **options: Any) -> Client:
        state = SandboxState(mix or OutcomeMix(final_after=0.0, seed=4))
        sandbox = await serve(create_sandbox(state, **options))
        running.append(sandbox)
        return Client(sandbox, session)

    yield make
    await session.close()
    for sandbox in running:
        await sandbox.stop()


def send_params(phone: str = "79161234567", text: str = "Hello!") -> dict[str, str]:
    return {"phone": phone, "text": text, "sender": "smstest"}


# --------------------------------------------------------------------------- authentication


async def test_timestamp_is_bare_digits_and_unsigned(make_client: MakeClient) -> None:
    client = await make_client()
    status, text = await client.raw("timestamp", {})
    assert status == 200 and text.isdigit() and abs(int(text) - time.time()) < 5


async def test_auth_error_codes(make_client: MakeClient) -> None:
    client = await make_client()
    good = signed_params({"return": "json"}, login=LOGIN, api_key=DEFAULT_API_KEY)
    cases = {
        1: {k: v for k, v in good.items() if k != "signature"},
        2: {k: v for k, v in good.items() if k != "login"},
        24: {k: v for k, v in good.items() if k != "timestamp"},
        7: signed_params({"return": "json"}, login="nobody", api_key=DEFAULT_API_KEY),
        6: {**good, "signature": "0" * 32},
    }
    for code, params in cases.items():
        status, text = await client.raw("balance", params)
        assert (status, json.loads(text)) == (200, {"error": code}), code
    status, text = await client.raw("balance", {**good, "signature": "подпись"})
    assert (status, json.loads(text)) == (200, {"error": 6})
    assert "money" in await client.call("balance")


async def test_signature_covers_every_parameter(make_client: MakeClient) -> None:
    client = await make_client()
    signed = signed_params(
        {**send_params(), "return": "json"}, login=LOGIN, api_key=DEFAULT_API_KEY
    )
    _, text = await client.raw("send", {**signed, "text": "tampered"})
    assert json.loads(text) == {"error": 6}
    assert client.sandbox.state.messages == {}


async def test_timestamp_window(make_client: MakeClient) -> None:
    client = await make_client(timestamp_window=100)
    now = int(time.time())
    assert "money" in await client.call("balance", timestamp=str(now - 90))
    assert await client.call("balance", timestamp=str(now - 200)) == {"error": 24}
    assert await client.call("balance", timestamp="yesterday") == {"error": 24}
    default = await make_client()
    assert "money" in await default.call("balance", timestamp=str(now - 86000))
    assert await default.call("balance", timestamp=str(now - 86500)) == {"error": 24}


async def test_post_form_is_accepted(make_client: MakeClient) -> None:
    client = await make_client()
    answer = await client.call("send", send_params(), method="POST")
    assert answer["79161234567"]["error"] == "0"
    assert client.sandbox.state.log.entries[-1].method == "POST"


async def test_a_repeated_parameter_counts_with_its_last_value(make_client: MakeClient) -> None:
    client = await make_client()
    signed = signed_params(
        {**send_params(), "return": "json"}, login=LOGIN, api_key=DEFAULT_API_KEY
    )
    url = f"{client.sandbox.url}/external/get/send.php"
    async with client.session.get(url, params=[("sender", "nope"), *signed.items()]) as resp:
        answer = json.loads(await resp.text())
    assert answer["79161234567"]["error"] == "0"
    assert client.sandbox.state.log.entries[-1].params["sender"] == "smstest"


async def test_all_eighteen_routes_exist(make_client: MakeClient) -> None:
    client = await make_client()
    assert len(ENDPOINTS) == 18
    for name in ENDPOINTS:
        status, _ = await client.raw(name, {})
        assert status == 200, name
    status, _ = await client.raw("nothing", {})
    assert status == 404


# --------------------------------------------------------------------------- documented errors


@pytest.mark.parametrize(
    ("name", "params", "code"),
    [
        ("send", {"text": "x", "sender": "smstest"}, 4),
        ("send", {"phone": "79161234567", "sender": "smstest"}, 3),
        ("send", {"phone": "79161234567", "text": "x"}, 5),
        ("send", {"phone": "79161234567", "text": "x", "sender": "way-too-long-sender"}, 8),
        ("send", {"phone": "79161234567", "text": "x", "sender": "unknown"}, 9),
        ("send", {**send_params(), "sendingTime": "tomorrow"}, 30),
        ("status", {}, 17),
        ("phone", {"page": "1"}, 15),
        ("phone", {"base": "999", "page": "1"}, 25),
        ("phone", {"base": "125452", "page": "1"}, 26),
        ("find_on_stop", {}, 4),
        ("add2stop", {}, 4),
        ("add2stop", {"phone": "12"}, 16),
        ("add_template", {"text": "x"}, 21),
        ("add_template", {"name": "n"}, 3),
        ("del_template", {}, 21),
        ("stat_by_month", {}, 23),
        ("stat_by_month", {"month": "2014-13"}, 23),
        ("hlr", {}, 4),
        ("hlr_stat", {"to": "2014-01-01"}, 28),
        ("hlr_stat", {"from": "2014-01-01"}, 29),
        ("operator", {}, 4),
        ("operator", {"phone": "12"}, 16),
        ("incoming", {}, 30),
        ("incoming", {"to": "2014-01-01 00:00:00"}, 28),
        ("incoming", {"from": "2014-01-01 00:00:00"}, 29),
    ],
)
async def test_documented_error_codes(
    make_client: MakeClient, name: str, params: dict[str, str], code: int
) -> None:
    client = await make_client()
    assert await client.call(name, params) == {"error": code}


async def test_sender_not_approved_and_forbidden_words(make_client: MakeClient) -> None:
    client = await make_client(senders={"smstest": "order"}, forbidden_words=["casino"])
    assert await client.call("send", send_params()) == {"error": 10}
    client.intis.senders["smstest"] = "completed"
    assert await client.call("send", send_params(text="Casino night")) == {"error": 11}


async def test_batch_limit_is_error_14(make_client: MakeClient) -> None:
    client = await make_client()
    fifty = ",".join(f"7916{i:07d}" for i in range(50))
    answer = await client.call("send", send_params(phone=fifty))
    assert len(answer) == 50
    fifty_one = ",".join(f"7917{i:07d}" for i in range(51))
    assert await client.call("send", send_params(phone=fifty_one)) == {"error": 14}
    hundred = ",".join(f"7918{i:07d}" for i in range(100))
    assert len(await client.call("hlr", {"phone": hundred})) == 100  # hlr.php: up to 100
    assert await client.call("hlr", {"phone": hundred + ",79190000000"}) == {"error": 14}


async def test_per_phone_errors_in_send(make_client: MakeClient) -> None:
    client = await make_client(stop_list=["79160000013"])
    answer = await client.call(
        "send", send_params(phone="79161234567,79160000013,1234567,+4915112345678")
    )
    assert answer["79160000013"] == {"error": 13}
    assert answer["1234567"] == {"error": 16}  # 7 digits: not 8–15
    assert answer["79161234567"]["error"] == "0"
    assert answer["+4915112345678"]["error"] == "0"
    assert {m.phone for m in client.sandbox.state.messages.values()} == {
        "79161234567",
        "4915112345678",
    }


async def test_ids_are_unique_22_digits_and_messages_recorded(make_client: MakeClient) -> None:
    client = await make_client()
    phones = ",".join(f"7916{i:07d}" for i in range(50))
    ids: set[str] = set()
    for _ in range(3):
        answer = await client.call("send", send_params(phone=phones))
        ids |= {v["id_sms"] for v in answer.values()}
    assert len(ids) == 150
    assert all(len(i) == 22 and i.isdigit() for i in ids)
    assert set(client.sandbox.state.messages) == ids


async def test_balance_charges_price_times_parts(make_client: MakeClient) -> None:
    client = await make_client(balance="10.00", price="0.5")
    text = "Привет! " * 20  # 160 chars of UCS-2: 3 parts of 67
    answer = await client.call("send", send_params(text=text))
    assert answer["79161234567"]["count_sms"] == "3" and answer["79161234567"]["cost"] == "1.5"
    assert client.intis.balance == Decimal("8.50")
    assert (await client.call("balance"))["money"] == "8.50"
    msg = next(iter(client.sandbox.state.messages.values()))
    assert (msg.parts, msg.cost, msg.sender) == (3, "1.5", "smstest")


async def test_error_32_when_balance_cannot_pay(make_client: MakeClient) -> None:
    client = await make_client(balance="1.0", price="0.5")
    assert await client.call("send", send_params(phone="79161234567,79161234568,79161234569")) == {
        "error": 32
    }
    assert client.sandbox.state.messages == {} and client.intis.balance == Decimal("1.0")
    assert len(await client.call("send", send_params(phone="79161234567,79161234568"))) == 2
    assert await client.call("send", send_params()) == {"error": 32}


async def test_status_words_and_forms(make_client: MakeClient) -> None:
    client = await make_client(mix=OutcomeMix(final_after=3600, seed=1))
    answer = await client.call("send", send_params(phone="79161234567,79161234568"))
    first, second = (v["id_sms"] for v in answer.values())
    client.sandbox.state.messages[first].final_at = 0  # final now
    flat = await client.call("status", {"state": f"{first},{second},4000000000000000000000"})
    outcome = client.sandbox.state.messages[first].outcome
    word = {"delivered": "deliver", "undeliverable": "not_deliver", "expired": "expired"}[outcome]
    assert flat == {first: word, second: "send"}
    client.intis.status_form = "nested"
    nested = await client.call("status", {"state": first})
    assert nested[first]["status"] == word and len(nested[first]["time"]) == 19
    client.intis.pending_status = None
    assert await client.call("status", {"state": second}) == {}


# --------------------------------------------------------------------------- XML shapes


async def test_xml_balance(make_client: MakeClient) -> None:
    client = await make_client()
    root = await client.call("balance", fmt="xml")
    assert root.tag == "response"
    assert root.findtext("money") == "1000.00" and root.findtext("currency") == "RUR"


async def test_xml_send_and_status(make_client: MakeClient) -> None:
    client = await make_client(stop_list=["79160000013"])
    root = await client.call("send", send_params(phone="79161234567,79160000013"), fmt="xml")
    ok, refused = root.findall("./phones/phone")
    assert ok.attrib["phone"] == "79161234567" and ok.attrib["error"] == "0"
    assert set(ok.attrib) == {"phone", "error", "id_sms", "cost", "count_sms"}
    assert refused.attrib == {"phone": "79160000013", "error": "13"}
    root = await client.call("status", {"state": ok.attrib["id_sms"]}, fmt="xml")
    (status,) = root.findall("./statuses/status")
    assert status.attrib["id_sms"] == ok.attrib["id_sms"]
    assert status.attrib["status"] in {"deliver", "not_deliver", "expired"}


async def test_xml_other_documented_shapes(make_client: MakeClient) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    client = await make_client(
        incoming=[
            {
                "id": "5597",
                "date": f"{today} 05:47:24",
                "sender": "1",
                "prefix": "51632",
                "text": "T",
            }
        ]
    )
    senders = await client.call("senders", fmt="xml")
    assert senders.findall("./senders/sender")[0].attrib == {
        "sender": "smstest",
        "state": "completed",
    }
    bases = await client.call("base", fmt="xml")
    first = bases.findall("./bases/base")[0].attrib
    assert first["base"] == "125448" and first["count"] == "3" and "time_birth" in first
    phones = await client.call("phone", {"base": "125448", "page": "1"}, fmt="xml")
    assert phones.findall("./phones/phone")[0].attrib["phone"].endswith("****")
    added = await client.call("add2stop", {"phone": "79161234567"}, fmt="xml")
    assert added.findtext("id", "").isdigit()
    found = await client.call("find_on_stop", {"phone": "79161234567"}, fmt="xml")
    assert found.findtext("time_in", "").startswith(today)
    assert (await client.call("add_template", {"name": "t", "text": "x"}, fmt="xml")).findtext("id")
    templates = await client.call("template", fmt="xml")
    assert templates.findall("./templates/template")[0].attrib["template"] == "x"
    assert (await client.call("del_template", {"name": "t"}, fmt="xml")).findtext(
        "result"
    ) == "deleted"
    await client.call("send", send_params(phone="79169999999"))  # not the stop-listed one
    stats = await client.call("stat_by_month", {"month": today[:7]}, fmt="xml")
    (day,) = stats.findall("./statiscics/date")  # sic: the doc's spelling
    assert day.attrib["date"] == today and any(k.endswith("_parts") for k in day.attrib)
    incoming = await client.call("incoming", {"date": today}, fmt="xml")
    assert incoming.findall("./sms")[0].attrib["id_sms"] == "5597"
    error = await client.call("balance", fmt="xml", key="wrong")
    assert error.findtext("error") == "6"


# --------------------------------------------------------------------------- other endpoints


async def test_hlr_records_and_stats(make_client: MakeClient) -> None:
    client = await make_client()
    (record,) = await client.call("hlr", {"phone": "79161234567"})
    for name in (
        "id", "destination", "message_id", "IMSI", "stat", "error", "orn", "pon", "ron",
        "mccmnc", "rcn", "ppm", "onp", "ocn", "ocp", "is_ported", "rnp", "rcp", "is_roaming",
        "pnp", "pcn", "pcp", "total_price", "request_id", "request_time",
    ):  # fmt: skip
        assert name in record, name
    assert record["stat"] == "DELIVRD" and record["mccmnc"] == "25001"
    day = record["request_time"][:10]
    stats = await client.call("hlr_stat", {"from": day, "to": day})
    assert stats["79161234567"]["id"] == record["id"]
    assert await client.call("hlr_stat", {"from": "2000-01-01", "to": "2000-01-02"}) == {}


async def test_templates_and_stop_list_lifecycle(make_client: MakeClient) -> None:
    client = await make_client()
    first = await client.call("add_template", {"name": "t", "text": "one"})
    assert await client.call("add_template", {"name": "t", "text": "two"}) == {"error": 22}
    again = await client.call("add_template", {"name": "t", "text": "two", "override": "1"})
    assert again == first
    assert (await client.call("template"))["t"]["template"] == "two"
    assert await client.call("del_template", {"name": "t"}) == {"result": "deleted"}
    assert await client.call("del_template", {"name": "t"}) == {"result": "not_found"}
    assert await client.call("find_on_stop", {"phone": "79161234567"}) == {}
    assert "id" in await client.call("add2stop", {"phone": "79161234567"})
    assert await client.call("add2stop", {"phone": "79161234567"}) == {"error": 20}
    answer = await client.call("send", send_params())
    assert answer == {"79161234567": {"error": 13}}


async def test_stat_by_month_counts_final_messages(make_client: MakeClient) -> None:
    client = await make_client(price="0.25")
    await client.call("send", send_params(phone=",".join(f"7916{i:07d}" for i in range(10))))
    month = time.strftime("%Y-%m", time.gmtime())
    answer = await client.call("stat_by_month", {"month": month})
    (cells,) = answer.values()
    assert sum(int(c["parts"]) for c in cells.values()) == 10
    assert sum(Decimal(c["cost"]) for c in cells.values()) == Decimal("2.5")
    assert await client.call("stat_by_month", {"month": "2000-01"}) == {}


async def test_operator_prices_lists(make_client: MakeClient) -> None:
    client = await make_client()
    operator = await client.call("operator", {"phone": "79161234567"})
    assert operator["error"] == 0 and operator["ok"] is True and operator["mcc"] == "250"
    assert set(operator) == {
        "currency", "error", "mcc", "mnc", "ok", "operator", "phone", "ported", "price",
        "regionCode", "timeZone",
    }  # fmt: skip
    prices = await client.call("prices")
    assert prices["25001"]["NETWORK_NAME"] == "MTS"
    lists = await client.call("base")
    assert lists["125448"]["count"] == "3" and lists["125448"]["pages"] == "1"
    numbers = await client.call("phone", {"base": "125448", "page": "1"})
    assert len(numbers) == 3
    assert await client.call("phone", {"base": "125448", "page": "2"}) == {}


async def test_incoming_date_wins_over_period(make_client: MakeClient) -> None:
    client = await make_client(
        incoming=[
            {"id": "1", "date": "2014-10-27 05:47:24", "sender": "1", "prefix": "", "text": "a"},
            {"id": "2", "date": "2014-10-28 05:47:24", "sender": "1", "prefix": "", "text": "b"},
        ]
    )
    answer = await client.call(
        "incoming",
        {"date": "2014-10-27", "from": "2014-10-28 00:00:00", "to": "2014-10-28 23:59:59"},
    )
    assert list(answer) == ["1"]
    period = await client.call(
        "incoming", {"from": "2014-10-27 00:00:00", "to": "2014-10-28 23:59:59"}
    )
    assert list(period) == ["1", "2"]


async def test_doc_quirks_render_the_docs_broken_bodies(make_client: MakeClient) -> None:
    client = await make_client(
        doc_quirks=True,
        incoming=[
            {"id": "5597", "date": "2014-10-27 05:47:24", "sender": "1", "prefix": "", "text": "a"}
        ],
    )
    await client.call("add_template", {"name": "test", "text": "text"})
    signed = signed_params({"return": "json"}, login=LOGIN, api_key=DEFAULT_API_KEY)
    _, templates = await client.raw("template", signed)
    assert templates.startswith('{"test" : "{"template":"text", "up_time":"')
    signed = signed_params(
        {"return": "json", "date": "2014-10-27"}, login=LOGIN, api_key=DEFAULT_API_KEY
    )
    _, incoming = await client.raw("incoming", signed)
    assert incoming.startswith('{{"5597"') and incoming.endswith("}}}")


# --------------------------------------------------------------------------- the shared kit


async def test_request_log_and_faults_apply_to_intis_routes(make_client: MakeClient) -> None:
    client = await make_client()
    await client.call("balance")
    (entry,) = client.sandbox.state.log.for_path("balance.php")
    assert entry.params["login"] == LOGIN and entry.status == 200 and "money" in entry.body
    client.sandbox.state.faults = {"balance.php": Fault(error_rate=1.0)}
    signed = signed_params({"return": "json"}, login=LOGIN, api_key=DEFAULT_API_KEY)
    status, _ = await client.raw("balance", signed)
    assert status == 500
    assert client.sandbox.state.log.entries[-1].fault == "error"
    status, _ = await client.raw("senders", signed_params({}, login=LOGIN, api_key=DEFAULT_API_KEY))
    assert status == 200  # the fault is per endpoint


async def test_sdk_dialect_shapes(make_client: MakeClient) -> None:
    """dialect="sdk": the shapes Intis's SDKs parse where they differ from the doc."""
    client = await make_client(dialect="sdk")
    answer = await client.call("send", send_params())
    message_id = answer["79161234567"]["id_sms"]
    status = await client.call("status", {"state": message_id})
    assert set(status[message_id]) == {"status", "time"}
    entry_id = (await client.call("add2stop", {"phone": "79160000001"}))["id"]
    found = await client.call("find_on_stop", {"phone": "79160000001"})
    assert list(found) == [entry_id] and set(found[entry_id]) == {"time_in", "description"}
    template_id = (await client.call("add_template", {"name": "n", "text": "t"}))["id"]
    templates = await client.call("template")
    assert templates == {template_id: {"name": "n", "template": "t", "up_time": ANY_TIME}}
    month = time.strftime("%Y-%m", time.gmtime())
    (day,) = await client.call("stat_by_month", {"month": month})
    assert set(day) == {"date", "stats"} and set(day["stats"][0]) == {"status", "cost", "parts"}
    assert "error" not in await client.call("operator", {"phone": "79161234567"})


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and len(other) == 19 and other[4] == "-"

    __hash__ = None  # type: ignore[assignment]


ANY_TIME = _AnyTime()
