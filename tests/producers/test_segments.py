"""SMS part counting: GSM-7 and UCS-2 boundaries, characters never split."""

from __future__ import annotations

import pytest

from producers.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    Segments,
    count_segments,
    is_gsm7,
    ucs2_hex,
)

EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair in UCS-2


def test_empty_text_takes_no_parts() -> None:
    assert count_segments("") == Segments(encoding="gsm7", units=0, parts=0, chars=0)


def test_alphabets_are_the_gsm_03_38_tables() -> None:
    assert len(GSM7_BASIC) == 127  # 128 positions less ESC
    assert set(GSM7_EXTENSION) == set("^{}\\[~]|€\f")
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(
    ("length", "parts"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (1530, 10), (1531, 11)],
)
def test_gsm7_single_and_concatenated_boundaries(length: int, parts: int) -> None:
    seg = count_segments("a" * length)
    assert seg == Segments(encoding="gsm7", units=length, parts=parts, chars=length)


def test_gsm7_per_part() -> None:
    assert count_segments("a" * 160).per_part == 160
    assert count_segments("a" * 161).per_part == 153
    assert count_segments("").per_part == 160


def test_gsm7_extension_characters_count_two() -> None:
    assert count_segments("€" * 80) == Segments("gsm7", 160, 1, 80)
    assert count_segments("€" * 81) == Segments("gsm7", 162, 2, 81)
    assert count_segments("a" * 159 + "{") == Segments("gsm7", 161, 2, 160)
    assert count_segments("a" * 158 + "}") == Segments("gsm7", 160, 1, 159)
    assert count_segments("\f") == Segments("gsm7", 2, 1, 1)
    assert count_segments("[~]|\\^").units == 12


def test_gsm7_extension_never_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets would fit two parts of 153 only if the
    # escape and its character were split: they are not, so it takes three.
    text = "a" * 152 + "[" + "a" * 152
    seg = count_segments(text)
    assert seg.units == 306
    assert seg.parts == 3
    # Moved one character earlier, the pair fits the first part.
    assert count_segments("a" * 151 + "[" + "a" * 153).parts == 2


def test_gsm7_extensions_at_every_part_boundary() -> None:
    # "a" + 76 pairs fill the first part exactly (153); every later part then
    # takes 76 pairs (152 septets), so 459 septets need four parts, not three.
    text = "a" + "€" * 229
    seg = count_segments(text)
    assert seg.units == 459
    assert seg.parts == 4
    assert count_segments("a" + "€" * 228).parts == 3  # 457 septets: 153 + 152 + 152


@pytest.mark.parametrize(
    ("length", "parts"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4), (670, 10), (671, 11)],
)
def test_ucs2_single_and_concatenated_boundaries(length: int, parts: int) -> None:
    seg = count_segments("я" * length)
    assert seg == Segments(encoding="ucs2", units=length, parts=parts, chars=length)


def test_one_non_gsm_character_makes_the_whole_text_ucs2() -> None:
    assert count_segments("a" * 69 + "я") == Segments("ucs2", 70, 1, 70)
    assert count_segments("a" * 70 + "я") == Segments("ucs2", 71, 2, 71)
    # Extension characters are one unit in UCS-2.
    assert count_segments("€" * 69 + "я") == Segments("ucs2", 70, 1, 70)
    assert count_segments("a" * 160 + "`").encoding == "ucs2"
    assert count_segments("a" * 71).per_part == 160
    assert count_segments("я" * 71).per_part == 67
    assert count_segments("я" * 70).per_part == 70


def test_non_bmp_characters_count_two_units() -> None:
    assert count_segments(EMOJI) == Segments("ucs2", 2, 1, 1)
    assert count_segments(EMOJI * 35) == Segments("ucs2", 70, 1, 35)
    assert count_segments(EMOJI * 36) == Segments("ucs2", 72, 2, 36)
    assert count_segments("a" * 68 + EMOJI) == Segments("ucs2", 70, 1, 69)
    assert count_segments("a" * 69 + EMOJI) == Segments("ucs2", 71, 2, 70)


def test_surrogate_pair_never_split_across_parts() -> None:
    # 66 + 2 + 66 = 134 units: two parts of 67 only by splitting the pair.
    text = "a" * 66 + EMOJI + "a" * 66
    seg = count_segments(text)
    assert seg.units == 134
    assert seg.parts == 3
    assert count_segments("a" * 65 + EMOJI + "a" * 67).parts == 2
    # Parts of 67 hold 33 pairs (66 units): 67 emoji need three parts, not two.
    assert count_segments(EMOJI * 67) == Segments("ucs2", 134, 3, 67)


def test_is_gsm7() -> None:
    assert is_gsm7("")
    assert is_gsm7("Hello, world! @£$¥ èéùìò ÄÖÑÜ§¿ äöñüà\r\n")
    assert is_gsm7("{[~]}|^€\\\f")
    assert is_gsm7("ΔΦΓΛΩΠΨΣΘΞ")
    assert not is_gsm7("Привет")
    assert not is_gsm7("`")
    assert not is_gsm7("ç")  # only the capital Ç is in the table
    assert not is_gsm7(EMOJI)
    assert not is_gsm7("\x1b")  # ESC itself is not a character


def test_ucs2_hex() -> None:
    assert ucs2_hex("A") == "0041"
    assert ucs2_hex("Привет") == "041F04400438043204350442"
    assert ucs2_hex(EMOJI) == "D83DDE00"
    assert ucs2_hex("") == ""
