"""Intis adapter: the doc's response examples, the error/status tables, callbacks, and the
adapter against the real sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from producers.status import Status
from worker.providers import provider_spec
from worker.providers.base import (
    AccountConfig,
    ErrorClass,
    ProviderError,
    RecipientOutcome,
    SendRequest,
)
from worker.providers.intis import SPEC, IntisAdapter, codes
from worker.providers.intis.adapter import (
    ENDPOINTS,
    MAX_BATCH,
    MalformedResponse,
    StopListEntry,
    load_json,
    parse_balance,
    parse_delete_template,
    parse_hlr_response,
    parse_hlr_stats,
    parse_id,
    parse_incoming,
    parse_list_numbers,
    parse_lists,
    parse_operator,
    parse_prices,
    parse_send_response,
    parse_senders,
    parse_stats_by_month,
    parse_status_response,
    parse_stop_list_search,
    parse_templates,
    parse_timestamp,
)
from worker.providers.intis.push_formats import parse_delivery_report
from worker.providers.intis.sandbox import DEFAULT_API_KEY, INTIS_KEY, create_sandbox
from worker.providers.sandbox_kit import Fault, OutcomeMix, RunningSandbox, SandboxState, serve

# --------------------------------------------------------------------------- the doc's examples
# Copied from intis-telecom-http-api.txt (PDF line wraps joined), byte for byte otherwise.

DOC_BALANCE = '{"money" : "69573.1","currency" : "RUR"}'
DOC_BASE = (
    '{"125448":{"name":"All qualified leads","time_birth":"12:00:00","day_before":"0" ,'
    '"local_time":"1","birth_sender":"" ,"birth_text":"","on_birth":"0","count":"3618",'
    '"pages":"37"},"125452":{"name":"Valuable clients","time_birth":"12:00:00","day_before":"0" ,'
    '"local_time":"1","birth_sender":"" ,"birth_text":"","on_birth":"0","count":"2255","pages":"23"},'
    '"125453":{"name":"Partners","time_birth":"12:00:00","day_before":"0" ,"local_time":"1",'
    '"birth_sender":"" ,"birth_text":"","on_birth":"0","count":"2266","pages":"23"},'
    '"125454":{"name":"All leads and clients","time_birth":"12:00:00","day_before":"0" ,'
    '"local_time":"0","birth_sender":"Stok&Sekond" ,"birth_text":"","on_birth":"1",'
    '"count":"11537","pages":"116"}}'
)
DOC_SENDERS = '{"smstest":"completed","smstest2":"completed"}'
_BLANK = (
    '{"name":"","last_name":"","middle_name":"" ,"date_birth":"0000-00-00","male":"" ,'
    '"note1":"","note2":"","region":"","operator":""}'
)
DOC_PHONE = f'{{"79687931116":{_BLANK},"79874617237":{_BLANK},"79871846995":{_BLANK}}}'
DOC_STATUS = '{"4091297100348873330001" : "not_deliver","4091297100348880230003" : "not_deliver"}'
DOC_SEND = (
    '{"17076295568":{"error":"0", "id_sms":"4092112510348380960001", "cost":"0.5", '
    '"count_sms":"1"}}'
)
DOC_FIND_ON_STOP = '{"time_in" : "2014-08-29 11:07:43","description" : "descr"}'
DOC_ADD2STOP = '{"id" : "4419373"}'
DOC_TEMPLATES = (
    '{"test" : "{"template":"text", "up_time":"2014-08-28 15:22:25"}","test22" : '
    '"{"template":"testtt 1321321231321", "up_time":"2014-08-28 15:39:07"}"}'
)
DOC_ADD_TEMPLATE = '{"id" : "4419373"}'
DOC_DEL_TEMPLATE = '{"result" : "deleted"}'
DOC_STAT_BY_MONTH = (
    '{"2014-08-01":{"deliver":{"cost":"0.500", "parts":"1"},"2014-08-06":{"deliver":{"cost":"0.600",'
    ' "parts":"1"},"not_deliver":{"cost":"0.600", "parts":"1"},"2014-08-07":{"deliver":{"cost":'
    '"1.200", "parts":"2"},"not_deliver":{"cost":"1.800", "parts":"3"},"2014-08-08":{"not_deliver":'
    '{"cost":"0.700", "parts":"1"},"deliver":{"cost":"0.600", "parts":"1"},"2014-08-09":'
    '{"not_deliver":{"cost":"506.800", "parts":"768"},"deliver":{"cost":"858.700", "parts":"1304"},'
    '"expired":{"cost":"80.500", "parts":"122"},"2014-08-11":{"not_deliver":{"cost":"32.700", '
    '"parts":"50"},"expired":{"cost":"7.900", "parts":"12"},"deliver":{"cost":"57.000", '
    '"parts":"86"},"2014-08-13":{"expired":{"cost":"0.600", "parts":"1"},"2014-08-14":{"deliver":'
    '{"cost":"8080.850", "parts":"18071"},"not_deliver":{"cost":"4695.000", "parts":"10546"},'
    '"expired":{"cost":"992.250", "parts":"2217"},"2014-08-15":{"deliver":{"cost":"1738.300", '
    '"parts":"3909"},"expired":{"cost":"194.300", "parts":"436"},"not_deliver":{"cost":"1057.700", '
    '"parts":"2380"},"2014-08-19":{"expired":{"cost":"2564.350", "parts":"5703"},"not_deliver":'
    '{"cost":"2565.800", "parts":"5681"},"deliver":{"cost":"4248.100", "parts":"9416"},'
    '"2014-08-25":{"not_deliver":{"cost":"621.250", "parts":"1345"},"deliver":{"cost":"978.550", '
    '"parts":"2116"},"expired":{"cost":"109.900", "parts":"237"},"2014-08-26":{"deliver":'
    '{"cost":"10.500", "parts":"21"},"not_deliver":{"cost":"4.500", "parts":"9"},"expired":'
    '{"cost":"1.000", "parts":"2"},"2014-08-27":{"deliver":{"cost":"1339.950", "parts":"2836"},'
    '"expired":{"cost":"160.400", "parts":"340"},"not_deliver":{"cost":"836.050", "parts":"1769"},'
    '"2014-08-28":{"expired":{"cost":"357.000", "parts":"714"},"deliver":{"cost":"2901.500", '
    '"parts":"5803"},"not_deliver":{"cost":"1796.000", "parts":"3592"},"2014-08-29":'
    '{"not_deliver":{"cost":"0.500", "parts":"1"}}'
)
DOC_OPERATOR = (
    '{"currency": "USD","error": 0,"mcc": "000","mnc": "00","ok": true,"operator": "AT&T",'
    '"phone": "1XXXXXXXXXX","ported": 0,"price": 0.65,"regionCode": 0,"timeZone": 0}'
)
DOC_INCOMING = (
    '{{"5597" : {"date":"2014-10-27 05:47:24", "sender":"17076295568", "prefix":"51632", '
    '"text":"51632 TEST"}}}'
)
DOC_PRICES = (
    '{"25099": {"NETWORK_NAME": "BEELINE","COUNTRY": "RUSSIAN FEDERATION","PRICE": "0.65",'
    '"CURRENCY": "RUB"},"25001": {"NETWORK_NAME": "MTS","COUNTRY": "RUSSIAN FEDERATION",'
    '"PRICE": "0.65","CURRENCY": "RUB"},"25002": {"NETWORK_NAME": "MEGAFON","COUNTRY": '
    '"RUSSIAN FEDERATION","PRICE": "0.65","CURRENCY": "RUB"},"25020": {"NETWORK_NAME": "TELE2",'
    '"COUNTRY": "RUSSIAN FEDERATION","PRICE": "0.65","CURRENCY": "RUB"}}'
)

# Shapes the doc does not show, from the providers README and Intis's PHP SDK tests.
SDK_SEND = (
    '{"442073238000":{"error":"0","id_sms":"4384607771347164730001","cost":1,"count_sms":1,'
    '"sender":"smstest","network":"United Kingdom","ported":0},"442073238001":{"error":31}}'
)
SDK_STATUS_NESTED = (
    '{"4334273170107609330007":{"status":"deliver","time":"2014-10-05"},'
    '"4334273170107609330008":{"status":"partly_deliver","time":"2014-10-05 12:00:01"}}'
)
SDK_STATUS_LIST = (
    '[{"messageId":1, "status":"deliver", "time":"2014-10-05"},'
    '{"messageId":2, "status":"not_deliver", "time":"2014-10-01"}]'
)
_HLR_1 = (
    '{"id":"4133004490987800000001","destination":"79178880143","message_id":"x6ikubibd4y5ljdnttxt",'
    '"IMSI":"250017224827276","stat":"DELIVRD","error":"0","orn":"MTS (Mobile TeleSystems)",'
    '"pon":"MTS (Mobile TeleSystems)","ron":"MTS (Mobile TeleSystems)","mccmnc":"25001",'
    '"rcn":"Russian Federation","ppm":"932","onp":"91788","ocn":"Russian Federation","ocp":"7",'
    '"is_ported":"false","rnp":"917","rcp":"7","is_roaming":"false","pnp":"79872500000",'
    '"pcn":"Russian Federation","pcp":"7","total_price":"0.2",'
    '"request_id":"607a199fb7dc99e68af1196f659c23cf","request_time":"2014-10-14 19:27:29"}'
)
_HLR_2 = (
    '{"id":"4115440762085900000001","destination":"79371844901","message_id":"l9likizqtxau2e5gbbho",'
    '"IMSI":"250017145699048","stat":"DELIVRD","error":"0","orn":"Megafon",'
    '"pon":"MTS (Mobile TeleSystems)","ron":"MTS (Mobile TeleSystems)","mccmnc":"25001",'
    '"rcn":"Russian Federation","ppm":"932","onp":"93718","ocn":"Russian Federation","ocp":"7",'
    '"is_ported":"true","rnp":"91701","rcp":"7","is_roaming":"false","pnp":"79872500000",'
    '"pcn":"Russian Federation","pcp":"7","total_price":"0.2",'
    '"request_id":"79cdde57cea85f1cc2728f7c0d48f0bd","request_time":"2014-09-24 11:34:36"}'
)
SDK_HLR = f"[{_HLR_1},{_HLR_2}]"
SDK_HLR_STAT = f'{{"79178880143":{_HLR_1},"79371844901":{_HLR_2}}}'
SDK_TEMPLATES = (
    '{"25583":{"name":"newtemplate","template":"Hello! #first-name# #last-name#! Your amount is '
    '#note1#","up_time":"2015-03-31 15:22:50"},"25586":{"name":"test1","template":"template for '
    'test1","up_time":"2015-07-29 15:37:47"}}'
)
SDK_STATS_LIST = (
    '[{"date":"2014-10-02","stats":[{"status":"deliver","cost":"1.000","parts":"2"},'
    '{"status":"not_deliver","cost":"0.500","parts":"1"}]}]'
)


def test_doc_balance() -> None:
    balance = parse_balance(DOC_BALANCE)
    assert balance.amount == "69573.1" and balance.currency == "RUR"


def test_doc_base() -> None:
    lists = parse_lists(DOC_BASE)
    assert [x.id for x in lists] == ["125448", "125452", "125453", "125454"]
    last = lists[-1]
    assert last.name == "All leads and clients" and last.count == 11537 and last.pages == 116
    assert last.birth_sender == "Stok&Sekond" and last.on_birth == "1"


def test_doc_senders() -> None:
    senders = parse_senders(DOC_SENDERS)
    assert [(s.name, s.state) for s in senders] == [
        ("smstest", "completed"),
        ("smstest2", "completed"),
    ]


def test_doc_phone() -> None:
    numbers = parse_list_numbers(DOC_PHONE)
    assert [n.phone for n in numbers] == ["79687931116", "79874617237", "79871846995"]
    assert numbers[0].date_birth == "0000-00-00"


def test_doc_status_flat() -> None:
    reports = parse_status_response(DOC_STATUS)
    assert [(r.provider_message_id, r.status, r.raw_status) for r in reports] == [
        ("4091297100348873330001", Status.UNDELIVERABLE, "not_deliver"),
        ("4091297100348880230003", Status.UNDELIVERABLE, "not_deliver"),
    ]


def test_status_nested_form_and_time() -> None:
    first, second = parse_status_response(SDK_STATUS_NESTED)
    assert first.status is Status.DELIVERED
    assert first.at == datetime(2014, 10, 5, tzinfo=UTC)
    assert second.status is Status.SUBMITTED and second.raw_status == "partly_deliver"
    assert second.at == datetime(2014, 10, 5, 12, 0, 1, tzinfo=UTC)


def test_status_list_form_of_the_php_sdk() -> None:
    reports = parse_status_response(SDK_STATUS_LIST)
    assert [(r.provider_message_id, r.status) for r in reports] == [
        ("1", Status.DELIVERED),
        ("2", Status.UNDELIVERABLE),
    ]


def test_doc_send() -> None:
    (outcome,) = parse_send_response(DOC_SEND, ["17076295568"])
    assert outcome.status is Status.SUBMITTED
    assert outcome.provider_message_id == "4092112510348380960001"
    assert outcome.cost == "0.5" and outcome.parts == 1 and outcome.raw_code == "0"


def test_send_int_fields_extra_fields_and_per_phone_error() -> None:
    ok, refused = parse_send_response(SDK_SEND, ["442073238000", "442073238001"])
    assert ok.status is Status.SUBMITTED and ok.cost == "1" and ok.parts == 1
    assert refused.status is Status.REJECTED and refused.raw_code == "31"
    assert refused.error_class is ErrorClass.RECIPIENT and refused.provider_message_id is None


def test_send_keys_matched_back_to_requested_phones() -> None:
    body = json.dumps(
        {
            "+79161234567": {"error": "0", "id_sms": "1", "cost": "0.5", "count_sms": "1"},
            "79161234568": {"error": 16},
            "0079161234569": {"error": "0", "id_sms": "3", "cost": "0.5", "count_sms": "1"},
        }
    )
    outcomes = parse_send_response(
        body, ["79161234567", "79161234568", "79161234569", "79160000000"]
    )
    assert [o.status for o in outcomes] == [
        Status.SUBMITTED,
        Status.REJECTED,
        Status.SUBMITTED,
        Status.UNKNOWN,
    ]
    assert outcomes[0].provider_message_id == "1" and outcomes[2].provider_message_id == "3"
    assert outcomes[3].reason == "missing from the send.php response"
    assert outcomes[3].error_class is ErrorClass.AMBIGUOUS


def test_send_per_phone_transient_and_account_errors_are_failed() -> None:
    body = '{"79161234567":{"error":12},"79161234568":{"error":"32"},"79161234569":{"error":"0"}}'
    gateway, money, no_id = parse_send_response(body, ["79161234567", "79161234568", "79161234569"])
    assert gateway.status is Status.FAILED and gateway.error_class is ErrorClass.TRANSIENT
    assert money.status is Status.FAILED and money.error_class is ErrorClass.ACCOUNT
    assert no_id.status is Status.UNKNOWN and no_id.reason == "accepted without an id_sms"


def test_send_plain_keys_found_from_any_spelling_of_the_requested_phone() -> None:
    # The usual answer: keys are plain digits, looked up directly.
    ok = {"error": "0", "cost": "0.5", "count_sms": "1"}
    body = json.dumps({"79161234567": {**ok, "id_sms": "1"}, "79161234568": {**ok, "id_sms": "2"}})
    outcomes = parse_send_response(body, ["+79161234567", "0079161234568", "79161234569"])
    assert [o.provider_message_id for o in outcomes] == ["1", "2", None]
    assert outcomes[2].status is Status.UNKNOWN
    # One number under two spellings: the first key of the answer wins.
    body = json.dumps({"+79161234567": {**ok, "id_sms": "1"}, "79161234567": {**ok, "id_sms": "2"}})
    (first,) = parse_send_response(body, ["79161234567"])
    assert first.provider_message_id == "1"


def test_send_fields_read_as_text_or_numbers() -> None:
    body = json.dumps(
        {
            "79161234567": {"error": "0", "id_sms": " 7 ", "cost": " 0.50 ", "count_sms": " 2 "},
            "79161234568": {"error": 0, "id_sms": 8, "cost": 1.25, "count_sms": 3},
            "79161234569": {"error": "000", "id_sms": "9", "cost": "n/a", "count_sms": "x"},
            "79161234560": {"error": "0", "id_sms": "10", "cost": " 0.50 ", "count_sms": "1"},
        }
    )
    phones = ["79161234567", "79161234568", "79161234569", "79161234560"]
    texts, numbers, odd, again = parse_send_response(body, phones)
    assert (texts.provider_message_id, texts.cost, texts.parts) == ("7", "0.50", 2)
    assert (numbers.provider_message_id, numbers.cost, numbers.parts) == ("8", "1.25", 3)
    assert numbers.raw_code == "0" and odd.raw_code == "000" and texts.raw_code == "0"
    assert (odd.status, odd.cost, odd.parts) == (Status.SUBMITTED, None, None)
    assert again == RecipientOutcome(
        phone="79161234560",
        status=Status.SUBMITTED,
        provider_message_id="10",
        parts=1,
        cost="0.50",
        raw_code="0",
    )


def test_send_whole_request_errors() -> None:
    with pytest.raises(ProviderError) as bad_login:
        parse_send_response('{"error":7}', ["79161234567"])
    assert bad_login.value.error_class is ErrorClass.ACCOUNT and bad_login.value.raw_code == "7"
    with pytest.raises(ProviderError) as unavailable:
        parse_send_response('{"error":"000"}', ["79161234567"])
    assert unavailable.value.error_class is ErrorClass.TRANSIENT
    assert unavailable.value.raw_code == "000"
    # A per-recipient code for the whole request refuses every phone instead of raising.
    outcomes = parse_send_response('{"error":"27"}', ["1", "2"])
    assert [(o.status, o.raw_code) for o in outcomes] == [(Status.REJECTED, "27")] * 2


def test_doc_find_on_stop() -> None:
    entry = parse_stop_list_search(DOC_FIND_ON_STOP)
    assert entry is not None
    assert entry.time_in == "2014-08-29 11:07:43" and entry.description == "descr"
    assert parse_stop_list_search("{}") is None
    assert parse_stop_list_search("[]") is None
    assert parse_stop_list_search('{"error":19}') is None
    keyed = parse_stop_list_search(
        '{"4419373":{"time_in":"2014-08-29 11:07:43","description":"d"}}'
    )
    assert keyed == StopListEntry(time_in="2014-08-29 11:07:43", description="d")


def test_doc_add2stop_and_add_template() -> None:
    assert parse_id(DOC_ADD2STOP, "add2stop") == "4419373"
    assert parse_id(DOC_ADD_TEMPLATE, "add_template") == "4419373"


def test_doc_templates_invalid_json_is_read() -> None:
    with pytest.raises(ValueError):
        json.loads(DOC_TEMPLATES)  # the trap: not JSON at all
    templates = parse_templates(DOC_TEMPLATES)
    assert [(t.name, t.text, t.up_time) for t in templates] == [
        ("test", "text", "2014-08-28 15:22:25"),
        ("test22", "testtt 1321321231321", "2014-08-28 15:39:07"),
    ]


def test_templates_other_shapes() -> None:
    by_id = parse_templates(SDK_TEMPLATES)
    assert [(t.id, t.name) for t in by_id] == [("25583", "newtemplate"), ("25586", "test1")]
    valid = parse_templates('{"a":{"template":"x","up_time":"2014-01-01 00:00:00"}}')
    assert valid[0].name == "a" and valid[0].text == "x"
    as_string = parse_templates(json.dumps({"a": json.dumps({"template": "y", "up_time": ""})}))
    assert as_string[0].text == "y"


def test_doc_del_template() -> None:
    assert parse_delete_template(DOC_DEL_TEMPLATE) == "deleted"


def test_doc_stat_by_month_never_closed_objects() -> None:
    with pytest.raises(ValueError):
        json.loads(DOC_STAT_BY_MONTH)  # the doc never closes a day before the next
    days = parse_stats_by_month(DOC_STAT_BY_MONTH)
    assert len(days) == 15
    assert days[0].date == "2014-08-01" and days[0].statuses["deliver"].parts == 1
    aug14 = next(d for d in days if d.date == "2014-08-14")
    assert aug14.statuses["deliver"].cost == "8080.850" and aug14.statuses["deliver"].parts == 18071
    assert set(aug14.statuses) == {"deliver", "not_deliver", "expired"}
    assert days[-1].date == "2014-08-29" and days[-1].statuses["not_deliver"].cost == "0.500"


def test_stat_by_month_valid_and_list_shapes() -> None:
    valid = parse_stats_by_month('{"2014-08-01":{"deliver":{"cost":"0.500","parts":"1"}}}')
    assert valid[0].statuses["deliver"].cost == "0.500"
    listed = parse_stats_by_month(SDK_STATS_LIST)
    assert listed[0].date == "2014-10-02" and listed[0].statuses["not_deliver"].parts == 1


def test_doc_operator() -> None:
    info = parse_operator(DOC_OPERATOR)
    assert info.operator == "AT&T" and info.mcc == "000" and info.mnc == "00"
    assert info.price == "0.65" and info.currency == "USD" and info.ported is False


def test_doc_incoming_doubled_braces() -> None:
    with pytest.raises(ValueError):
        json.loads(DOC_INCOMING)
    (sms,) = parse_incoming(DOC_INCOMING)
    assert (sms.id, sms.date, sms.sender, sms.prefix, sms.text) == (
        "5597",
        "2014-10-27 05:47:24",
        "17076295568",
        "51632",
        "51632 TEST",
    )


def test_doc_prices() -> None:
    prices = parse_prices(DOC_PRICES)
    assert [(p.mccmnc, p.network, p.price, p.currency) for p in prices][:2] == [
        ("25099", "BEELINE", "0.65", "RUB"),
        ("25001", "MTS", "0.65", "RUB"),
    ]


def test_hlr_array_and_stats() -> None:
    first, second, missing = parse_hlr_response(
        SDK_HLR, ["79178880143", "+79371844901", "79000000000"]
    )
    assert first.ok and first.imsi == "250017224827276" and first.mcc == "250" and first.mnc == "01"
    assert first.network == "MTS (Mobile TeleSystems)" and first.ported is False
    assert first.provider_message_id == "4133004490987800000001"
    assert second.ported is True and second.network == "MTS (Mobile TeleSystems)"
    assert not missing.ok and missing.error == "missing from the response"
    stats = parse_hlr_stats(SDK_HLR_STAT)
    assert [s.phone for s in stats] == ["79178880143", "79371844901"]
    assert stats[0].raw["request_time"] == "2014-10-14 19:27:29"


def test_timestamp_bodies() -> None:
    assert parse_timestamp("1480266800\n") == 1480266800
    assert parse_timestamp('"1480266800"') == 1480266800
    assert parse_timestamp('{"timestamp": 1480266800}') == 1480266800
    with pytest.raises(MalformedResponse):
        parse_timestamp("soon")


def test_error_values_as_strings_and_ints() -> None:
    for body in ('{"error":4}', '{"error":"4"}', '{"error":"04"}'):
        with pytest.raises(ProviderError) as info:
            parse_balance(body)
        assert info.value.error_class is ErrorClass.REQUEST
        assert "Phone number not specified" in info.value.reason


def test_load_json_rejects_garbage_clearly() -> None:
    with pytest.raises(MalformedResponse, match="not JSON"):
        load_json("<html>\x00garbage{")
    with pytest.raises(MalformedResponse, match="empty"):
        load_json("  ")


ODD_BODIES = [
    "[]", "[1]", '"x"', "1", "null", "true", '{"a":1}', '{"a":[1]}', '{"a":null}',
    '{"a":{"b":1}}', '{"2014-01-01":1}', '{"2014-01-01":{"deliver":1}}',
    '[{"date":1,"stats":1}]', '[{"stats":[1]}]', '{"a":"{\\"x\\":1}"}', '{"error":null}',
    '{"error":[1]}', '[{"messageId":null}]', '{"a":{"error":"x"}}', '{"money":{}}',
    '{"a":{"template":1}}', '{"time_in":{}}', "[null]", '{"":""}', "{{}}", "<xml/>",
]  # fmt: skip
PARSERS: list[Callable[[str], object]] = [
    parse_balance, parse_delete_template, parse_hlr_stats, parse_incoming, parse_list_numbers,
    parse_lists, parse_operator, parse_prices, parse_senders, parse_stats_by_month,
    parse_status_response, parse_stop_list_search, parse_templates, parse_timestamp,
    lambda t: parse_id(t, "add2stop"),
    lambda t: parse_send_response(t, ["79161234567"]),
    lambda t: parse_hlr_response(t, ["79161234567"]),
]  # fmt: skip


@pytest.mark.parametrize("body", ODD_BODIES)
def test_odd_bodies_never_crash_a_parser(body: str) -> None:
    for parse in PARSERS:
        with contextlib.suppress(MalformedResponse, ProviderError):
            parse(body)


def test_malformed_message_does_not_leak_numbers() -> None:
    with pytest.raises(MalformedResponse) as info:
        load_json("79161234567 is not json")
    assert "79161234567" not in str(info.value)


# --------------------------------------------------------------------------- tables


def test_error_table_covers_0_to_35_with_text() -> None:
    assert sorted(codes.ERRORS) == list(range(36))
    assert all(row.text and row.code == code for code, row in codes.ERRORS.items())


EXPECTED_CLASSES = {
    ErrorClass.TRANSIENT: {0, 12, 18, 19},
    ErrorClass.ACCOUNT: {2, 6, 7, 32, 35},
    ErrorClass.RECIPIENT: {13, 16, 27, 31, 33, 34},
    ErrorClass.REQUEST: {
        1,
        3,
        4,
        5,
        8,
        9,
        10,
        11,
        14,
        15,
        17,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        28,
        29,
        30,
    },
}


@pytest.mark.parametrize("code", range(36))
def test_error_classification(code: int) -> None:
    (expected,) = [cls for cls, members in EXPECTED_CLASSES.items() if code in members]
    assert codes.error_class(code) is expected


def test_unknown_error_code_is_a_request_error() -> None:
    assert codes.error_class(99) is ErrorClass.REQUEST
    assert codes.error_text(99) == "unknown Intis error 99"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("0", 0),
        ("000", 0),
        (31, 31),
        ("16", 16),
        (" 7 ", 7),
        (4.0, 4),
        ("", None),
        (None, None),
        (True, None),
        ("x", None),
    ],
)
def test_parse_code(raw: object, code: int | None) -> None:
    assert codes.parse_code(raw) == code


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("deliver", Status.DELIVERED),
        ("not_deliver", Status.UNDELIVERABLE),
        ("expired", Status.EXPIRED),
        ("partly_deliver", Status.SUBMITTED),
        ("send", Status.SUBMITTED),
        ("enroute", Status.SUBMITTED),
        ("pending", Status.SUBMITTED),
        ("unknown", Status.SUBMITTED),
        ("", Status.SUBMITTED),
        ("DELIVER", Status.DELIVERED),
    ],
)
def test_status_mapping(word: str, status: Status) -> None:
    assert codes.map_status(word) is status


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (0, Status.SUBMITTED),
        (1, Status.SUBMITTED),
        (2, Status.DELIVERED),
        (3, Status.EXPIRED),
        (4, Status.UNDELIVERABLE),
        (5, Status.UNDELIVERABLE),
        (6, Status.SUBMITTED),
        (7, Status.SUBMITTED),
        (8, Status.UNDELIVERABLE),
        (9, Status.UNDELIVERABLE),
    ],
)
def test_callback_state_mapping(state: int, status: Status) -> None:
    assert codes.callback_status(state) is status
    report = parse_delivery_report({"message-id": "4092112510348380960001", "state": str(state)})
    assert report.status is status and report.raw_status == str(state)


# --------------------------------------------------------------------------- callbacks


def test_delivery_report_full() -> None:
    report = parse_delivery_report(
        {
            "message-id": "4092112510348380960001",
            "state": "2",
            "price": "0.50",
            "currency": "rub",
            "mcc": "250",
            "mnc": "01",
        }
    )
    assert report.provider_message_id == "4092112510348380960001"
    assert report.status is Status.DELIVERED
    assert report.extra == {
        "state_name": "delivered",
        "price": "0.50",
        "currency": "RUB",
        "mcc": "250",
        "mnc": "01",
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"state": "2"}, "'message-id' is missing"),
        ({"message-id": "1"}, "'state' is missing"),
        ({"message-id": "1", "state": "10"}, "'state' must be an integer 0–9"),
        ({"message-id": "1", "state": "two"}, "'state' must be an integer"),
        ({"message-id": "1;drop", "state": "2"}, "'message-id' must be"),
        ({"message-id": "1", "state": "2", "price": "free"}, "'price'"),
        ({"message-id": "1", "state": "2", "price": "-1"}, "'price'"),
        ({"message-id": "1", "state": "2", "mcc": "25"}, "'mcc' must be 3–3 digits"),
        ({"message-id": "1", "state": "2", "mnc": "abcd"}, "'mnc'"),
        ({"message-id": "1", "state": "2", "currency": "R$"}, "'currency'"),
    ],
)
def test_delivery_report_rejects_bad_input(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_delivery_report(query)


# --------------------------------------------------------------------------- against the sandbox

Env = tuple[RunningSandbox, IntisAdapter]
MakeEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env() -> AsyncIterator[MakeEnv]:
    """Start an Intis sandbox (options as create_sandbox takes) and an adapter pointed at it."""
    running: list[RunningSandbox] = []
    session = aiohttp.ClientSession()

    async def make(
        *,
        mix: OutcomeMix | None = None,
        api_key: str = DEFAULT_API_KEY,
        login: str = "testuser",
        batch_size: int = 0,
        timeout: float = 5.0,
        account_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> Env:
        state = SandboxState(mix or OutcomeMix(final_after=0.2, seed=11))
        sandbox = await serve(create_sandbox(state, **options))
        running.append(sandbox)
        account = AccountConfig(
            name="intis-test",
            kind="intis",
            base_url=sandbox.url,
            login=login,
            api_key=api_key,
            batch_size=batch_size,
            timeout=timeout,
            options=account_options or {},
        )
        return sandbox, IntisAdapter(account, session)

    yield make
    await session.close()
    for sandbox in running:
        await sandbox.stop()


def phones(n: int, start: int = 0) -> list[str]:
    return [f"7916{i:07d}" for i in range(start, start + n)]


def chunk(recipients: list[str], text: str = "Hello!", **kw: Any) -> SendRequest:
    return SendRequest(chunk_id="c1", sender="smstest", text=text, recipients=recipients, **kw)


def test_registry_exposes_the_adapter() -> None:
    spec = provider_spec("intis")
    assert spec is SPEC and spec.adapter is IntisAdapter
    assert spec.sandbox().create is create_sandbox
    assert IntisAdapter.kind == "intis"


async def test_max_batch(make_env: MakeEnv) -> None:
    _, default = await make_env()
    assert default.max_batch == MAX_BATCH == 50
    _, small = await make_env(batch_size=20)
    assert small.max_batch == 20
    _, big = await make_env(batch_size=100)  # send.php's "100" is capped by error 14's 50
    assert big.max_batch == 50


async def test_send_accepts_and_records(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env()
    outcomes = await adapter.send(chunk(phones(3)))
    assert [o.status for o in outcomes] == [Status.SUBMITTED] * 3
    assert all(o.provider_message_id and len(o.provider_message_id) == 22 for o in outcomes)
    assert len({o.provider_message_id for o in outcomes}) == 3
    assert all(o.parts == 1 and o.cost == "0.5" for o in outcomes)
    assert set(sandbox.state.messages) == {o.provider_message_id for o in outcomes}
    (entry,) = sandbox.state.log.for_path("send.php")
    assert entry.method == "GET" and entry.params["phone"] == ",".join(phones(3))
    assert entry.params["return"] == "json" and entry.status == 200


async def test_send_per_phone_rejections(make_env: MakeEnv) -> None:
    blocked = "79160000013"
    _, adapter = await make_env(stop_list=[blocked])
    good, stopped, invalid = await adapter.send(chunk(["79161111111", blocked, "12345"]))
    assert good.status is Status.SUBMITTED
    assert (stopped.status, stopped.raw_code, stopped.error_class) == (
        Status.REJECTED,
        "13",
        ErrorClass.RECIPIENT,
    )
    assert (invalid.status, invalid.raw_code, invalid.reason) == (
        Status.REJECTED,
        "16",
        "Invalid phone number",
    )


async def test_send_fifty_numbers_ok_fifty_one_is_error_14(make_env: MakeEnv) -> None:
    _, adapter = await make_env()
    outcomes = await adapter.send(chunk(phones(50)))
    assert len(outcomes) == 50 and {o.status for o in outcomes} == {Status.SUBMITTED}
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(phones(51, start=100)))
    assert info.value.error_class is ErrorClass.REQUEST and info.value.raw_code == "14"


async def test_send_bad_key_or_login_is_an_account_error(make_env: MakeEnv) -> None:
    _, wrong_key = await make_env(api_key="0" * 40)
    with pytest.raises(ProviderError) as info:
        await wrong_key.send(chunk(phones(1)))
    assert info.value.error_class is ErrorClass.ACCOUNT and info.value.raw_code == "6"
    _, wrong_login = await make_env(login="someoneelse")
    with pytest.raises(ProviderError) as info:
        await wrong_login.balance()
    assert info.value.error_class is ErrorClass.ACCOUNT and info.value.raw_code == "7"


async def test_send_request_level_refusals(make_env: MakeEnv) -> None:
    _, adapter = await make_env(forbidden_words=["casino"], senders={"smstest": "order"})
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(phones(1)))
    assert info.value.raw_code == "10" and info.value.error_class is ErrorClass.REQUEST
    _, adapter = await make_env(forbidden_words=["casino"])
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(phones(1), text="Win at the CASINO"))
    assert info.value.raw_code == "11" and info.value.error_class is ErrorClass.REQUEST


async def test_send_encodes_tricky_text_and_counts_parts(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env()
    text = "Ваш код: 12+34 & a=b % #1 — ok?" * 3  # UCS-2, 93 chars: 2 parts
    (outcome,) = await adapter.send(chunk(phones(1), text=text))
    assert outcome.status is Status.SUBMITTED and outcome.parts == 2 and outcome.cost == "1.0"
    (msg,) = sandbox.state.messages.values()
    assert msg.text == text and msg.parts == 2


async def test_long_request_switches_to_post(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env()
    text = "Ж" * 600  # ~3600 URL-encoded bytes: past the 2000-char GET limit
    outcomes = await adapter.send(chunk(phones(2), text=text))
    assert {o.status for o in outcomes} == {Status.SUBMITTED}
    (entry,) = sandbox.state.log.for_path("send.php")
    assert entry.method == "POST" and entry.params["text"] == text


async def test_send_scheduled_time(make_env: MakeEnv) -> None:
    when = datetime(2030, 1, 2, 3, 4, 59, tzinfo=UTC)
    sandbox, adapter = await make_env()
    await adapter.send(chunk(phones(1), scheduled_at=when))
    assert sandbox.state.log.entries[-1].params["sendingTime"] == "2030-01-02 03:04"
    sandbox, adapter = await make_env(account_options={"timezone": "Europe/Moscow"})
    (outcome,) = await adapter.send(chunk(phones(1), scheduled_at=when))
    assert sandbox.state.log.entries[-1].params["sendingTime"] == "2030-01-02 06:04"
    assert sandbox.state.messages[outcome.provider_message_id or ""].extra == {
        "sending_time": "2030-01-02 06:04"
    }


async def test_send_duplicates_and_empty_chunk(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env()
    assert await adapter.send(chunk([])) == []
    assert sandbox.state.log.entries == []
    a, b = phones(2)
    outcomes = await adapter.send(chunk([a, b, a]))
    assert [o.phone for o in outcomes] == [a, b, a]
    assert outcomes[0].provider_message_id == outcomes[2].provider_message_id
    assert sandbox.state.log.entries[-1].params["phone"] == f"{a},{b}"


@pytest.mark.parametrize("form", ["flat", "nested"])
async def test_status_advances_to_final(make_env: MakeEnv, form: str) -> None:
    sandbox, adapter = await make_env(mix=OutcomeMix(final_after=0.2, seed=5), status_form=form)
    outcomes = await adapter.send(chunk(phones(20)))
    ids = [o.provider_message_id or "" for o in outcomes]
    early = await adapter.status(ids)
    assert {r.status for r in early} == {Status.SUBMITTED}
    assert {r.raw_status for r in early} == {"send"}
    await asyncio.sleep(0.3)
    late = await adapter.status(ids)
    assert {r.provider_message_id for r in late} == set(ids)
    expected = {
        "delivered": Status.DELIVERED,
        "undeliverable": Status.UNDELIVERABLE,
        "expired": Status.EXPIRED,
    }
    for report in late:
        assert report.status is expected[sandbox.state.messages[report.provider_message_id].outcome]
        assert report.status.is_final
        if form == "nested":
            assert report.at is not None
    assert Status.DELIVERED in {r.status for r in late}


async def test_status_pending_left_out_and_unknown_ids(make_env: MakeEnv) -> None:
    _, adapter = await make_env(pending_status=None, mix=OutcomeMix(final_after=60, seed=1))
    (outcome,) = await adapter.send(chunk(phones(1)))
    assert await adapter.status([outcome.provider_message_id or ""]) == []
    assert await adapter.status(["4000000000000000000000"]) == []


async def test_status_many_ids_are_batched(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env()
    ids: list[str] = []
    for start in range(0, 120, 50):
        outcomes = await adapter.send(chunk(phones(min(50, 120 - start), start=start)))
        ids += [o.provider_message_id or "" for o in outcomes]
    reports = await adapter.status(ids)
    assert len(reports) == 120
    requests = sandbox.state.log.for_path("status.php")
    assert [len(e.params["state"].split(",")) for e in requests] == [50, 50, 20]
    assert {e.method for e in requests} == {"GET"}


async def test_hlr(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env(balance="100", hlr_price="0.2")
    good, bad = await adapter.hlr(["79161234567", "123"])
    assert good.ok and good.mcc == "250" and good.mnc == "01" and good.imsi
    assert good.imsi.startswith("25001") and good.network and good.roaming is False
    assert not bad.ok and bad.error
    assert sandbox.app[INTIS_KEY].balance == Decimal("99.6")
    many = await adapter.hlr(phones(60))
    assert len(many) == 60 and all(r.ok for r in many)
    assert len(sandbox.state.log.for_path("hlr.php")) == 3  # 1 + ceil(60 / 50)


async def test_balance_goes_down_then_error_32(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env(balance="2.0", price="0.5")
    assert (await adapter.balance()).amount == "2.0"
    await adapter.send(chunk(phones(2)))
    assert (await adapter.balance()).amount == "1.0"
    (two_parts,) = await adapter.send(chunk(phones(1, start=5), text="x" * 161))
    assert two_parts.parts == 2 and two_parts.cost == "1.0"
    assert Decimal((await adapter.balance()).amount) == 0
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(phones(1, start=9)))
    assert info.value.error_class is ErrorClass.ACCOUNT and info.value.raw_code == "32"
    assert len(sandbox.state.messages) == 3


@pytest.mark.parametrize("dialect", ["doc", "sdk"])
async def test_every_other_endpoint(make_env: MakeEnv, dialect: str) -> None:
    """Every adapter method against the sandbox, in the doc's shapes and in the SDKs'."""
    today = datetime.now(UTC).date()
    sandbox, adapter = await make_env(
        dialect=dialect,
        mix=OutcomeMix(final_after=0.0, seed=3),
        incoming=[
            {
                "id": "5597",
                "date": f"{today} 05:47:24",
                "sender": "17076295568",
                "prefix": "51632",
                "text": "51632 TEST",
            },
            {
                "id": "5598",
                "date": "2014-10-27 06:00:00",
                "sender": "17076295569",
                "prefix": "",
                "text": "old",
            },
        ],
    )
    assert abs(await adapter.timestamp() - datetime.now(UTC).timestamp()) < 5
    lists = await adapter.lists()
    assert lists[0].id == "125448" and lists[0].count == 3
    assert [s.name for s in await adapter.senders()] == ["smstest", "smstest2"]
    numbers = await adapter.list_numbers("125448", page=1)
    assert len(numbers) == 3
    with pytest.raises(ProviderError) as info:
        await adapter.list_numbers("999")
    assert info.value.raw_code == "25" and info.value.error_class is ErrorClass.REQUEST

    assert await adapter.stop_list_search("79165550000") is None
    entry_id = await adapter.stop_list_add("79165550000")
    assert entry_id.isdigit()
    found = await adapter.stop_list_search("79165550000")
    assert found is not None and found.time_in.startswith(str(today))
    with pytest.raises(ProviderError) as info:
        await adapter.stop_list_add("79165550000")
    assert info.value.raw_code == "20"

    template_id = await adapter.add_template("greeting", "Hello #name#!")
    with pytest.raises(ProviderError) as info:
        await adapter.add_template("greeting", "again")
    assert info.value.raw_code == "22"
    assert await adapter.add_template("greeting", "Hi #name#!", override=True) == template_id
    (template,) = await adapter.templates()
    assert (template.name, template.text) == ("greeting", "Hi #name#!")
    assert await adapter.delete_template("greeting") == "deleted"
    assert await adapter.templates() == []

    await adapter.send(chunk(phones(4)))
    (day,) = await adapter.stats_by_month(today)
    assert day.date == str(today) and sum(c.parts for c in day.statuses.values()) == 4
    await adapter.hlr(["79161234567"])
    (hlr_stat,) = await adapter.hlr_stats(today, today)
    assert hlr_stat.phone == "79161234567" and hlr_stat.ok
    operator = await adapter.operator("79161234567")
    assert operator.operator and operator.mcc == "250" and operator.price == "0.65"
    (sms,) = await adapter.incoming(today)
    assert (sms.id, sms.text) == ("5597", "51632 TEST")
    period = await adapter.incoming(date_from="2014-10-27 00:00:00", date_to="2014-10-27 23:59:59")
    assert [s.id for s in period] == ["5598"]
    prices = await adapter.prices()
    assert {p.mccmnc for p in prices} == {"25099", "25001", "25002", "25020"}

    await adapter.balance()
    await adapter.status(list(sandbox.state.messages))
    called = {e.path.rsplit("/", 1)[-1].removesuffix(".php") for e in sandbox.state.log.entries}
    assert called == set(ENDPOINTS) and len(ENDPOINTS) == 18


async def test_doc_quirk_bodies_over_http(make_env: MakeEnv) -> None:
    today = datetime.now(UTC).date()
    sandbox, adapter = await make_env(
        doc_quirks=True,
        mix=OutcomeMix(final_after=0.0, seed=2),
        incoming=[
            {"id": "1", "date": f"{today} 01:00:00", "sender": "1", "prefix": "", "text": "hi"}
        ],
    )
    await adapter.add_template("a", "text a")
    await adapter.add_template("b", "text b")
    await adapter.send(chunk(phones(3)))
    assert [t.name for t in await adapter.templates()] == ["a", "b"]
    assert [s.text for s in await adapter.incoming(today)] == ["hi"]
    (day,) = await adapter.stats_by_month(today.strftime("%Y-%m"))
    assert sum(c.parts for c in day.statuses.values()) == 3
    bodies = {e.path.rsplit("/", 1)[-1]: e.body for e in sandbox.state.log.entries}
    for name in ("template.php", "incoming.php"):
        with pytest.raises(ValueError):
            json.loads(bodies[name])


async def test_fault_server_error_is_transient(make_env: MakeEnv) -> None:
    """HTTP 500: TRANSIENT for every call, send included: base.HttpClient's policy (the
    gateway answered that it failed, so it did not take the request; the sandbox's 500
    fault indeed records nothing)."""
    sandbox, adapter = await make_env()
    async with (
        aiohttp.ClientSession() as admin,
        admin.put(f"{sandbox.url}/__sandbox/faults", json={"*": {"error_rate": 1.0}}) as resp,
    ):
        assert resp.status == 200
    with pytest.raises(ProviderError) as info:
        await adapter.status(["4000000000000000000001"])
    assert info.value.error_class is ErrorClass.TRANSIENT and info.value.raw_code == "500"
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(phones(1)))
    assert info.value.error_class is ErrorClass.TRANSIENT and info.value.raw_code == "500"
    assert sandbox.state.messages == {}


async def test_fault_malformed_body_is_a_clear_error(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env()
    sandbox.state.faults = {"*": Fault(malformed_rate=1.0)}
    with pytest.raises(ProviderError) as info:
        await adapter.status(["4000000000000000000001"])
    assert info.value.error_class is ErrorClass.TRANSIENT
    assert "malformed response from status.php" in info.value.reason
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(phones(1)))
    assert info.value.error_class is ErrorClass.AMBIGUOUS
    assert "malformed response from send.php" in info.value.reason
    for call in (adapter.balance(), adapter.templates(), adapter.stats_by_month("2014-08")):
        with pytest.raises(ProviderError, match="malformed"):
            await call


async def test_service_unavailable_000_is_transient(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env(unavailable=True)
    for call in (adapter.balance(), adapter.send(chunk(phones(1))), adapter.status(["1"])):
        with pytest.raises(ProviderError) as info:
            await call
        assert info.value.error_class is ErrorClass.TRANSIENT and info.value.raw_code == "000"
    sandbox.app[INTIS_KEY].unavailable = False
    assert (await adapter.balance()).amount == "1000.00"


async def test_fault_timeout_and_drop(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env(timeout=0.5)
    sandbox.state.faults = {"send.php": Fault(timeout_rate=1.0), "status.php": Fault(drop_rate=1.0)}
    with pytest.raises(ProviderError) as info:
        await adapter.send(chunk(phones(1)))
    assert info.value.error_class is ErrorClass.AMBIGUOUS
    with pytest.raises(ProviderError) as info:
        await adapter.status(["4000000000000000000001"])
    assert info.value.error_class is ErrorClass.TRANSIENT


async def test_base_url_may_include_the_api_root(make_env: MakeEnv) -> None:
    sandbox, adapter = await make_env()
    account = AccountConfig(
        name="x",
        kind="intis",
        base_url=sandbox.url + "/external/get/",
        login="testuser",
        api_key=DEFAULT_API_KEY,
    )
    async with aiohttp.ClientSession() as session:
        other = IntisAdapter(account, session)
        assert other.endpoint_url("send") == f"{sandbox.url}/external/get/send.php"
        assert (await other.balance()).amount == "1000.00"
    assert adapter.endpoint_url("hlr") == f"{sandbox.url}/external/get/hlr.php"


async def test_incoming_needs_a_date(make_env: MakeEnv) -> None:
    _, adapter = await make_env()
    with pytest.raises(ValueError):
        await adapter.incoming()
    assert await adapter.incoming(date(2000, 1, 1)) == []


@pytest.mark.parametrize("zone", ["UTC", "Europe/Moscow"])
async def test_status_times_are_read_in_the_accounts_zone(make_env: MakeEnv, zone: str) -> None:
    # The gateway writes its times (status time, incoming date) as local times in the
    # account's zone, as it reads sendingTime: one zone for all of them.
    sandbox, adapter = await make_env(
        mix=OutcomeMix(final_after=0.0, seed=5),
        status_form="nested",
        timezone=zone,
        account_options={"timezone": zone},
    )
    (outcome,) = await adapter.send(chunk(phones(1)))
    await asyncio.sleep(0.05)
    (report,) = await adapter.status([outcome.provider_message_id or ""])
    msg = sandbox.state.messages[outcome.provider_message_id or ""]
    assert report.at is not None and report.status.is_final
    assert abs(report.at.timestamp() - msg.final_at) < 1.0
    incoming_at = datetime.fromtimestamp(msg.final_at, ZoneInfo(zone))
    sandbox_app = sandbox.app[INTIS_KEY]
    sandbox_app.incoming.append(
        {
            "id": "9001",
            "date": incoming_at.strftime("%Y-%m-%d %H:%M:%S"),
            "sender": "447911123456",
            "prefix": "",
            "text": "hi",
        }
    )
    (message,), _ = await adapter.poll_incoming(None)
    assert message.received_at is not None
    assert abs(message.received_at.timestamp() - msg.final_at) < 1.0
