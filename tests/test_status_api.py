"""GET /api/recordings/{callId}/{operationId} and GET /api/recordings?callId= against Azurite.

The read URL is proven by downloading the recording with plain httpx.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.ledger import OperationLedger, OperationStatus
from shared.retention import EXPIRES_AT_FORMAT
from shared.settings import get_settings
from tests.support.functions import http_request, invoke, json_body

S = OperationStatus
CALL = "57dab8b1-894c-409a-b240-bd8beae78896"
OPERATION = "0fe0623f-d628-42ed-b4bd-8ac290072cc5"


async def status(call_id: str, operation_id: str) -> Any:
    return await invoke(
        "recording_status",
        http_request(
            "GET",
            f"http://localhost/api/recordings/{call_id}/{operation_id}",
            route_params={"callId": call_id, "operationId": operation_id},
        ),
    )


async def store(
    storage: Any, call_id: str, operation_id: str, data: bytes, expires_at: datetime
) -> str:
    """Upload a recording with the worker's conventions and move its row to stored."""
    name = f"{call_id}/{operation_id}.wav"
    await storage.container.upload_blob(
        name,
        data,
        overwrite=True,
        metadata={"callid": call_id, "operationid": operation_id},
        tags={"expiresAt": expires_at.astimezone(UTC).strftime(EXPIRES_AT_FORMAT)},
    )
    ledger = OperationLedger(storage.table)
    await ledger.advance(call_id, operation_id, S.REQUESTED, ClientContext="ctx-1")
    await ledger.advance(call_id, operation_id, S.COMPLETED, ResultCode=200, ResultSubcode=8515)
    await ledger.advance(
        call_id,
        operation_id,
        S.STORED,
        BlobName=name,
        SizeBytes=len(data),
        Sha256=hashlib.sha256(data).hexdigest(),
        ExpiresAt=expires_at,
    )
    return name


async def test_stored_recording_has_a_read_url_that_downloads_it(storage: Any) -> None:
    data = b"RIFF" + os.urandom(64 * 1024)
    await store(storage, CALL, OPERATION, data, datetime.now(UTC) + timedelta(minutes=60))

    # The id in another of Graph's spellings finds the same row.
    response = await status(CALL.replace("-", "").upper(), OPERATION)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = json_body(response)
    assert body["callId"] == CALL
    assert body["operationId"] == OPERATION
    assert body["status"] == "stored"
    assert body["clientContext"] == "ctx-1"
    assert body["resultSubcode"] == 8515
    assert body["sizeBytes"] == len(data)
    assert body["blobName"] == f"{CALL}/{OPERATION}.wav"
    async with httpx.AsyncClient(timeout=10) as client:
        download = await client.get(body["recordingUrl"])
        assert download.status_code == 200
        assert download.content == data
        # Read-only: the same URL cannot overwrite or delete the recording.
        overwrite = await client.put(
            body["recordingUrl"], content=b"x", headers={"x-ms-blob-type": "BlockBlob"}
        )
        assert overwrite.status_code == 403
        assert (await client.delete(body["recordingUrl"])).status_code == 403
    query = parse_qs(urlsplit(body["recordingUrl"]).query)
    assert query["sp"] == ["r"]
    url_expiry = datetime.fromisoformat(body["recordingUrlExpiresAt"])
    ttl = timedelta(minutes=get_settings().status_url_ttl_minutes)
    assert url_expiry <= datetime.now(UTC) + ttl
    assert url_expiry > datetime.now(UTC) + ttl - timedelta(minutes=1)


async def test_read_url_never_outlives_the_recording(storage: Any) -> None:
    expires_at = (datetime.now(UTC) + timedelta(minutes=2)).replace(microsecond=0)
    await store(storage, CALL, OPERATION, b"RIFF-short", expires_at)
    body = json_body(await status(CALL, OPERATION))
    assert datetime.fromisoformat(body["recordingUrlExpiresAt"]) == expires_at


async def test_no_read_url_once_retention_has_passed(storage: Any) -> None:
    await store(storage, CALL, OPERATION, b"RIFF-old", datetime.now(UTC) - timedelta(seconds=1))
    body = json_body(await status(CALL, OPERATION))
    assert body["status"] == "stored"
    assert "recordingUrl" not in body


@pytest.mark.parametrize("status_now", [S.REQUESTED, S.RUNNING, S.COMPLETED, S.DOWNLOADING])
async def test_no_read_url_before_the_recording_is_stored(
    storage: Any, status_now: OperationStatus
) -> None:
    await OperationLedger(storage.table).advance(CALL, OPERATION, status_now)
    response = await status(CALL, OPERATION)
    assert response.status_code == 200
    body = json_body(response)
    assert body["status"] == status_now.value
    assert "recordingUrl" not in body


async def test_no_read_url_for_an_expired_recording(storage: Any) -> None:
    name = await store(storage, CALL, OPERATION, b"RIFF", datetime.now(UTC) + timedelta(hours=1))
    await OperationLedger(storage.table).advance(CALL, OPERATION, S.EXPIRED)
    body = json_body(await status(CALL, OPERATION))
    assert body["status"] == "expired"
    assert body["blobName"] == name
    assert "recordingUrl" not in body


async def test_unknown_operation_is_404_problem(storage: Any) -> None:
    await OperationLedger(storage.table).advance(CALL, OPERATION, S.RUNNING)
    response = await status(CALL, "7e1b3a52-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    problem = json_body(response)
    assert problem["status"] == 404
    assert "7e1b3a52-0000-4000-8000-000000000000" in problem["detail"]


async def test_an_overlong_id_is_a_400_naming_the_field(storage: Any) -> None:
    response = await status(CALL, "x" * 300)
    assert response.status_code == 400
    problem = json_body(response)
    assert problem["field"] == "operationId"
    assert "operationId" in problem["detail"]


async def list_call(params: dict[str, str]) -> Any:
    return await invoke(
        "list_recordings",
        http_request("GET", "http://localhost/api/recordings", params=params),
    )


async def test_list_returns_the_operations_of_one_call(storage: Any) -> None:
    ledger = OperationLedger(storage.table)
    await ledger.advance(CALL, OPERATION, S.RUNNING)
    await ledger.advance(CALL, "op-second", S.FAILED, FailureReason="download failed")
    await ledger.advance("another-call", "op-other", S.RUNNING)
    assert await ledger.claim(CALL, "recording-started")  # claims are not operations

    response = await list_call({"callId": CALL.upper()})

    assert response.status_code == 200
    body = json_body(response)
    assert body["callId"] == CALL
    operations = {item["operationId"]: item for item in body["operations"]}
    assert set(operations) == {OPERATION, "op-second"}
    assert operations["op-second"]["failureReason"] == "download failed"
    assert all("recordingUrl" not in item for item in body["operations"])


async def test_list_of_an_unknown_call_is_empty(storage: Any) -> None:
    body = json_body(await list_call({"callId": "nobody"}))
    assert body == {"callId": "nobody", "operations": []}


async def test_list_without_call_id_is_a_400_naming_it(storage: Any) -> None:
    response = await list_call({})
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = json_body(response)
    assert problem["field"] == "callId"
    assert "callId" in problem["detail"]
