"""How many SMS parts a text takes: GSM-7 or UCS-2.

GSM-7: 160 septets in one SMS, 153 per part when concatenated; characters of
the extension table count two septets and are never split across parts.
Anything outside GSM-7 goes as UCS-2: 70 units in one SMS, 67 per part;
characters outside the BMP take two UCS-2 units (a surrogate pair) and are
never split either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# GSM 03.38 basic character set (the 128 positions, ESC excluded).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each takes an escape plus the character (two septets).
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

Encoding = Literal["gsm7", "ucs2"]


@dataclass(frozen=True)
class Segments:
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    parts: int  # 0 for an empty text
    chars: int  # characters (code points)

    @property
    def per_part(self) -> int:
        """Units one part holds at this length (single or concatenated)."""
        if self.encoding == "gsm7":
            return GSM7_SINGLE if self.parts <= 1 else GSM7_PART
        return UCS2_SINGLE if self.parts <= 1 else UCS2_PART


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def _unit_widths(text: str, encoding: Encoding) -> list[int]:
    if encoding == "gsm7":
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def _pack(widths: list[int], per_part: int) -> int:
    """Parts needed when no character may straddle two parts."""
    parts, used = 1, 0
    for w in widths:
        if used + w > per_part:
            parts += 1
            used = 0
        used += w
    return parts


def count_segments(text: str) -> Segments:
    """Count the parts ``text`` takes, choosing GSM-7 when every character fits it."""
    encoding: Encoding = "gsm7" if is_gsm7(text) else "ucs2"
    widths = _unit_widths(text, encoding)
    units = sum(widths)
    single, per_part = (GSM7_SINGLE, GSM7_PART) if encoding == "gsm7" else (UCS2_SINGLE, UCS2_PART)
    if units == 0:
        parts = 0
    elif units <= single:
        parts = 1
    else:
        parts = _pack(widths, per_part)
    return Segments(encoding=encoding, units=units, parts=parts, chars=len(text))


def ucs2_hex(text: str) -> str:
    """UCS-2 / UTF-16 big-endian hex of ``text`` (upper case), as gateways take it."""
    return text.encode("utf-16-be").hex().upper()
