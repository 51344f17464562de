"""The job contract: validation, per-recipient rejection, wire round trip, JSON Schema."""

from __future__ import annotations

import dataclasses
import json
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from producers.contract import (
    ALPHA_SENDER_PATTERN,
    JOB_ID_PATTERN,
    MAX_JOB_ID_LEN,
    MAX_METADATA_BYTES,
    MAX_RECIPIENTS,
    MAX_SENDER_LEN,
    MAX_TEXT_PARTS,
    MAX_VALIDITY,
    MIN_VALIDITY,
    NUMERIC_SENDER_PATTERN,
    PROVIDER_PATTERN,
    SCHEDULED_AT_PATTERN,
    HlrJob,
    JobRejected,
    RejectedRecipient,
    SendJob,
    job_to_payload,
    load_schema,
    new_job_id,
    validate_job,
)
from producers.segments import count_segments

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PROVIDERS = frozenset({"smsc", "intis", "intellisoftware", "ru-otp"})
DROP = object()  # an override that removes the field


def send(**overrides: Any) -> dict[str, Any]:
    """A valid send payload with ``overrides`` applied (DROP removes a field)."""
    payload: dict[str, Any] = {
        "kind": "send",
        "job_id": "order-1842",
        "provider": "smsc",
        "sender": "MyShop",
        "text": "Your code is 4711",
        "recipients": ["+7 916 123-45-67", "+44 20 7946 0958"],
    }
    for key, value in overrides.items():
        if value is DROP:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def hlr(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"kind": "hlr", "provider": "smsc", "recipients": ["79161234567"]}
    payload.update(overrides)
    return payload


def validate(payload: object) -> SendJob | HlrJob:
    return validate_job(payload, providers=PROVIDERS, now=NOW)


def rejection(payload: object) -> JobRejected:
    with pytest.raises(JobRejected) as info:
        validate(payload)
    return info.value


# ---------------------------------------------------------------- good jobs


def test_full_send_job() -> None:
    job = validate(
        send(
            scheduled_at="2024-05-01T15:30:00+03:00",
            validity=3600,
            priority="otp",
            metadata={"order": 1842, "tags": ["a", "b"]},
        )
    )
    assert isinstance(job, SendJob)
    assert job.kind == "send"
    assert job.job_id == "order-1842"
    assert job.provider == "smsc"
    assert job.sender == "MyShop"
    assert job.text == "Your code is 4711"
    assert job.recipients == ("79161234567", "442079460958")
    assert job.rejected == ()
    assert job.duplicates == 0
    assert job.segments == count_segments("Your code is 4711")
    assert job.segments.parts == 1 and job.segments.encoding == "gsm7"
    assert job.scheduled_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert job.scheduled_at is not None and job.scheduled_at.utcoffset() == timedelta(0)
    assert job.validity == 3600
    assert job.priority == "otp"
    assert job.metadata == {"order": 1842, "tags": ["a", "b"]}


def test_minimal_send_job_takes_the_defaults() -> None:
    payload = send(kind=DROP, job_id=DROP)
    job = validate(payload)
    assert isinstance(job, SendJob)
    assert job.scheduled_at is None
    assert job.validity is None
    assert job.priority == "bulk"
    assert job.metadata == {}
    assert len(job.job_id) == 32 and int(job.job_id, 16) >= 0
    assert validate(payload).job_id != job.job_id  # a fresh id each time
    assert "job_id" not in payload  # the payload is not modified


def test_null_optional_fields_mean_the_default() -> None:
    job = validate(send(kind=None, scheduled_at=None, validity=None, priority=None, metadata=None))
    assert isinstance(job, SendJob)
    assert (job.scheduled_at, job.validity, job.priority, job.metadata) == (None, None, "bulk", {})
    assert validate(send(job_id=None)).job_id != validate(send(job_id=None)).job_id


