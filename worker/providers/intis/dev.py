"""intis: the development sandbox's account and push options (worker/devtools).

Never imported on the production path: :meth:`ProviderSpec.sandbox` imports it on demand.
"""

from __future__ import annotations

from worker.providers.intis.sandbox import DEFAULT_API_KEY, create_sandbox

__all__ = ["SANDBOX_ACCOUNT", "create_sandbox", "sandbox_push_options"]

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": "testuser", "api_key": DEFAULT_API_KEY, "sender": "smstest"}


def sandbox_push_options(hook_url: str, secret: str) -> dict[str, str]:
    """Sandbox options that send its delivery reports to ``hook_url`` with ``?key=secret``."""
    return {"callback_url": f"{hook_url}?key={secret}", "callback_retry_interval": "2"}
