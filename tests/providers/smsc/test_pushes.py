"""SMSC callbacks: decoding (form / fmt=2 XML / fmt=3 JSON in windows-1251, utf-8, koi8-r),
md5 / sha1 / crc32 signatures, ``!`` GET parameters, ``flag`` bits, and the sandbox pushing
signed callbacks, with its retry schedule, to a real receiver over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from producers.status import Status
from tests.support.smsc import SECRET, STATUS_PARAMS, form, sign
from worker.providers.sandbox_kit import OutcomeMix, RunningSandbox, SandboxState, serve
from worker.providers.smsc.adapter import SmscAdapter
from worker.providers.smsc.push_formats import (
    CallbackError,
    CallConfirmation,
    FlagInfo,
    IncomingSms,
    SignatureError,
    StatusCallback,
    decode_callback,
    handle_callback,
    parse_callback,
    signature_base,
    split_handler_url,
    verify_signature,
)
from worker.providers.smsc.sandbox import create_sandbox, sandbox_of

CODECS = {"windows-1251": "cp1251", "utf-8": "utf-8", "koi8-r": "koi8_r"}


INCOMING_PARAMS = {
    "id": "1234568",
    "sms_id": "14",
    "phone": "79999999999",
    "mes": "Да, подтверждаю",
    "to": "79990000000",
    "smsc": "79168999100",
    "sent": "1640708860",
    "time": "1640708862",
}
CALL_PARAMS = {"waitcall": "1", "phone": "79999999999", "ts": "1640708862"}


# --------------------------------------------------------------------------- parsing


def test_status_callback_default_charset_md5() -> None:
    params = dict(STATUS_PARAMS, md5=sign("md5", f"14:79999999999:1:{SECRET}", "cp1251"))
    cb = handle_callback(form(params, "cp1251"), secret=SECRET)
    assert isinstance(cb, StatusCallback)
    assert cb.provider_message_id == "14:79999999999" and cb.status == 1
    assert cb.report.status is Status.DELIVERED and cb.report.raw_status == "1"
    assert cb.report.at is not None and int(cb.report.at.timestamp()) == 1640708862
    assert (cb.cnt, cb.cost, cb.sender, cb.time) == (1, "4.1", "SMSC.RU", "28.12.21 19:27:42")
    assert cb.hlr is None and "md5" not in cb.params


def test_status_callback_undelivered_with_err() -> None:
    params = dict(STATUS_PARAMS, status="20", err="6", syserr="0x45")
    cb = parse_callback(params)
    assert isinstance(cb, StatusCallback)
    assert cb.report.status is Status.UNDELIVERABLE and cb.report.raw_error == "6"
    assert cb.report.extra["err_text"] == "subscriber offline" and cb.syserr == "0x45"


@pytest.mark.parametrize("charset", ["windows-1251", "utf-8", "koi8-r"])
@pytest.mark.parametrize("algorithm", ["md5", "sha1", "crc32"])
def test_incoming_sms_each_charset_and_algorithm(charset: str, algorithm: str) -> None:
    codec = CODECS[charset]
    check = sign(algorithm, f"79999999999:Да, подтверждаю:79990000000:{SECRET}", codec)
    params = dict(INCOMING_PARAMS, charset=charset, **{algorithm: check})
    cb = handle_callback(form(params, codec), secret=SECRET)
    assert isinstance(cb, IncomingSms)
    assert cb.mes == "Да, подтверждаю" and cb.sms_id == "14" and cb.to == "79990000000"
    assert cb.sent is not None and cb.time is not None and cb.smsc == "79168999100"
    # The same body is refused with another secret, and when the text was altered.
    with pytest.raises(SignatureError):
        handle_callback(form(params, codec), secret="other")
    forged = dict(params, mes="Нет")
    with pytest.raises(SignatureError):
        handle_callback(form(forged, codec), secret=SECRET)


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "crc32"])
def test_status_signature_good_and_bad(algorithm: str) -> None:
    good = sign(algorithm, f"14:79999999999:1:{SECRET}", "cp1251")
    params = dict(STATUS_PARAMS, **{algorithm: good})
    assert verify_signature(params, SECRET)
    assert not verify_signature(params, SECRET + "x")
    assert not verify_signature(dict(params, status="20"), SECRET)  # tampered status
    assert not verify_signature(dict(params, id="15"), SECRET)
    assert not verify_signature(dict(params, **{algorithm: "0" * len(good)}), SECRET)
    assert not verify_signature(STATUS_PARAMS, SECRET)  # unsigned


def test_unsigned_or_forged_callbacks_are_rejected() -> None:
    with pytest.raises(SignatureError):
        handle_callback(form(STATUS_PARAMS, "cp1251"), secret=SECRET)
    forged = dict(STATUS_PARAMS, md5=hashlib.md5(b"14:79999999999:1:guess").hexdigest())
    with pytest.raises(SignatureError):
        handle_callback(form(forged, "cp1251"), secret=SECRET)
    # Two check values: both must match.
    both = dict(
        STATUS_PARAMS,
        md5=sign("md5", f"14:79999999999:1:{SECRET}", "cp1251"),
        sha1="bad",
    )
    assert not verify_signature(both, SECRET)
    # Without a secret configured, unsigned callbacks are accepted (deliberate opt-out).
    assert isinstance(handle_callback(form(STATUS_PARAMS, "cp1251"), secret=None), StatusCallback)


def test_call_confirmation_crc32_decimal_and_hex() -> None:
    value = zlib.crc32(f"79999999999:1640708862:{SECRET}".encode())
    for check in (str(value), f"{value:08x}", f"{value:08X}"):
        cb = handle_callback(form(dict(CALL_PARAMS, crc32=check), "cp1251"), secret=SECRET)
        assert isinstance(cb, CallConfirmation)
        assert cb.phone == "79999999999" and cb.ts == "1640708862" and cb.at is not None
    with pytest.raises(SignatureError):
        handle_callback(form(dict(CALL_PARAMS, crc32=str(value + 1)), "cp1251"), secret=SECRET)


def test_signature_base_strings() -> None:
    assert signature_base(STATUS_PARAMS, "s") == "14:79999999999:1:s"
    assert signature_base(INCOMING_PARAMS, "s") == "79999999999:Да, подтверждаю:79990000000:s"
    assert signature_base(CALL_PARAMS, "s") == "79999999999:1640708862:s"


@pytest.mark.parametrize("charset", ["utf-8", "windows-1251"])
def test_fmt3_json_bodies(charset: str) -> None:
    codec = CODECS[charset]
    check = sign("sha1", f"79999999999:Да, подтверждаю:79990000000:{SECRET}", codec)
    body = json.dumps(
        dict(INCOMING_PARAMS, charset=charset, fmt="3", sha1=check), ensure_ascii=False
    ).encode(codec)
    decoded = decode_callback(body, content_type="application/json")
    assert decoded.fmt == 3 and decoded.charset == charset
    cb = handle_callback(body, secret=SECRET)
    assert isinstance(cb, IncomingSms) and cb.mes == "Да, подтверждаю"


@pytest.mark.parametrize("charset", ["utf-8", "windows-1251"])
def test_fmt2_xml_bodies(charset: str) -> None:
    codec = CODECS[charset]
    check = sign("md5", f"14:79999999999:1:{SECRET}", codec)
    fields = dict(STATUS_PARAMS, charset=charset, fmt="2", md5=check, sender="Магазин")
    items = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    body = f'<?xml version="1.0" encoding="{charset}"?>\n<data>{items}</data>'.encode(codec)
    cb = handle_callback(body, secret=SECRET)
    assert isinstance(cb, StatusCallback) and cb.sender == "Магазин"
    assert decode_callback(body).fmt == 2


def test_xml_with_dtd_is_refused() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><data><id>&a;</id></data>'
    with pytest.raises(CallbackError):
        decode_callback(body)


def test_koi8r_not_used_with_fmt() -> None:
    # "When transmitting the fmt parameter, the koi8-r encoding is not used."
    body = json.dumps(dict(INCOMING_PARAMS, charset="koi8-r"), ensure_ascii=False)
    decoded = decode_callback(body.encode("cp1251"))
    assert decoded.charset == "windows-1251" and decoded.params["mes"] == "Да, подтверждаю"


def test_charset_sources() -> None:
    body = form(INCOMING_PARAMS, "utf-8")
    assert decode_callback(body, charset="utf-8").params["mes"] == "Да, подтверждаю"
    assert decode_callback(body, query={"charset": "utf-8"}).params["mes"] == "Да, подтверждаю"
    assert (
        decode_callback(
            body, content_type="application/x-www-form-urlencoded; charset=utf-8"
        ).params["mes"]
        == "Да, подтверждаю"
    )
    with pytest.raises(CallbackError):
        decode_callback(form(INCOMING_PARAMS, "utf-8"), charset="ebcdic")
    with pytest.raises(CallbackError):
        decode_callback(b"{not json")


def test_kind_detection_as_the_doc_snippet() -> None:
    assert isinstance(parse_callback(INCOMING_PARAMS), IncomingSms)  # isset($_POST["mes"])
    assert isinstance(parse_callback(CALL_PARAMS), CallConfirmation)  # isset($_POST["waitcall"])
    assert isinstance(parse_callback(STATUS_PARAMS), StatusCallback)  # else
    with pytest.raises(CallbackError):
        parse_callback({"phone": "7999"})  # a status without id/status


def test_flag_bits() -> None:
    info = FlagInfo.from_int(4 | (1 << 5) | (1 << 8) | (0b10 << 9))
    assert info.message_type == 4 and info.message_type_name == "hlr"
    assert info.second_balance and info.template and info.template_kind == "authorization"
    assert FlagInfo.from_int(1 << 8).template_kind == "service"
    assert FlagInfo.from_int((1 << 8) | (0b01 << 9)).template_kind == "transactional"
    assert FlagInfo.from_int((1 << 8) | (0b11 << 9)).template_kind == "advertising"
    plain = FlagInfo.from_int(1)
    assert plain.message_type_name == "flash" and not plain.template
    assert plain.template_kind is None and not plain.second_balance
    cb = parse_callback(dict(STATUS_PARAMS, flag=str((1 << 8) | (0b11 << 9))))
    assert isinstance(cb, StatusCallback) and cb.flag is not None
    assert cb.flag.template_kind == "advertising"


def test_hlr_status_callback() -> None:
    params = dict(
        STATUS_PARAMS,
        type="4",
        flag="4",
        imsi="250010000000001",
        msc="79161000000",
        mcc="250",
        mnc="01",
        cn="Россия",
        net="МТС",
        rcn="",
        rnet="",
    )
    cb = parse_callback(params)
    assert isinstance(cb, StatusCallback) and cb.hlr is not None
    assert cb.hlr.ok and cb.hlr.imsi == "250010000000001" and cb.hlr.roaming is False
    assert cb.hlr.provider_message_id == "14:79999999999" and cb.report.extra["net"] == "МТС"


def test_voice_fields() -> None:
    params = dict(STATUS_PARAMS, type="7", dtmf="12#", cmt="overtime: 00:12")
    params |= {"calltime": "15", "callmenu": "1,2", "ringtime": "7"}
    cb = parse_callback(params)
    assert isinstance(cb, StatusCallback)
    assert (cb.dtmf, cb.cmt, cb.calltime, cb.callmenu, cb.ringtime) == (
        "12#",
        "overtime: 00:12",
        "15",
        "1,2",
        "7",
    )


def test_handler_url_bang_get_params() -> None:
    # The Russian page's example: param1 and param2 by GET, param3 and param4 by POST.
    h = split_handler_url("https://mysite.ru/!param1&param2?param3&param4")
    assert h.url == "https://mysite.ru/?param1&param2"
    assert [k for k, _ in h.get_params] == ["param1", "param2"]
    assert [k for k, _ in h.post_params] == ["param3", "param4"]
    assert (h.charset, h.fmt, h.algorithm) == ("windows-1251", 0, None)
    h = split_handler_url("https://site.example/hook/!token=abc?charset=utf-8&fmt=3&sha1=s3cr-et_")
    assert h.url == "https://site.example/hook/?token=abc"
    assert (h.charset, h.fmt, h.algorithm, h.secret) == ("utf-8", 3, "sha1", "s3cr-et_")
    assert split_handler_url("https://x.example/cb?md5=abc").url == "https://x.example/cb"
    with pytest.raises(ValueError):
        split_handler_url("https://x.example/cb?md5=bad%20secret")


def test_get_params_merge_with_body() -> None:
    params = dict(STATUS_PARAMS, md5=sign("md5", f"14:79999999999:1:{SECRET}", "cp1251"))
    cb = handle_callback(form(params, "cp1251"), secret=SECRET, query={"token": "abc"})
    assert isinstance(cb, StatusCallback) and cb.params["token"] == "abc"


# --------------------------------------------------------------------------- end to end


class Receiver:
    """A real handler: verifies with the module under test; answers from a script."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.answers: list[int] = []
        self.accepted: list[Any] = []
        self.rejected = 0
        self.hits = 0
        self.running: RunningSandbox | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        status = self.answers.pop(0) if self.answers else 200
        body = await request.read()
        try:
            cb = handle_callback(
                body,
                secret=self.secret,
                content_type=request.headers.get("Content-Type"),
                query=dict(request.query),
            )
        except SignatureError:
            self.rejected += 1
            return web.Response(status=403)
        if status == 200:
            self.accepted.append(cb)
        return web.Response(status=status, text="OK")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.running = await serve(app)
        return self.running.url

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


