"""Timer triggers: NCRONTAB (seconds first) evaluation, past-due planning, real firings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from croniter import croniter

from devtools.localhost import HostConfigurationError, LocalFunctionsHost, NcrontabSchedule
from devtools.localhost.timers import plan_firing
from tests.localhost import sample_app
from tests.localhost.conftest import wait_until

START = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Monday


def occurrences(expression: str, count: int, start: datetime = START) -> list[datetime]:
    schedule = NcrontabSchedule(expression)
    moments, moment = [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        moments.append(moment)
    return moments


def test_first_field_is_seconds() -> None:
    assert occurrences("*/15 * * * * *", 3) == [
        START + timedelta(seconds=15),
        START + timedelta(seconds=30),
        START + timedelta(seconds=45),
    ]
    # croniter on its own reads a 6th field as seconds at the end: a different schedule.
    plain = croniter("*/15 * * * * *", START).get_next(datetime)
    assert plain != START + timedelta(seconds=15)


def test_every_five_minutes_on_the_minute() -> None:
    assert occurrences("0 */5 * * * *", 3) == [
        START + timedelta(minutes=5),
        START + timedelta(minutes=10),
        START + timedelta(minutes=15),
    ]


def test_all_six_fields_in_ncrontab_order() -> None:
    # 09:30:05 on weekdays in February.
    [first, second] = occurrences("5 30 9 * 2 1-5", 2)
    assert first == datetime(2024, 2, 1, 9, 30, 5, tzinfo=UTC)  # Thursday 1 February
    assert second == datetime(2024, 2, 2, 9, 30, 5, tzinfo=UTC)  # Friday
    # Day of month and month: noon on the 15th of March.
    assert occurrences("0 0 12 15 3 *", 1) == [datetime(2024, 3, 15, 12, 0, 0, tzinfo=UTC)]


@pytest.mark.parametrize(
    "expression", ["*/5 * * * *", "0 0 0 1 1 * 2030", "61 * * * * *", "every minute"]
)
def test_invalid_schedules_are_refused_by_name(expression: str) -> None:
    with pytest.raises(HostConfigurationError, match="schedule"):
        NcrontabSchedule(expression)


def test_an_on_time_firing_is_not_past_due() -> None:
    every_second = NcrontabSchedule("* * * * * *")
    firing = plan_firing(every_second, START, START + timedelta(milliseconds=200))
    assert firing.due == START + timedelta(seconds=1)
    assert not firing.past_due


def test_missed_occurrences_collapse_into_one_past_due_firing() -> None:
    every_ten = NcrontabSchedule("*/10 * * * * *")
    late = START + timedelta(seconds=35)
    firing = plan_firing(every_ten, START, late)
    assert firing.due == START + timedelta(seconds=30)  # the latest missed occurrence
    assert firing.past_due


def test_slightly_late_is_within_tolerance() -> None:
    every_ten = NcrontabSchedule("*/10 * * * * *")
    firing = plan_firing(every_ten, START, START + timedelta(seconds=10, milliseconds=300))
    assert firing.due == START + timedelta(seconds=10)
    assert not firing.past_due


def test_timer_fires_with_a_timer_request(make_host: Callable[..., LocalFunctionsHost]) -> None:
    """%SAMPLE_SCHEDULE% resolves to every second; run_on_startup fires startup_tick at once."""
    with make_host(schedule="* * * * * *") as host:
        assert host.timer_listener("tick").schedule.expression == "* * * * * *"
        wait_until(
            lambda: sum(name == "tick" for name, _ in sample_app.timer_firings) >= 2,
            what="two firings",
        )
    ticks = [request for name, request in sample_app.timer_firings if name == "tick"]
    for request in ticks:
        assert isinstance(request, func.TimerRequest)
        assert isinstance(request.past_due, bool)
        assert datetime.fromisoformat(request.schedule_status["Next"]) > datetime.fromisoformat(
            request.schedule_status["LastUpdated"]
        )
    startup = [request for name, request in sample_app.timer_firings if name == "startup_tick"]
    assert len(startup) == 1
    assert startup[0].past_due is False
