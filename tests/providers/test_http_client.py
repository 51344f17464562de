"""The adapters' base client classifies HTTP outcomes (real server, real aiohttp)."""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from worker.providers.base import (
    AccountConfig,
    ErrorClass,
    HttpClient,
    ProviderError,
    form_urlencode,
)
from worker.providers.sandbox_kit import serve


async def answer(request: web.Request) -> web.Response:
    status = int(request.query["status"])
    headers = {"Retry-After": request.query["retry"]} if "retry" in request.query else {}
    return web.Response(status=status, text="x", headers=headers)


@pytest.mark.parametrize(
    ("status", "idempotent", "expected"),
    [
        (500, False, ErrorClass.TRANSIENT),
        (503, False, ErrorClass.TRANSIENT),
        (502, False, ErrorClass.AMBIGUOUS),
        (504, False, ErrorClass.AMBIGUOUS),
        (502, True, ErrorClass.TRANSIENT),
        (401, False, ErrorClass.ACCOUNT),
        (403, True, ErrorClass.ACCOUNT),
        (404, True, ErrorClass.REQUEST),
        (429, False, ErrorClass.THROTTLED),
    ],
)
async def test_http_status_classes(status: int, idempotent: bool, expected: ErrorClass) -> None:
    app = web.Application()
    app.router.add_get("/", answer)
    server = await serve(app)
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpClient(AccountConfig(name="a", kind="x", base_url=server.url), session)
            with pytest.raises(ProviderError) as info:
                await client.request(
                    "GET",
                    server.url + "/",
                    endpoint="send",
                    params={"status": str(status)},
                    idempotent=idempotent,
                )
            assert info.value.error_class is expected
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("inf", None), ("nan", None), ("99999", 3600.0), ("-3", 0.0)],
)
async def test_retry_after_is_bounded(header: str, expected: float | None) -> None:
    app = web.Application()
    app.router.add_get("/", answer)
    server = await serve(app)
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpClient(AccountConfig(name="a", kind="x", base_url=server.url), session)
            with pytest.raises(ProviderError) as info:
                await client.request(
                    "GET",
                    server.url + "/",
                    endpoint="send",
                    params={"status": "429", "retry": header},
                )
            assert info.value.retry_after == expected
    finally:
        await server.stop()


async def test_connection_refused_is_transient_even_for_sends() -> None:
    async with aiohttp.ClientSession() as session:
        client = HttpClient(
            AccountConfig(name="a", kind="x", base_url="http://127.0.0.1:9"), session
        )
        with pytest.raises(ProviderError) as info:
            await client.request("GET", "http://127.0.0.1:9/", endpoint="send", idempotent=False)
        assert info.value.error_class is ErrorClass.TRANSIENT


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=5))
def test_form_urlencode_is_urlencode(fields: dict[str, str]) -> None:
    assert form_urlencode(fields) == urlencode(fields)


def test_form_urlencode_of_a_chunk() -> None:
    phones = ",".join(f"7916123456{i}" for i in range(10))
    for fields in (
        {"to": phones, "text": "Hi, there & more: 100% ✓", "from": "smsq"},
        {"phones": "+79161234567,,79161234568,", "mes": "a,b", "e": ""},
        {"x": ",", "y": "~._-", "z": " , "},
    ):
        assert form_urlencode(fields) == urlencode(fields)


async def test_a_form_goes_as_aiohttp_would_send_it() -> None:
    seen: list[tuple[str, bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers["Content-Type"], await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", record)
    server = await serve(app)
    form = {"to": ",".join(f"4477009001{i:02d}" for i in range(50)), "text": "Ça va? 100%"}
    try:
        async with aiohttp.ClientSession() as session:
            client = HttpClient(AccountConfig(name="a", kind="x", base_url=server.url), session)
            await client.request("POST", server.url + "/", endpoint="send", data=form)
            async with session.post(server.url + "/", data=form) as resp:  # aiohttp's own
                await resp.read()
    finally:
        await server.stop()
    assert seen[0] == seen[1]
    assert seen[0][0] == "application/x-www-form-urlencoded"
