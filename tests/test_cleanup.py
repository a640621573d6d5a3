"""The retention cleanup against a real Azurite: expiry by tag query and batch delete, poison purge,
abandoned operations, the ledger horizon, bounded runs, overlapping runs and the timer function.

Time is injected (a clock argument), never slept; the blob expiry tags use a fixed base time since
they are plain strings to Storage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from pydantic import SecretStr

from shared.blob_layout import EXPIRES_AT_FORMAT
from shared.jobs import DownloadJob
from shared.ledger import NO_COMPLETION_REASON, POISONED_REASON, OperationLedger, OperationStatus
from shared.retention import (
    CleanupLimits,
    CleanupSummary,
    run_cleanup,
)
from shared.settings import Settings, get_settings
from tests.support.clock import Clock
from tests.support.counting import CountingTransport
from tests.support.functions import invoke
from tests.support.recordings import blob_names, put_recording

S = OperationStatus
T0 = datetime(2030, 1, 7, 9, 30, tzinfo=UTC)


@pytest.fixture
async def counted(storage: Any) -> AsyncIterator[tuple[Any, CountingTransport]]:
    """A second client for the recordings container whose requests are counted."""
    from azure.storage.blob.aio import BlobServiceClient

    transport = CountingTransport()
    service = BlobServiceClient.from_connection_string(
        storage.settings.storage_connection_string, transport=transport
    )
    yield service.get_container_client(storage.container_name), transport
    await service.close()


def blob_name(call_id: str, operation_id: str) -> str:
    return f"{call_id}/{operation_id}.wav"


async def stored_row(
    ledger: OperationLedger, call_id: str, operation_id: str, expires_at: datetime
) -> None:
    for status in (S.RUNNING, S.COMPLETED, S.DOWNLOADING):
        await ledger.advance(call_id, operation_id, status)
    await ledger.advance(
        call_id,
        operation_id,
        S.STORED,
        BlobName=blob_name(call_id, operation_id),
        ExpiresAt=expires_at,
    )


async def cleanup(
    storage: Any,
    clock: Clock,
    *,
    container: Any = None,
    settings: Settings | None = None,
    limits: CleanupLimits | None = None,
) -> CleanupSummary:
    return await run_cleanup(
        container=container or storage.container,
        ledger=OperationLedger(storage.table, clock=clock),
        poison_queue=storage.poison_queue,
        settings=settings or get_settings(),
        clock=clock,
        limits=limits,
    )


# --- expiry ------------------------------------------------------------------------------------


async def test_recording_expires_exactly_at_its_retention(storage: Any) -> None:
    retention = timedelta(minutes=get_settings().recording_retention_minutes)
    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    early, late = T0 + retention, T0 + timedelta(minutes=10) + retention
    await put_recording(storage, "call-1", "op-early", early)
    await put_recording(storage, "call-1", "op-late", late)
    await stored_row(ledger, "call-1", "op-early", early)
    await stored_row(ledger, "call-1", "op-late", late)

    clock.now = early - timedelta(seconds=1)
    summary = await cleanup(storage, clock)
    assert summary.recordings_found_expired == 0
    assert await blob_names(storage) == {"call-1/op-early.wav", "call-1/op-late.wav"}

    clock.now = early + timedelta(seconds=1)
    summary = await cleanup(storage, clock)
    assert summary.recordings_deleted == 1
    assert summary.rows_marked_expired == 1
    assert summary.errors == 0
    assert await blob_names(storage) == {"call-1/op-late.wav"}
    expired = await ledger.get("call-1", "op-early")
    assert expired is not None
    assert expired.status is S.EXPIRED
    assert expired.get("ExpiredAt") == clock.now
    untouched = await ledger.get("call-1", "op-late")
    assert untouched is not None
    assert untouched.status is S.STORED


async def test_cleanup_touches_only_expired_recordings(
    storage: Any, counted: tuple[Any, CountingTransport]
) -> None:
    container, transport = counted
    clock = Clock(T0)
    gate = asyncio.Semaphore(32)

    async def put(index: int, expires_at: datetime) -> None:
        async with gate:
            await put_recording(storage, f"call-{index}", f"op-{index}", expires_at)

    await asyncio.gather(*(put(i, T0 + timedelta(minutes=1 + i)) for i in range(300)))
    await asyncio.gather(*(put(i, T0 - timedelta(minutes=i + 1)) for i in range(300, 305)))

    summary = await cleanup(storage, clock, container=container)

    assert summary.recordings_found_expired == 5
    assert summary.recordings_deleted == 5
    # One tag query and one batch delete, whatever the number of stored recordings.
    blob_requests = [
        (method, query.get("comp", [""])[0], query.get("restype", [""])[0])
        for method, _, query in transport.sent
    ]
    assert blob_requests == [("GET", "blobs", "container"), ("POST", "batch", "container")]
    where = transport.sent[0][2]["where"][0]
    assert where == f"\"expiresAt\" < '{T0.strftime(EXPIRES_AT_FORMAT)}'"
    assert not any(query.get("comp") == ["list"] for _, _, query in transport.sent)
    remaining = await blob_names(storage)
    assert len(remaining) == 300
    assert not any(name.startswith(("call-300/", "call-304/")) for name in remaining)


async def test_more_than_one_batch_of_expired_recordings(
    storage: Any, counted: tuple[Any, CountingTransport]
) -> None:
    container, transport = counted
    gate = asyncio.Semaphore(32)

    async def put(index: int) -> None:
        async with gate:
            await put_recording(storage, f"c{index}", f"o{index}", T0 - timedelta(seconds=index))

    await asyncio.gather(*(put(i) for i in range(1, 261)))
    summary = await cleanup(storage, Clock(T0), container=container)
    assert summary.recordings_deleted == 260
    batches = [q for method, _, q in transport.sent if method == "POST" and q["comp"] == ["batch"]]
    assert len(batches) == 2  # 256 + 4: the Blob Batch API's limit per request
    assert await blob_names(storage) == set()


async def test_work_per_run_is_bounded_and_the_next_run_continues(storage: Any) -> None:
    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    for index in range(5):
        expires_at = T0 - timedelta(minutes=index + 1)
        await put_recording(storage, "call-b", f"op-{index}", expires_at)
        await stored_row(ledger, "call-b", f"op-{index}", expires_at)
    limits = CleanupLimits(expired_recordings=2)

    deleted = []
    for _ in range(4):
        summary = await cleanup(storage, clock, limits=limits)
        deleted.append(summary.recordings_deleted)
        assert ("expired_recordings" in summary.limits_reached) == (summary.recordings_deleted == 2)
    assert deleted == [2, 2, 1, 0]
    records = await ledger.list_call("call-b")
    assert [record.status for record in records] == [S.EXPIRED] * 5


async def test_two_runs_at_once_converge(storage: Any) -> None:
    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    for index in range(6):
        expires_at = T0 - timedelta(minutes=1)
        await put_recording(storage, "call-r", f"op-{index}", expires_at)
        await stored_row(ledger, "call-r", f"op-{index}", expires_at)
    await put_recording(storage, "call-r", "op-keep", T0 + timedelta(minutes=1))

    first, second = await asyncio.gather(cleanup(storage, clock), cleanup(storage, clock))

    assert first.errors == 0
    assert second.errors == 0
    handled = (
        first.recordings_deleted
        + second.recordings_deleted
        + first.recordings_already_gone
        + second.recordings_already_gone
    )
    assert first.recordings_deleted + second.recordings_deleted == 6
    assert handled == first.recordings_found_expired + second.recordings_found_expired
    assert first.rows_marked_expired + second.rows_marked_expired == 6
    assert await blob_names(storage) == {"call-r/op-keep.wav"}
    records = await ledger.list_call("call-r")
    assert [record.status for record in records] == [S.EXPIRED] * 6


async def test_each_expired_row_costs_one_guarded_write_and_no_read(storage: Any) -> None:
    """One query reads the stored rows' ETags; each row then gets one If-Match merge, no GET."""
    from azure.data.tables.aio import TableClient

    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    for index in range(8):
        expires_at = T0 - timedelta(minutes=1)
        await put_recording(storage, f"call-e{index}", "op-e", expires_at)
        await stored_row(ledger, f"call-e{index}", "op-e", expires_at)
    transport = CountingTransport()
    table = TableClient.from_connection_string(
        storage.settings.storage_connection_string, storage.table_name, transport=transport
    )
    async with table:
        summary = await run_cleanup(
            container=storage.container,
            ledger=OperationLedger(table, clock=clock),
            poison_queue=storage.poison_queue,
            settings=get_settings(),
            clock=clock,
        )

    assert summary.rows_marked_expired == 8
    writes = [path for method, path, _ in transport.sent if method in {"PATCH", "MERGE", "PUT"}]
    assert len(writes) == 8
    # Reads are table queries (this step's, the abandoned step's, the horizon's), never a row.
    reads = [path for method, path, _ in transport.sent if method == "GET"]
    assert all("PartitionKey=" not in path for path in reads)
    assert len(reads) <= 3
    records = [await ledger.get(f"call-e{index}", "op-e") for index in range(8)]
    assert [record.status if record else None for record in records] == [S.EXPIRED] * 8
    assert all(record and record.get("ExpiredAt") == clock.now for record in records)