MIX = OutcomeMix(delivered=1.0, undeliverable=0.0, expired=0.0, final_after=0.15, seed=1)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(SECRET)
    await r.start()
    yield r
    await r.stop()


async def start_pair(receiver: Receiver, handler_suffix: str, **options: Any) -> RunningSandbox:
    assert receiver.running is not None
    url = receiver.running.url + handler_suffix
    return await serve(create_sandbox(SandboxState(MIX), callback_url=url, caps=False, **options))


def account(url: str) -> Any:
    from worker.providers.base import AccountConfig

    return AccountConfig(
        name="t", kind="smsc", base_url=url, login="testuser", password="testpass", timeout=5
    )


@pytest.mark.parametrize("charset", ["windows-1251", "utf-8", "koi8-r"])
@pytest.mark.parametrize("algorithm", ["md5", "sha1", "crc32"])
async def test_sandbox_pushes_signed_status_callbacks(
    receiver: Receiver, charset: str, algorithm: str
) -> None:
    sandbox = await start_pair(receiver, f"/smsc/!token=t1?charset={charset}&{algorithm}={SECRET}")
    try:
        async with aiohttp.ClientSession() as session:
            adapter = SmscAdapter(account(sandbox.url), session)
            out = await adapter.send_sms(["79161234567"], "Привет", sender="Магазин")
        await wait_for(lambda: receiver.accepted)
        [cb] = receiver.accepted
        assert isinstance(cb, StatusCallback)
        assert cb.provider_message_id == f"{out.id}:79161234567"
        assert cb.report.status is Status.DELIVERED and cb.sender == "Магазин"
        assert cb.params["token"] == "t1"  # the '!' part came as a GET parameter
        assert cb.params["charset"] == charset  # the '?' part is echoed by POST
        assert receiver.rejected == 0
    finally:
        await sandbox.stop()


