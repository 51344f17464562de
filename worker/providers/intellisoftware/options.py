"""``accounts.<name>.options`` of an IntelliSoftware account, typed and validated by the
config loader."""

from __future__ import annotations

from dataclasses import dataclass

from worker.providers.base import ProviderOptions
from worker.providers.intellisoftware.codes import DEFAULT_COUNTRY_CODE


@dataclass(frozen=True)
class IntelliSoftwareOptions(ProviderOptions):
    # The country code national numbers in pushes are read with (the gateway's ``toaddr``).
    default_country_code: str = DEFAULT_COUNTRY_CODE

    def problems(self) -> list[str]:
        code = self.default_country_code
        if not (code.isdigit() and 1 <= len(code) <= 3):
            return [f"default_country_code: must be 1 to 3 digits, got {code!r}"]
        return []
