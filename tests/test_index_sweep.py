"""The hourly sweep of the recordings list's index rows that point to nothing (issue 27).

An index row is written before its recording's ``downloading`` write (shared/ledger/index.py), so
a crash between the two, or a redelivery whose index row lost to another delivery's, leaves one
behind. The list never returns such a row; the ``sweep_recordings_list`` timer deletes it.
Real Azurite, the registered timer function, rows written by the ledger's own verbs.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.functions.timer import TimerRequest

from shared.ledger import OperationLedger, OperationStatus
from shared.ledger.index import bucket_of, split_index_key, time_partition
from shared.retention import sweep_recordings_index
from tests.support.clock import Clock
from tests.support.counting import CountingTransport
from tests.support.functions import invoke

S = OperationStatus


def ids() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


async def index_row_exists(storage: Any, key: str) -> bool:
    parts = split_index_key(key)
    assert parts is not None
    try:
        await storage.table.get_entity(time_partition(parts[0]), parts[1])
    except ResourceNotFoundError:
        return False
    return True


async def orphan(storage: Any, at: datetime, *, written: datetime) -> str:
    """An index row whose recording's ``downloading`` write never came."""
    ledger = OperationLedger(storage.table, clock=Clock(written))
    return await ledger.index_recording(*ids(), at)


async def indexed_recording(storage: Any, at: datetime, *, written: datetime) -> str:
    """An index row and the operation row that carries its key, as the download lease writes."""
    ledger = OperationLedger(storage.table, clock=Clock(written))
    call_id, operation_id = ids()
    key = await ledger.index_recording(call_id, operation_id, at)
    await ledger.advance(call_id, operation_id, S.DOWNLOADING, IndexKey=key)
    return key


async def test_the_timer_sweeps_orphans_of_closed_hours_and_keeps_the_rest(storage: Any) -> None:
    now = datetime.now(UTC)
    two_hours_ago = now - timedelta(hours=2)
    swept = [
        await orphan(storage, two_hours_ago, written=two_hours_ago),
        await orphan(storage, now - timedelta(hours=3), written=two_hours_ago),
    ]
    kept = [
        # A recording the list shows.
        await indexed_recording(storage, two_hours_ago, written=two_hours_ago),
        # Written a moment ago into a closed hour (a late delivery): its row may be on its way.
        await orphan(storage, two_hours_ago, written=now - timedelta(minutes=1)),
        # The hour still open: swept once it has closed.
        await orphan(storage, now, written=now - timedelta(minutes=30)),
    ]

    await invoke("sweep_recordings_list", TimerRequest(past_due=False))

    assert [await index_row_exists(storage, key) for key in swept] == [False, False]
    assert [await index_row_exists(storage, key) for key in kept] == [True, True, True]


async def test_a_sweep_reads_per_hour_not_per_recording(storage: Any) -> None:
    """Three partition queries and one query of the operation rows, however many rows there are;
    the only other requests are the deletes of the orphans."""
    from azure.data.tables.aio import TableClient

    # A fixed hour of its own, so other tests' rows do not change the count.
    now = datetime(2031, 5, 4, 10, 20, tzinfo=UTC)
    hour = now - timedelta(hours=1, minutes=30)
    counts = []
    for recordings, orphans in ((2, 1), (30, 6)):
        for _ in range(recordings):
            await indexed_recording(storage, hour, written=hour)
        keys = [await orphan(storage, hour, written=hour) for _ in range(orphans)]
        transport = CountingTransport()
        table = TableClient.from_connection_string(
            storage.settings.storage_connection_string, storage.table_name, transport=transport
        )
        async with table:
            deleted = await sweep_recordings_index(OperationLedger(table), now=now)
        assert deleted == orphans
        assert not any([await index_row_exists(storage, key) for key in keys])
        reads = [path for method, path, _ in transport.sent if method == "GET"]
        deletes = [path for method, path, _ in transport.sent if method == "DELETE"]
        assert all("PartitionKey=" not in path for path in reads)  # queries, never a row
        counts.append((len(reads), len(deletes)))
    assert counts == [(4, 1), (4, 6)]


async def test_two_sweeps_at_once_delete_each_orphan_once(storage: Any) -> None:
    now = datetime(2031, 5, 5, 10, 20, tzinfo=UTC)
    hour = now - timedelta(hours=2)
    keys = [await orphan(storage, hour, written=hour) for _ in range(5)]
    live = await indexed_recording(storage, hour, written=hour)
    ledger = OperationLedger(storage.table)

    results = await asyncio.gather(
        sweep_recordings_index(ledger, now=now), sweep_recordings_index(ledger, now=now)
    )

    # The SDK takes a delete of a row already gone as done, so both runs may count one.
    assert all(1 <= swept <= 5 for swept in results)
    assert not any([await index_row_exists(storage, key) for key in keys])
    assert await index_row_exists(storage, live)


async def test_an_hour_without_index_rows_costs_its_partition_query_alone(storage: Any) -> None:
    from azure.data.tables.aio import TableClient

    now = datetime(2031, 6, 1, 3, 20, tzinfo=UTC)
    transport = CountingTransport()
    table = TableClient.from_connection_string(
        storage.settings.storage_connection_string, storage.table_name, transport=transport
    )
    async with table:
        assert await sweep_recordings_index(OperationLedger(table), now=now) == 0
    partitions = [
        query.get("$filter", [""])[0] for method, _, query in transport.sent if method == "GET"
    ]
    assert len(partitions) == 3
    assert all(
        time_partition(bucket_of(now - timedelta(hours=h))) in f
        for h, f in zip((1, 2, 3), partitions, strict=True)
    )