@pytest.mark.parametrize("fmt", ["2", "3"])
@pytest.mark.parametrize("charset", ["utf-8", "windows-1251"])
async def test_sandbox_pushes_fmt_bodies(receiver: Receiver, fmt: str, charset: str) -> None:
    sandbox = await start_pair(receiver, f"/cb?fmt={fmt}&charset={charset}&sha1={SECRET}")
    try:
        smsc = sandbox_of(sandbox.app)
        smsc.add_incoming("79161234567", "Стоп", sms_id="3")
        await wait_for(lambda: receiver.accepted)
        [cb] = receiver.accepted
        assert isinstance(cb, IncomingSms) and cb.mes == "Стоп" and cb.sms_id == "3"
    finally:
        await sandbox.stop()


async def test_sandbox_hlr_and_call_callbacks(receiver: Receiver) -> None:
    sandbox = await start_pair(receiver, "/cb", callback_secret=SECRET, callback_algorithm="crc32")
    try:
        async with aiohttp.ClientSession() as session:
            adapter = SmscAdapter(account(sandbox.url), session)
            await adapter.hlr(["79161234567"])
            async with session.post(
                sandbox.url + "/__sandbox/smsc/call", json={"phone": "79161234567"}
            ) as resp:
                assert resp.status == 200
        await wait_for(lambda: len(receiver.accepted) == 2)
        kinds = {type(cb) for cb in receiver.accepted}
        assert kinds == {StatusCallback, CallConfirmation}
        status = next(cb for cb in receiver.accepted if isinstance(cb, StatusCallback))
        assert status.hlr is not None and status.hlr.ok and status.hlr.mcc == "250"
        assert status.flag is not None and status.flag.message_type_name == "hlr"
    finally:
        await sandbox.stop()


