"""SMSC (smsc.ru / smscentre.com): adapter, callback parsing, sandbox."""

from __future__ import annotations

from worker.providers.smsc.adapter import SmscAdapter
from worker.providers.smsc.sandbox import create_sandbox

Adapter = SmscAdapter

__all__ = ["Adapter", "SmscAdapter", "create_sandbox"]