def test_unicode_and_long_texts_carry_their_segments() -> None:
    job = validate(send(text="Ваш код: 4711 🙂"))
    assert isinstance(job, SendJob)
    assert job.segments.encoding == "ucs2"
    assert job.segments.units == 16 and job.segments.chars == 15
    job = validate(send(text="a" * 153 * MAX_TEXT_PARTS))  # exactly 10 parts
    assert isinstance(job, SendJob) and job.segments.parts == MAX_TEXT_PARTS
    job = validate(send(text="я" * 67 * MAX_TEXT_PARTS))
    assert isinstance(job, SendJob) and job.segments.parts == MAX_TEXT_PARTS


def test_hlr_job() -> None:
    job = validate(
        hlr(
            job_id="check-7",
            recipients=["+7 916 123-45-67", "0079161234567", "bad"],
            priority="otp",
        )
    )
    assert isinstance(job, HlrJob)
    assert job.kind == "hlr"
    assert job.job_id == "check-7"
    assert job.provider == "smsc"
    assert job.recipients == ("79161234567",)
    assert job.duplicates == 1
    assert job.rejected == (RejectedRecipient(2, "bad", "contains letters"),)
    assert job.priority == "otp"
    assert job.metadata == {}


def test_accepted_boundaries() -> None:
    ok: list[dict[str, Any]] = [
        send(sender="A" * MAX_SENDER_LEN),
        send(sender="Stok&Sekond"),
        send(sender="My Shop.ru"),
        send(sender="123456789012345"),
        send(sender="+447400123123"),
        send(sender="1234"),
        send(job_id="a" * MAX_JOB_ID_LEN),
        send(job_id="tenant.42.x_y-z"),
        send(validity=MIN_VALIDITY),
        send(validity=MAX_VALIDITY),
        send(validity=3600.0),  # an integer in JSON's sense
        send(scheduled_at="2024-05-01T11:55:00Z"),  # 5 minutes late: still sent
        send(scheduled_at="2024-05-08T12:00:00Z"),  # exactly 7 days ahead
        send(scheduled_at="2024-05-01T12:00:00.123456789+00:00"),
        send(metadata={"k": "x" * (MAX_METADATA_BYTES - len('{"k":""}'))}),
        send(provider="ru-otp"),
        send(recipients=("79161234567",)),
    ]
    for payload in ok:
        assert validate(payload).job_id, payload


def test_metadata_is_a_private_copy() -> None:
    meta: dict[str, Any] = {"tags": ["a"]}
    job = validate(send(metadata=meta))
    meta["tags"].append("b")
    assert job.metadata == {"tags": ["a"]}


def test_providers_none_accepts_any_well_formed_name() -> None:
    job = validate_job(send(provider="anything.else"), now=NOW)
    assert job.provider == "anything.else"


def test_a_single_provider_name_is_not_a_set_of_substrings() -> None:
    assert validate_job(send(), providers="smsc", now=NOW).provider == "smsc"
    with pytest.raises(JobRejected, match="provider 'sms' is not configured"):
        validate_job(send(provider="sms"), providers="smsc", now=NOW)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_job(send(), now=datetime(2024, 5, 1, 12, 0))


def test_jobs_are_hashable_and_frozen() -> None:
    job = validate(send(metadata={"a": 1}))
    assert isinstance(job, SendJob)
    assert hash(job) == hash(dataclasses.replace(job))
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.text = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- job-level errors

LONG_GSM = "a" * (153 * MAX_TEXT_PARTS + 1)
LONG_UCS2 = "я" * (67 * MAX_TEXT_PARTS + 1)

