"""The same 10,000-recipient job through each provider's sandbox: every recipient exactly once."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from producers.client import SmsqClient
from tests.support.sandboxes import SandboxFactory, accepted_phones, sandbox_settings
from worker.devtools.sandboxes import sandbox_account
from worker.providers import known_kinds


@pytest.mark.parametrize("kind", known_kinds())
def test_ten_thousand_recipients_through_each_provider(
    kind: str, redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes([kind], **{kind: {"balance": "100000000"}})
    worker = make_worker(sandbox_settings(redis_url, sandboxes))
    client = SmsqClient(redis_url)
    numbers = [f"+44770{i:07d}" for i in range(10_000)]
    sender = sandbox_account(kind).get("sender", "smsq")
    started = time.monotonic()
    job_id = client.enqueue_send(
        provider=kind, sender=sender, text="Bulk hello", recipients=numbers
    )
    worker.join(timeout=180)
    elapsed = time.monotonic() - started
    status = client.status(job_id, recipients=True)
    assert status is not None and status.state == "done"
    assert status.counts == {"submitted": 10_000}
    assert len({r.provider_message_id for r in status.recipients}) == 10_000
    assert Counter(accepted_phones(sandboxes, kind)) == Counter(n[1:] for n in numbers)
    requests = len([e for e in sandboxes.log(kind) if e.status == 200])
    print(
        f"\n{kind}: 10,000 recipients in {elapsed:.2f}s ({10_000 / elapsed:.0f}/s), {requests} requests"
    )
