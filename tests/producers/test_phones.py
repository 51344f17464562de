"""Phone number normalisation and masking."""

from __future__ import annotations

import re

import pytest

from producers.phones import (
    InvalidPhone,
    check_number,
    check_phone,
    mask_phone,
    normalize_phone,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("79161234567", "79161234567"),
        ("+79161234567", "79161234567"),
        ("+7 916 123-45-67", "79161234567"),
        ("+7 (916) 123-45-67", "79161234567"),
        ("0079161234567", "79161234567"),
        ("00 7 916 123 45 67", "79161234567"),
        ("+44 20 7946 0958", "442079460958"),
        ("(+44) 20 7946 0958", "442079460958"),
        ("0044 (20) 7946-0958", "442079460958"),
        ("+1.415.555.2671", "14155552671"),
        ("+1 (415) 555-2671", "14155552671"),
        ("+ 49 30 1234567", "49301234567"),
        ("  +49 30 1234567\t", "49301234567"),
        ("+7\u00a0916\u00a0123\u00a045\u00a067", "79161234567"),
        (79161234567, "79161234567"),
        (12345678, "12345678"),  # 8 digits: the shortest accepted
        ("123456789012345", "123456789012345"),  # 15 digits: E.164's longest
        (123456789012345, "123456789012345"),
    ],
)
def test_normalize_accepts(raw: object, expected: str) -> None:
    assert normalize_phone(raw) == expected