JOB_ERRORS: list[tuple[dict[str, Any], str]] = [
    (send(foo=1), "unknown field 'foo'"),
    (send(kind="mms"), "kind must be 'send' or 'hlr', not 'mms'"),
    (send(kind=1), "kind must be 'send' or 'hlr'"),
    (send(job_id=123), "job_id must be a string, not a number"),
    (send(job_id=""), "job_id is empty"),
    (send(job_id="a" * 129), "job_id is 129 characters long; at most 128"),
    (send(job_id="bad id"), "job_id 'bad id' must start with a letter or digit"),
    (send(job_id="-lead"), "job_id '-lead' must start with a letter or digit"),
    (send(job_id="id\n"), "job_id 'id\\n' must start with a letter or digit"),
    (send(job_id="ид-1"), "job_id 'ид-1' must start"),
    (send(provider=DROP), "provider is required"),
    (send(provider=5), "provider must be a string, not a number"),
    (send(provider=""), "provider is empty"),
    (send(provider="no such"), "provider 'no such' is not a valid name"),
    (send(provider="twilio"), "provider 'twilio' is not configured here (known: intellisoftware,"),
    (send(sender=DROP), "sender is required for a send job"),
    (send(sender=42), "sender must be a string, not a number"),
    (send(sender=""), "sender is empty"),
    (send(sender="TwelveChars1"), "sender 'TwelveChars1' is 12 characters long;"),
    (send(sender="1234567890123456"), "sender '1234567890123456' has 16 digits;"),
    (send(sender="Shop!"), "sender 'Shop!' may hold only letters A-Z"),
    (send(sender=" Shop"), "sender ' Shop' may hold only"),
    (send(sender="My  Shop"), "sender 'My  Shop' may hold only"),
    (send(sender="Магазин"), "sender 'Магазин' may hold only"),
    (send(text=DROP), "text is required for a send job"),
    (send(text=42), "text must be a string, not a number"),
    (send(text=""), "text is empty"),
    (send(text=" \n\t"), "text is blank (only whitespace)"),
    (
        send(text=LONG_GSM),
        "text is too long: 11 SMS parts in GSM-7 (1531 characters, 1531 septets); at most 10 parts",
    ),
    (
        send(text=LONG_UCS2),
        "text is too long: 11 SMS parts in UCS-2 (671 characters, 671 UTF-16 units);"
        " at most 10 parts",
    ),
    (
        send(text="€" * 766),
        "text is too long: 11 SMS parts in GSM-7 (766 characters, 1532 septets)",
    ),
    (send(text="x" * 50_000), "text is too long: 50000 characters"),
    (send(text="code \ud83d"), "text holds an unpaired UTF-16 surrogate (U+D83D) at character 5"),
    (send(recipients=DROP), "recipients is required"),
    (send(recipients=None), "recipients is required"),
    (send(recipients="79161234567"), "recipients must be a list of phone numbers, not a string"),
    (
        send(recipients={"a": "79161234567"}),
        "recipients must be a list of phone numbers, not an obj",
    ),
    (send(recipients=[]), "recipients is empty"),
    (
        send(recipients=["abc", None, "123"]),
        "recipients holds no valid phone number (all 3 refused; recipients[0]: contains letters)",
    ),
    (send(scheduled_at=1714564800), "scheduled_at must be an ISO 8601 date-time string or null"),
    (send(scheduled_at="tomorrow"), "scheduled_at 'tomorrow' is not an ISO 8601 date-time"),
    (send(scheduled_at="2024-05-01 13:00:00Z"), "is not an ISO 8601 date-time"),
    (send(scheduled_at="2024-05-01T13:00Z"), "is not an ISO 8601 date-time"),
    (send(scheduled_at="2024-05-01T13:00:00+0300"), "is not an ISO 8601 date-time"),
    (send(scheduled_at="2024-05-01T13:00:00"), "'2024-05-01T13:00:00' has no UTC offset"),
    (send(scheduled_at="2024-05-01T13:00:00.5"), "has no UTC offset"),
    (send(scheduled_at="2024-02-30T12:00:00Z"), "'2024-02-30T12:00:00Z' is not a valid date-time"),
    (send(scheduled_at="2024-05-01T25:00:00Z"), "is not a valid date-time"),
    (
        send(scheduled_at="2024-05-01T11:54:00Z"),
        "scheduled_at '2024-05-01T11:54:00Z' is 6 minutes in the past;"
        " at most 5 minutes late is accepted",
    ),
    (send(scheduled_at="2024-04-01T12:00:00Z"), "is 30 days in the past"),
    (
        send(scheduled_at="2024-05-08T12:01:00Z"),
        "scheduled_at '2024-05-08T12:01:00Z' is 7 days 1 minute ahead; at most 7 days is allowed",
    ),
    (send(validity=59), "validity must be between 60 and 259200 seconds (1 minute to 72 hours)"),
    (send(validity=MAX_VALIDITY + 1), "validity must be between 60 and 259200 seconds"),
    (send(validity=-1), "not -1"),
    (send(validity=True), "validity must be a whole number of seconds, not a boolean"),
    (send(validity="3600"), "validity must be a whole number of seconds, not '3600'"),
    (send(validity=3600.5), "validity must be a whole number of seconds, not 3600.5"),
    (send(priority="high"), "priority must be 'otp' or 'bulk', not 'high'"),
    (send(priority=1), "priority must be 'otp' or 'bulk', not 1"),
    (send(metadata=[1]), "metadata must be a JSON object, not a list"),
    (send(metadata="x"), "metadata must be a JSON object, not a string"),
    (
        send(metadata={"k": "x" * MAX_METADATA_BYTES}),
        f"metadata is {MAX_METADATA_BYTES + 8} bytes as JSON; at most 4096 are allowed",
    ),
    (send(metadata={"k": "я" * 2100}), "metadata is 4208 bytes as JSON"),
    (send(metadata={"n": float("nan")}), "metadata must hold only JSON values"),
    (send(metadata={"s": {1, 2}}), "metadata must hold only JSON values"),
    (hlr(text="hi"), "field 'text' does not belong in an hlr job"),
    (hlr(sender="MyShop"), "field 'sender' does not belong in an hlr job"),
    (hlr(scheduled_at="2024-05-01T12:00:00Z"), "field 'scheduled_at' does not belong in an hlr"),
    (hlr(validity=3600), "field 'validity' does not belong in an hlr job"),
    (hlr(recipients=[]), "recipients is empty"),
    (hlr(provider="twilio"), "provider 'twilio' is not configured here"),
]


