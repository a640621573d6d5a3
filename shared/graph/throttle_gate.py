"""Graph said "retry after N s": until then this process sends the calls API nothing more.

Graph throttles the calls API per application per tenant, and one client (one credential, one
tenant) serves every invocation of a worker process. Without a shared gate each request learns of
the throttling on its own, from its own 429: a burst of steps (answers, recordResponses, hang-ups)
each spends a request to hear what the first one was already told, and the requests Graph counts
grow with the backlog instead of with the work. With the gate, the first 429 closes it until its
``Retry-After``; the others wait (or, when the gate opens past their budget, fail without
sending), then go through spread over a moment, so the first to be refused closes the gate again
before the rest have sent.

Per process and in memory on purpose: it only ever holds requests back, it never decides what
the bot does for a call (the ledger does that), so an instance that does not know it merely sends
what it would have sent anyway.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

# Waiters return spread over up to this long after the gate opens (capped by the Retry-After
# itself), so a refusal among the first of them closes the gate before the rest send.
SPREAD_SECONDS = 1.0


class ThrottleGate:
    """The time until which Graph asked this app (in this tenant) to send nothing."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        spread_seconds: float = SPREAD_SECONDS,
    ) -> None:
        self._monotonic = monotonic
        self._jitter = jitter
        self._spread_seconds = spread_seconds
        self._closed_until = 0.0
        self._spread = 0.0

    def close(self, retry_after: float) -> None:
        """Graph answered 429 asking for ``retry_after`` seconds: hold every request until then."""
        until = self._monotonic() + max(retry_after, 0.0)
        if until > self._closed_until:
            self._closed_until = until
            self._spread = min(self._spread_seconds, max(retry_after, 0.0))

    def throttled_for(self) -> float:
        """Seconds until Graph accepts requests again by its own word; 0 when it may now."""
        return max(0.0, self._closed_until - self._monotonic())

    def wait_before_sending(self, deadline: float) -> float | None:
        """Seconds to wait before sending (0: now), or None when that ends past ``deadline``."""
        closed_for = self.throttled_for()
        if closed_for <= 0:
            return 0.0
        wait = closed_for + self._spread * self._jitter()
        if self._monotonic() + wait >= deadline:
            return None
        return wait
