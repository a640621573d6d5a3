"""One backoff policy for every retry loop the app writes itself (Graph, recording downloads).

Full jitter (uniform in ``[0, min(cap, base * 2**(attempt-1))]``) spreads the retries of many
instances hit by the same outage; a server's ``Retry-After`` wins when it is given, capped so a
hostile or mistaken header cannot park a request. ``sleep`` and ``jitter`` are collaborators so
tests run without waiting and with known delays. The storage clients retry inside the Azure SDK
(configured in :mod:`shared.storage`), not here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


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
