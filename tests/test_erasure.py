"""Erasure: DELETE /api/recordings/..., and a download in flight never outlives its erasure.

Real Azurite, the simulator's recordings over real HTTP, the registered functions.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.graphsim import GraphSimulator
from shared.blob_layout import blob_name_for
from shared.download import DownloadRetry, new_http_client
from shared.download.worker import process_job
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus, Transition
from shared.settings import get_settings
from tests.support.functions import http_request, invoke, json_body

S = OperationStatus
NOW = datetime(2026, 11, 29, 21, 0, tzinfo=UTC)


def ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


async def stored(storage: Any, call_id: str, operation_id: str) -> str:
    """A recording as the worker leaves it: the blob, and its row ``stored``."""
    name = blob_name_for(call_id, operation_id)
    await storage.container.upload_blob(name, b"RIFF....WAVE", overwrite=True)
    ledger = OperationLedger(storage.table)
    await ledger.advance(call_id, operation_id, S.RUNNING)
    await ledger.advance(call_id, operation_id, S.STORED, BlobName=name)
    return name


async def blob_exists(storage: Any, name: str) -> bool:
    return bool(await storage.container.get_blob_client(name).exists())


async def delete_one(call_id: str, operation_id: str) -> Any:
    return await invoke(
        "erase_recording",
        http_request(
            "DELETE",
            f"http://localhost/api/recordings/{call_id}/{operation_id}",
            route_params={"callId": call_id, "operationId": operation_id},
        ),
    )


async def delete_call(call_id: str) -> Any:
    return await invoke(
        "erase_call_recordings",
        http_request("DELETE", "http://localhost/api/recordings", params={"callId": call_id}),
    )


async def row(storage: Any, call_id: str, operation_id: str) -> Any:
    return await OperationLedger(storage.table).get(call_id, operation_id)


# -- the routes ------------------------------------------------------------------------------


async def test_erasing_a_stored_recording_deletes_it_and_keeps_an_erased_row(
    storage: Any,
) -> None:
    call_id, operation_id = ids()
    name = await stored(storage, call_id, operation_id)

    response = await delete_one(call_id, operation_id)

    assert response.status_code == 204
    assert response.get_body() == b""
    assert not await blob_exists(storage, name)
    record = await row(storage, call_id, operation_id)
    assert record.status is S.ERASED
    assert record.get("ErasedAt") is not None
    # The status API shows the erasure, and no read URL.
    status = await invoke(
        "recording_status",
        http_request(
            "GET",
            f"http://localhost/api/recordings/{call_id}/{operation_id}",
            route_params={"callId": call_id, "operationId": operation_id},
        ),
    )
    body = json_body(status)
    assert body["status"] == "erased"
    assert "recordingUrl" not in body
    # Erasing again is harmless.
    assert (await delete_one(call_id, operation_id)).status_code == 204


async def test_erasing_a_transcribed_recording_deletes_its_transcript_too(storage: Any) -> None:
    from shared.blob_layout import transcript_blob_name

    call_id, operation_id = ids()
    name = await stored(storage, call_id, operation_id)
    transcript = transcript_blob_name(name)
    await storage.container.upload_blob(transcript, b'{"text": "hello"}', overwrite=True)

    assert (await delete_one(call_id, operation_id)).status_code == 204

    assert not await blob_exists(storage, name)
    assert not await blob_exists(storage, transcript)


async def test_nothing_moves_an_erased_row(storage: Any) -> None:
    call_id, operation_id = ids()
    await stored(storage, call_id, operation_id)
    assert (await delete_one(call_id, operation_id)).status_code == 204
    ledger = OperationLedger(storage.table)
    for late in (ledger.mark_expired, ledger.mark_completed):
        transition = await late(call_id, operation_id)
        assert (transition.changed, transition.record.status) == (False, S.ERASED)


async def test_an_unknown_operation_is_a_404_problem(storage: Any) -> None:
    call_id, operation_id = ids()
    response = await delete_one(call_id, operation_id)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert operation_id in json_body(response)["detail"]
    assert await row(storage, call_id, operation_id) is None  # no row was created


@pytest.mark.parametrize(
    ("call_id", "operation_id", "field"),
    [("..", str(uuid.uuid4()), "callId"), (str(uuid.uuid4()), "a/b", "operationId")],
)
async def test_a_malformed_id_is_a_400_naming_it(
    storage: Any, call_id: str, operation_id: str, field: str
) -> None:
    response = await delete_one(call_id, operation_id)
    assert response.status_code == 400
    assert json_body(response)["field"] == field


async def test_erasing_a_call_erases_each_of_its_recordings_and_nothing_else(
    storage: Any,
) -> None:
    call_id, first = ids()
    second = str(uuid.uuid4())
    other_call, other_operation = ids()
    names = [await stored(storage, call_id, op) for op in (first, second)]
    other = await stored(storage, other_call, other_operation)
    # An operation still running when the call is erased: its row is erased too.
    running = str(uuid.uuid4())
    await OperationLedger(storage.table).advance(call_id, running, S.RUNNING)

    response = await delete_call(call_id)

    assert response.status_code == 204
    assert [await blob_exists(storage, name) for name in names] == [False, False]
    assert await blob_exists(storage, other)
    statuses = [(await row(storage, call_id, op)).status for op in (first, second, running)]
    assert statuses == [S.ERASED] * 3
    assert (await row(storage, other_call, other_operation)).status is S.STORED


async def test_erasing_an_unknown_call_is_a_404_and_a_missing_call_id_a_400(
    storage: Any,
) -> None:
    unknown = await delete_call(str(uuid.uuid4()))
    assert (unknown.status_code, unknown.mimetype) == (404, "application/problem+json")
    missing = await invoke(
        "erase_call_recordings", http_request("DELETE", "http://localhost/api/recordings")
    )
    assert missing.status_code == 400
    assert json_body(missing)["field"] == "callId"


# -- erasure against a download in flight -----------------------------------------------------


def job_for(rec: Any, call_id: str, operation_id: str) -> DownloadJob:
    return DownloadJob(
        call_id=call_id,
        operation_id=operation_id,
        client_context=None,
        recording_location=rec.location,
        recording_access_token=rec.access_token,
        result_code=200,
        result_subcode=8515,
        received_at=NOW - timedelta(seconds=1),
    )


async def download(
    job: DownloadJob, storage: Any, http: httpx.AsyncClient, ledger: OperationLedger | None = None
) -> Any:
    return await process_job(
        job.to_message(),
        settings=get_settings(),
        http=http,
        container=storage.container,
        ledger=ledger or OperationLedger(storage.table),
        clock=lambda: NOW,
        retry=DownloadRetry(base_seconds=0.01),
    )


async def test_an_erasure_during_a_slow_download_leaves_no_blob(
    sim: GraphSimulator, storage: Any
) -> None:
    """The download is held once the recording's headers arrived; the erasure runs; then the
    body drips in (slow fault), the worker commits, sees the erasure and deletes its blob."""
    call_id, operation_id = ids()
    rec = sim.add_recording(size_bytes=200_000, faults=["slow:0.05"])
    headers_arrived, erasure_done = asyncio.Event(), asyncio.Event()

    async def hold(response: httpx.Response) -> None:
        headers_arrived.set()
        await erasure_done.wait()

    async with new_http_client() as http:
        http.event_hooks = {"response": [hold]}
        worker = asyncio.create_task(download(job_for(rec, call_id, operation_id), storage, http))
        await headers_arrived.wait()
        assert (await row(storage, call_id, operation_id)).status is S.DOWNLOADING
        response = await delete_one(call_id, operation_id)
        erasure_done.set()
        outcome = await worker

    assert response.status_code == 204
    assert outcome.outcome == "erased"
    assert rec.request_count == 1  # the body was fetched and committed, then deleted
    assert not await blob_exists(storage, blob_name_for(call_id, operation_id))
    assert (await row(storage, call_id, operation_id)).status is S.ERASED


class EraseBeforeStored(OperationLedger):
    """The other interleaving: the erasure lands between the worker's commit and its ledger write
    (the erasure's own blob delete then finds the committed blob)."""

    def __init__(self, storage: Any) -> None:
        super().__init__(storage.table)
        self.erasure: Any = None

    async def mark_stored(self, call_id: str, operation_id: str, **fields: Any) -> Transition:
        self.erasure = await delete_one(call_id, operation_id)
        return await super().mark_stored(call_id, operation_id, **fields)


async def test_an_erasure_between_commit_and_stored_leaves_no_blob(
    sim: GraphSimulator, storage: Any
) -> None:
    call_id, operation_id = ids()
    rec = sim.add_recording(size_bytes=70_000)
    ledger = EraseBeforeStored(storage)
    async with new_http_client() as http:
        outcome = await download(job_for(rec, call_id, operation_id), storage, http, ledger)
    assert ledger.erasure.status_code == 204
    assert outcome.outcome == "erased"
    assert not await blob_exists(storage, blob_name_for(call_id, operation_id))
    assert (await row(storage, call_id, operation_id)).status is S.ERASED


async def test_a_job_for_an_erased_operation_downloads_nothing(
    sim: GraphSimulator, storage: Any
) -> None:
    call_id, operation_id = ids()
    rec = sim.add_recording(size_bytes=10_000)
    ledger = OperationLedger(storage.table)
    await ledger.advance(call_id, operation_id, S.COMPLETED)
    assert (await delete_one(call_id, operation_id)).status_code == 204
    async with new_http_client() as http:
        outcome = await download(job_for(rec, call_id, operation_id), storage, http)
    assert outcome.outcome == "erased"
    assert rec.request_count == 0
    assert not await blob_exists(storage, blob_name_for(call_id, operation_id))
