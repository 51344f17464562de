"""SMSC (smsc.ru / smscentre.com): adapter, code tables, callback parsing, sandbox.

The registry (:mod:`worker.providers`) finds ``Adapter`` and ``create_sandbox`` here.
"""

from __future__ import annotations

from worker.providers.smsc.adapter import SmscAdapter
from worker.providers.smsc.sandbox import DEFAULT_LOGIN, DEFAULT_PASSWORD, create_sandbox

Adapter = SmscAdapter

# What the sandbox accepts by default (for configs that point at it).
SANDBOX_ACCOUNT = {"login": DEFAULT_LOGIN, "password": DEFAULT_PASSWORD, "sender": "SMSC.ru"}

__all__ = ["SANDBOX_ACCOUNT", "Adapter", "SmscAdapter", "create_sandbox"]
