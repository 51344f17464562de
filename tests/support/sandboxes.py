"""Provider sandboxes for synchronous tests: served from an event loop in a background thread,
settings with one account per running sandbox, what each sandbox accepted, and fault injection.

Tests get them from the ``sandboxes`` / ``start_sandboxes`` fixtures (tests/conftest.py),
which stop what they started."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Protocol

from worker.core.config import Settings, parse_settings
from worker.devtools.sandboxes import sandbox_account, start_sandboxes
from worker.providers.sandbox_kit import LoggedRequest, OutcomeMix, RunningSandbox


class SandboxThread:
    """Sandboxes served from an event loop in a background thread (for sync tests)."""

    def __init__(
        self, kinds: list[str] | None = None, *, mix: OutcomeMix | None = None, **options: Any
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: dict[str, RunningSandbox] = self.call(
            start_sandboxes(kinds, mix=mix or OutcomeMix(final_after=0.5, seed=7), options=options)
        )

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def url(self, kind: str) -> str:
        return self.running[kind].url

    def log(self, kind: str) -> list[LoggedRequest]:
        async def copy() -> list[LoggedRequest]:
            return list(self.running[kind].state.log.entries)

        result: list[LoggedRequest] = self.call(copy())
        return result

    def stop(self) -> None:
        """Stop the sandboxes and their loop (once; a second call does nothing)."""
        if self.loop.is_closed():
            return
        for sandbox in self.running.values():
            self.call(sandbox.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class SandboxFactory(Protocol):
    """The ``start_sandboxes`` fixture: starts sandboxes as ``SandboxThread`` does, and stops
    them when the test ends."""

    def __call__(
        self, kinds: list[str] | None = None, *, mix: OutcomeMix | None = None, **options: Any
    ) -> SandboxThread: ...


def sandbox_settings(
    redis_url: str,
    sandboxes: SandboxThread,
    *,
    scheduler: dict[str, float] | None = None,
    routes: dict[str, Any] | None = None,
    accounts_extra: dict[str, dict[str, Any]] | None = None,
    **dispatch: Any,
) -> Settings:
    """Settings with one account per running sandbox, named '<kind>-sandbox'.

    ``routes``: the [routes] table; ``accounts_extra``: more settings per account name."""
    accounts: dict[str, Any] = {}
    env: dict[str, str] = {}
    for kind in sandboxes.running:
        creds = sandbox_account(kind)
        table: dict[str, Any] = {"kind": kind, "base_url": sandboxes.url(kind), "timeout": 5.0}
        if creds.get("login"):
            table["login"] = creds["login"]
        for secret in ("password", "api_key"):
            if creds.get(secret):
                var = f"TEST_{kind.upper()}_{secret.upper()}"
                env[var] = creds[secret]
                table[secret] = {"env": var}
        table.update((accounts_extra or {}).get(f"{kind}-sandbox", {}))
        accounts[f"{kind}-sandbox"] = table
    data: dict[str, Any] = {
        "redis": {"url": redis_url},
        "accounts": accounts,
        "dispatch": {"backoff_initial": 0.05, "backoff_max": 0.5, **dispatch},
        "scheduler": scheduler or {},
    }
    if routes:
        data["routes"] = routes
    return parse_settings(data, env)


def sent_numbers(sandboxes: SandboxThread, kind: str = "intis") -> list[str]:
    """Every number the sandbox accepted in a send request (answered 200 with per-phone results)."""
    out: list[str] = []
    for e in sandboxes.log(kind):
        if (
            e.path.endswith("/send.php")
            and e.status == 200
            and e.fault is None
            and "id_sms" in e.body
        ):
            out.extend(e.params["phone"].split(","))
    return out


async def set_faults(
    sandboxes: SandboxThread, kind: str, faults: dict[str, dict[str, float]]
) -> None:
    from worker.providers.sandbox_kit import Fault

    sandboxes.running[kind].state.faults = {k: Fault.from_mapping(v) for k, v in faults.items()}


def accepted_phones(sandboxes: SandboxThread, kind: str) -> list[str]:
    """Every number the sandbox accepted a message for (its own record, whatever the wire format)."""

    async def phones() -> list[str]:
        return [m.phone.lstrip("+") for m in sandboxes.running[kind].state.messages.values()]

    result: list[str] = sandboxes.call(phones())
    return result
