"""smsc: the development sandbox's account and push options (worker/devtools).

Never imported on the production path: :meth:`ProviderSpec.sandbox` imports it on demand.
"""

from __future__ import annotations

from worker.providers.smsc.sandbox import DEFAULT_LOGIN, DEFAULT_PASSWORD, create_sandbox

__all__ = ["SANDBOX_ACCOUNT", "create_sandbox", "sandbox_push_options"]

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD, "sender": "SMSC.ru"}


def sandbox_push_options(hook_url: str, secret: str) -> dict[str, str]:
    """Sandbox options that send its callbacks to ``hook_url``, signed with ``secret``."""
    return {
        "callback_url": f"{hook_url}?charset=utf-8",
        "callback_secret": secret,
        "callback_retry_interval": "2",
    }
