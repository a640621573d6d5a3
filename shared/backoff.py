"""One backoff policy for every retry loop the app writes itself (Graph, the queue workers).

Full jitter (uniform in ``[0, min(cap, base * 2**(attempt-1))]``) spreads the retries of many
instances hit by the same outage; a server's ``Retry-After`` wins when it is given, capped so a
hostile or mistaken header cannot park a request. ``sleep`` and ``jitter`` are collaborators so
tests run without waiting and with known delays. :meth:`Backoff.retry` is the loop itself, for
callers whose attempts either return or raise a retryable error (the queue workers' inline
retries); the Graph client decides per answer and keeps its own. The storage clients retry
inside the Azure SDK (configured in :mod:`shared.storage`), not here.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.logevents import log_event

if TYPE_CHECKING:
    from shared.clock import Stopwatch

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before each retry of one operation."""

    attempts: int = 3
    base_seconds: float = 0.5
    max_seconds: float = 8.0
    retry_after_cap_seconds: float = 10.0
    # The whole operation, retries included, must end within this.
    budget_seconds: float = 20.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt number ``attempt`` (2 is the first retry)."""
        if retry_after is not None:
            # A little jitter on top, so instances throttled together do not return together.
            return float(min(retry_after, self.retry_after_cap_seconds) + 0.1 * self.jitter())
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(attempt - 2, 0))
        return float(ceiling * self.jitter())

    def fits(self, elapsed_seconds: float, delay: float) -> bool:
        """Whether waiting ``delay`` more still ends within the budget."""
        return elapsed_seconds + delay <= self.budget_seconds

    async def retry(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        retryable: type[E],
        since: Stopwatch,
        log: logging.Logger,
        event: str,
        **fields: Any,
    ) -> T:
        """``attempt(1)``, ``attempt(2)``... until one returns; the last ``retryable`` propagates.

        A failed attempt is logged (``<event> attempt failed``); the next waits :meth:`delay`
        (the error's ``retry_after`` wins) unless that would end past the budget, counted from
        ``since``. Other errors propagate at once.
        """
        last: E | None = None
        for number in range(1, self.attempts + 1):
            if last is not None:
                delay = self.delay(number, getattr(last, "retry_after", None))
                if not self.fits(since.elapsed_seconds, delay):
                    break
                await self.sleep(delay)
            try:
                return await attempt(number)
            except retryable as error:
                last = error
                log_event(
                    log,
                    f"{event} attempt failed",
                    **fields,
                    attempt=number,
                    reason=getattr(error, "reason", str(error)),
                )
        assert last is not None
        raise last
