"""Provider pushes: the actor that applies a stored push (see worker/web.py for receipt)."""

from __future__ import annotations

from typing import Any

from worker.runtime import Runtime


def register_actors(broker: Any, runtime: Runtime) -> dict[str, Any]:
    """Declare this module's actors on ``broker``; returns them by name."""
    return {}
