"""A call's whole life through the running app: answered, recorded, stored, expired; and the
ways it can go wrong (a download that never succeeds, a caller who hangs up, a forged
notification).

One app for the module with a short retention (9 s) and the cleanup every second, so expiry and
the poison purge happen within a test's patience.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from devtools.graphsim.keys import SigningKey
from shared.ledger import ABANDONED_REASON, POISONED_REASON
from tests.e2e.conftest import E2E_QUEUES, RunningApp, id_key, wait_until

pytestmark = pytest.mark.timeout(180)

LIFECYCLE_SETTINGS = {
    "BOT_RECORD_MAX_DURATION_SECONDS": "3",
    "RECORDING_RETENTION_MINUTES": "0.15",
    "CLEANUP_SCHEDULE": "* * * * * *",
    "POISON_MESSAGE_MAX_AGE_MINUTES": "0.05",
}
ONE_SECOND_OF_AUDIO = 32_000  # 16 kHz, 16-bit mono


@pytest.fixture(scope="module")
def app(running_app_factory: Any) -> RunningApp:
    running: RunningApp = running_app_factory(LIFECYCLE_SETTINGS)
    return running


def _stamp(row: dict[str, Any], name: str) -> datetime:
    value = row.get(name)
    assert isinstance(value, datetime), f"ledger row has no {name}: {sorted(row)}"
    return value


def test_a_call_is_answered_recorded_stored_and_then_expired(app: RunningApp) -> None:
    call_id = app.place_call("max-duration")
    operation_id = app.record_operation_id(call_id)

    row = app.wait_for_status(call_id, operation_id, "stored", "expired")
    recording = app.simulator.recording_for(operation_id)
    assert recording is not None
    assert recording.size == 3 * ONE_SECOND_OF_AUDIO + 44

    # Every transition left its stamp, in order. "completed" is written by the webhook while
    # the worker may already be downloading; when it lost that race it has no stamp.
    requested, running = _stamp(row, "RequestedAt"), _stamp(row, "RunningAt")
    downloading, stored = _stamp(row, "DownloadingAt"), _stamp(row, "StoredAt")
    assert requested <= running <= downloading <= stored
    if "CompletedAt" in row:
        assert running <= _stamp(row, "CompletedAt") <= stored
    assert row["StartedBy"] == "bot"
    assert (row["ResultCode"], row["ResultSubcode"]) == (200, 8515)
    assert row["ResultMeaning"] == "8515: max record duration reached"
    assert row["MaxRecordDurationSeconds"] == 3
    assert row["SizeBytes"] == recording.size
    assert row["Sha256"] == recording.sha256

    # The stored bytes are the simulator's, once.
    blob_names = app.blob_names(call_id)
    assert blob_names == [row["BlobName"]]
    blob = app.container.get_blob_client(row["BlobName"])
    data = blob.download_blob().readall()
    assert hashlib.sha256(data).hexdigest() == recording.sha256
    assert len(data) == recording.size
    properties = blob.get_blob_properties()
    assert properties.content_settings.content_type == "audio/wav"
    assert blob.get_blob_tags()["expiresAt"] == row["ExpiresAt"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert recording.request_count == 1

    # The status API (function key required) tells the same story and hands out a read URL.
    assert (
        app.http.get(
            f"/api/recordings/{call_id}/{operation_id}", headers={"x-functions-key": "wrong"}
        ).status_code
        == 401
    )
    status = app.http.get(f"/api/recordings/{call_id}/{operation_id}")
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "stored"
    assert body["sha256"] == recording.sha256
    assert body["resultSubcode"] == 8515

    # Graph saw one answer, one recordResponse and, the recording done, the bot's hang-up.
    wait_until(lambda: app.simulator.call(call_id).state == "terminated", within=15, what="hang-up")
    actions = [(r.method, r.path.rsplit("/", 1)[-1]) for r in app.graph_requests(call_id)]
    assert actions.count(("POST", "answer")) == 1
    assert actions.count(("POST", "recordResponse")) == 1
    assert sum(1 for method, _ in actions if method == "DELETE") == 1

    # Retention ends: the cleanup deletes the blob, then marks the row expired.
    expired = app.wait_for_status(call_id, operation_id, "expired", within=45)
    assert _stamp(expired, "ExpiredAt") >= expired["ExpiresAt"]
    assert app.blob_names(call_id) == []
    after = app.http.get(f"/api/recordings/{call_id}/{operation_id}").json()
    assert after["status"] == "expired"
    assert "recordingUrl" not in after
    assert len(app.ledger_rows(call_id)) == 1


def test_a_recording_that_always_fails_is_poisoned_then_purged_with_its_failure(
    app: RunningApp,
) -> None:
    call_id = app.place_call("max-duration", recording_faults=["503"] * 50)
    operation_id = app.record_operation_id(call_id)
    poisoned_before = app.host.queue_listener("download_recording").outcomes["poisoned"]

    # The host gives the job maxDequeueCount deliveries, then moves it to the poison queue.
    def on_poison_queue() -> list[dict[str, Any]]:
        return app.jobs_for(app.poison_queue, call_id)

    poisoned = wait_until(on_poison_queue, within=60, what="the job on the poison queue")
    assert [job["operation_id"] for job in poisoned] == [operation_id]
    # The host copies to the poison queue, then deletes the original, then counts: wait for it.
    listener = app.host.queue_listener("download_recording")
    wait_until(
        lambda: listener.outcomes["poisoned"] > poisoned_before,
        within=10,
        what="the host to count the poisoned message",
    )
    recording = app.simulator.recording_for(operation_id)
    assert recording is not None
    assert recording.request_count >= E2E_QUEUES["maxDequeueCount"]
    assert app.blob_names(call_id) == []

    # The cleanup records why, then purges the message (and its recording token) for good.
    row = app.wait_for_status(call_id, operation_id, "failed", within=60)
    assert row["FailureReason"] == POISONED_REASON
    wait_until(lambda: not on_poison_queue(), within=15, what="the poison message purged")
    assert not app.jobs_for(app.queue, call_id)
    assert app.blob_names(call_id) == []
    body = app.http.get(f"/api/recordings/{call_id}/{operation_id}").json()
    assert body["status"] == "failed"
    assert body["failureReason"] == POISONED_REASON


def test_a_caller_who_hangs_up_before_the_recording_completes_leaves_it_abandoned(
    app: RunningApp,
) -> None:
    call_id = app.place_call("hangup")
    operation_id = app.record_operation_id(call_id)

    row = app.wait_for_status(call_id, operation_id, "abandoned", within=30)
    assert row["FailureReason"] == ABANDONED_REASON
    assert "RunningAt" in row
    assert app.simulator.call(call_id).state == "terminated"
    assert not [
        n
        for n in app.simulator.notifications(call_id)
        if "/operations/" in n.get("resourceUrl", "")
    ], "the hangup scenario sends no completion"
    assert app.blob_names(call_id) == []
    assert not app.jobs_for(app.queue, call_id)
    assert app.http.get(f"/api/recordings/{call_id}/{operation_id}").json()["status"] == (
        "abandoned"
    )


def _forged_payload(app: RunningApp, call_id: str) -> tuple[dict[str, Any], Any]:
    """An incoming call and a completed recording for it: what a forger would want acted on."""
    recording = app.simulator.add_recording(size_bytes=ONE_SECOND_OF_AUDIO + 44)
    operation_id = str(uuid.uuid4())
    compact_call, compact_op = id_key(call_id).upper(), id_key(operation_id).upper()
    payload = {
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [
            {
                "@odata.type": "#microsoft.graph.commsNotification",
                "changeType": "created",
                "resourceUrl": f"/communications/calls/{call_id}",
                "resourceData": {
                    "@odata.type": "#microsoft.graph.call",
                    "state": "incoming",
                    "direction": "incoming",
                    "callbackUri": app.calls_url,
                },
            },
            {
                "@odata.type": "#microsoft.graph.commsNotification",
                "changeType": "deleted",
                "resourceUrl": f"/communications/calls/{compact_call}/operations/{compact_op}",
                "resourceData": {
                    "@odata.type": "#microsoft.graph.recordOperation",
                    "id": operation_id,
                    "status": "completed",
                    "resultInfo": {
                        "@odata.type": "#microsoft.graph.resultInfo",
                        "code": 200,
                        "subcode": 8515,
                        "message": "Action completed, max record duration reached.",
                    },
                    "recordingLocation": recording.location,
                    "recordingAccessToken": recording.access_token,
                },
            },
        ],
    }
    return payload, (operation_id, recording)


BAD_TOKENS = {
    "missing": lambda sim: None,
    "wrong audience": lambda sim: sim.sign_token({"aud": "00000000-0000-0000-0000-000000000bad"}),
    "expired": lambda sim: sim.sign_token(
        {
            "iat": int(time.time()) - 7200,
            "nbf": int(time.time()) - 7200,
            "exp": int(time.time()) - 3600,
        }
    ),
    "unknown signing key": lambda sim: sim.sign_token(key=SigningKey.generate()),
    "untrusted issuer": lambda sim: sim.sign_token({"iss": "https://attacker.example"}),
    "no tenant": lambda sim: sim.sign_token({"tid": None}),
    "HS256 with a guessable secret": lambda sim: sim.sign_token(
        alg="HS256", hs_secret=b"0123456789abcdef0123456789abcdef"
    ),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_notification_with_a_bad_token_is_refused_and_changes_nothing(
    app: RunningApp, kind: str
) -> None:
    import httpx

    forged_call = str(uuid.uuid4())
    payload, (forged_operation, forged_recording) = _forged_payload(app, forged_call)
    token = BAD_TOKENS[kind](app.simulator)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    requests_before = len(app.simulator.requests)

    response = httpx.post(app.calls_url, content=json.dumps(payload), headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    if token is not None:
        assert token not in response.text

    # The same payload, properly signed, for another call: once it has been fully acted on,
    # anything the forged one had set in motion would have happened too.
    control_call = str(uuid.uuid4())
    control, (control_operation, control_recording) = _forged_payload(app, control_call)
    accepted = httpx.post(
        app.calls_url,
        content=json.dumps(control),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {app.simulator.sign_token()}",
        },
        timeout=10,
    )
    assert accepted.status_code == 202
    app.wait_for_status(control_call, control_operation, "stored", within=30)
    wait_until(
        lambda: app.graph_requests(control_call), within=10, what="the control call's answer"
    )
    assert control_recording.request_count == 1

    assert app.ledger_row(forged_call, forged_operation) is None
    assert (
        list(app.table.query_entities("PartitionKey eq @pk", parameters={"pk": forged_call})) == []
    )
    assert not app.jobs_for(app.queue, forged_call)
    assert app.blob_names(forged_call) == []
    assert forged_recording.request_count == 0
    assert app.graph_requests(forged_call) == []
    assert len(app.simulator.requests) > requests_before  # the control did reach Graph
