"""Second-chance resend through two sandboxes: a provider-side failure goes out once more
through the next account of the route; recipient-side failures, old OTPs and recipients
past their attempts do not; each recipient gets one final status."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producers.client import JobStatus, SmsqClient
from producers.status import Status
from tests.support.sandboxes import SandboxFactory, SandboxThread, sandbox_settings
from worker.core.config import ConfigError, parse_settings
from worker.providers import failure_side
from worker.providers.sandbox_kit import OutcomeMix
from worker.tracking.scheduler import Scheduler

NO_ROUTE = "79161234567"  # SMSC: status 20, err 248 "no route" (the provider's side)
ABSENT = "79161234568"  # SMSC: status 20, err 1 "subscriber does not exist" (the number's)
FINE = "79161234569"
FINAL = {s.value for s in Status if s.is_final}


@pytest.fixture
def sandboxes_for_resend(run_sandboxes: SandboxFactory) -> Callable[..., SandboxThread]:
    """``sandboxes_for_resend(**smsc_options)``: the SMSC and Intis sandboxes of a route."""

    def start(**smsc: Any) -> SandboxThread:
        return run_sandboxes(
            ["smsc", "intis"],
            mix=OutcomeMix(delivered=1.0, undeliverable=0.0, expired=0.0, final_after=0.2, seed=3),
            smsc={"caps": False, "delivery_errors": {NO_ROUTE: 248, ABSENT: 1}, **smsc},
            intis={"stop_list": ["79161234570"]},
        )

    return start


def settings_for(
    redis_url: str, sandboxes: SandboxThread, route: dict[str, Any], **dispatch: Any
) -> Any:
    return sandbox_settings(
        redis_url,
        sandboxes,
        scheduler={"first_check": 0.1, "reconcile_interval": 1},
        routes={"second": route},
        accounts_extra={
            "smsc-sandbox": {"limits": {"status": {"requests": 1000, "per_seconds": 1}}}
        },
        **dispatch,
    )


class Polls:
    """Runs the scheduler's tasks (reconciliation: status polls) once per call."""

    def __init__(self, settings: Any, client: redis.Redis, worker: Any) -> None:
        self.scheduler = Scheduler(settings, client=client)
        self.worker = worker
        self.tick = time.time()

    def run(self, wait: float = 0.5) -> None:
        time.sleep(wait)  # past the sandboxes' final_after and the first check
        self.tick += 86_400
        self.scheduler.run_due(self.tick)
        self.worker.join()


def events(client: redis.Redis, job: str) -> list[dict[str, str]]:
    out = []
    for _, fields in client.xrange("smsq:events"):
        item = {k.decode(): v.decode() for k, v in fields.items()}
        if item.get("job_id") == job:
            out.append(item)
    return out


def rows(status: JobStatus | None) -> dict[str, Any]:
    assert status is not None
    return {r.phone: r for r in status.recipients}


def sent_to(sandboxes: SandboxThread, kind: str) -> list[str]:
    field = "phones" if kind == "smsc" else "phone"
    return [
        p
        for e in sandboxes.log(kind)
        if e.path.endswith("send.php") and e.params.get(field)
        for p in e.params[field].split(",")
    ]


def test_failure_sides_come_from_each_providers_codes() -> None:
    und, rej = Status.UNDELIVERABLE, Status.REJECTED
    assert failure_side("smsc", und, "20", "248") == "provider"  # no route
    assert failure_side("smsc", und, "20", "254") == "provider"  # unregistered sender id
    assert failure_side("smsc", und, "20", "1") == "recipient"  # no such subscriber
    assert failure_side("smsc", und, "20", "13") == "recipient"  # blocked
    assert failure_side("smsc", und, "20", "") == "unknown"
    assert failure_side("smsc", rej, "22", "") == "recipient"  # wrong number
    assert failure_side("smsc", rej, "6", "", at_send=True) == "provider"  # forbidden sender
    assert failure_side("smsc", rej, "8", "", at_send=True) == "recipient"
    assert failure_side("intis", rej, "9", "", at_send=True) == "provider"  # sender unregistered
    assert failure_side("intis", rej, "31", "", at_send=True) == "provider"  # direction closed
    assert failure_side("intis", rej, "13", "", at_send=True) == "recipient"  # stop list
    assert failure_side("intis", und, "not_deliver", "") == "unknown"  # reports give no reason
    assert failure_side("intellisoftware", rej, "7", "") == "provider"  # routing error
    assert failure_side("intellisoftware", und, "12", "") == "recipient"
    assert (
        failure_side("intellisoftware", rej, "ERR:INVALID_NUMBER", "", at_send=True) == "recipient"
    )


