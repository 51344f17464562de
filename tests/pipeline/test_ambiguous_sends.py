"""Ambiguous sends: the per-account policy ``ambiguous_sends`` for providers that cannot look a
send up by smsq's id (Intis, IntelliSoftware), through the real worker and the sandboxes with
fault injection.

- ``unknown`` (the default): a send whose request timed out is ``unknown``, never resent.
- ``retry_unanswered``: a timeout before any byte of the answer arrived is taken as "not sent"
  and retried; a partial answer (some bytes arrived) stays ``unknown``. The risk, shown here
  too: a provider that took the request and then never answered gets it twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, SandboxThread, accepted_phones, sandbox_settings
from worker.core.config import ConfigError, Settings, parse_settings
from worker.devtools.sandboxes import sandbox_account
from worker.providers.base import (
    AccountConfig,
    ErrorClass,
    HttpClient,
    ProbingConnector,
    ProviderError,
)
from worker.providers.sandbox_kit import Fault

SEND_ENDPOINT = {"intis": "send.php", "intellisoftware": "sendmsg.aspx"}
CHUNK = {"intis": 50, "intellisoftware": 100}


def _numbers(n: int) -> list[str]:
    return [f"+4479111{i:05d}" for i in range(n)]


def _settings(redis_url: str, sandboxes: SandboxThread, kind: str, policy: str) -> Settings:
    settings = sandbox_settings(redis_url, sandboxes, max_attempts=10, max_retry_seconds=60)
    name = f"{kind}-sandbox"
    account = replace(settings.accounts[name], timeout=1.0, ambiguous_sends=policy)
    return replace(settings, accounts={**settings.accounts, name: account})


async def _faults(sandboxes: SandboxThread, kind: str, fault: dict[str, float]) -> None:
    sandboxes.running[kind].state.faults = {SEND_ENDPOINT[kind]: Fault.from_mapping(fault)}


Outcome = tuple[dict[str, int], Counter[str], Counter[str | None]]


@pytest.fixture
def send_with_fault(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> Callable[[str, str, dict[str, float], int], Outcome]:
    """``send_with_fault(kind, policy, fault, n)``: send ``n`` recipients through ``kind``
    with ``fault`` on its send endpoint; returns the job's counts, how often the sandbox
    accepted each number, and the faults it injected. Its sandbox is stopped once done."""

    def run(kind: str, policy: str, fault: dict[str, float], n: int) -> Outcome:
        sandboxes = run_sandboxes([kind], **{kind: {"balance": "100000000"}})
        sandboxes.call(_faults(sandboxes, kind, fault))
        worker = make_worker(_settings(redis_url, sandboxes, kind, policy))
        with SmsqClient(redis_url) as client:
            sender = sandbox_account(kind).get("sender", "smsq")
            job_id = client.enqueue_send(
                provider=kind, sender=sender, text="ambiguous?", recipients=_numbers(n)
            )
            worker.join(timeout=120)
            status = client.status(job_id)
        assert status is not None and status.state == "done"
        log = sandboxes.log(kind)
        faults = Counter(e.fault for e in log if e.path.endswith(SEND_ENDPOINT[kind]))
        accepted = Counter(accepted_phones(sandboxes, kind))
        # Stopped here, so a later run's messages (a job's chunks may share one message)
        # are not taken by this run's worker, configured with this run's sandbox and policy.
        worker.stop()
        sandboxes.stop()
        return dict(status.counts), accepted, faults

    return run


@pytest.mark.parametrize("kind", ["intis", "intellisoftware"])
def test_unanswered_timeouts_stay_unknown_by_default(
    kind: str, send_with_fault: Callable[..., Outcome]
) -> None:
    n = CHUNK[kind] * 6
    counts, accepted, faults = send_with_fault(kind, "unknown", {"timeout_rate": 0.5}, n)
    assert faults["timeout"] >= 1
    assert counts.get("unknown", 0) == CHUNK[kind] * faults["timeout"]
    assert counts.get("submitted", 0) + counts.get("unknown", 0) == n
    assert max(accepted.values()) == 1  # nothing sent twice
    print(f"\n{kind} ambiguous_sends=unknown, 50% unanswered timeouts: {counts}")


@pytest.mark.parametrize("kind", ["intis", "intellisoftware"])
def test_retry_unanswered_resends_what_got_no_byte_of_answer(
    kind: str, send_with_fault: Callable[..., Outcome]
) -> None:
    n = CHUNK[kind] * 6
    counts, accepted, faults = send_with_fault(kind, "retry_unanswered", {"timeout_rate": 0.5}, n)
    assert faults["timeout"] >= 1  # some requests timed out with no answer at all ...
    assert counts == {"submitted": n}  # ... were retried, and every recipient was sent
    assert len(accepted) == n and max(accepted.values()) == 1  # exactly once each
    print(
        f"\n{kind} ambiguous_sends=retry_unanswered, 50% unanswered timeouts:"
        f" {counts}, {faults['timeout']} timed-out requests retried"
    )


@pytest.mark.parametrize("kind", ["intis", "intellisoftware"])
def test_partial_answers_stay_unknown_under_retry_unanswered(
    kind: str, send_with_fault: Callable[..., Outcome]
) -> None:
    n = CHUNK[kind] * 6
    counts, accepted, faults = send_with_fault(kind, "retry_unanswered", {"partial_rate": 0.5}, n)
    assert faults["partial"] >= 1
    # The provider took those requests and its answer broke off: unknown, never resent.
    assert counts.get("unknown", 0) == CHUNK[kind] * faults["partial"]
    assert len(accepted) == n and max(accepted.values()) == 1
    print(f"\n{kind} ambiguous_sends=retry_unanswered, 50% partial answers: {counts}")


def test_the_documented_risk_a_send_taken_but_never_answered_goes_twice(
    send_with_fault: Callable[..., Outcome],
) -> None:
    """``hang_after``: the sandbox accepts the send and then never answers. Under
    ``retry_unanswered`` that send is repeated (a duplicate); under ``unknown`` it is not."""
    n = CHUNK["intis"] * 4
    fault = {"hang_after_rate": 0.5}
    _, accepted_unknown, faults = send_with_fault("intis", "unknown", fault, n)
    assert faults["hang_after"] >= 1 and max(accepted_unknown.values()) == 1
    _, accepted_retry, faults = send_with_fault("intis", "retry_unanswered", fault, n)
    twice = [p for p, c in accepted_retry.items() if c > 1]
    assert faults["hang_after"] >= 1 and twice  # the duplicate the policy risks
    print(
        f"\nrisk: provider took the send and never answered; retry_unanswered sent"
        f" {len(twice)} of {n} numbers twice (unknown: none)"
    )


# --------------------------------------------------------------------------- the HTTP layer


async def test_http_layer_tells_no_byte_from_a_partial_answer() -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def partial(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x" * 10)
        await asyncio.sleep(3600)
        return response

    app = web.Application()
    app.router.add_post("/hang", hang)
    app.router.add_post("/partial", partial)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        results: dict[tuple[str, str, bool], ErrorClass] = {}
        for probing in (True, False):
            connector = ProbingConnector() if probing else aiohttp.TCPConnector()
            async with aiohttp.ClientSession(connector=connector) as session:
                for policy in ("unknown", "retry_unanswered"):
                    account = AccountConfig(
                        name="a", kind="intis", base_url=base, timeout=0.3, ambiguous_sends=policy
                    )
                    http = HttpClient(account, session)
                    for path in ("hang", "partial"):
                        with pytest.raises(ProviderError) as err:
                            await http.request(
                                "POST", f"{base}/{path}", endpoint="send", idempotent=False
                            )
                        results[(policy, path, probing)] = err.value.error_class
    finally:
        await runner.cleanup()
    T, A = ErrorClass.TRANSIENT, ErrorClass.AMBIGUOUS
    assert results == {
        ("unknown", "hang", True): A,
        ("unknown", "partial", True): A,
        ("retry_unanswered", "hang", True): T,  # no byte arrived: not sent, retried
        ("retry_unanswered", "partial", True): A,  # some bytes arrived: the provider took it
        # Without the probing connector nobody can tell: kept ambiguous.
        ("unknown", "hang", False): A,
        ("unknown", "partial", False): A,
        ("retry_unanswered", "hang", False): A,
        ("retry_unanswered", "partial", False): A,
    }


def test_config_validates_the_policy() -> None:
    def config(kind: str, policy: Any) -> dict[str, Any]:
        return {
            "accounts": {
                "a": {"kind": kind, "base_url": "http://127.0.0.1:9", "ambiguous_sends": policy}
            }
        }

    assert parse_settings(config("intis", "retry_unanswered"), {}).accounts[
        "a"
    ].ambiguous_sends == ("retry_unanswered")
    assert (
        parse_settings(config("intellisoftware", "unknown"), {}).accounts["a"].ambiguous_sends
        == "unknown"
    )
    default = {"accounts": {"a": {"kind": "intis", "base_url": "http://127.0.0.1:9"}}}
    assert parse_settings(default, {}).accounts["a"].ambiguous_sends == "unknown"
    with pytest.raises(ConfigError) as err:
        parse_settings(config("intis", "retry"), {})
    assert "accounts.a.ambiguous_sends" in err.value.problems[0]
    with pytest.raises(ConfigError) as err:
        parse_settings(config("smsc", "retry_unanswered"), {})
    assert "smsc" in err.value.problems[0] and "ambiguous_sends" in err.value.problems[0]
