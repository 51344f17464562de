"""``accounts.<name>.options`` of an Intis account, typed and validated by the config loader."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.providers.base import ProviderOptions


@dataclass(frozen=True)
class IntisOptions(ProviderOptions):
    # The account's zone (IANA name): sendingTime is written in it and the gateway's times
    # (status times, incoming dates) are read in it.
    timezone: str = "UTC"

    def problems(self) -> list[str]:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return [f"timezone: not a time zone name, got {self.timezone!r}"]
        return []