@pytest.mark.parametrize(("payload", "message"), JOB_ERRORS)
def test_job_level_error(payload: dict[str, Any], message: str) -> None:
    exc = rejection(payload)
    assert len(exc.reasons) == 1, exc.reasons
    assert message in exc.reasons[0]
    assert str(exc) == exc.reasons[0]
    assert isinstance(exc, ValueError)


@pytest.mark.parametrize("payload", [None, [], "job", 42, True])
def test_payload_must_be_an_object(payload: object) -> None:
    exc = rejection(payload)
    assert len(exc.reasons) == 1
    assert exc.reasons[0].startswith("the job must be a JSON object, not ")
    assert exc.job_id is None


def test_hlr_without_kind_is_judged_as_send() -> None:
    exc = rejection({"provider": "smsc", "recipients": ["79161234567"]})
    assert exc.reasons == ["sender is required for a send job", "text is required for a send job"]


def test_every_problem_is_listed() -> None:
    payload = {
        "kind": "sms",
        "job_id": "batch-9",
        "provider": "twilio",
        "sender": "WayTooLongSender",
        "text": "",
        "recipients": "79161234567",
        "scheduled_at": "2024-05-01T13:00:00",
        "validity": 5,
        "priority": "urgent",
        "metadata": [],
        "callback": "https://example.com",
    }
    exc = rejection(payload)
    assert exc.job_id == "batch-9"
    assert len(exc.reasons) == 10
    for field in (
        "kind",
        "unknown field 'callback'",
        "provider",
        "sender",
        "text",
        "recipients",
        "scheduled_at",
        "validity",
        "priority",
        "metadata",
    ):
        assert any(reason.startswith(field) for reason in exc.reasons), field
    assert str(exc) == "; ".join(exc.reasons)