async def test_a_row_already_expired_keeps_its_first_stamp(storage: Any) -> None:
    """Marking again (an overlapping run) neither moves the row nor rewrites its stamp."""
    from shared.retention import mark_rows_expired

    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    expires_at = T0 - timedelta(minutes=1)
    await stored_row(ledger, "call-g", "op-g", expires_at)
    first = CleanupSummary()
    await mark_rows_expired(
        ledger, [("call-g/op-g.wav", "call-g", "op-g")], now=T0, limit=10, summary=first
    )
    later = T0 + timedelta(minutes=5)
    second = CleanupSummary()
    # Same target again, as an overlapping run would: the row is expired already, nothing moves.
    await mark_rows_expired(
        ledger, [("call-g/op-g.wav", "call-g", "op-g")], now=later, limit=10, summary=second
    )

    assert (first.rows_marked_expired, second.rows_marked_expired) == (1, 0)
    record = await ledger.get("call-g", "op-g")
    assert record is not None
    assert record.status is S.EXPIRED
    assert record.get("ExpiredAt") == T0  # the first write's stamp, not overwritten


async def test_a_row_changed_between_the_query_and_the_merge_is_not_overwritten(
    storage: Any,
) -> None:
    """Another writer moves the row after its ETag was read: the merge gets 412, nothing moves."""
    from azure.data.tables.aio import TableClient

    from shared.retention import mark_rows_expired

    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    await stored_row(ledger, "call-race", "op-race", T0 - timedelta(minutes=1))
    other_run = OperationLedger(storage.table, clock=Clock(T0 - timedelta(seconds=30)))

    class RacedTable(TableClient):
        """The real table client; an overlapping run writes just before this one's merge."""

        async def update_entity(self, *args: Any, **kwargs: Any) -> Any:
            await other_run.mark_expired("call-race", "op-race")
            return await super().update_entity(*args, **kwargs)

    raced = RacedTable.from_connection_string(
        storage.settings.storage_connection_string, storage.table_name
    )
    summary = CleanupSummary()
    async with raced:
        await mark_rows_expired(
            OperationLedger(raced, clock=clock),
            [("call-race/op-race.wav", "call-race", "op-race")],
            now=T0,
            limit=10,
            summary=summary,
        )

    assert summary.rows_marked_expired == 0  # the other run marked it: counted once, there
    assert summary.errors == 0
    record = await ledger.get("call-race", "op-race")
    assert record is not None
    assert record.status is S.EXPIRED
    assert record.get("ExpiredAt") == T0 - timedelta(seconds=30)  # the other run's stamp


