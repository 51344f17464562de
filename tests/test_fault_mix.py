"""Under a provider fault mix nothing is lost and nothing is sent twice."""

from __future__ import annotations

from collections import Counter
from typing import Any

from producers.client import SmsqClient
from tests.conftest import SandboxThread, sandbox_settings
from tests.test_dispatch import _set_faults
from tests.test_providers_bulk import accepted_phones


def test_five_xx_and_timeouts_lose_nothing_and_double_nothing(
    redis_url: str, make_worker: Any
) -> None:
    sandboxes = SandboxThread(["intis"], intis={"balance": "100000000"})
    try:
        faults = {"send.php": {"error_rate": 0.20, "timeout_rate": 0.05}}
        sandboxes.call(_set_faults(sandboxes, "intis", faults))
        settings = sandbox_settings(redis_url, sandboxes, max_attempts=8)
        settings.accounts["intis-sandbox"].__dict__["timeout"] = 1.0  # test-only: quick timeouts
        worker = make_worker(settings, threads=16)
        client = SmsqClient(redis_url)
        numbers = [f"+7944{i:07d}" for i in range(10_000)]
        job_id = client.enqueue_send(
            provider="intis", sender="smstest", text="chaos", recipients=numbers
        )
        worker.join(timeout=300)

        status = client.status(job_id, recipients=True)
        assert status is not None and status.state == "done"
        assert sum(status.counts.values()) == 10_000
        assert set(status.counts) <= {"submitted", "unknown", "failed"}, status.counts
        assert "queued" not in status.counts
        log = sandboxes.log("intis")
        assert any(e.fault == "error" for e in log) and any(e.fault == "timeout" for e in log)
        accepted = Counter(accepted_phones(sandboxes, "intis"))
        assert accepted and max(accepted.values()) == 1  # no recipient accepted twice
        rows = {r.phone: r for r in status.recipients}
        # Every number the provider accepted is recorded submitted; an unknown one was never retried.
        assert all(rows[p].status == "submitted" for p in accepted)
        unknown = [r for r in status.recipients if r.status == "unknown"]
        assert all("reconciliation" in (r.reason or "") for r in unknown)
        print(
            f"\nfault mix: {dict(status.counts)}; sandbox faults: {Counter(e.fault for e in log if e.fault)}"
        )
    finally:
        sandboxes.stop()