def test_job_id_in_the_rejection() -> None:
    assert rejection(send(text="")).job_id == "order-1842"
    assert rejection(send(text="", job_id=DROP)).job_id is None
    assert rejection(send(text="", job_id="bad id")).job_id is None


def test_many_unknown_fields_are_summarised() -> None:
    exc = rejection(send(**{f"x{i}": i for i in range(25)}))
    assert len(exc.reasons) == 11
    assert exc.reasons[-1] == "... and 15 more unknown fields"


def test_job_rejected_survives_pickling() -> None:
    exc = rejection(send(text="", priority="now"))
    copy = pickle.loads(pickle.dumps(exc))
    assert isinstance(copy, JobRejected)
    assert copy.reasons == exc.reasons
    assert copy.job_id == exc.job_id


def test_job_rejected_from_a_single_reason() -> None:
    exc = JobRejected("text is empty", "j1")
    assert exc.reasons == ["text is empty"] and exc.job_id == "j1" and str(exc) == "text is empty"


# ---------------------------------------------------------------- recipients


def test_bad_recipients_are_rejected_one_by_one() -> None:
    long_raw = "+7 916 123 45 67 " + "x" * 40
    job = validate(
        send(
            recipients=[
                "+7 916 123-45-67",
                "12345",
                "call me",
                None,
                True,
                79161234568,
                "8 916 123 45 67",
                long_raw,
                7.9e10,
                "+44 20 7946 0958",
            ]
        )
    )
    assert job.recipients == ("79161234567", "79161234568", "442079460958")
    assert job.duplicates == 0
    by_index = {r.index: r for r in job.rejected}
    assert sorted(by_index) == [1, 2, 3, 4, 6, 7, 8]
    assert by_index[1] == RejectedRecipient(1, "12345", "too short: 5 digits, at least 8 needed")
    assert by_index[2] == RejectedRecipient(2, "call me", "contains letters")
    assert by_index[3].raw == "null" and "got null" in by_index[3].reason
    assert by_index[4].raw == "true" and "got a boolean" in by_index[4].reason
    assert by_index[6].raw == "8 916 123 45 67" and "starts with 89" in by_index[6].reason
    assert by_index[7].raw == long_raw[:32] and len(by_index[7].raw) == 32
    assert by_index[8].raw == "79000000000.0" and "got a float" in by_index[8].reason


def test_numbers_libphonenumber_does_not_call_valid_are_rejected_with_its_reason() -> None:
    job = validate(
        send(
            recipients=[
                "+1 000 000 0000",
                "+99912345678",
                "+7 000 000 00 00",
                "+44 7700 900123",
                "+447400123456",
                "+7 916 123-45-67",
                "+1 000 000 0000",
            ]
        )
    )
    assert job.recipients == ("447400123456", "79161234567")
    assert job.countries == ("GB", "RU")
    by_index = {r.index: r.reason for r in job.rejected}
    assert sorted(by_index) == [0, 1, 2, 3, 6]
    assert by_index[0] == by_index[6]
    assert "not a valid number for US" in by_index[0]
    assert "no country has this country code" in by_index[1]
    assert "not a valid number for RU" in by_index[2]
    assert "not a valid number for GB" in by_index[3]
    assert all(r.startswith("libphonenumber: ") for r in by_index.values())


def test_a_job_of_only_invalid_numbers_is_refused_with_the_librarys_reason() -> None:
    exc = rejection(send(recipients=["+1 000 000 0000", "+99912345678", "+7 000 000 00 00"]))
    assert exc.reasons == [
        "recipients holds no valid phone number (all 3 refused; recipients[0]:"
        " libphonenumber: not a valid number for US (possible length, but no such number range))"
    ]


