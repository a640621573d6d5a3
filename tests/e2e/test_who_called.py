"""Who called (issue 27), through the running app: the simulator's incoming calls reach the real
webhook (``POST /api/calls``), the bot answers and records, the queue-triggered worker stores the
WAV in Azurite; the ledger is read straight from the table and the status API over HTTP.

``CALLER_IDENTITY=full`` (the default); ``masked`` and ``none`` have their own modules
(test_who_called_masked.py, test_who_called_none.py). One app for the module, with a short
retention (9 s) and the cleanup every second, so the calls' identity expires within the module.
Every call is placed at once, up front: the module waits for one retention, not one per call.
"""

from __future__ import annotations

from typing import Any

import pytest

from devtools.graphsim.models import RESOURCE_ACCOUNT_NAME, TRANSFEROR_AGENT_NAME
from shared.blob_layout import wav_facts
from shared.ledger.identity import caller_key, canonical_caller
from tests.e2e.conftest import RunningApp, identity_columns, new_caller_number, wait_until
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
    "RECORDING_RETENTION_MINUTES": "0.15",
    "CLEANUP_SCHEDULE": "* * * * * *",
}
SHAPES = ("teams-user", "pstn", "anonymous", "guest")
ONE_SECOND_OF_AUDIO = 32_000  # 16 kHz, 16-bit mono


@pytest.fixture(scope="module")
def app(running_app_factory: Any) -> RunningApp:
    running: RunningApp = running_app_factory(SETTINGS)
    return running


@pytest.fixture(scope="module")
def calls(app: RunningApp) -> dict[str, Placed]:
    """Every call of the module, stored: one per caller shape (left to expire), a PSTN call to
    erase by its call id, one to erase by its caller's number, one whose body is not a WAV."""
    plans: dict[str, dict[str, Any]] = {shape: {"caller": shape} for shape in SHAPES}
    plans["erase by call"] = {"caller": "pstn"}
    # Two calls of one caller: the erasure by caller erases both.
    number = new_caller_number()
    plans["erase by caller"] = {"caller": "pstn", "caller_number": number}
    plans["erase by caller, again"] = {"caller": "pstn", "caller_number": number}
    plans["not a WAV"] = {"recording_faults": ["not-wav"]}
    return place_stored(app, plans)


def expected_identity(app: RunningApp, shape: str, placed: Placed) -> dict[str, Any]:
    """The identity columns the call's rows hold under ``full`` (shared/ledger/identity.py)."""
    if shape == "pstn":
        assert placed.number is not None
        return {
            "CallerKind": "phone",
            "CallerId": placed.number,
            "CallerPhone": placed.number,
            "CallerKey": caller_key(placed.number),
            "OnBehalfOfKind": ON_BEHALF_OF["kind"],
            "OnBehalfOfId": ON_BEHALF_OF["id"],
            "OnBehalfOfDisplayName": RESOURCE_ACCOUNT_NAME,
            "TransferorKind": TRANSFEROR["kind"],
            "TransferorId": TRANSFEROR["id"],
            "TransferorDisplayName": TRANSFEROR_AGENT_NAME,
        }
    if shape == "anonymous":
        return {"CallerKind": "anonymous"}  # no number, no key: nobody to erase by
    kind, name = ("guest", "Simulated Guest") if shape == "guest" else ("user", "Simulated Caller")
    caller_id = app.simulator.call(placed.call_id).caller_id
    canonical = canonical_caller(caller_id)
    assert canonical is not None
    return {
        "CallerKind": kind,
        "CallerId": caller_id,
        "CallerDisplayName": name,
        "CallerKey": caller_key(canonical),
    }


