"""Time, in one place: the app's clock, naive times read back from storage, and elapsed time.

Every module that needs "now" takes a clock (default :func:`utc_now`) so tests can move it; times
that come back from Table Storage or a queue message without a zone are UTC (:func:`as_utc`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive time (as storage and old messages give them) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Stopwatch:
    """Elapsed wall time for log lines and retry budgets (not for decisions a test asserts on)."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    @property
    def elapsed_ms(self) -> int:
        return round((time.monotonic() - self._started) * 1000)

    @property
    def elapsed_seconds(self) -> float:
        return time.monotonic() - self._started
