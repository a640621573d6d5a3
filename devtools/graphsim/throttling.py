"""Graph's throttling of the calls API, per app and tenant: 429 with ``Retry-After`` past a rate.

Graph counts the requests of each application in each tenant over a window and answers
``429 TooManyRequests`` with a ``Retry-After`` header once the window's budget is spent ("Cloud
communication service limits": calls, 50,000 requests in a 15-second period, per application per
tenant; https://learn.microsoft.com/graph/throttling-limits, page dated 2025-01-14). The app's
answer to that (backoff within budget, no retry storm, calls settled) can only be measured
against a simulator that throttles the same way at a rate a laptop reaches, so the limit here
is configurable and off by default.

The window slides: a request is admitted when fewer than ``requests`` were admitted in the
last ``window_seconds``; a refused one does not count, and its ``Retry-After`` is the whole
seconds until the oldest admitted request leaves the window (at least 1, as Graph sends
delta-seconds).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottleLimit:
    """At most ``requests`` calls-API requests per ``window_seconds``, per app per tenant."""

    requests: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError("requests must be >= 1")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")

    @property
    def per_second(self) -> float:
        return self.requests / self.window_seconds


class CallsThrottle:
    """The sliding window of admitted requests for each (app id, tenant id); thread-safe."""

    def __init__(
        self, limit: ThrottleLimit | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: dict[tuple[str, str], deque[float]] = {}
        self.admitted_count = 0
        self.throttled_count = 0

    @property
    def limit(self) -> ThrottleLimit | None:
        return self._limit

    def configure(self, limit: ThrottleLimit | None) -> None:
        """A new limit (None: off); the windows and counters start afresh."""
        with self._lock:
            self._limit = limit
            self._admitted.clear()
            self.admitted_count = 0
            self.throttled_count = 0

    def admit(self, app_id: str | None, tenant_id: str | None) -> int | None:
        """None when the request may proceed, else the ``Retry-After`` seconds of its 429."""
        with self._lock:
            limit = self._limit
            if limit is None:
                return None
            now = self._clock()
            window = self._admitted.setdefault((app_id or "", tenant_id or ""), deque())
            while window and window[0] <= now - limit.window_seconds:
                window.popleft()
            if len(window) < limit.requests:
                window.append(now)
                self.admitted_count += 1
                return None
            self.throttled_count += 1
            return max(1, math.ceil(window[0] + limit.window_seconds - now))

    def to_json(self) -> dict[str, object]:
        with self._lock:
            limit = self._limit
            return {
                "requests": limit.requests if limit else None,
                "windowSeconds": limit.window_seconds if limit else None,
                "admitted": self.admitted_count,
                "throttled": self.throttled_count,
            }