def test_resend_settings_are_validated() -> None:
    accounts = {
        "a": {"kind": "intis", "base_url": "http://127.0.0.1:1"},
        "b": {"kind": "smsc", "base_url": "http://127.0.0.1:2"},
    }
    ok = parse_settings(
        {
            "accounts": accounts,
            "routes": {"r": {"accounts": ["a", "b"], "resend_on": ["undeliverable"]}},
        },
        {},
    )
    assert ok.policy("r").resend_on == ("undeliverable",) and ok.policy("r").attempts == 2
    with pytest.raises(ConfigError) as err:
        parse_settings(
            {
                "accounts": accounts,
                "routes": {
                    "r": {
                        "accounts": ["a", "b"],
                        "resend_on": ["unknown", "expired"],
                        "attempts": 3,
                    }
                },
            },
            {},
        )
    text = "\n".join(err.value.problems)
    assert "'unknown' cannot be resent on" in text and "'expired' cannot be resent on" in text
    assert "attempts: 3 sends need as many accounts" in text


def test_a_provider_side_undeliverable_is_resent_through_the_next_account(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    sandboxes_for_resend: Callable[..., SandboxThread],
) -> None:
    sandboxes = sandboxes_for_resend()
    route = {
        "accounts": ["smsc-sandbox", "intis-sandbox"],
        "resend_on": ["undeliverable", "rejected"],
        "attempts": 2,
    }
    settings = settings_for(redis_url, sandboxes, route)
    worker = make_worker(settings)
    polls = Polls(settings, redis_client, worker)
    client = SmsqClient(redis_url)
    job = client.enqueue_send(
        provider="second",
        sender="smstest",
        text="Your parcel is on its way",
        recipients=["+" + NO_ROUTE, "+" + ABSENT, "+" + FINE],
    )
    worker.join()
    polls.run()  # SMSC's reports: NO_ROUTE resent through Intis, ABSENT final, FINE delivered
    mid = rows(client.status(job, recipients=True))
    assert mid[NO_ROUTE].attempt == 2 and mid[NO_ROUTE].status in ("submitted", "delivered")
    polls.run()  # Intis's report for the second attempt
    status = client.status(job, recipients=True)
    assert status is not None
    assert status.counts == {"delivered": 2, "undeliverable": 1}  # one final status each
    got = rows(status)
    second = got[NO_ROUTE]
    assert (second.status, second.account, second.attempt) == ("delivered", "intis-sandbox", 2)
    assert second.attempts is not None and len(second.attempts) == 1
    first = second.attempts[0]
    assert (first["account"], first["status"], first["raw_status"], first["raw_error"]) == (
        "smsc-sandbox",
        "undeliverable",
        "20",
        "248",
    )
    assert (got[ABSENT].status, got[ABSENT].attempt) == (
        "undeliverable",
        None,
    )  # the number's fault
    assert (got[FINE].status, got[FINE].account) == ("delivered", "smsc-sandbox")
    assert sorted(sent_to(sandboxes, "smsc")) == sorted([NO_ROUTE, ABSENT, FINE])
    assert sent_to(sandboxes, "intis") == [NO_ROUTE]

    evs = events(redis_client, job)
    finals = [e for e in evs if e["type"] == "status" and e["status"] in FINAL]
    assert sorted(e["phone"] for e in finals) == sorted([NO_ROUTE, ABSENT, FINE])  # once each
    [resend] = [e for e in evs if e["type"] == "resend"]
    assert (resend["phone"], resend["status"], resend["account"], resend["next_account"]) == (
        NO_ROUTE,
        "undeliverable",
        "smsc-sandbox",
        "intis-sandbox",
    )
    assert redis_client.zcard("smsq:resend") == 0
    assert redis_client.hget(f"smsq:job:{job}", "state") == b"done"


