"""Many calls at once, and downloads that need retries: every recording stored exactly once.

One app for the module with the default (long) retention and a cleanup that never runs during
the tests, so every blob counted is still there.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.conftest import NEVER, RunningApp

pytestmark = pytest.mark.timeout(180)

STEADY_SETTINGS = {
    "BOT_RECORD_MAX_DURATION_SECONDS": "2",
    "RECORDING_RETENTION_MINUTES": "60",
    "CLEANUP_SCHEDULE": NEVER,
}
CALLS_AT_ONCE = 20


@pytest.fixture(scope="module")
def app(running_app_factory: Any) -> RunningApp:
    running: RunningApp = running_app_factory(STEADY_SETTINGS)
    return running


def _assert_stored_once(app: RunningApp, call_id: str, operation_id: str) -> dict[str, Any]:
    row = app.wait_for_status(call_id, operation_id, "stored", within=60)
    recording = app.simulator.recording_for(operation_id)
    assert recording is not None
    assert [r["OperationId"] for r in app.ledger_rows(call_id)] == [operation_id]
    assert app.blob_names(call_id) == [row["BlobName"]]
    data = app.container.get_blob_client(row["BlobName"]).download_blob().readall()
    assert hashlib.sha256(data).hexdigest() == recording.sha256 == row["Sha256"]
    assert row["SizeBytes"] == recording.size == len(data)
    return row


def test_twenty_calls_at_once_store_twenty_recordings_none_lost_none_twice(
    app: RunningApp,
) -> None:
    with ThreadPoolExecutor(max_workers=CALLS_AT_ONCE) as pool:
        call_ids = list(pool.map(lambda _: app.place_call("max-duration"), range(CALLS_AT_ONCE)))
    assert len(set(call_ids)) == CALLS_AT_ONCE
    operations = {call_id: app.record_operation_id(call_id, within=30) for call_id in call_ids}

    for call_id, operation_id in operations.items():
        _assert_stored_once(app, call_id, operation_id)

    # None lost, none twice, seen from every side.
    blobs = [name for call_id in call_ids for name in app.blob_names(call_id)]
    assert len(blobs) == len(set(blobs)) == CALLS_AT_ONCE
    rows = [row for call_id in call_ids for row in app.ledger_rows(call_id)]
    assert sorted(row["Status"] for row in rows) == ["stored"] * CALLS_AT_ONCE
    for call_id, operation_id in operations.items():
        recording = app.simulator.recording_for(operation_id)
        assert recording is not None
        assert recording.request_count == 1, f"call {call_id} downloaded {recording.request_count}x"
        record_requests = [
            r for r in app.graph_requests(call_id) if r.path.endswith("/recordResponse")
        ]
        assert len(record_requests) == 1
        assert not app.jobs_for(app.poison_queue, call_id)


def test_a_download_that_meets_503_twice_is_retried_and_stored_once(app: RunningApp) -> None:
    call_id = app.place_call("max-duration", recording_faults=["503", "503"])
    operation_id = app.record_operation_id(call_id)

    _assert_stored_once(app, call_id, operation_id)
    recording = app.simulator.recording_for(operation_id)
    assert recording is not None
    assert recording.pending_faults == []
    assert recording.request_count == 3  # 503, 503, then the whole recording
    assert not app.jobs_for(app.poison_queue, call_id)
    assert not app.jobs_for(app.queue, call_id)
