"""Phone numbers as smsq stores and sends them: international digits, no '+'.

:func:`normalize_phone` turns what a producer wrote (``"+7 916 123-45-67"``,
``"0079161234567"``, ``"(+44) 20.7946.0958"``, ``79161234567``) into the one
form every provider adapter receives (``"79161234567"``), or raises
:class:`InvalidPhone` with a reason a person can act on. It never guesses a
country: a number in national format (leading ``0``) is refused.

:func:`check_number` then asks libphonenumber (the ``phonenumbers`` package)
whether the digits are a number that can exist: a number in a range no
operator was given (``+1 000 000 0000``, UK drama numbers ``+44 7700 900xxx``),
of a wrong length for its country, or with a country code nobody has
(``+999…``) is refused with the library's reason, and the region of a valid
number (``"GB"``) is returned. The worker always has the library; this package
does not require it (it depends on ``redis`` only): without it,
:func:`check_number` is not available (see :func:`number_library`) and only
:func:`normalize_phone`'s checks apply.

:func:`mask_phone` hides most of a number for logs and error messages.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Literal

from producers.errors import InputError

__all__ = [
    "ACCEPT_NUMBERS",
    "MAX_PHONE_DIGITS",
    "MIN_PHONE_DIGITS",
    "AcceptNumbers",
    "InvalidPhone",
    "check_number",
    "check_phone",
    "mask_phone",
    "normalize_phone",
    "number_library",
]

AcceptNumbers = Literal["valid", "possible"]
# "valid": what libphonenumber calls a valid number (a range assigned in its country's plan);
# "possible": any number of a possible length for its country code.
ACCEPT_NUMBERS: tuple[AcceptNumbers, ...] = ("valid", "possible")

_phonenumbers: ModuleType | None
try:
    import phonenumbers as _phonenumbers
except ImportError:  # the producers package depends on redis only
    _phonenumbers = None

MIN_PHONE_DIGITS = 8
MAX_PHONE_DIGITS = 15  # E.164

# Characters people put between digits; removed before the digits are checked.
_SEPARATORS = " -.()\u00a0\t"
_DROP_SEPARATORS = str.maketrans("", "", _SEPARATORS)
_ASCII_DIGITS = frozenset("0123456789")
# Two-digit prefixes that begin no E.164 country code (ITU: 28x, 83x and 89x
# are all spare). "89…" is mostly the Russian national form "8 9xx…" written
# without the country code 7.
_SPARE_PREFIXES = frozenset({"28", "83", "89"})
# Any integer at or above this has more than MAX_PHONE_DIGITS digits.
_INT_LIMIT = 10**MAX_PHONE_DIGITS


class InvalidPhone(InputError, ValueError):
    """A recipient that cannot be a phone number; ``reason`` says why.

    The reason is a short phrase (``"too short: 7 digits, at least 8 needed"``)
    that never contains the number itself, so it is safe to log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_phone(raw: object) -> str:
    """Return ``raw`` as international digits without '+', e.g. ``"79161234567"``.

    Accepted: a string or a non-negative integer. A string may start with '+'
    or with the ``00`` international prefix, and may separate digits with
    spaces, dashes, dots or (balanced, non-nested) parentheses. The result has
    8 to 15 digits (E.164) and starts like a country code: not with ``0``, nor
    with the spare prefixes ``28``, ``83`` or ``89``.

    Raises :class:`InvalidPhone` otherwise.
    """
    # Fast path: the canonical form itself (and integers), which is what most
    # bulk jobs carry.
    if type(raw) is str:
        if raw.isdigit() and raw.isascii() and raw[0] != "0":
            return _check_digits(raw)
        return _normalize_text(raw)
    if isinstance(raw, bool):
        raise InvalidPhone("expected a string or an integer, got a boolean")
    if isinstance(raw, int):
        if raw < 0:
            raise InvalidPhone("negative number")
        if raw >= _INT_LIMIT:
            raise InvalidPhone(f"too long: more than {MAX_PHONE_DIGITS} digits (E.164)")
        return _check_digits(str(raw))
    if isinstance(raw, str):  # a str subclass
        return normalize_phone(str(raw))
    raise InvalidPhone(f"expected a string or an integer, got {_type_name(raw)}")


