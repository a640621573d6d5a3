"""Timer triggers: fire on a 6-field NCRONTAB schedule, passing a ``TimerRequest``.

NCRONTAB is ``{second} {minute} {hour} {day} {month} {day-of-week}``: seconds come first, where
croniter's optional seconds field comes last unless asked otherwise (``second_at_beginning``).
Times are UTC, as on Linux plans without ``WEBSITE_TIME_ZONE``. Occurrences missed while an
invocation ran (or the host was busy) collapse into one late invocation with ``past_due`` true.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest
from croniter import croniter

from devtools.localhost.discovery import TimerFunction, invoke
from devtools.localhost.settings import HostConfigurationError

logger = logging.getLogger(__name__)

NCRONTAB_FIELDS = 6
# How late an invocation may start and still be on time.
DEFAULT_PAST_DUE_TOLERANCE = timedelta(seconds=1)


class NcrontabSchedule:
    """A 6-field NCRONTAB expression, evaluated in UTC."""

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != NCRONTAB_FIELDS:
            raise HostConfigurationError(
                f"schedule {expression!r}: NCRONTAB needs 6 fields "
                "({second} {minute} {hour} {day} {month} {day-of-week}), "
                f"got {len(fields)}"
            )
        self.expression = " ".join(fields)
        if not croniter.is_valid(self.expression, second_at_beginning=True):
            raise HostConfigurationError(
                f"schedule {expression!r}: not a valid NCRONTAB expression"
            )

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment``."""
        result: datetime = croniter(
            self.expression, moment.astimezone(UTC), second_at_beginning=True
        ).get_next(datetime)
        return result

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last occurrence at or before ``moment``."""
        probe = moment.astimezone(UTC) + timedelta(microseconds=1)
        result: datetime = croniter(self.expression, probe, second_at_beginning=True).get_prev(
            datetime
        )
        return result


@dataclass(frozen=True)
class Firing:
    due: datetime
    past_due: bool


def plan_firing(
    schedule: NcrontabSchedule,
    last_due: datetime,
    now: datetime,
    tolerance: timedelta = DEFAULT_PAST_DUE_TOLERANCE,
) -> Firing:
    """The next occurrence to fire after ``last_due``; missed ones collapse into the latest.

    ``past_due`` is measured from the first occurrence not yet fired, so a collapse is past due.
    """
    first = schedule.next_after(last_due)
    if first > now:
        return Firing(due=first, past_due=False)
    return Firing(
        due=max(first, schedule.latest_at_or_before(now)), past_due=now - first > tolerance
    )


def timer_request(
    schedule: NcrontabSchedule, *, past_due: bool, last: datetime | None, now: datetime
) -> TimerRequest:
    """The TimerRequest the worker would build from the host's timer payload."""
    # The worker's concrete class; azure.functions.TimerRequest is the abstract one.
    return TimerRequest(
        past_due=past_due,
        schedule_status={
            "Last": (last or now).isoformat(),
            "Next": schedule.next_after(now).isoformat(),
            "LastUpdated": now.isoformat(),
        },
        schedule={"AdjustForDST": True},
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TimerListener:
    """Fires one timer-triggered function until ``stop()``; invocations never overlap."""

    def __init__(
        self,
        function: TimerFunction,
        *,
        function_timeout: timedelta,
        clock: Callable[[], datetime] = _utcnow,
        past_due_tolerance: timedelta = DEFAULT_PAST_DUE_TOLERANCE,
    ) -> None:
        self.function = function
        self.schedule = NcrontabSchedule(function.schedule)
        self._function_timeout = function_timeout
        self._clock = clock
        self._tolerance = past_due_tolerance
        self._stopping = asyncio.Event()
        self._last: datetime | None = None
        self.invocations = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        last_due = self._clock()
        if self.function.run_on_startup:
            await self._fire(past_due=False)
        while not self._stopping.is_set():
            firing = plan_firing(self.schedule, last_due, self._clock(), self._tolerance)
            delay = (firing.due - self._clock()).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
            # A busy loop can wake us late: that makes this firing past due too.
            past_due = firing.past_due or self._clock() - firing.due > self._tolerance
            await self._fire(past_due=past_due)
            last_due = firing.due

    async def _fire(self, *, past_due: bool) -> None:
        now = self._clock()
        request = timer_request(self.schedule, past_due=past_due, last=self._last, now=now)
        started = time.perf_counter()
        try:
            await invoke(
                self.function.user_function,
                {self.function.argument: request},
                function_timeout=self._function_timeout,
            )
        except Exception as error:
            logger.warning(
                "timer function=%s outcome=failed past_due=%s error=%s duration_ms=%.1f",
                self.function.name,
                past_due,
                type(error).__name__,
                (time.perf_counter() - started) * 1000,
                exc_info=True,
            )
        else:
            logger.info(
                "timer function=%s outcome=succeeded past_due=%s duration_ms=%.1f",
                self.function.name,
                past_due,
                (time.perf_counter() - started) * 1000,
            )
        finally:
            self._last = now
            self.invocations += 1