def test_send_refusals_get_one_second_chance_and_never_more(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    sandboxes_for_resend: Callable[..., SandboxThread],
) -> None:
    # "Brand" is not registered at Intis (error 9, the sender's problem) but SMSC takes it;
    # "Blocked" is refused by both, so its second refusal is final.
    sandboxes = sandboxes_for_resend(forbidden_senders=["Blocked"])
    route = {"accounts": ["intis-sandbox", "smsc-sandbox"], "resend_on": ["rejected"]}
    settings = settings_for(redis_url, sandboxes, route)
    worker = make_worker(settings)
    client = SmsqClient(redis_url)
    good = client.enqueue_send(
        provider="second", sender="Brand", text="hi", recipients=["+" + FINE]
    )
    bad = client.enqueue_send(
        provider="second", sender="Blocked", text="hi", recipients=["+" + FINE]
    )
    stop = client.enqueue_send(
        provider="second", sender="smstest", text="hi", recipients=["+79161234570"]
    )
    worker.join()
    g = rows(client.status(good, recipients=True))[FINE]
    assert (g.status, g.account, g.attempt) == ("submitted", "smsc-sandbox", 2)
    assert g.attempts is not None and g.attempts[0]["status"] == "rejected"
    assert g.attempts[0]["raw_status"] == "9" and g.attempts[0]["account"] == "intis-sandbox"

    bad_status = client.status(bad, recipients=True)
    b = rows(bad_status)[FINE]
    assert (b.status, b.account, b.attempt, b.code) == ("rejected", "smsc-sandbox", 2, "6")
    assert bad_status is not None and bad_status.counts == {"rejected": 1}
    finals = [
        e for e in events(redis_client, bad) if e["type"] == "status" and e["status"] in FINAL
    ]
    assert len(finals) == 1 and finals[0]["attempt"] == "2"

    s = rows(client.status(stop, recipients=True))["79161234570"]
    assert (s.status, s.code, s.attempt) == ("rejected", "13", None)  # stop list: the number's
    assert sent_to(sandboxes, "smsc").count(FINE) == 2  # good and bad, once each
    assert sent_to(sandboxes, "intis").count(FINE) == 2  # both refused there first


def test_an_otp_older_than_its_max_age_gets_no_second_chance(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    sandboxes_for_resend: Callable[..., SandboxThread],
) -> None:
    sandboxes = sandboxes_for_resend()
    route = {"accounts": ["smsc-sandbox", "intis-sandbox"], "resend_on": ["undeliverable"]}
    settings = settings_for(redis_url, sandboxes, route, otp_max_age=1)
    worker = make_worker(settings)
    polls = Polls(settings, redis_client, worker)
    client = SmsqClient(redis_url)
    job = client.enqueue_send(
        provider="second",
        sender="smstest",
        text="Code 4711",
        recipients=["+" + NO_ROUTE],
        priority="otp",
    )
    worker.join()
    polls.run(wait=1.5)  # the report arrives after the code's max age
    status = client.status(job, recipients=True)
    r = rows(status)[NO_ROUTE]
    assert (r.status, r.attempt, r.raw_error) == ("undeliverable", None, "248")
    assert sent_to(sandboxes, "intis") == []
    assert not [e for e in events(redis_client, job) if e["type"] == "resend"]
    record = json.loads(redis_client.hget(f"smsq:job:{job}:rcpt", NO_ROUTE) or b"{}")
    assert "attempts" not in record