async def test_wrong_secret_rejected_end_to_end(receiver: Receiver) -> None:
    sandbox = await start_pair(
        receiver, "/cb?md5=not-the-secret", callback_retry_interval=0.05, callback_attempts=2
    )
    try:
        sandbox_of(sandbox.app).add_incoming("79161234567", "hi")
        await wait_for(lambda: receiver.rejected == 2)
        assert receiver.accepted == []
        log = sandbox_of(sandbox.app).callback_log
        assert [a.http_status for a in log] == [403, 403]  # 403 is retried, as any non-200/404
    finally:
        await sandbox.stop()


async def test_forged_post_rejected(receiver: Receiver) -> None:
    assert receiver.running is not None
    forged = dict(STATUS_PARAMS, md5=hashlib.md5(b"14:79999999999:1:wrong").hexdigest())
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            receiver.running.url + "/cb",
            data=form(forged, "cp1251"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as resp,
    ):
        assert resp.status == 403
    assert receiver.accepted == []


async def test_retry_schedule_until_200(receiver: Receiver) -> None:
    receiver.answers = [500, 503]
    sandbox = await start_pair(
        receiver, f"/cb?md5={SECRET}", callback_retry_interval=0.1, callback_attempts=50
    )
    try:
        sandbox_of(sandbox.app).add_incoming("79161234567", "retry me")
        await wait_for(lambda: receiver.accepted)
        log = sandbox_of(sandbox.app).callback_log
        assert [(a.attempt, a.http_status) for a in log] == [(1, 500), (2, 503), (3, 200)]
        gaps = [b.at - a.at for a, b in itertools.pairwise(log)]
        assert all(g >= 0.09 for g in gaps)  # the (scaled) 4-minute interval
    finally:
        await sandbox.stop()