def test_possible_numbers_are_accepted_when_the_deployment_chooses() -> None:
    payload = send(recipients=["+1 000 000 0000", "+99912345678", "+7 000 000 00 00"])
    job = validate_job(payload, providers=PROVIDERS, now=NOW, numbers="possible")
    assert job.recipients == ("10000000000", "70000000000")
    assert job.countries == ("US", "RU")
    assert [r.index for r in job.rejected] == [1]
    unchecked = validate_job(payload, providers=PROVIDERS, now=NOW, numbers=None)
    assert len(unchecked.recipients) == 3 and unchecked.countries == ()


def test_duplicates_in_any_format_are_sent_once() -> None:
    job = validate(
        send(
            recipients=[
                "+44 20 7946 0958",
                "+7 916 123-45-67",
                "0079161234567",
                "79161234567",
                79161234567,
                "+7 (916) 123 45 67",
                "00 44 (20) 7946-0958",
                "bad",
                "bad",
                "+1 415 555 2671",
            ]
        )
    )
    assert job.recipients == ("442079460958", "79161234567", "14155552671")  # first appearance
    assert job.duplicates == 5
    assert [r.index for r in job.rejected] == [7, 8]  # refused ones are not "duplicates"


def test_max_recipients() -> None:
    numbers = [str(79_000_000_000 + i) for i in range(MAX_RECIPIENTS)]
    job = validate(send(recipients=numbers))
    assert len(job.recipients) == MAX_RECIPIENTS
    assert job.recipients[0] == "79000000000" and job.recipients[-1] == "79000099999"
    assert set(job.countries) == {"RU"} and len(job.countries) == MAX_RECIPIENTS

    exc = rejection(send(recipients=[*numbers, "79161234567"]))
    assert exc.reasons == ["recipients has 100001 numbers; at most 100000 are allowed in one job"]


def test_large_job_in_mixed_formats() -> None:
    numbers: list[object] = []
    for i in range(MAX_RECIPIENTS // 4):
        n = 79_000_000_000 + i
        s = str(n)
        numbers += [f"+{s[0]} ({s[1:4]}) {s[4:7]}-{s[7:9]}-{s[9:]}", f"00{s}", n, f"x{i}"]
    job = validate(send(recipients=numbers))
    assert len(job.recipients) == MAX_RECIPIENTS // 4
    assert job.duplicates == MAX_RECIPIENTS // 2
    assert len(job.rejected) == MAX_RECIPIENTS // 4


# ---------------------------------------------------------------- wire round trip


def test_send_round_trip() -> None:
    job = validate(
        send(
            recipients=["+7 916 123-45-67", "0079161234567", "oops", "+1 415 555 2671"],
            scheduled_at="2024-05-02T09:15:30.250+05:30",
            validity=7200,
            priority="otp",
            metadata={"campaign": "spring", "n": [1, 2.5, None, True]},
            text="Код 4711 {ok} 🙂",
        )
    )
    assert job.rejected and job.duplicates == 1
    payload = job_to_payload(job)
    assert payload["recipients"] == ["79161234567", "14155552671"]
    assert payload["scheduled_at"] == "2024-05-02T03:45:30.250000Z"
    wire = json.loads(json.dumps(payload))
    again = validate(wire)
    assert again == dataclasses.replace(job, rejected=(), duplicates=0)
    assert job_to_payload(again) == payload


def test_send_round_trip_with_defaults() -> None:
    job = validate(send(job_id=DROP, scheduled_at="2024-05-01T12:00:00Z"))
    payload = job_to_payload(job)
    assert payload == {
        "kind": "send",
        "job_id": job.job_id,
        "provider": "smsc",
        "sender": "MyShop",
        "text": "Your code is 4711",
        "recipients": ["79161234567", "442079460958"],
        "scheduled_at": "2024-05-01T12:00:00Z",
        "validity": None,
        "priority": "bulk",
        "metadata": {},
        "callback_url": None,
    }
    assert validate(payload) == job


def test_hlr_round_trip() -> None:
    job = validate(hlr(recipients=["+7 916 123-45-67", "79161234567", "x"], metadata={"a": 1}))
    payload = job_to_payload(job)
    assert payload == {
        "kind": "hlr",
        "job_id": job.job_id,
        "provider": "smsc",
        "recipients": ["79161234567"],
        "priority": "bulk",
        "metadata": {"a": 1},
        "callback_url": None,
    }
    assert validate(payload) == dataclasses.replace(job, rejected=(), duplicates=0)


def test_new_job_id() -> None:
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and validate(send(job_id=i)).job_id == i for i in ids)


