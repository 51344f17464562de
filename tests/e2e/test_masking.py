"""Numbers and secrets stay hidden: provider ids that embed a number (SMSC's ``<id>:<number>``)
in ``smsq status``, ``smsq dlq`` and logs; push secrets never stored in ``smsq:inbox``."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import redis

from producers.dead_letters import DeadLetters
from producers.keys import Keys
from tests.support.messages import raw_enqueue
from tests.support.sandboxes import SandboxFactory, sandbox_settings
from tests.support.smsc import SECRET, STATUS_PARAMS, form, sign
from tests.support.web import HOOK_SECRET, WebServer, intis_push, plain_settings
from worker.core.config import parse_settings
from worker.core.logs import RedactingFilter
from worker.entry.cli import main as smsq_cli
from worker.providers import provider_spec
from worker.providers.base import InboundRequest
from worker.pushes import apply as webhooks
from worker.state import store

PHONES = ["+79161234567", "+79161234568", "+79161234569"]


def test_status_masks_provider_ids_that_embed_the_number(
    redis_url: str, make_worker: Any, capsys: Any, monkeypatch: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["smsc"])
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    raw_enqueue(
        redis.Redis.from_url(redis_url),
        {
            "job_id": "masked-1",
            "provider": "smsc",
            "sender": "smstest",
            "text": "hello",
            "recipients": PHONES,
        },
    )
    worker.join()
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("SMSQ_CONFIG", raising=False)
    capsys.readouterr()
    assert smsq_cli(["status", "masked-1", "--limit", "10"]) == 0
    text = capsys.readouterr().out
    assert "id=" in text  # SMSC's ids are shown ...
    assert smsq_cli(["status", "masked-1", "--json"]) == 0
    as_json = capsys.readouterr().out
    rows = json.loads(as_json)["recipients"]
    assert all(":" in r["provider_message_id"] for r in rows)  # <id>:<number>
    for phone in PHONES:
        digits = phone.lstrip("+")
        assert digits not in text and digits not in as_json  # ... without the number
    assert smsq_cli(["status", "masked-1", "--json", "--show-numbers"]) == 0
    assert PHONES[0].lstrip("+") in capsys.readouterr().out


def test_logs_mask_a_number_inside_a_provider_id() -> None:
    record = logging.LogRecord(
        "smsq.test", logging.INFO, __file__, 1, "recorded %s as %s", ("7:79212000032", "x"), None
    )
    RedactingFilter().filter(record)
    shown = record.getMessage()
    assert "79212000032" not in shown and shown.startswith("recorded 7:7921")


def test_dlq_show_and_list_mask_numbers(
    redis_client: redis.Redis, capsys: Any, monkeypatch: Any
) -> None:
    pipe = redis_client.pipeline(transaction=True)
    letter_id = store.dead_letter(
        pipe,
        Keys(),
        source="intake",
        reasons=["recipient +79161234567 is odd"],
        payload={"recipients": ["+79161234567"], "text": "x\ud800"},
    )
    pipe.execute()
    url = redis_client.connection_pool.connection_kwargs
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{url['port']}/0")
    monkeypatch.delenv("SMSQ_CONFIG", raising=False)
    capsys.readouterr()
    assert smsq_cli(["dlq", "show", letter_id]) == 0
    shown = capsys.readouterr().out
    assert "79161234567" not in shown and "7916*****67" in shown
    assert "\\ud800" in shown  # printable, where printing the raw character would fail
    assert smsq_cli(["dlq", "list"]) == 0
    assert "79161234567" not in capsys.readouterr().out
    assert smsq_cli(["dlq", "show", letter_id, "--show-numbers"]) == 0
    assert "79161234567" in capsys.readouterr().out
    assert DeadLetters(redis_client, Keys()).get(letter_id) is not None


def test_stored_pushes_never_keep_the_secret(
    redis_url: str, redis_client: redis.Redis, start_web: Callable[..., WebServer]
) -> None:
    """A real push through the web process: ``?key=<secret>`` is checked, then left out."""
    server = start_web(plain_settings(redis_url))
    assert intis_push(server.url)[0] == 200
    [raw] = redis_client.hvals("smsq:inbox")
    assert HOOK_SECRET.encode() not in raw
    entry = json.loads(raw)
    assert "key" not in entry["query"] and entry["query"]["message-id"] == "4001"


def test_smsc_signature_is_dropped_and_the_push_still_applies() -> None:
    settings = parse_settings(
        {
            "redis": {"url": "redis://127.0.0.1:1/0"},
            "accounts": {
                "smsc-main": {
                    "kind": "smsc",
                    "base_url": "http://127.0.0.1:9",
                    "login": "l",
                    "password": {"env": "P"},
                    "webhook_secret": {"env": "S"},
                }
            },
        },
        env={"P": "p", "S": SECRET},
    )
    account = settings.accounts["smsc-main"]
    signature = sign("md5", f"14:79999999999:1:{SECRET}", "cp1251")
    body = form(dict(STATUS_PARAMS, md5=signature), "cp1251")
    request = InboundRequest(
        method="POST",
        path="",
        query={"md5": SECRET},  # the handler URL's secret, as SMSC is told to call it
        content_type="application/x-www-form-urlencoded",
        body=body,
        remote="127.0.0.1",
        received_at=time.time(),
    )
    spec = provider_spec("smsc")
    spec.verify_push(account, request)  # genuine
    entry = webhooks.encode_push(account, request)
    assert SECRET not in entry and signature not in entry
    stored = webhooks.decode_push(entry).request
    assert "md5" not in stored.query
    fields = dict(parse_qsl(stored.body.decode("ascii"), encoding="latin-1"))
    assert "md5" not in fields and fields["phone"] == "79999999999"
    content = spec.parse_push(account, stored)
    [report] = content.reports
    assert report.provider_message_id == "14:79999999999"
    assert base64.b64encode(stored.body).decode() in entry