async def test_a_recording_without_a_ledger_row_is_still_deleted(storage: Any) -> None:
    clock = Clock(T0)
    await put_recording(storage, "call-x", "op-x", T0 - timedelta(minutes=1))
    summary = await cleanup(storage, clock)
    assert summary.recordings_deleted == 1
    assert await blob_names(storage) == set()
    record = await OperationLedger(storage.table).get("call-x", "op-x")
    assert record is not None
    assert record.status is S.EXPIRED  # the ledger learns about the recording it had missed


# --- poison queue ------------------------------------------------------------------------------


def job(call_id: str, operation_id: str, token: str) -> DownloadJob:
    return DownloadJob(
        call_id=call_id,
        operation_id=operation_id,
        recording_location="https://file.location/17e3b46c-f61d-4f4d-9635-c626ef18e6ad",
        recording_access_token=SecretStr(token),
        result_code=200,
        result_subcode=8515,
        result_message="Action completed, max record duration reached.",
        received_at=datetime.now(UTC),
    )


async def queue_length(queue: Any) -> int:
    properties = await queue.get_queue_properties()
    count: int = properties.approximate_message_count
    return count


async def test_poison_messages_are_purged_after_their_failure_is_recorded(
    storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = OperationLedger(storage.table)
    await ledger.advance("call-p", "op-running", S.RUNNING)
    await ledger.advance("call-p", "op-stored", S.STORED, BlobName="call-p/op-stored.wav")
    tokens = ["eyJ0eXAi.token-one", "eyJ0eXAi.token-two", "eyJ0eXAi.token-three"]
    for operation_id, token in zip(("op-running", "op-stored", "op-unknown"), tokens, strict=True):
        await storage.poison_queue.send_message(job("call-p", operation_id, token).to_message())
    await storage.poison_queue.send_message("this is not a download job")
    max_age = timedelta(minutes=get_settings().poison_message_max_age_minutes)
    # Azurite stamps insertion with the real time; the run happens "later" by the injected clock.
    clock = Clock(datetime.now(UTC) + max_age + timedelta(minutes=1))

    with caplog.at_level(logging.DEBUG):
        summary = await cleanup(storage, clock)

    assert summary.poison_messages_purged == 4
    assert summary.poison_messages_unreadable == 1
    assert summary.poison_failures_recorded == 2
    assert summary.errors == 0
    assert await queue_length(storage.poison_queue) == 0
    failed = await ledger.get("call-p", "op-running")
    assert failed is not None
    assert failed.status is S.FAILED
    assert failed.get("FailureReason") == POISONED_REASON
    assert failed.get("ResultSubcode") == 8515
    unknown = await ledger.get("call-p", "op-unknown")
    assert unknown is not None
    assert unknown.status is S.FAILED
    stored = await ledger.get("call-p", "op-stored")
    assert stored is not None
    assert stored.status is S.STORED  # a poisoned duplicate never undoes a stored recording
    for token in tokens:
        assert token not in caplog.text
    summary_lines = [r for r in caplog.records if r.getMessage().startswith("cleanup: recordings_")]
    assert len(summary_lines) == 1
    assert "poison_messages_purged=4" in summary_lines[0].getMessage()


async def test_young_poison_messages_stay_and_the_queue_keeps_no_old_token(storage: Any) -> None:
    settings = get_settings()
    max_age = timedelta(minutes=settings.poison_message_max_age_minutes)
    await storage.poison_queue.send_message(job("call-y", "op-old", "token-old").to_message())
    # Insertion times have one-second resolution: wait (bounded) until the second one is later.
    first = (await storage.poison_queue.peek_messages(max_messages=1))[0]
    for _ in range(30):
        if datetime.now(UTC) - first.inserted_on >= timedelta(seconds=1.05):
            break
        await asyncio.sleep(0.05)
    await storage.poison_queue.send_message(job("call-y", "op-young", "token-young").to_message())
    peeked = await storage.poison_queue.peek_messages(max_messages=32)
    assert len(peeked) == 2
    assert peeked[1].inserted_on > peeked[0].inserted_on

    # Nothing is old yet at the real time: both stay, visible and unchanged.
    summary = await cleanup(storage, Clock(datetime.now(UTC)))
    assert summary.poison_messages_purged == 0
    assert summary.poison_messages_kept >= 1
    assert len(await storage.poison_queue.peek_messages(max_messages=32)) == 2

    # At exactly the age limit of the younger one, only the older one is past it.
    summary = await cleanup(storage, Clock(peeked[1].inserted_on + max_age))
    assert summary.poison_messages_purged == 1
    assert await queue_length(storage.poison_queue) == 1
    left = await storage.poison_queue.peek_messages(max_messages=32)
    assert len(left) == 1
    assert DownloadJob.from_message(left[0].content).operation_id == "op-young"
    ledger = OperationLedger(storage.table)
    old = await ledger.get("call-y", "op-old")
    assert old is not None
    assert old.status is S.FAILED
    assert await ledger.get("call-y", "op-young") is None


async def test_a_message_that_is_not_base64_does_not_block_the_purge(storage: Any) -> None:
    from azure.storage.queue.aio import QueueClient

    # Written without the base64 codec, as a foreign writer might: the trigger could not read it.
    async with QueueClient.from_connection_string(
        storage.settings.storage_connection_string, storage.poison_queue_name
    ) as raw:
        await raw.send_message('{"recording_access_token": "raw-token", not base64}')
    await storage.poison_queue.send_message(job("call-n", "op-n", "token-n").to_message())
    max_age = timedelta(minutes=get_settings().poison_message_max_age_minutes)

    summary = await cleanup(storage, Clock(datetime.now(UTC) + max_age * 2))

    assert summary.errors == 0
    assert summary.poison_messages_purged == 2
    assert summary.poison_messages_unreadable == 1
    assert await queue_length(storage.poison_queue) == 0
    record = await OperationLedger(storage.table).get("call-n", "op-n")
    assert record is not None
    assert record.status is S.FAILED


async def test_a_failing_step_neither_stops_the_others_nor_leaks_message_text(
    storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from azure.storage.queue import BinaryBase64DecodePolicy
    from azure.storage.queue.aio import QueueClient

    connection = storage.settings.storage_connection_string
    async with QueueClient.from_connection_string(connection, storage.poison_queue_name) as raw:
        await raw.send_message("recording_access_token=eyJraw.leaky-token (not base64)")
    await put_recording(storage, "call-f", "op-f", T0 - timedelta(minutes=1))
    # A strict base64 client: every receive fails on the message above.
    strict = QueueClient.from_connection_string(
        connection, storage.poison_queue_name, message_decode_policy=BinaryBase64DecodePolicy()
    )
    clock = Clock(T0)
    with caplog.at_level(logging.DEBUG):
        async with strict:
            summary = await run_cleanup(
                container=storage.container,
                ledger=OperationLedger(storage.table, clock=clock),
                poison_queue=strict,
                settings=get_settings(),
                clock=clock,
            )

    assert summary.failed_steps == ["purge_poison_messages"]
    assert summary.recordings_deleted == 1  # the expiry step ran all the same
    assert "leaky-token" not in caplog.text
    assert any(
        r.levelno == logging.WARNING and "errors=1" in r.getMessage() for r in caplog.records
    )


# --- abandoned operations and the ledger horizon -------------------------------------------------


async def test_operations_left_running_are_settled_as_abandoned(storage: Any) -> None:
    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    await ledger.advance("call-a", "op-running", S.RUNNING)
    await ledger.advance("call-a", "op-requested", S.REQUESTED)
    await ledger.advance("call-a", "op-done", S.RUNNING)
    await ledger.advance("call-a", "op-done", S.COMPLETED)
    clock.now = T0 + timedelta(minutes=5)
    await ledger.advance("call-a", "op-recent", S.REQUESTED)
    await ledger.advance("call-a", "op-recent", S.RUNNING)
    after = timedelta(minutes=get_settings().abandon_running_after_minutes)

    clock.now = T0 + after + timedelta(seconds=1)
    summary = await cleanup(storage, clock)

    assert summary.operations_abandoned == 2
    statuses = {r.operation_id: r for r in await ledger.list_call("call-a")}
    assert statuses["op-running"].status is S.ABANDONED
    assert statuses["op-running"].get("FailureReason") == NO_COMPLETION_REASON
    assert statuses["op-requested"].status is S.ABANDONED
    assert statuses["op-done"].status is S.COMPLETED
    assert statuses["op-recent"].status is S.RUNNING

    # A completion that arrives late still wins over abandoned (the recording exists).
    await ledger.advance("call-a", "op-running", S.COMPLETED)
    record = await ledger.get("call-a", "op-running")
    assert record is not None
    assert record.status is S.COMPLETED
    again = await cleanup(storage, clock)
    assert again.operations_abandoned == 0


async def test_ledger_rows_and_claims_older_than_the_horizon_are_deleted(storage: Any) -> None:
    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    await ledger.advance("call-old", "op-old", S.FAILED)
    assert await ledger.claim("call-old", "recording-started")
    horizon = timedelta(days=get_settings().ledger_retention_days)
    clock.now = T0 + horizon - timedelta(hours=1)
    await ledger.advance("call-new", "op-new", S.FAILED)
    assert await ledger.claim("call-new", "recording-started")

    clock.now = T0 + horizon + timedelta(minutes=1)
    summary = await cleanup(storage, clock)

    assert summary.ledger_rows_deleted == 1
    assert summary.claim_rows_deleted == 1
    assert await ledger.get("call-old", "op-old") is None
    assert await ledger.claim("call-old", "recording-started")  # the old claim is gone
    assert await ledger.get("call-new", "op-new") is not None
    assert not await ledger.claim("call-new", "recording-started")


async def test_ledger_horizon_is_bounded_per_run(storage: Any) -> None:
    clock = Clock(T0)
    ledger = OperationLedger(storage.table, clock=clock)
    for index in range(5):
        await ledger.advance("call-h", f"op-{index}", S.FAILED)
    clock.now = T0 + timedelta(days=get_settings().ledger_retention_days + 1)
    first = await cleanup(storage, clock, limits=CleanupLimits(ledger_rows=3))
    second = await cleanup(storage, clock, limits=CleanupLimits(ledger_rows=3))
    assert (first.ledger_rows_deleted, second.ledger_rows_deleted) == (3, 2)
    assert "ledger_rows" in first.limits_reached
    assert "ledger_rows" not in second.limits_reached


# --- the timer function --------------------------------------------------------------------------


async def test_timer_function_runs_the_cleanup(
    storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC)
    await put_recording(storage, "call-t", "op-expired", now - timedelta(minutes=1))
    await put_recording(storage, "call-t", "op-live", now + timedelta(minutes=30))

    with caplog.at_level(logging.INFO):
        await invoke("cleanup", TimerRequest(past_due=True))

    assert await blob_names(storage) == {"call-t/op-live.wav"}
    record = await OperationLedger(storage.table).get("call-t", "op-expired")
    assert record is not None
    assert record.status is S.EXPIRED
    messages = [r.getMessage() for r in caplog.records]
    assert any("past due" in m for m in messages)
    assert sum(m.startswith("cleanup: recordings_found_expired=1 ") for m in messages) == 1