# ---------------------------------------------------------------- JSON Schema


@pytest.fixture(scope="module")
def schema_validator() -> Draft202012Validator:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_load_schema_returns_a_fresh_draft_2020_12_dict() -> None:
    first = load_schema()
    assert first["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    first.clear()
    assert load_schema()["$defs"]


def _properties(node: object) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            found.append((name, sub))
        for value in node.values():
            found += _properties(value)
    elif isinstance(node, list):
        for value in node:
            found += _properties(value)
    return found


def test_every_schema_property_is_described() -> None:
    schema = load_schema()
    props = _properties(schema)
    assert {name for name, _ in props} == {
        "kind",
        "job_id",
        "provider",
        "sender",
        "text",
        "recipients",
        "scheduled_at",
        "validity",
        "priority",
        "metadata",
        "callback_url",
    }
    for name, sub in props:
        assert sub.get("description", "").strip(), name
    for shape in schema["$defs"].values():
        assert shape["additionalProperties"] is False
        assert shape["description"]


def test_schema_limits_match_the_validator() -> None:
    defs = load_schema()["$defs"]
    send_props, hlr_props = defs["send"]["properties"], defs["hlr"]["properties"]
    for props in (send_props, hlr_props):
        assert props["job_id"]["pattern"] == JOB_ID_PATTERN
        assert props["job_id"]["maxLength"] == MAX_JOB_ID_LEN
        assert props["provider"]["pattern"] == PROVIDER_PATTERN
        assert props["recipients"]["maxItems"] == MAX_RECIPIENTS
        assert props["priority"]["enum"] == ["otp", "bulk", None]
    patterns = [alt["pattern"] for alt in send_props["sender"]["anyOf"]]
    assert patterns == [NUMERIC_SENDER_PATTERN, ALPHA_SENDER_PATTERN]
    assert send_props["sender"]["anyOf"][1]["maxLength"] == MAX_SENDER_LEN
    assert send_props["scheduled_at"]["pattern"] == SCHEDULED_AT_PATTERN
    assert send_props["validity"]["minimum"] == MIN_VALIDITY
    assert send_props["validity"]["maximum"] == MAX_VALIDITY
    assert send_props["text"]["maxLength"] == 153 * MAX_TEXT_PARTS
    assert set(defs["send"]["required"]) == {"provider", "sender", "text", "recipients"}
    assert set(defs["hlr"]["required"]) == {"kind", "provider", "recipients"}


GOOD_PAYLOADS: list[dict[str, Any]] = [
    send(),
    send(kind=DROP, job_id=DROP),
    send(kind=None, job_id=None, scheduled_at=None, validity=None, priority=None, metadata=None),
    send(
        scheduled_at="2024-05-01T15:30:00+03:00",
        validity=3600,
        priority="otp",
        metadata={"a": {"b": [1]}},
        recipients=["+7 916 123-45-67", 79161234568, "0044 20 7946 0958"],
        sender="+447400123123",
    ),
    send(text="a" * 1530, sender="Stok&Sekond"),
    send(text="Ваш код 🙂", scheduled_at="2024-05-01T12:00:00.5Z"),
    hlr(),
    hlr(job_id="x.1", priority="otp", metadata={}),
]


@pytest.mark.parametrize("payload", GOOD_PAYLOADS)
def test_schema_accepts_good_payloads(
    schema_validator: Draft202012Validator, payload: dict[str, Any]
) -> None:
    assert list(schema_validator.iter_errors(payload)) == []
    validate(payload)
    canonical = job_to_payload(validate(payload))
    assert list(schema_validator.iter_errors(canonical)) == []


SCHEMA_EXPRESSIBLE_ERRORS: list[object] = [
    [],
    "job",
    send(foo=1),
    send(kind="mms"),
    send(job_id=""),
    send(job_id="bad id"),
    send(job_id="a" * 129),
    send(job_id=5),
    send(provider=DROP),
    send(provider=""),
    send(provider="no such"),
    send(sender=DROP),
    send(sender=""),
    send(sender="TwelveChars1"),
    send(sender="1234567890123456"),
    send(sender="Shop!"),
    send(sender=" Shop"),
    send(text=DROP),
    send(text=""),
    send(text=" \n"),
    send(text=42),
    send(text="a" * 1531),
    send(recipients=DROP),
    send(recipients="79161234567"),
    send(recipients=[]),
    send(scheduled_at="tomorrow"),
    send(scheduled_at="2024-05-01T13:00:00"),
    send(scheduled_at="2024-05-01 13:00:00Z"),
    send(scheduled_at=1714564800),
    send(validity=59),
    send(validity=MAX_VALIDITY + 1),
    send(validity="3600"),
    send(validity=True),
    send(priority="high"),
    send(metadata=[1]),
    hlr(text="hi"),
    hlr(sender="MyShop"),
    hlr(validity=60),
    {"provider": "smsc", "recipients": ["79161234567"]},  # no kind: a send without text
    hlr(recipients=[]),
]


@pytest.mark.parametrize("payload", SCHEMA_EXPRESSIBLE_ERRORS)
def test_schema_and_validator_both_reject(
    schema_validator: Draft202012Validator, payload: object
) -> None:
    assert not schema_validator.is_valid(payload)
    rejection(payload)


def test_schema_rejects_an_oversized_recipient_list(schema_validator: Draft202012Validator) -> None:
    payload = send(recipients=["79161234567"] * (MAX_RECIPIENTS + 1))
    assert not schema_validator.is_valid(payload)
    assert schema_validator.is_valid(send(recipients=["79161234567"] * MAX_RECIPIENTS))


def test_a_trunk_prefix_after_the_country_code_is_the_same_number() -> None:
    job = validate(send(recipients=["+7 8 916 123-45-67", "+79161234567"]))
    assert job.recipients == ("79161234567",) and job.countries == ("RU",)
    assert job.duplicates == 1 and job.rejected == ()


def test_callback_url_is_checked_by_the_validator_and_the_schema() -> None:
    import jsonschema

    schema = load_schema()
    base = {
        "kind": "send",
        "provider": "intis",
        "sender": "MyShop",
        "text": "hi",
        "recipients": ["+447911123456"],
    }
    for good in ("https://shop.example.com/smsq/events", "http://10.0.0.5:8080/cb?x=1"):
        payload = {**base, "callback_url": good}
        assert validate_job(payload).callback_url == good
        jsonschema.validate(payload, schema)
        hlr_payload = {"kind": "hlr", "provider": "intis", "recipients": ["+447911123456"]}
        assert validate_job({**hlr_payload, "callback_url": good}).callback_url == good
    for bad in ("ftp://x/y", "https://user:pw@x/y", "https://x/a b", "x" * 10, 42, "https://"):
        payload = {**base, "callback_url": bad}
        with pytest.raises(JobRejected) as err:
            validate_job(payload)
        assert any("callback_url" in r for r in err.value.reasons)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(payload, schema)
