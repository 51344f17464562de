"""Intis md5 request signature: the algorithm, its test vectors, and the doc's bad example."""

from __future__ import annotations

import hashlib
import itertools
import time

from worker.providers.intis.signing import (
    DOC_EXAMPLE_SIGNATURE,
    TIMESTAMP_VALIDITY,
    sign,
    signed_params,
    timestamp_now,
    verify,
)

KEY = "75a55c70c495a0ae8a7c512166b2bc6d7c9cc153"
DOC_PARAMS = {
    "timestamp": "1480266800",
    "login": "YourLogin",
    "phone": "17076295568",
    "sender": "smstest",
    "text": "Long text",
}


def test_vector_from_the_algorithm() -> None:
    assert sign(DOC_PARAMS, KEY) == "a161dcfd69d1176984e4b91720a6f90b"


def test_vector_with_return_json() -> None:
    assert sign({**DOC_PARAMS, "return": "json"}, KEY) == "b72a93a9f7532728a0805d7a70198de7"


def test_doc_concatenation_step_matches() -> None:
    # The doc's intermediate string is right; only its final md5 is not.
    concatenated = "YourLogin17076295568smstestLong text1480266800" + KEY
    assert hashlib.md5(concatenated.encode()).hexdigest() == sign(DOC_PARAMS, KEY)


def test_doc_worked_example_is_not_reproducible() -> None:
    """The doc's 12a574ae… comes out of no ordering of its own inputs (README trap)."""
    assert sign(DOC_PARAMS, KEY) != DOC_EXAMPLE_SIGNATURE
    values = list(DOC_PARAMS.values())
    for order in itertools.permutations(values):
        for with_key in ("".join(order) + KEY, KEY + "".join(order)):
            assert hashlib.md5(with_key.encode()).hexdigest() != DOC_EXAMPLE_SIGNATURE


def test_signature_parameter_is_excluded() -> None:
    with_sig = {**DOC_PARAMS, "signature": "whatever"}
    assert sign(with_sig, KEY) == sign(DOC_PARAMS, KEY)


def test_order_of_the_mapping_does_not_matter() -> None:
    reordered = dict(reversed(list(DOC_PARAMS.items())))
    assert sign(reordered, KEY) == sign(DOC_PARAMS, KEY)


def test_values_are_hashed_raw_before_url_encoding() -> None:
    params = {"login": "u", "text": "Привет, мир & co + 100% =)", "timestamp": "1"}
    raw = "u" + "Привет, мир & co + 100% =)" + "1" + KEY
    assert sign(params, KEY) == hashlib.md5(raw.encode("utf-8")).hexdigest()


def test_sort_is_by_name_case_sensitive_like_php_ksort() -> None:
    # "sender" < "sendingTime" (e < i); both before "text".
    params = {"text": "T", "sendingTime": "S2", "sender": "S1"}
    assert sign(params, KEY) == hashlib.md5(("S1S2T" + KEY).encode()).hexdigest()


def test_lowercase_hex() -> None:
    value = sign(DOC_PARAMS, KEY)
    assert value == value.lower() and len(value) == 32


def test_signed_params_adds_login_timestamp_signature() -> None:
    out = signed_params({"phone": "17076295568"}, login="YourLogin", api_key=KEY, timestamp="7")
    assert out["login"] == "YourLogin" and out["timestamp"] == "7"
    assert out["signature"] == sign(
        {"phone": "17076295568", "login": "YourLogin", "timestamp": "7"}, KEY
    )
    assert verify(out, KEY)


def test_verify_rejects_tampering_and_wrong_key() -> None:
    out = signed_params({"text": "hi"}, login="YourLogin", api_key=KEY)
    assert not verify({**out, "text": "ho"}, KEY)
    assert not verify(out, "another-key")
    assert not verify({k: v for k, v in out.items() if k != "signature"}, KEY)
    assert not verify({**out, "signature": "подпись"}, KEY)  # non-ASCII: False, not a crash
    assert verify({**out, "signature": out["signature"].upper()}, KEY)


def test_timestamp_is_local_utc_seconds() -> None:
    assert abs(int(timestamp_now()) - time.time()) < 2
    assert TIMESTAMP_VALIDITY == 86400
