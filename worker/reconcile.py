"""Reconciliation: poll providers for the status of messages awaiting a final one."""

from __future__ import annotations

from typing import Any

from worker.runtime import Runtime


def register_actors(broker: Any, runtime: Runtime) -> dict[str, Any]:
    """Declare this module's actors on ``broker``; returns them by name."""
    return {}