async def test_404_stops_retries_and_attempts_are_capped(receiver: Receiver) -> None:
    receiver.answers = [404]
    sandbox = await start_pair(
        receiver, f"/cb?md5={SECRET}", callback_retry_interval=0.02, callback_attempts=4
    )
    try:
        smsc = sandbox_of(sandbox.app)
        smsc.add_incoming("79161234567", "one")
        await wait_for(lambda: len(smsc.callback_log) == 1)
        await asyncio.sleep(0.1)
        assert [a.http_status for a in smsc.callback_log] == [404]
        receiver.answers = [500] * 10
        smsc.add_incoming("79161234567", "two")
        await wait_for(lambda: len(smsc.callback_log) == 5)
        await asyncio.sleep(0.1)
        assert [a.attempt for a in smsc.callback_log[1:]] == [1, 2, 3, 4]  # 50 by default
    finally:
        await sandbox.stop()


async def test_unreachable_handler_is_retried() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sandbox = await serve(
        create_sandbox(
            SandboxState(MIX),
            callback_url=f"http://127.0.0.1:{port}/cb",
            callback_retry_interval=0.02,
            callback_attempts=3,
        )
    )
    try:
        smsc = sandbox_of(sandbox.app)
        smsc.add_incoming("79161234567", "x")
        await wait_for(lambda: len(smsc.callback_log) == 3)
        assert all(a.http_status is None for a in smsc.callback_log)
    finally:
        await sandbox.stop()
