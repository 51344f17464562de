"""SMSC push helpers computed independently of the code under test: the doc's signatures,
form bodies in the account's charset, and the documented status parameters."""

from __future__ import annotations

import hashlib
import zlib
from urllib.parse import urlencode

SECRET = "my-secret_42"


def sign(algorithm: str, text: str, codec: str) -> str:
    """The doc's check value, computed independently of the module under test."""
    data = text.encode(codec)
    if algorithm == "md5":
        return hashlib.md5(data).hexdigest()
    if algorithm == "sha1":
        return hashlib.sha1(data).hexdigest()
    return str(zlib.crc32(data))  # PHP crc32(): unsigned decimal


def form(params: dict[str, str], codec: str) -> bytes:
    return urlencode(params, encoding=codec).encode("ascii")


# The doc's parameter table for a status, with values.
STATUS_PARAMS = {
    "id": "14",
    "phone": "79999999999",
    "status": "1",
    "time": "28.12.21 19:27:42",
    "ts": "1640708862",
    "cnt": "1",
    "type": "0",
    "cost": "4.1",
    "flag": "0",
    "sender": "SMSC.RU",
}