def test_normalize_is_idempotent() -> None:
    for raw in ("+7 916 123-45-67", "0044 20 7946 0958", "+1 (415) 555-2671"):
        once = normalize_phone(raw)
        assert normalize_phone(once) == once
        assert normalize_phone(int(once)) == once


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "expected a string or an integer, got null"),
        (True, "expected a string or an integer, got a boolean"),
        (False, "expected a string or an integer, got a boolean"),
        (79161234567.0, "got a float"),
        (["79161234567"], "got a list"),
        ({"phone": "79161234567"}, "got an object"),
        (b"79161234567", "got a bytes"),
        ("", "empty"),
        ("   ", "empty"),
        ("+", "no digits"),
        ("( - )", "no digits"),
        ("+7 916 CALL NOW", "contains letters"),
        ("+7 916 123 45 67 ext 2", "contains letters"),
        ("7916+1234567", "'+' is only allowed at the start"),
        ("++79161234567", "'+' is only allowed at the start"),
        ("+7_916_123_45_67", "contains an invalid character '_'"),
        ("+7/916/1234567", "contains an invalid character '/'"),
        ("+7 916 123\n4567", "contains unexpected whitespace"),
        ("+7 916 123\x004567", "contains an invalid character U+0000"),
        ("٧٩١٦١٢٣٤٥٦٧", "contains non-ASCII digits"),
        ("７９１６１２３４５６７", "contains non-ASCII digits"),
        ("1234567", "too short: 7 digits, at least 8 needed"),
        ("+7 916", "too short: 4 digits"),
        (1234567, "too short: 7 digits"),
        ("1234567890123456", "too long: 16 digits, at most 15 (E.164)"),
        ("+1 234 567 890 123 456", "too long: 16 digits"),
        (10**15, "too long: more than 15 digits"),
        (10**400, "too long"),
        (-79161234567, "negative number"),
        ("02079460958", "national format (leading 0)"),
        ("0 20 7946 0958", "national format (leading 0)"),
        ("+0079161234567", "starts with 0 after '+'"),
        ("+0 20 7946 0958", "starts with 0 after '+'"),
        ("000791612345678", "starts with 0 after the 00 international prefix"),
        ("00", "nothing after the 00 international prefix"),
        ("00-()", "nothing after the 00 international prefix"),
        ("89161234567", "starts with 89, which no country code begins with"),
        ("8 (916) 123-45-67", "starts with 89"),
        ("+28 1234 5678", "starts with 28"),
        ("8312345678", "starts with 83"),
        ("+7 (916 123-45-67", "unbalanced parentheses"),
        ("+7 916) 123-45-67", "unbalanced parentheses"),
        ("+7 )916( 123-45-67", "unbalanced parentheses"),
        ("+7 ((916)) 123-45-67", "nested parentheses"),
    ],
)
def test_normalize_rejects_with_reason(raw: object, reason: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_phone(raw)
    assert reason in info.value.reason
    assert str(info.value) == info.value.reason
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "raw",
    [
        "1234567",
        "1234567890123456",
        "89161234567",
        "+7 916 CALL 4567",
        "7916+1234567",
        "02079460958",
    ],
)
def test_reasons_never_quote_the_number(raw: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_phone(raw)
    digits = re.sub(r"\D", "", raw)
    longest_digit_run = max(len(run) for run in re.findall(r"\d+", info.value.reason) or [""])
    assert digits not in info.value.reason
    assert raw not in info.value.reason
    assert longest_digit_run < 4  # counts such as "16 digits" are fine; the number is not


def test_mask_keeps_first_four_and_last_two() -> None:
    assert mask_phone("79161234567") == "7916*****67"
    assert mask_phone("442079460958") == "4420******58"
    assert mask_phone("123456789012345") == "1234*********45"
    assert mask_phone("123456789") == "1234***89"


def test_mask_short_inputs_show_only_the_last_two() -> None:
    assert mask_phone("12345678") == "******78"
    assert mask_phone("1234567") == "*****67"
    assert mask_phone("123") == "*23"
    assert mask_phone("12") == "**"
    assert mask_phone("1") == "*"
    assert mask_phone("") == ""


@pytest.mark.parametrize("length", range(1, 21))
def test_mask_never_reveals_the_whole_number(length: int) -> None:
    phone = "".join(str((i * 7 + 3) % 10) for i in range(length))
    masked = mask_phone(phone)
    assert len(masked) == length
    assert masked != phone
    assert "*" in masked
    # Never more than 6 characters shown, and never all but one of them for numbers.
    shown = sum(1 for c in masked if c != "*")
    assert shown <= 6
    assert shown <= max(0, length - 1)
    if length >= 8:
        assert masked.count("*") >= 2


def test_mask_of_a_normalised_number_hides_its_middle() -> None:
    phone = normalize_phone("+7 916 123-45-67")
    masked = mask_phone(phone)
    assert masked.startswith("7916") and masked.endswith("67")
    assert "12345" not in masked


# ---------------------------------------------------------------- libphonenumber


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("+1 000 000 0000", "not a valid number for US"),
        ("+99912345678", "no country has this country code"),
        ("+7 000 000 00 00", "not a valid number for RU"),
        ("+44 7700 900123", "not a valid number for GB"),  # a drama (fiction) range
        ("+4412345678901", "too long for its country (GB)"),
    ],
)
def test_numbers_the_library_does_not_call_valid_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhone) as err:
        check_number(normalize_phone(raw))
    assert err.value.reason.startswith("libphonenumber: ")
    assert reason in err.value.reason
    assert normalize_phone(raw) not in err.value.reason


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("+447400123456", "GB"),
        ("+447911123456", "GG"),  # a Guernsey mobile range inside +44
        ("+7 916 123-45-67", "RU"),
        ("+4915123456789", "DE"),
        ("+33612345678", "FR"),
        ("+12025550123", "US"),
        ("+390612345678", "IT"),
    ],
)
def test_valid_numbers_give_their_region(raw: str, region: str) -> None:
    assert check_number(normalize_phone(raw)) == region


def test_merely_possible_numbers_pass_when_the_deployment_accepts_them() -> None:
    assert check_number("10000000000", "possible") == "US"
    assert check_number("70000000000", "possible") == "RU"
    with pytest.raises(InvalidPhone, match="no country has this country code"):
        check_number("99912345678", "possible")  # not even possible


def test_the_library_reads_a_trunk_prefix_after_the_country_code_away() -> None:
    assert check_phone(normalize_phone("+7 8 916 123-45-67")) == ("79161234567", "RU")
    assert check_phone("447400123456") == ("447400123456", "GB")
