"""Backup-host failover for adapters whose provider has backup hosts (SMSC, IntelliSoftware).

A call goes to the first host of the order and, when the attempt fails in a way the
provider's rule allows, to the next, and so on. Each further host is a further request:
before it the core's :data:`~worker.providers.base.NEXT_REQUEST` hook takes a rate permit
for it and renews the in-flight lease. Any other failure (an error answer, a
send that may have been acted on) is raised at once and never sent to another host.

What differs per provider is a parameter of :class:`HostFailover`:

- ``may_fail_over(error, idempotent)``: which failures allow trying the next host;
- ``failback_after``: ``None``, every call starts at the primary; a number of seconds, a
  backup that answered stays first for that long, then the primary is first again;
- ``exhausted(failures, hosts)``: what is raised when every host failed: the last
  failure as it is (:func:`raise_last`) or one error for all (:func:`raise_all_failed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn
from urllib.parse import urlsplit

from worker.providers.base import NEXT_REQUEST, ErrorClass, HttpResponse, ProviderError

__all__ = ["HostFailover", "raise_all_failed", "raise_last"]

log = logging.getLogger(__name__)

FailoverRule = Callable[[ProviderError, bool], bool]  # (error, idempotent) -> next host?
Exhausted = Callable[[Sequence[ProviderError], int], NoReturn]  # (failures, hosts tried)


def raise_last(failures: Sequence[ProviderError], hosts: int) -> NoReturn:
    """Every host failed: raise the last host's failure as it is."""
    raise failures[-1]


def raise_all_failed(failures: Sequence[ProviderError], hosts: int) -> NoReturn:
    """Every host failed: AMBIGUOUS if any attempt may have been acted on, else TRANSIENT."""
    acted = any(f.error_class is ErrorClass.AMBIGUOUS for f in failures)
    last = failures[-1]
    raise ProviderError(
        ErrorClass.AMBIGUOUS if acted else ErrorClass.TRANSIENT,
        f"all {hosts} gateway(s) failed; last: {last.reason}",
        raw_code=last.raw_code,
    ) from last


class HostFailover:
    """The hosts of one account, the order to try them in, and the rule to move on."""

    def __init__(
        self,
        kind: str,
        hosts: Sequence[str],
        *,
        may_fail_over: FailoverRule,
        failback_after: float | None = None,
        exhausted: Exhausted = raise_last,
    ) -> None:
        self.kind = kind  # for the log
        self.hosts = tuple(hosts)
        self._may_fail_over = may_fail_over
        self._failback_after = failback_after
        self._exhausted = exhausted
        self._preferred = 0  # index of the host tried first
        self._preferred_since = 0.0

    def order(self) -> list[int]:
        """Indexes of the hosts in the order the next call tries them."""
        if (
            self._preferred
            and self._failback_after is not None
            and time.monotonic() - self._preferred_since > self._failback_after
        ):
            self._preferred = 0
        order = list(range(len(self.hosts)))
        if self._preferred:
            order.remove(self._preferred)
            order.insert(0, self._preferred)
        return order

    async def call(
        self,
        attempt: Callable[[str], Awaitable[HttpResponse]],
        *,
        endpoint: str,
        idempotent: bool,
    ) -> HttpResponse:
        """``attempt(host)`` on each host in turn until one answers (see the module doc)."""
        order = self.order()
        if not order:
            raise ProviderError(ErrorClass.REQUEST, "no gateway URL configured")
        failures: list[ProviderError] = []
        for n, index in enumerate(order):
            if n:
                # Another request: the core's permit and in-flight lease for it.
                next_request = NEXT_REQUEST.get()
                if next_request is not None:
                    await next_request()
            try:
                response = await attempt(self.hosts[index])
            except ProviderError as exc:
                if not self._may_fail_over(exc, idempotent):
                    raise
                failures.append(exc)
                if n + 1 < len(order):
                    log.warning(
                        "%s %s: host %d of %d (%s) failed (%s: %s); trying the next",
                        self.kind,
                        endpoint,
                        n + 1,
                        len(order),
                        urlsplit(self.hosts[index]).hostname,
                        exc.error_class.value,
                        exc.reason,
                    )
                continue
            if self._failback_after is not None and index != self._preferred:
                self._preferred = index
                self._preferred_since = time.monotonic()
            return response
        self._exhausted(failures, len(order))
