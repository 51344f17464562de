"""``accounts.<name>.options`` of an SMSC account, typed and validated by the config loader."""

from __future__ import annotations

from dataclasses import dataclass

from worker.providers.base import ProviderOptions

# Signature algorithms SMSC signs callbacks with (the handler URL's ?md5|sha1|crc32=).
SIGNATURE_PARAMS = ("md5", "sha1", "crc32")


@dataclass(frozen=True)
class SmscOptions(ProviderOptions):
    always_post: bool = False  # every call as a POST form (keeps psw out of proxies' URL logs)
    translit: int | None = None  # send.php ``translit`` (0, 1 or 2)
    flash: bool = False  # flash SMS
    currency: str = "RUB"  # the account's currency (its price list has none)
    callback_algorithm: str = "md5"  # the one signature algorithm callbacks must carry

    def problems(self) -> list[str]:
        out = []
        if self.translit is not None and self.translit not in (0, 1, 2):
            out.append(f"translit: must be 0, 1 or 2, got {self.translit!r}")
        if self.callback_algorithm.strip().lower() not in SIGNATURE_PARAMS:
            out.append(
                f"callback_algorithm: must be one of {', '.join(SIGNATURE_PARAMS)}, "
                f"got {self.callback_algorithm!r}"
            )
        return out
