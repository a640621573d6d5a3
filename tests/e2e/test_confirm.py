"""The opt-in confirmation through the running app: the scripted caller presses 2 after the
first playback (the recording is erased at once and recorded again), then 1 (kept)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import NEVER, RunningApp, id_key, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def app(running_app_factory: Any) -> RunningApp:
    running: RunningApp = running_app_factory(
        {
            "BOT_RECORD_MAX_DURATION_SECONDS": "2",
            "BOT_CONFIRM_RECORDING": "true",
            "BOT_CONFIRM_TIMEOUT_SECONDS": "3",
            "CLEANUP_SCHEDULE": NEVER,
        }
    )
    return running


def test_2_records_again_and_erases_the_first_then_1_keeps_the_second(app: RunningApp) -> None:
    call_id = app.place_call("max-duration", keys_after_prompts=["2", "1"])
    wait_until(
        lambda: app.simulator.call(call_id).state == "terminated", within=60, what="call end"
    )

    rows = sorted(app.ledger_rows(call_id), key=lambda row: row["Attempt"])
    assert [(row["Attempt"], row["Status"]) for row in rows] == [(1, "erased"), (2, "stored")]
    assert app.blob_names(call_id) == [rows[1]["BlobName"]]
    tails = [r.path.rsplit("/", 1)[-1] for r in app.graph_requests(call_id)]
    assert tails.count("subscribeToTone") == 1
    assert tails.count("recordResponse") == 2
    # The playback prompts were the stored blobs, fetched by "Graph" through read URLs.
    plays = [
        r.body
        for r in app.graph_requests(call_id)
        if r.path.endswith("/playPrompt") and r.body["clientContext"].startswith("bot-confirm:")
    ]
    assert len(plays) == 2
    operations = [op for op in app.simulator.operations if id_key(op.call_id) == id_key(call_id)]
    confirm_ops = [
        op
        for op in operations
        if op.kind == "playPrompt" and op.params["clientContext"].startswith("bot-confirm:")
    ]
    # Played in full: a read URL the simulator could not fetch or play would fail them (8536/8535).
    assert [op.status for op in confirm_ops] == ["completed", "completed"]
    assert any(
        r.body.get("clientContext") == "bot-thank-you"
        for r in app.graph_requests(call_id)
        if r.path.endswith("/playPrompt")
    )
