"""The Intis request signature: md5 over the sorted parameter values plus the API key.

Algorithm (Intis HTTP API v1.4, section 1, and every official SDK): take every
request parameter except ``signature`` itself, sort them by name, concatenate
their *raw* values (before URL-encoding, UTF-8) with no separator, append the
API key, md5, lowercase hex.

The doc's worked example claims ``12a574ae79253d622293df7321d9cd11`` for
login=YourLogin, phone=17076295568, sender=smstest, text="Long text",
timestamp=1480266800 and key 75a55c70c495a0ae8a7c512166b2bc6d7c9cc153. That
value cannot be reproduced from those inputs (nor from any ordering of them);
the algorithm gives ``a161dcfd69d1176984e4b91720a6f90b``, and with
return=json added ``b72a93a9f7532728a0805d7a70198de7``. We follow the
algorithm (tests/providers/intis/test_signing.py pins both vectors and the mismatch).

The ``timestamp`` parameter is part of the signed set. It is generated
locally (UTC epoch seconds) rather than fetched from ``timestamp.php``; Intis
accepts it for 86400 seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = [
    "DOC_EXAMPLE_SIGNATURE",
    "SIGNATURE_PARAM",
    "TIMESTAMP_VALIDITY",
    "sign",
    "signed_params",
    "timestamp_now",
    "verify",
]

SIGNATURE_PARAM = "signature"
TIMESTAMP_VALIDITY = 86400  # seconds a timestamp stays valid (doc, section 1)

# The doc's worked example result; NOT reproducible from its own inputs (see module doc).
DOC_EXAMPLE_SIGNATURE = "12a574ae79253d622293df7321d9cd11"


def sign(params: Mapping[str, str], api_key: str) -> str:
    """The signature of ``params`` (``signature`` itself ignored) under ``api_key``."""
    values = "".join(params[name] for name in sorted(params) if name != SIGNATURE_PARAM)
    return hashlib.md5((values + api_key).encode("utf-8")).hexdigest()


def verify(params: Mapping[str, str], api_key: str) -> bool:
    """Whether ``params["signature"]`` is the signature of the other parameters."""
    given = params.get(SIGNATURE_PARAM, "").strip().lower().encode("utf-8")
    return hmac.compare_digest(given, sign(params, api_key).encode("ascii"))


def timestamp_now() -> str:
    """The current UTC epoch second as Intis wants it (a decimal string)."""
    return str(int(time.time()))


def signed_params(
    params: Mapping[str, str], *, login: str, api_key: str, timestamp: str | None = None
) -> dict[str, str]:
    """``params`` plus ``login``, ``timestamp`` and the ``signature`` over all of them."""
    out = dict(params)
    out["login"] = login
    out["timestamp"] = timestamp if timestamp is not None else timestamp_now()
    out.pop(SIGNATURE_PARAM, None)
    out[SIGNATURE_PARAM] = sign(out, api_key)
    return out
