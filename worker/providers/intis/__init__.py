"""Intis Telecom (go.intistele.com): adapter, signing, error table, callbacks, sandbox.

The registry (:mod:`worker.providers`) finds ``Adapter`` and ``create_sandbox`` here.
"""

from __future__ import annotations

from worker.providers.intis.adapter import IntisAdapter
from worker.providers.intis.sandbox import DEFAULT_API_KEY, create_sandbox

Adapter = IntisAdapter

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": "testuser", "api_key": DEFAULT_API_KEY, "sender": "smstest"}

__all__ = ["SANDBOX_ACCOUNT", "Adapter", "IntisAdapter", "create_sandbox"]
