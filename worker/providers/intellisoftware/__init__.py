"""IntelliSoftware (IntelliSMS, intellisoftware.co.uk): adapter, codes, receivers, sandbox.

The registry (:mod:`worker.providers`) finds ``Adapter`` and ``create_sandbox`` here.
"""

from __future__ import annotations

from worker.providers.intellisoftware.adapter import IntelliSoftwareAdapter
from worker.providers.intellisoftware.sandbox import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    create_sandbox,
)

Adapter = IntelliSoftwareAdapter

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD}

__all__ = ["SANDBOX_ACCOUNT", "Adapter", "IntelliSoftwareAdapter", "create_sandbox"]
