"""intellisoftware: the development sandbox's account and push options (worker/devtools).

Never imported on the production path: :meth:`ProviderSpec.sandbox` imports it on demand.
"""

from __future__ import annotations

from worker.providers.intellisoftware.sandbox import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    create_sandbox,
)

__all__ = ["SANDBOX_ACCOUNT", "create_sandbox", "sandbox_push_options"]

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}


def sandbox_push_options(hook_url: str, secret: str) -> dict[str, str]:
    """Sandbox options that forward its status reports to ``hook_url`` with ``?key=secret``."""
    return {"status_report_url": f"{hook_url}?key={secret}", "push_retry_interval": "1"}
