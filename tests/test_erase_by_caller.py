"""Erasure by caller (a data subject's request) beats a download in flight and a redelivered job,
as the erasure of one call does (tests/test_erasure.py): the caller's index names the call from
the moment its metadata was captured, and each call is erased guard row first.

Real Azurite, the simulator's recordings over real HTTP, the registered functions.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from devtools.graphsim import GraphSimulator
from shared.blob_layout import blob_name_for
from shared.download import new_http_client
from shared.ledger import OperationLedger, OperationStatus
from shared.ledger.identity import call_metadata_columns
from shared.settings import get_settings
from tests.test_erasure import blob_exists, download, ids, job_for, row, stored
from tests.test_who_called import call, erase_by_caller

S = OperationStatus


def a_number() -> str:
    # One caller per test: the caller index outlives a test's rows in the shared table.
    return f"+3361{uuid.uuid4().int % 10**7:07d}"


async def capture_caller(storage: Any, call_id: str, number: str) -> None:
    """Who called, as the bot flow captures it: under the configured ``CALLER_IDENTITY``."""
    columns = call_metadata_columns(
        call({"phone": {"id": number}}),
        privacy=get_settings().caller_identity,
        source="notification",
    )
    await OperationLedger(storage.table).mark_call_metadata(call_id, columns)


async def test_an_erasure_by_caller_during_a_slow_download_leaves_no_blob(
    sim: GraphSimulator, storage: Any
) -> None:
    """The download is held once the recording's headers arrived; the caller is erased; then the
    body drips in, the worker commits, sees the erasure and deletes its blob."""
    call_id, operation_id = ids()
    number = a_number()
    await capture_caller(storage, call_id, number)
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
        answer = await erase_by_caller(number)
        erasure_done.set()
        outcome = await worker

    assert answer == {"erasedRecordings": 1, "erasedCalls": 1, "complete": True}
    assert outcome.outcome == "erased"
    assert rec.request_count == 1  # the body was fetched and committed, then deleted
    assert not await blob_exists(storage, blob_name_for(call_id, operation_id))
    assert (await row(storage, call_id, operation_id)).status is S.ERASED


@pytest.mark.parametrize(
    "on_the_ledger",
    [True, False],
    ids=["completion recorded, job redelivered", "completion still on the queue, no row"],
)
async def test_a_job_delivered_after_an_erasure_by_caller_downloads_nothing(
    sim: GraphSimulator, storage: Any, on_the_ledger: bool
) -> None:
    """Whether the completion is on the ledger (a redelivery) or still waits on the queue (no
    row, so the erasure erases no recording), the job delivered afterwards stores nothing: the
    caller's index named the call from its capture."""
    call_id, operation_id = ids()
    number = a_number()
    await capture_caller(storage, call_id, number)
    rec = sim.add_recording(size_bytes=10_000)
    if on_the_ledger:
        await OperationLedger(storage.table).advance(call_id, operation_id, S.COMPLETED)

    erased = 1 if on_the_ledger else 0
    assert await erase_by_caller(number) == {
        "erasedRecordings": erased,
        "erasedCalls": erased,
        "complete": True,
    }
    async with new_http_client() as http:
        outcome = await download(job_for(rec, call_id, operation_id), storage, http)

    assert outcome.outcome == "erased"
    assert rec.request_count == 0
    assert not await blob_exists(storage, blob_name_for(call_id, operation_id))
    assert (await row(storage, call_id, operation_id)).status is S.ERASED


async def test_a_caller_never_captured_is_found_nowhere(
    storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``CALLER_IDENTITY=none`` no call names its caller, so no erasure by caller can find
    one: the recording stays until its retention or an erasure by call."""
    monkeypatch.setenv("CALLER_IDENTITY", "none")
    get_settings.cache_clear()
    call_id, operation_id = ids()
    number = a_number()
    await capture_caller(storage, call_id, number)
    name = await stored(storage, call_id, operation_id)

    assert await erase_by_caller(number) == {
        "erasedRecordings": 0,
        "erasedCalls": 0,
        "complete": True,
    }
    assert await blob_exists(storage, name)
    assert (await row(storage, call_id, operation_id)).status is S.STORED


async def test_a_caller_with_more_calls_than_one_request_erases_is_erased_over_several(
    storage: Any,
) -> None:
    """Each request erases at most ``max_calls`` calls and says whether any is left; repeated, it
    goes on where it stopped, and no call of the caller is left out."""
    from shared.erasure import erase_caller

    number = a_number()
    calls = [ids() for _ in range(5)]
    for call_id, operation_id in calls:
        await capture_caller(storage, call_id, number)
        await stored(storage, call_id, operation_id)
    ledger = OperationLedger(storage.table)

    answers = []
    while not answers or not answers[-1].complete:
        answer = await erase_caller(number, ledger=ledger, container=storage.container, max_calls=2)
        assert answer is not None
        answers.append(answer)
        assert len(answers) <= 4, "the erasure must end"

    assert [len({e.call_id for e in a.erased}) for a in answers] == [2, 2, 1]
    assert [a.complete for a in answers] == [False, False, True]
    for call_id, operation_id in calls:
        assert (await row(storage, call_id, operation_id)).status is S.ERASED
        assert not await blob_exists(storage, blob_name_for(call_id, operation_id))
