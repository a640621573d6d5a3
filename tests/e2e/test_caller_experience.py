"""What the caller hears, through the running app (local Functions host, real queue trigger,
Azurite) and the simulator, which fetches the app's own prompts as Graph would: the notice,
the re-prompt after silence, the thank-you and the hang-up only once the recording is stored;
a caller who leaves before that; the legacy first notification; erasure over HTTP.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.data import legacy_notification
from tests.e2e.conftest import NEVER, RunningApp, id_key, wait_until

pytestmark = pytest.mark.timeout(180)

SETTINGS = {"BOT_RECORD_MAX_DURATION_SECONDS": "2", "CLEANUP_SCHEDULE": NEVER}


@pytest.fixture(scope="module")
def app(running_app_factory: Any) -> RunningApp:
    running: RunningApp = running_app_factory(SETTINGS)
    return running


def actions(app: RunningApp, call_id: str) -> list[tuple[str, str]]:
    return [(r.method, r.path.rsplit("/", 1)[-1]) for r in app.graph_requests(call_id)]


def prompt_uris(app: RunningApp, call_id: str, action: str) -> list[str]:
    return [
        prompt["mediaInfo"]["uri"]
        for r in app.graph_requests(call_id)
        if r.path.endswith(f"/{action}")
        for prompt in r.body.get("prompts", [])
    ]


def terminated(app: RunningApp, call_id: str) -> None:
    wait_until(
        lambda: app.simulator.call(call_id).state == "terminated", within=30, what="call end"
    )


def test_notice_record_stored_thank_you_then_hang_up(app: RunningApp) -> None:
    call_id = app.place_call("max-duration")
    operation_id = app.record_operation_id(call_id)
    row = app.wait_for_status(call_id, operation_id, "stored")
    terminated(app, call_id)

    base = app.host.base_url
    assert prompt_uris(app, call_id, "recordResponse") == [f"{base}/api/prompts/notice.wav"]
    assert prompt_uris(app, call_id, "playPrompt") == [f"{base}/api/prompts/thank-you.wav"]
    assert [method + " " + tail for method, tail in actions(app, call_id)][:3] == [
        "POST answer",
        "POST recordResponse",
        "POST playPrompt",
    ]
    assert [method for method, _ in actions(app, call_id)][3:] == ["DELETE"]
    # The thank-you was asked for only once the ledger said stored (same machine, same clock).
    thank_you = next(r for r in app.graph_requests(call_id) if r.path.endswith("/playPrompt"))
    stored_at: datetime = row["StoredAt"]
    assert thank_you.received_at >= stored_at.timestamp()
    # Every prompt was fetched from the app and played (no 8535/8536).
    operations = [op for op in app.simulator.operations if id_key(op.call_id) == id_key(call_id)]
    assert all(op.status == "completed" for op in operations)


def test_silence_then_answer_is_reprompted_and_stored(app: RunningApp) -> None:
    call_id = app.place_call("silence-then-answer")
    terminated(app, call_id)
    rows = wait_until(
        lambda: (
            (r := sorted(app.ledger_rows(call_id), key=lambda x: x["Attempt"]))
            and r[-1]["Status"] == "stored"
            and r
        ),
        within=30,
        what="the second attempt stored",
    )
    assert [(r["Attempt"], r["Status"]) for r in rows] == [(1, "failed"), (2, "stored")]
    assert rows[0]["ResultSubcode"] == 8510
    base = app.host.base_url
    assert prompt_uris(app, call_id, "recordResponse") == [
        f"{base}/api/prompts/notice.wav",
        f"{base}/api/prompts/reprompt.wav",
    ]


def test_a_caller_who_hangs_up_before_stored_still_has_the_recording_stored(
    app: RunningApp,
) -> None:
    call_id = app.place_call("hangup-before-stored")
    operation_id = app.record_operation_id(call_id)
    terminated(app, call_id)
    row = app.wait_for_status(call_id, operation_id, "stored")
    assert app.blob_names(call_id) == [row["BlobName"]]


def test_the_legacy_first_notification_is_204_over_http(app: RunningApp) -> None:
    token = app.simulator.sign_token()
    response = app.http.post(
        "/api/calls",
        content=legacy_notification.body_bytes(),
        headers={**legacy_notification.headers(), "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 204
    unauthenticated = httpx.post(
        f"{app.host.base_url}/api/calls",
        content=legacy_notification.body_bytes(),
        headers=legacy_notification.headers(),
    )
    assert unauthenticated.status_code == 401


def test_erasure_over_http_deletes_the_blob_and_keeps_an_erased_row(app: RunningApp) -> None:
    call_id = app.place_call("max-duration")
    operation_id = app.record_operation_id(call_id)
    app.wait_for_status(call_id, operation_id, "stored")

    response = app.http.delete(f"/api/recordings/{call_id}/{operation_id}")

    assert response.status_code == 204
    assert app.blob_names(call_id) == []
    assert app.ledger_row(call_id, operation_id)["Status"] == "erased"
    assert app.http.delete(f"/api/recordings?callId={call_id}").status_code == 204
    unknown = app.http.delete(f"/api/recordings/{call_id}/{uuid.uuid4()}")
    assert (unknown.status_code, unknown.headers["content-type"]) == (
        404,
        "application/problem+json",
    )
