"""Run the providers' sandboxes side by side (``smsq sandbox``, the demo, tests, benchmarks).

Each provider package exposes ``create_sandbox(state, **options)`` and
``SANDBOX_ACCOUNT``: the account settings (login and secrets) its sandbox
accepts by default, so a config pointing at the sandbox can be written
without naming any provider here.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

from worker.providers import known_kinds, provider_spec
from worker.providers.sandbox_kit import Fault, OutcomeMix, RunningSandbox, SandboxState, serve


def wait_until_serving(url: str, timeout: float = 20.0) -> None:
    """Block until ``url`` answers an HTTP GET (a server we just started), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.05)


def sandbox_account(kind: str) -> dict[str, str]:
    """Login, secrets (``password``, ``api_key``) and ``sender`` the kind's sandbox accepts by default."""
    account: Mapping[str, str] = provider_spec(kind).sandbox().account
    return dict(account)


async def start_sandboxes(
    kinds: list[str] | None = None,
    *,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    mix: OutcomeMix | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    faults: Mapping[str, Mapping[str, Fault]] | None = None,
) -> dict[str, RunningSandbox]:
    """Start one sandbox per kind (all known kinds by default) on free or given ports."""
    running: dict[str, RunningSandbox] = {}
    for kind in kinds or known_kinds():
        state = SandboxState(mix=mix or OutcomeMix(), faults=(faults or {}).get(kind))
        app = provider_spec(kind).sandbox().create(state, **dict((options or {}).get(kind, {})))
        running[kind] = await serve(app, host, (ports or {}).get(kind, 0))
    return running


async def run_forever(
    kinds: list[str],
    host: str,
    ports: Mapping[str, int],
    mix: OutcomeMix,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    faults: Mapping[str, Mapping[str, Fault]] | None = None,
) -> None:
    running = await start_sandboxes(
        kinds, host=host, ports=ports, mix=mix, options=options, faults=faults
    )
    for kind, sandbox in running.items():
        print(f"{kind:<16} {sandbox.url}", flush=True)
    freezer = asyncio.create_task(_freeze_history())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    freezer.cancel()
    for sandbox in running.values():
        await sandbox.stop()


async def _freeze_history(period: float = 1.0) -> None:
    """Keep what the sandboxes hold out of the cyclic GC's way.

    A sandbox keeps every message it accepted, and its request log, for as long as it
    runs: in a benchmark, hundreds of thousands of objects that each full collection
    would walk again (a fifth of the server's CPU after 300,000 recipients). Moving
    everything alive to the permanent generation every ``period`` seconds
    (``gc.freeze``) limits collections to what is new. What becomes garbage in a
    reference cycle after being frozen is not reclaimed; a sandbox frees nothing anyway.
    """
    while True:
        await asyncio.sleep(period)
        gc.freeze()