def _normalize_text(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidPhone("empty")
    if text.startswith("(+"):  # "(+44) 20 7946 0958"
        plus, body = True, "(" + text[2:]
    else:
        plus = text[0] == "+"
        body = text[1:] if plus else text
    digits = body.translate(_DROP_SEPARATORS)
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidPhone(_junk_reason(body, digits))
    if "(" in body or ")" in body:
        _check_parentheses(body)
    if plus:
        if digits.startswith("0"):
            raise InvalidPhone("starts with 0 after '+': a country code is expected")
    elif digits.startswith("00"):
        digits = digits[2:]
        if not digits:
            raise InvalidPhone("nothing after the 00 international prefix")
        if digits[0] == "0":
            raise InvalidPhone(
                "starts with 0 after the 00 international prefix: a country code is expected"
            )
    elif digits.startswith("0"):
        raise InvalidPhone("national format (leading 0): write it with the country code, e.g. +44…")
    return _check_digits(digits)


def _check_digits(digits: str) -> str:
    n = len(digits)
    if n < MIN_PHONE_DIGITS:
        raise InvalidPhone(
            f"too short: {n} digit{'' if n == 1 else 's'}, at least {MIN_PHONE_DIGITS} needed"
        )
    if n > MAX_PHONE_DIGITS:
        raise InvalidPhone(f"too long: {n} digits, at most {MAX_PHONE_DIGITS} (E.164)")
    if digits[0] == "0":
        raise InvalidPhone("national format (leading 0): write it with the country code, e.g. +44…")
    if digits[:2] in _SPARE_PREFIXES:
        raise InvalidPhone(
            f"starts with {digits[:2]}, which no country code begins with"
            " (national format? write it with the country code)"
        )
    return digits


def _junk_reason(body: str, digits: str) -> str:
    if not digits:
        return "no digits"
    if "+" in body:
        return "'+' is only allowed at the start"
    for c in digits:
        if c in _ASCII_DIGITS:
            continue
        if c.isdigit():
            return "contains non-ASCII digits"
        if c.isalpha():
            return "contains letters"
        if c.isspace():
            return "contains unexpected whitespace"
        return f"contains an invalid character {_char_name(c)}"
    return "not a phone number"  # pragma: no cover - every branch above returns


def _check_parentheses(body: str) -> None:
    depth = 0
    for c in body:
        if c == "(":
            depth += 1
            if depth > 1:
                raise InvalidPhone("nested parentheses")
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise InvalidPhone("unbalanced parentheses")
    if depth:
        raise InvalidPhone("unbalanced parentheses")


def _char_name(c: str) -> str:
    if c.isprintable():
        return repr(c)
    return f"U+{ord(c):04X}"


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def mask_phone(phone: str) -> str:
    """Hide most of ``phone`` for logs: ``"79161234567"`` → ``"7916*****67"``.

    Keeps the first 4 and the last 2 characters when at least 3 are left to
    hide; a shorter input keeps only its last 2 (and an input of 2 characters
    or fewer is hidden entirely), so the whole number is never shown.
    """
    s = str(phone)
    n = len(s)
    if n <= 2:
        return "*" * n
    if n - 6 >= 3:
        return s[:4] + "*" * (n - 6) + s[-2:]
    return "*" * (n - 2) + s[-2:]


# A run of 8 to 15 digits (optionally after '+') not inside a longer word: a phone number,
# alone or embedded in a provider's message id ("7:79212000032"). Longer runs (provider
# message ids) and shorter ones (ports, counts) pass.
_NUMBER_IN_TEXT = re.compile(r"(?<![\w-])\+?(\d{8,15})(?![\w-])")


def mask_numbers_in(text: str, phone: str | None = None) -> str:
    """``text`` with every phone-number-like run of digits masked (:func:`mask_phone`),
    and ``phone``'s digits too wherever they appear (e.g. inside a provider id)."""
    if phone:
        digits = "".join(c for c in phone if c.isdigit())
        if len(digits) >= 5 and digits in text:
            text = text.replace(digits, mask_phone(digits))
    return _NUMBER_IN_TEXT.sub(lambda m: mask_phone(m.group(1)), text)


def number_library() -> ModuleType | None:
    """The ``phonenumbers`` module when it is installed, else ``None``."""
    return _phonenumbers


_POSSIBLE_REASONS = {
    "INVALID_COUNTRY_CODE": "no country has this country code",
    "TOO_SHORT": "too short for its country",
    "TOO_LONG": "too long for its country",
    "INVALID_LENGTH": "a length no number of its country has",
    "IS_POSSIBLE_LOCAL_ONLY": "a local number only (the area code is missing)",
}
_PARSE_REASONS = {
    "INVALID_COUNTRY_CODE": "no country has this country code",
    "NOT_A_NUMBER": "not a phone number",
    "TOO_SHORT_AFTER_IDD": "too short after the country code",
    "TOO_SHORT_NSN": "too short after the country code",
    "TOO_LONG": "too long",
}


def check_number(digits: str, accept: AcceptNumbers = "valid") -> str:
    """The region of ``digits`` when libphonenumber accepts them (see :func:`check_phone`)."""
    return check_phone(digits, accept)[1]


def check_phone(digits: str, accept: AcceptNumbers = "valid") -> tuple[str, str]:
    """Check normalised ``digits`` with libphonenumber; return the number's region code.

    With ``accept="valid"`` (the default) the number must be one the library
    calls valid (``is_valid_number``: a length and a range its country's
    numbering plan assigns); with ``"possible"``, a possible length for its
    country code is enough. Returns the number as the library reads it
    (international digits: a trunk prefix written after the country code, as in
    ``+7 8 916 …``, is dropped) and its region: ISO 3166-1 alpha-2 (``"GB"``),
    ``"001"`` for non-geographic numbers, or ``""`` when the library cannot
    tell. Raises :class:`InvalidPhone` with the library's reason otherwise, and
    RuntimeError when the library is not installed.
    """
    pn = _phonenumbers
    if pn is None:
        raise RuntimeError("number checks need the phonenumbers package (pip install phonenumbers)")
    try:
        number = pn.parse("+" + digits, None)
    except pn.NumberParseException as exc:
        name = getattr(exc.error_type, "name", None) or _parse_error_name(pn, exc.error_type)
        reason = _PARSE_REASONS.get(name, "not a phone number")
        raise InvalidPhone(f"libphonenumber: {reason}") from None
    canonical = f"{number.country_code}{pn.national_significant_number(number)}"
    region = pn.region_code_for_number(number)
    if region is not None and pn.is_valid_number_for_region(number, region):
        return canonical, str(region)
    main = pn.region_code_for_country_code(number.country_code)
    possible = pn.is_possible_number_with_reason(number)
    if possible != pn.ValidationResult.IS_POSSIBLE:
        name = _enum_name(pn.ValidationResult, possible)
        where = "" if main in ("ZZ", "001") else f" ({main})"
        raise InvalidPhone(f"libphonenumber: {_POSSIBLE_REASONS.get(name, 'not possible')}{where}")
    if accept == "possible":
        return canonical, "" if main == "ZZ" else str(main)
    where = "" if main in ("ZZ", "001") else f" for {main}"
    raise InvalidPhone(
        f"libphonenumber: not a valid number{where} (possible length, but no such number range)"
    )


def _enum_name(enum: object, value: int) -> str:
    for name in dir(enum):
        if not name.startswith("_") and getattr(enum, name) == value:
            return name
    return ""


def _parse_error_name(pn: ModuleType, code: object) -> str:
    for name in dir(pn.NumberParseException):
        if name.isupper() and getattr(pn.NumberParseException, name) == code:
            return name
    return ""
