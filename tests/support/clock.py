"""One test clock for every collaborator that asks what time it is, or waits.

The app takes its clocks as arguments: ``datetime`` callables (ledger, claims, cleanup, worker),
epoch seconds (the inbound validator), a monotonic clock and an async ``sleep`` (retry loops).
This clock is all of them, and moves only when a test moves it, or by ``tick`` on each reading,
or by what the code under test sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime = DEFAULT_START, *, tick: timedelta = timedelta(0)) -> None:
        self.now = start
        self.tick = tick
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        """The current time as an aware UTC datetime (moving by ``tick`` first)."""
        self.now += self.tick
        return self.now

    def advance(self, by: timedelta | float) -> None:
        self.now += by if isinstance(by, timedelta) else timedelta(seconds=by)

    def timestamp(self) -> float:
        """Epoch seconds, for collaborators that count in those."""
        return self.now.timestamp()

    def monotonic(self) -> float:
        return self.now.timestamp()

    async def sleep(self, seconds: float) -> None:
        """Records the wait and moves time by it, without waiting."""
        self.sleeps.append(seconds)
        self.advance(seconds)


class Sleeps:
    """An async ``sleep`` for code that waits on the real clock (backoff between retries): each
    delay asked for is recorded, and only ``pause`` seconds are actually waited, so tests assert
    on the delays, not on time passing."""

    def __init__(self, *, pause: float = 0.0) -> None:
        self.delays: list[float] = []
        self.pause = pause

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(self.pause)
