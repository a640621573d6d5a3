"""Who called under ``CALLER_IDENTITY=none``, through the running app (see test_who_called.py):
nothing of the caller, nor whom the call was for or who transferred it; what was called and the
call's own facts are kept. Nothing finds the call by its caller."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import NEVER, RunningApp, identity_columns
from tests.e2e.who_called import (
    CALLED_BY_PHONE,
    CALLED_IN_TEAMS,
    Placed,
    call_facts,
    erase_by_caller,
    place_stored,
    who_called,
)

pytestmark = pytest.mark.timeout(120)

SETTINGS = {
    "BOT_RECORD_MAX_DURATION_SECONDS": "1",
    "CALLER_IDENTITY": "none",
    "CLEANUP_SCHEDULE": NEVER,
}


@pytest.fixture(scope="module")
def app(running_app_factory: Any) -> RunningApp:
    running: RunningApp = running_app_factory(SETTINGS)
    return running


@pytest.fixture(scope="module")
def calls(app: RunningApp) -> dict[str, Placed]:
    return place_stored(app, {"pstn": {"caller": "pstn"}, "teams-user": {}})


CALLED = {"pstn": CALLED_BY_PHONE, "teams-user": CALLED_IN_TEAMS}


@pytest.mark.parametrize("shape", list(CALLED))
def test_nobody_is_kept_but_what_was_called(
    app: RunningApp, calls: dict[str, Placed], shape: str
) -> None:
    called = CALLED[shape]
    placed = calls[shape]
    guard = app.call_row(placed.call_id)
    row = app.ledger_row(placed.call_id, placed.operation_id)
    assert row is not None
    assert identity_columns(guard) == {}
    assert identity_columns(row) == {}
    # The call's metadata was captured, only without anybody in it.
    assert (guard["CallerPrivacy"], guard["CalledId"]) == ("none", called["id"])
    assert who_called(app.status(placed.call_id, placed.operation_id)) == {
        "called": called,
        "call": call_facts(app, placed, "none"),
    }
    assert app.caller_index_rows(placed.call_id) == []


def test_an_erasure_by_caller_finds_nothing_to_erase(
    app: RunningApp, calls: dict[str, Placed]
) -> None:
    placed = calls["pstn"]
    assert erase_by_caller(app, placed.number) == {
        "erasedRecordings": 0,
        "erasedCalls": 0,
        "complete": True,
    }
    assert app.wait_for_status(placed.call_id, placed.operation_id, "stored")
