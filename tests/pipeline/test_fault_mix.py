"""Under a provider fault mix nothing is lost and nothing is sent twice."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from producers.client import SmsqClient
from producers.status import FINAL_STATUSES
from tests.support.sandboxes import SandboxFactory, accepted_phones, sandbox_settings, set_faults
from worker.tracking.scheduler import Scheduler


def test_five_xx_and_timeouts_lose_nothing_and_double_nothing(
    redis_url: str, make_worker: Any, run_sandboxes: SandboxFactory
) -> None:
    sandboxes = run_sandboxes(["intis"], intis={"balance": "100000000"})
    faults = {"send.php": {"error_rate": 0.20, "timeout_rate": 0.05}}
    sandboxes.call(set_faults(sandboxes, "intis", faults))
    quick = {"first_check": 0.5, "max_check_interval": 1.0, "reconcile_interval": 0.25}
    quick |= {"tick_seconds": 0.05, "lease_seconds": 1.0}
    settings = sandbox_settings(redis_url, sandboxes, scheduler=quick, max_attempts=8)
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
    dispatched = dict(status.counts)

    # Reconciliation then settles every submitted message: final, or unknown where the
    # provider has no way to say (Intis gives no id for a request that timed out).
    scheduler = Scheduler(settings).start()
    try:
        deadline = time.monotonic() + 60
        while True:
            status = client.status(job_id)
            assert status is not None
            if not {"queued", "submitted"} & set(status.counts):
                break
            assert time.monotonic() < deadline, status.counts
            time.sleep(0.2)
    finally:
        scheduler.stop()
    finals = {s.value for s in FINAL_STATUSES}
    assert set(status.counts) <= finals | {"unknown"}, status.counts
    assert sum(status.counts.values()) == 10_000
    assert status.counts.get("unknown", 0) == dispatched.get("unknown", 0)
    faults = dict(Counter(e.fault for e in log if e.fault))
    print(
        f"\nfault mix: dispatched {dispatched}; reconciled {dict(status.counts)}; faults {faults}"
    )
