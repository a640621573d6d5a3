"""Who called (issue 27) through the running app: what the e2e modules of each
``CALLER_IDENTITY`` share (test_who_called.py: full; test_who_called_masked.py;
test_who_called_none.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devtools.graphsim.models import (
    RESOURCE_ACCOUNT_ID,
    RESOURCE_ACCOUNT_NUMBER,
    TRANSFEROR_AGENT_ID,
)
from tests.conftest import BOT_APP_ID
from tests.e2e.conftest import RunningApp, identity_columns, new_caller_number

# What a PSTN caller's incoming call says came through Reception's call queue (the simulator's
# incomingContext), without the display names ``masked`` drops.
ON_BEHALF_OF = {"kind": "applicationInstance", "id": RESOURCE_ACCOUNT_ID}
TRANSFEROR = {"kind": "user", "id": TRANSFEROR_AGENT_ID}
# What was called: kept under every setting.
CALLED_BY_PHONE = {"kind": "phone", "id": RESOURCE_ACCOUNT_NUMBER, "phone": RESOURCE_ACCOUNT_NUMBER}
CALLED_IN_TEAMS = {"kind": "application", "id": BOT_APP_ID, "displayName": "Recording bot"}


@dataclass(frozen=True)
class Placed:
    """A call the simulator placed and the app stored the recording of."""

    call_id: str
    operation_id: str
    number: str | None = None  # a PSTN caller's


def place_stored(app: RunningApp, plans: dict[str, dict[str, Any]]) -> dict[str, Placed]:
    """Place every call at once (``place_call`` options by name; a PSTN caller gets a number no
    other test calls from) and wait until each recording is stored."""
    for plan in plans.values():
        if plan.get("caller") == "pstn":
            plan.setdefault("caller_number", new_caller_number())
    placed = {name: app.place_call(**plan) for name, plan in plans.items()}
    out = {}
    for name, call_id in placed.items():
        operation_id = app.record_operation_id(call_id)
        app.wait_for_status(call_id, operation_id, "stored")
        out[name] = Placed(call_id, operation_id, plans[name].get("caller_number"))
    return out


def call_facts(app: RunningApp, placed: Placed, privacy: str) -> dict[str, Any]:
    """The status API's ``call`` object that is not who called (the answer time aside)."""
    sim_call = app.simulator.call(placed.call_id)
    return {
        "direction": "incoming",
        "callChainId": sim_call.call_chain_id,
        "tenantId": sim_call.tenant_id,
        "callerPrivacy": privacy,
        "metadataSource": "notification",
    }


def who_called(body: dict[str, Any]) -> dict[str, Any]:
    """The status body's ``caller``, ``called`` and ``call``, the answer time left out."""
    view = {key: body[key] for key in ("caller", "called", "call") if key in body}
    if "call" in view:
        view["call"] = {k: v for k, v in view["call"].items() if k != "answeredAt"}
    return view


def assert_names_nobody(app: RunningApp, placed: Placed, status: str) -> dict[str, Any]:
    """The call's rows, its caller index and its status hold no identity; what was called and
    the call's own facts stay. Returns the status body."""
    row = app.wait_for_status(placed.call_id, placed.operation_id, status)
    assert identity_columns(row) == {}
    assert identity_columns(app.call_row(placed.call_id)) == {}
    assert app.caller_index_rows(placed.call_id) == []
    body = app.status(placed.call_id, placed.operation_id)
    assert body["status"] == status
    assert "caller" not in body
    assert not {"onBehalfOf", "transferor"} & set(body["call"])
    assert body["call"]["direction"] == "incoming"
    assert body["called"] in (CALLED_BY_PHONE, CALLED_IN_TEAMS)
    return body


def erase_by_caller(app: RunningApp, number: str | None) -> dict[str, Any]:
    """``DELETE /api/recordings?caller=``: must be 200; its counts."""
    response = app.http.delete("/api/recordings", params={"caller": number})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
