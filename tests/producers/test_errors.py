"""One error hierarchy: every exception class smsq defines derives from SmsqError, and the
tree in docs/design.md names each of them."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import producers
import worker
from producers.errors import DispatchInterrupted, InputError, PushError, SmsqError

ROOT = Path(__file__).resolve().parents[2]


def smsq_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in producers/ and worker/ (sandboxes excepted: they
    play the providers, and their refusals are the providers' answers, not smsq's errors)."""
    found: dict[str, type[BaseException]] = {}
    for package in (producers, worker):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[-1] in ("sandbox", "sandbox_kit", "sandboxes"):
                continue
            if info.name == "worker.entry.app":  # the Dramatiq entry point: configures at import
                continue
            module = importlib.import_module(info.name)
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == info.name:
                    found[f"{info.name}.{name}"] = cls
    return found


def test_every_smsq_exception_derives_from_smsq_error() -> None:
    outside = sorted(
        name for name, cls in smsq_exceptions().items() if not issubclass(cls, SmsqError)
    )
    assert outside == [], "re-parent these under producers.errors.SmsqError (a branch of it)"


def test_the_design_doc_shows_the_tree() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    tree = design[design.index("SmsqError") :]
    missing = sorted(name for name, cls in smsq_exceptions().items() if cls.__name__ not in tree)
    assert missing == []


def test_branches() -> None:
    from producers.contract import JobRejected
    from worker.core.config import ConfigError
    from worker.pipeline.dispatch import LostClaim, Reschedule
    from worker.providers.base import ErrorClass, ProviderError, PushRejected

    assert issubclass(JobRejected, InputError) and issubclass(JobRejected, ValueError)
    assert issubclass(ConfigError, SmsqError) and issubclass(ConfigError, ValueError)
    assert issubclass(PushRejected, PushError)
    assert issubclass(Reschedule, DispatchInterrupted) and issubclass(
        LostClaim, DispatchInterrupted
    )
    try:
        raise ProviderError(ErrorClass.TRANSIENT, "HTTP 503")
    except SmsqError as exc:  # one base catches any of them
        assert "HTTP 503" in str(exc)