def test_no_second_chance_past_the_messages_validity(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    sandboxes_for_resend: Callable[..., SandboxThread],
) -> None:
    sandboxes = sandboxes_for_resend()
    route = {"accounts": ["smsc-sandbox", "intis-sandbox"], "resend_on": ["undeliverable"]}
    settings = settings_for(redis_url, sandboxes, route)
    worker = make_worker(settings)
    polls = Polls(settings, redis_client, worker)
    client = SmsqClient(redis_url)
    # 60 s of validity: less than the minute a second send needs is left once it fails.
    job = client.enqueue_send(
        provider="second", sender="smstest", text="hi", recipients=["+" + NO_ROUTE], validity=60
    )
    worker.join()
    polls.run()
    r = rows(client.status(job, recipients=True))[NO_ROUTE]
    assert (r.status, r.attempt, r.raw_error) == ("undeliverable", None, "248")
    assert sent_to(sandboxes, "intis") == []


def test_an_otp_on_a_cost_route_is_resent_once_and_redelivered_messages_change_nothing(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    # A MegaFon number (cheaper at SMSC) whose SMSC send ends "no route" (provider side):
    # the cost route picks SMSC, the second chance goes through Intis. Then both dispatch
    # messages are delivered again: nothing is sent, counted or evented twice.
    from producers.wire import NAMESPACE, build_message, write_message
    from tests.support.prices import intis_prices, smsc_prices
    from worker.core.messages import decode, message_args
    from worker.core.queues import RESEND_INDEX_BASE, SEND_ACTOR, dispatch_queue

    number = "79261234567"
    sandboxes = run_sandboxes(
        ["smsc", "intis"],
        mix=OutcomeMix(delivered=1.0, undeliverable=0.0, expired=0.0, final_after=0.2, seed=3),
        smsc={
            "caps": False,
            "delivery_errors": {number: 248},
            "operator_prices": smsc_prices(),
            "price": "1.50",
        },
        intis={"prices": intis_prices(), "charge_by_operator": True},
    )
    route = {
        "accounts": ["intis-sandbox", "smsc-sandbox"],
        "strategy": "cost",
        "resend_on": ["undeliverable"],
    }
    settings = settings_for(redis_url, sandboxes, route)
    worker = make_worker(settings)
    polls = Polls(settings, redis_client, worker)
    redis_client.set(f"smsq:op:{number}", "25002")
    redis_client.hset("smsq:prices:smsc-sandbox", mapping={"op:25002": "0.60"})
    redis_client.hset("smsq:prices:intis-sandbox", mapping={"op:25002": "1.20"})
    client = SmsqClient(redis_url)
    job = client.enqueue_send(
        provider="second",
        sender="smstest",
        text="Code 4711",
        recipients=["+" + number],
        priority="otp",
    )
    worker.join()
    polls.run()  # SMSC's report: no route; resent through Intis
    polls.run()  # Intis's report
    status = client.status(job, recipients=True)
    assert status is not None and status.counts == {"delivered": 1}
    row = rows(status)[number]
    assert (row.route_account, row.account, row.attempt) == ("smsc-sandbox", "intis-sandbox", 2)
    assert row.attempts is not None and row.attempts[0]["account"] == "smsc-sandbox"
    assert sent_to(sandboxes, "smsc") == [number] and sent_to(sandboxes, "intis") == [number]
    before = (
        [e for e in events(redis_client, job) if e["type"] != "resend"],
        redis_client.hgetall(f"smsq:job:{job}:counts"),
        redis_client.hgetall(f"smsq:job:{job}:cost"),
    )
    assert [e["status"] for e in before[0] if e["status"] in FINAL] == ["delivered"]

    # The same two dispatch messages delivered again.
    created = float(redis_client.hget(f"smsq:job:{job}", "created_at") or 0)
    pipe = redis_client.pipeline(transaction=True)
    for index, chunk_route in (
        (0, ["smsc-sandbox", "intis-sandbox"]),
        (RESEND_INDEX_BASE + 1, ["intis-sandbox"]),
    ):
        args = [job, index, chunk_route, "smstest", "Code 4711", [number], None, None]
        args += ["otp", 1, created]
        message = decode(SEND_ACTOR, args)
        target, rid, body = build_message(dispatch_queue("otp"), SEND_ACTOR, message_args(message))
        write_message(pipe, target, rid, body, NAMESPACE)
    pipe.execute()
    worker.join()
    polls.run()
    assert sent_to(sandboxes, "smsc") == [number] and sent_to(sandboxes, "intis") == [number]
    after = (
        [e for e in events(redis_client, job) if e["type"] != "resend"],
        redis_client.hgetall(f"smsq:job:{job}:counts"),
        redis_client.hgetall(f"smsq:job:{job}:cost"),
    )
    assert after == before


def test_a_second_chance_skips_a_paused_next_account(
    redis_url: str, redis_client: redis.Redis, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(
        ["smsc", "intis", "intellisoftware"],
        mix=OutcomeMix(delivered=1.0, undeliverable=0.0, expired=0.0, final_after=0.2, seed=3),
        smsc={"caps": False, "delivery_errors": {NO_ROUTE: 248}},
    )
    route = {
        "accounts": ["smsc-sandbox", "intis-sandbox", "intellisoftware-sandbox"],
        "resend_on": ["undeliverable"],
    }
    settings = settings_for(redis_url, sandboxes, route)
    worker = make_worker(settings)
    polls = Polls(settings, redis_client, worker)
    client = SmsqClient(redis_url)
    job = client.enqueue_send(
        provider="second", sender="smstest", text="hi", recipients=["+" + NO_ROUTE]
    )
    worker.join()
    redis_client.hset(
        "smsq:account:intis-sandbox",
        mapping={"state": "paused", "reason": "test", "probe_at": time.time() + 3600},
    )
    polls.run()  # SMSC's report: no route; the next account (Intis) is paused
    polls.run()
    status = client.status(job, recipients=True)
    assert status is not None
    row = rows(status)[NO_ROUTE]
    assert (row.account, row.attempt) == ("intellisoftware-sandbox", 2), status.counts
    assert row.status in ("submitted", "delivered")
    assert sent_to(sandboxes, "intis") == []


def test_a_second_chance_drained_after_the_messages_validity_is_not_sent(
    redis_url: str,
    redis_client: redis.Redis,
    make_worker: Any,
    sandboxes_for_resend: Callable[..., SandboxThread],
) -> None:
    # The drainer that took the second chance died holding its claim; by the time the
    # entry is drained again the message's validity has ended: it must not go out then.
    sandboxes = sandboxes_for_resend()
    route = {"accounts": ["smsc-sandbox", "intis-sandbox"], "resend_on": ["undeliverable"]}
    settings = settings_for(redis_url, sandboxes, route)
    worker = make_worker(settings)
    polls = Polls(settings, redis_client, worker)
    client = SmsqClient(redis_url)
    job = client.enqueue_send(
        provider="second", sender="smstest", text="hi", recipients=["+" + NO_ROUTE]
    )
    worker.join()
    claim = f"smsq:resend:claim:{job}|{NO_ROUTE}|2"
    redis_client.set(claim, "1", ex=3600)  # held by a drainer that died
    polls.run()  # SMSC's report: no route; the second chance is queued, not drained
    assert redis_client.zcard("smsq:resend") == 1
    assert rows(client.status(job, recipients=True))[NO_ROUTE].status == "queued"
    redis_client.hset(f"smsq:job:{job}", "expires_at", f"{time.time() - 5:.3f}")
    redis_client.delete(claim)  # the claim ran out
    polls.run()  # reconciliation drains it now
    polls.run()
    assert sent_to(sandboxes, "intis") == []  # nothing sent past the validity
    status = client.status(job, recipients=True)
    assert status is not None and status.counts == {"failed": 1}
    row = rows(status)[NO_ROUTE]
    assert row.attempt == 2 and row.reason is not None and "validity" in row.reason
    finals = [e for e in events(redis_client, job) if e["type"] == "status"]
    assert [e["status"] for e in finals if e["status"] in FINAL] == ["failed"]
    assert redis_client.zcard("smsq:resend") == 0
