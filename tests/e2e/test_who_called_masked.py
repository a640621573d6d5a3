"""Who called under ``CALLER_IDENTITY=masked``, through the running app (see test_who_called.py):
ids without display names, a number's last 4 digits; the number's digest still finds its calls
for an erasure by caller."""

from __future__ import annotations

from typing import Any

import pytest

from shared.ledger.identity import caller_key, canonical_caller
from tests.e2e.conftest import NEVER, RunningApp, identity_columns
from tests.e2e.who_called import (
    CALLED_BY_PHONE,
    CALLED_IN_TEAMS,
    ON_BEHALF_OF,
    TRANSFEROR,
    Placed,
    assert_names_nobody,
    call_facts,
    erase_by_caller,
    place_stored,
    who_called,
)

pytestmark = pytest.mark.timeout(120)

SETTINGS = {
    "BOT_RECORD_MAX_DURATION_SECONDS": "1",
    "CALLER_IDENTITY": "masked",
    "CLEANUP_SCHEDULE": NEVER,
}


@pytest.fixture(scope="module")
def app(running_app_factory: Any) -> RunningApp:
    running: RunningApp = running_app_factory(SETTINGS)
    return running


@pytest.fixture(scope="module")
def calls(app: RunningApp) -> dict[str, Placed]:
    return place_stored(app, {"pstn": {"caller": "pstn"}, "teams-user": {}})


def test_a_number_keeps_its_last_digits_and_nobody_a_name(
    app: RunningApp, calls: dict[str, Placed]
) -> None:
    placed = calls["pstn"]
    assert placed.number is not None
    masked = "+" + "*" * (len(placed.number) - 5) + placed.number[-4:]
    expected = {
        "CallerKind": "phone",
        "CallerPhone": masked,
        "CallerKey": caller_key(placed.number),
        "OnBehalfOfKind": ON_BEHALF_OF["kind"],
        "OnBehalfOfId": ON_BEHALF_OF["id"],
        "TransferorKind": TRANSFEROR["kind"],
        "TransferorId": TRANSFEROR["id"],
    }
    row = app.ledger_row(placed.call_id, placed.operation_id)
    assert row is not None
    assert identity_columns(app.call_row(placed.call_id)) == expected
    assert identity_columns(row) == expected
    body = app.status(placed.call_id, placed.operation_id)
    assert who_called(body) == {
        "caller": {"kind": "phone", "phone": masked},
        "called": CALLED_BY_PHONE,
        "call": {
            **call_facts(app, placed, "masked"),
            "onBehalfOf": ON_BEHALF_OF,
            "transferor": TRANSFEROR,
        },
    }


def test_a_teams_user_keeps_an_id_without_a_name(app: RunningApp, calls: dict[str, Placed]) -> None:
    placed = calls["teams-user"]
    caller_id = app.simulator.call(placed.call_id).caller_id
    canonical = canonical_caller(caller_id)
    assert canonical is not None
    expected = {"CallerKind": "user", "CallerId": caller_id, "CallerKey": caller_key(canonical)}
    row = app.ledger_row(placed.call_id, placed.operation_id)
    assert row is not None
    assert identity_columns(app.call_row(placed.call_id)) == expected
    assert identity_columns(row) == expected
    assert who_called(app.status(placed.call_id, placed.operation_id)) == {
        "caller": {"kind": "user", "id": caller_id},
        "called": CALLED_IN_TEAMS,
        "call": call_facts(app, placed, "masked"),
    }


def test_the_masked_number_is_still_erased_by_its_number(
    app: RunningApp, calls: dict[str, Placed]
) -> None:
    placed = calls["pstn"]
    assert erase_by_caller(app, placed.number) == {
        "erasedRecordings": 1,
        "erasedCalls": 1,
        "complete": True,
    }
    assert_names_nobody(app, placed, "erased")