def expected_view(app: RunningApp, shape: str, placed: Placed) -> dict[str, Any]:
    """The status API's ``caller``, ``called`` and ``call`` (docs/retention.md), the answer time
    aside (checked on its own)."""
    identity = expected_identity(app, shape, placed)
    caller = {
        key: identity[column]
        for key, column in (
            ("kind", "CallerKind"),
            ("id", "CallerId"),
            ("displayName", "CallerDisplayName"),
            ("phone", "CallerPhone"),
        )
        if column in identity
    }
    call = call_facts(app, placed, "full")
    if shape == "pstn":
        call["onBehalfOf"] = {**ON_BEHALF_OF, "displayName": RESOURCE_ACCOUNT_NAME}
        call["transferor"] = {**TRANSFEROR, "displayName": TRANSFEROR_AGENT_NAME}
    called = CALLED_BY_PHONE if shape in ("pstn", "anonymous") else CALLED_IN_TEAMS
    return {"caller": caller, "called": called, "call": call}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_caller_shape_ends_in_the_ledger_and_the_status_api(
    app: RunningApp, calls: dict[str, Placed], shape: str
) -> None:
    placed = calls[shape]
    guard = app.call_row(placed.call_id)
    row = app.ledger_row(placed.call_id, placed.operation_id)
    assert row is not None
    assert row["Status"] == "stored", "the retention is short: this test must run first"

    # The call's row holds who called; the recording's row a copy, made with its first write.
    expected = expected_identity(app, shape, placed)
    assert identity_columns(guard) == expected
    assert identity_columns(row) == expected
    assert guard["CallMetadataSource"] == "notification"
    assert guard["AnsweredAt"] <= row["DownloadingAt"]

    body = app.status(placed.call_id, placed.operation_id)
    assert who_called(body) == expected_view(app, shape, placed)
    assert body["call"]["answeredAt"] == guard["AnsweredAt"].isoformat()
    # Storage internals stay out of the API.
    assert not {"callerKey", "indexKey", "transferorId", "onBehalfOfKind"} & set(body)

    # The caller index lists the call under its caller's key, the anonymous caller's nowhere.
    index = app.caller_index_rows(placed.call_id)
    if "CallerKey" in expected:
        assert [r["PartitionKey"] for r in index] == [f"~caller~{expected['CallerKey']}"]
    else:
        assert index == []


def test_the_wav_facts_are_the_stored_bytes_own(app: RunningApp, calls: dict[str, Placed]) -> None:
    for shape in SHAPES:
        placed = calls[shape]
        body = app.status(placed.call_id, placed.operation_id)
        stored = app.container.get_blob_client(body["blobName"]).download_blob().readall()
        facts = wav_facts(stored[:4096], len(stored))
        assert facts is not None
        assert (facts.duration_seconds, len(stored)) == (1.0, ONE_SECOND_OF_AUDIO + 44)
        assert body["audioFormat"] == "pcm"
        assert body["durationSeconds"] == facts.duration_seconds
        assert body["sampleRate"] == facts.sample_rate
        assert body["channels"] == facts.channels
        assert body["bitsPerSample"] == facts.bits_per_sample


def test_a_body_that_is_not_a_wav_records_that_its_format_is_unknown(
    app: RunningApp, calls: dict[str, Placed]
) -> None:
    placed = calls["not a WAV"]
    row = app.ledger_row(placed.call_id, placed.operation_id)
    assert row is not None
    stored = app.container.get_blob_client(row["BlobName"]).download_blob().readall()
    assert wav_facts(stored[:4096], len(stored)) is None
    assert len(stored) == row["SizeBytes"] == ONE_SECOND_OF_AUDIO + 44

    assert row["AudioFormat"] == "unknown"
    assert not {"DurationSeconds", "SampleRate", "Channels", "BitsPerSample"} & set(row)
    body = app.status(placed.call_id, placed.operation_id)
    assert body["audioFormat"] == "unknown"
    assert body["contentType"] == "application/octet-stream"
    assert not {"durationSeconds", "sampleRate", "channels", "bitsPerSample"} & set(body)


def test_an_erased_call_names_nobody(app: RunningApp, calls: dict[str, Placed]) -> None:
    placed = calls["erase by call"]
    assert identity_columns(app.call_row(placed.call_id))  # it did, before
    assert app.http.delete("/api/recordings", params={"callId": placed.call_id}).status_code == 204
    assert_names_nobody(app, placed, "erased")
    assert app.call_row(placed.call_id)["ErasedAt"]


def test_an_erasure_by_caller_leaves_nobody_to_find(
    app: RunningApp, calls: dict[str, Placed]
) -> None:
    first, second = calls["erase by caller"], calls["erase by caller, again"]
    assert erase_by_caller(app, first.number) == {
        "erasedRecordings": 2,
        "erasedCalls": 2,
        "complete": True,
    }
    for placed in (first, second):
        assert_names_nobody(app, placed, "erased")
        assert app.blob_names(placed.call_id) == []
    assert erase_by_caller(app, first.number) == {
        "erasedRecordings": 0,
        "erasedCalls": 0,
        "complete": True,
    }


def test_once_expired_no_call_names_anybody(app: RunningApp, calls: dict[str, Placed]) -> None:
    for shape in SHAPES:
        placed = calls[shape]
        app.wait_for_status(placed.call_id, placed.operation_id, "expired", within=45)
        # The cleanup forgets the call's caller once its last recording expired: the same run,
        # after the recording's row.
        wait_until(
            lambda placed=placed: not identity_columns(app.call_row(placed.call_id)),
            within=10,
            what=f"the {shape} call's row to forget who called",
        )
        assert_names_nobody(app, placed, "expired")
    # Nothing of the PSTN caller is left to erase, and the answer says so.
    assert erase_by_caller(app, calls["pstn"].number) == {
        "erasedRecordings": 0,
        "erasedCalls": 0,
        "complete": True,
    }
