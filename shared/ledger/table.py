"""Reading and advancing ledger rows: the storage mechanics, ETag-guarded and forward-only.

Many instances write the same row (the API, the webhook, the worker, the bot flow, the cleanup),
possibly with events out of order or twice. Every write goes through one conflict retry
(:meth:`LedgerTable._rewrite`): decide on the row, write on its ETag, decide again if someone
wrote first. A transition that would move a row backwards is ignored, so the final state does
not depend on the order events arrive in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shared.clock import utc_now
from shared.graph.ids import normalize_id
from shared.ledger.identity import (
    IDENTITY_COLUMNS,
    IdentityColumn,
    caller_partition,
    cleared_identity,
)
from shared.ledger.index import (
    RecordingQuery,
    buckets_between,
    index_key,
    split_index_key,
    time_partition,
    time_row_key,
)
from shared.ledger.rows import (
    CALL_GUARD_ROW,
    NO_GUARD,
    RANK,
    RETENTION_OVER,
    ROW_KIND_CALL,
    ROW_KIND_CALLER_INDEX,
    ROW_KIND_CLAIM,
    ROW_KIND_OPERATION,
    ROW_KIND_TIME_INDEX,
    STAMP,
    CallGuard,
    Column,
    OperationRecord,
    OperationStatus,
    Transition,
    call_guard_row,
    claim_partition,
    etag_of,
    is_operation_row,
    new_operation_row,
    table_key,
    to_record,
)
from shared.logevents import log_event

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

log = logging.getLogger("shared.ledger")

MAX_CONFLICT_RETRIES = 8
# The :meth:`LedgerTable.remove_stale` count of calls that forgot who called.
IDENTITY_FORGOTTEN = "identityForgotten"
# A recording of one of these may still be (or become) stored: its call keeps who called.
LIVE_STATUSES = frozenset(
    status.value
    for status in OperationStatus
    if status
    not in {
        OperationStatus.ABANDONED,
        OperationStatus.FAILED,
        OperationStatus.EXPIRED,
        OperationStatus.ERASED,
    }
)

R = TypeVar("R")


def _merge_on(
    entity: Mapping[str, Any], etag: str | None
) -> tuple[str, Mapping[str, Any], dict[str, Any]]:
    """A transaction's merge of ``entity`` on the ETag read: it fails if the row changed since."""
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    options = {"mode": UpdateMode.MERGE, "match_condition": MatchConditions.IfNotModified}
    return ("update", entity, {**options, "etag": etag})


class LedgerConflict(RuntimeError):
    """A row kept changing under concurrent writers: the write gave up after a few tries."""

    def __init__(self, partition: str, row: str) -> None:
        super().__init__(
            f"ledger row {partition}/{row} kept changing under concurrent writers; giving up"
        )


@dataclass(frozen=True)
class Seen:
    """A row as a writer last saw it: read, or as its own last write left it.

    ``etag`` None: the row is taken to exist without being read, and a merge into it goes
    unconditionally (``If-Match: *``).
    """

    fields: Mapping[str, Any]
    etag: str | None

    @property
    def record(self) -> OperationRecord:
        return to_record(self.fields)

    def transition(self, *, changed: bool) -> Transition:
        return Transition(self.record, changed=changed, etag=self.etag)


# A row believed to exist, not read: the merge goes without a condition.
UNREAD = Seen({}, None)


@dataclass(frozen=True)
class Keep(Generic[R]):
    """Write nothing: the transition ends with ``result``."""

    result: R


@dataclass(frozen=True)
class Write(Generic[R]):
    """Create the row with ``columns`` (there is none) or merge them into it on its ETag;
    ``then`` turns the row after the write into the transition's result."""

    columns: Mapping[str, Any]
    then: Callable[[Seen], R]


Decide = Callable[[Seen | None], Keep[R] | Write[R]]


class LedgerTable:
    """Reads and advances ledger rows. Takes its table client and clock as collaborators."""

    def __init__(self, table: TableClient, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._table = table
        self._clock = clock

    async def get(self, call_id: str, operation_id: str) -> OperationRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table.get_entity(table_key(call_id), table_key(operation_id))
        except ResourceNotFoundError:
            return None
        if not is_operation_row(entity):
            return None  # not an operation row (e.g. written by an older version): not found
        return to_record(entity)

    async def list_call(self, call_id: str) -> list[OperationRecord]:
        """Every operation of one call, oldest first."""
        query = "PartitionKey eq @pk and Kind eq @kind"
        params = {"pk": table_key(call_id), "kind": ROW_KIND_OPERATION}
        records = [
            to_record(entity)
            async for entity in self._table.query_entities(query, parameters=params)
        ]
        return sorted(records, key=lambda r: r.get("CreatedAt") or self._clock())

    async def _rewrite(
        self,
        call_id: str,
        operation_id: str,
        decide: Decide[R],
        *,
        known: Seen | None = None,
        absent: bool = False,
        erased: Decide[R] | None = None,
    ) -> R:
        """:meth:`_rewrite_at` for an operation's row."""
        return await self._rewrite_at(
            table_key(call_id),
            table_key(operation_id),
            decide,
            call_id=call_id,
            known=known,
            absent=absent,
            erased=erased,
        )

    async def _rewrite_at(
        self,
        partition: str,
        row: str,
        decide: Decide[R],
        *,
        call_id: str,
        known: Seen | None = None,
        absent: bool = False,
        erased: Decide[R] | None = None,
    ) -> R:
        """The one conflict retry every transition goes through: decide on the row (an
        operation's, or the call's own), write on its ETag, and decide again on what is there if
        someone wrote it first.

        The row is read unless the caller knows it: ``known`` (its own last write, or
        :data:`UNREAD`) or ``absent`` (no row expected: the write is a blind create). ``decide``
        sees the row (None when there is none) and says what to write. A create that finds the
        row created (409) or a merge that finds it changed (412) reads it again; a merge that
        finds it gone (404) decides again on no row. After :data:`MAX_CONFLICT_RETRIES` tries it
        gives up with :class:`LedgerConflict`.

        ``erased``: the write is guarded by the call's erasure (a download's first write). The row
        is read together with the call's guard row, in one query; while the call is not erased
        the write goes in one transaction with the guard (created, or touched on the ETag read),
        so an erasure that writes the guard meanwhile makes it fail and be decided again; once
        the guard says erased, ``erased`` decides instead. The call's metadata the guard row
        holds (shared/ledger/identity.py) is copied into such a write. ``absent`` then expects
        neither row: the transaction creates both, blind.
        """
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        guarded = erased is not None
        current, read = known, known is None and not absent
        guard = NO_GUARD
        for _ in range(MAX_CONFLICT_RETRIES):
            if read and guarded:
                current, guard = await self._read_guarded(partition, row)
            elif read:
                current = await self._read(partition, row)
            read = True
            call_erased = guarded and guard.erased
            step = erased(current) if erased is not None and call_erased else decide(current)
            if isinstance(step, Keep):
                return step.result
            written = {"PartitionKey": partition, "RowKey": row, **step.columns}
            if guarded and not call_erased and guard.call_fields:
                # The call's metadata (who called) goes with the recording's first write, free.
                written = {**guard.call_fields, **written}
            try:
                if guarded and not call_erased:
                    etag = await self._write_guarded(call_id, written, current, guard)
                else:
                    etag = await self._write(written, current)
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another writer came first: read theirs and decide again
            except ResourceNotFoundError:
                if not guarded:
                    current, read = None, False  # removed meanwhile (the cleanup): no row
                continue
            after = written if current is None else {**current.fields, **written}
            return step.then(Seen(after, etag))
        raise LedgerConflict(partition, row)

    async def _read(self, partition: str, row: str) -> Seen | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        return Seen(dict(entity), entity.metadata["etag"])

    async def _read_guarded(self, partition: str, row: str) -> tuple[Seen | None, CallGuard]:
        """The row and its call's guard row, in one partition query."""
        current, guard = None, NO_GUARD
        # Spaces around the parentheses: the SDK finds @parameters by splitting on spaces.
        query = "PartitionKey eq @pk and ( RowKey eq @row or RowKey eq @guard )"
        parameters = {"pk": partition, "row": row, "guard": CALL_GUARD_ROW}
        async for entity in self._table.query_entities(query, parameters=parameters):
            etag = str(entity.metadata["etag"])
            if entity["RowKey"] == CALL_GUARD_ROW:
                guard = CallGuard.of(entity, etag)
            else:
                current = Seen(dict(entity), etag)
        return current, guard

    async def _write(self, written: Mapping[str, Any], current: Seen | None) -> str | None:
        """Create the row, or merge into it on its ETag (unconditionally when it was not read)."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        if current is None:
            return etag_of(await self._table.create_entity(written))
        response = await self._table.update_entity(
            written,
            mode=UpdateMode.MERGE,
            etag=current.etag,
            match_condition=MatchConditions.IfNotModified
            if current.etag is not None
            else MatchConditions.Unconditionally,
        )
        return etag_of(response)

    async def _write_guarded(
        self, call_id: str, written: Mapping[str, Any], current: Seen | None, guard: CallGuard
    ) -> str | None:
        """:meth:`_write` and the call's guard row in one entity group transaction.

        The guard is created (no erasure has written it) or touched on the ETag read (none has
        since): either fails if an erasure came first. Failures come back as the single-row
        errors :meth:`_rewrite` retries on.
        """
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import TableTransactionError

        operations: list[Any] = []
        if current is None:
            operations.append(("create", written))
        else:
            operations.append(_merge_on(written, current.etag))
        touch = call_guard_row(call_id, self._clock())
        if guard.etag is None:
            operations.append(("create", {**touch, "CreatedAt": touch["UpdatedAt"]}))
        else:
            operations.append(_merge_on(touch, guard.etag))
        try:
            results = await self._table.submit_transaction(operations)
        except TableTransactionError as error:
            status = error.status_code
            if status == 409:
                raise ResourceExistsError(str(error)) from None
            if status == 412:
                raise ResourceModifiedError(str(error)) from None
            if status == 404:
                raise ResourceNotFoundError(str(error)) from None
            raise
        return etag_of(results[0])

    async def advance(
        self,
        call_id: str,
        operation_id: str,
        status: OperationStatus,
        **fields: Any,
    ) -> Transition:
        """Move the row to ``status`` (creating it if needed) unless that would go backwards.

        ``fields`` are extra columns (PascalCase, e.g. ``BlobName=...``); ``None`` values are
        skipped. A write that does not move the row forward changes nothing at all.
        """
        return await self._rewrite(
            call_id, operation_id, self._forward(call_id, operation_id, status, fields)
        )

    async def advance_from(
        self, known: Transition, status: OperationStatus, **fields: Any
    ) -> Transition:
        """:meth:`advance` from a row this instance just wrote (or read), without reading it again.

        ``known`` is that write's outcome (its status and ETag). The merge is conditional on the
        ETag: if anyone wrote the row since (an erasure, a duplicate), the row is read and the
        write stays forward-only.
        """
        record = known.record
        forward = known.etag is not None and RANK[status] > RANK[record.status]
        return await self._rewrite(
            record.call_id,
            record.operation_id,
            self._forward(record.call_id, record.operation_id, status, fields),
            known=Seen(record.fields, known.etag) if forward else None,
        )

    def _forward(
        self, call_id: str, operation_id: str, status: OperationStatus, fields: Mapping[str, Any]
    ) -> Decide[Transition]:
        """The forward move to ``status`` with ``fields``: a new row, or a merge if it is ahead."""
        extra = {name: value for name, value in fields.items() if value is not None}

        def moved(was: str) -> Callable[[Seen], Transition]:
            def then(after: Seen) -> Transition:
                record = after.record
                log_event(
                    log,
                    "ledger",
                    call_id=record.call_id,
                    operation_id=record.operation_id,
                    status=status.value,
                    was=was,
                )
                return Transition(record, changed=True, etag=after.etag)

            return then

        def decide(current: Seen | None) -> Keep[Transition] | Write[Transition]:
            now = self._clock()
            if current is None:
                row = new_operation_row(call_id, operation_id, status, now, **extra)
                return Write(row, moved("new"))
            previous = current.record.status
            if RANK[status] <= RANK[previous]:
                return Keep(current.transition(changed=False))
            columns = {"Status": status.value, "UpdatedAt": now, STAMP[status]: now, **extra}
            if status in RETENTION_OVER:
                # The caller's identity follows the recording's retention: gone in this write.
                columns |= cleared_identity(current.fields)
            return Write(columns, moved(previous.value))

        return decide

    # ----------------------------------------------------------------- once-per-call claims

    async def claim(self, call_id: str, name: str) -> bool:
        """Claim a once-per-call action (e.g. "recording started"); True for the first caller.

        Instances share nothing in memory, so the claim is a row that only one writer can create.
        """
        from azure.core.exceptions import ResourceExistsError

        now = self._clock()
        entity = {
            "PartitionKey": claim_partition(call_id),
            "RowKey": name,
            "Kind": ROW_KIND_CLAIM,
            "CallId": normalize_id(call_id),
            "CreatedAt": now,
            "UpdatedAt": now,
        }
        try:
            await self._table.create_entity(entity)
        except ResourceExistsError:
            return False
        return True

    async def release(self, call_id: str, name: str) -> None:
        """Give a claim back (the action failed before it took effect)."""
        await self._table.delete_entity(claim_partition(call_id), name)

    async def query(
        self, filter_expression: str, parameters: Mapping[str, Any], *, limit: int
    ) -> list[OperationRecord]:
        """Operation rows matching an OData filter, at most ``limit`` of them (bounded work)."""
        records: list[OperationRecord] = []
        # Spaces around the inner filter: the SDK finds @parameters by splitting on spaces.
        full = f"Kind eq '{ROW_KIND_OPERATION}' and ( {filter_expression} )"
        async for entity in self._table.query_entities(
            full, parameters=dict(parameters), results_per_page=min(limit, 1000)
        ):
            records.append(to_record(entity))
            if len(records) >= limit:
                break
        return records

    # ----------------------------------------------------------------- the recordings index

    async def index_recording(self, call_id: str, operation_id: str, at: datetime) -> str:
        """Write a recording's time index row (shared/ledger/index.py); returns its key."""
        from azure.data.tables import UpdateMode

        key = index_key(at, call_id, operation_id)
        bucket, row = key.split("/", 1)
        await self._table.upsert_entity(
            {
                "PartitionKey": time_partition(bucket),
                "RowKey": row,
                "Kind": ROW_KIND_TIME_INDEX,
                "CallId": normalize_id(call_id),
                "OperationId": normalize_id(operation_id),
                "UpdatedAt": self._clock(),
            },
            mode=UpdateMode.REPLACE,
        )
        return key

    async def indexed(
        self, pointers: list[tuple[str, str, str]]
    ) -> list[tuple[str, OperationRecord | None]]:
        """The operation rows index rows point to, read together; None: the row does not carry
        the index key (the index row points to nothing)."""
        import asyncio

        async def one(key: str, call_id: str, operation_id: str) -> OperationRecord | None:
            record = await self.get(call_id, operation_id)
            if record is None or record.get(Column.INDEX_KEY) != key:
                return None
            return record

        found = await asyncio.gather(*(one(*pointer) for pointer in pointers))
        return [(pointer[0], record) for pointer, record in zip(pointers, found, strict=True)]

    async def recordings(self, query: RecordingQuery) -> tuple[list[OperationRecord], str | None]:
        """A page of the recordings list: from the caller index when the query names a caller,
        else from the time index. Returns the records and the key to continue after (None:
        nothing more)."""
        if query.caller_key is not None:
            return await self.caller_recordings(query.caller_key, query)
        return await self.list_recordings(query)

    async def list_recordings(
        self, page: RecordingQuery
    ) -> tuple[list[OperationRecord], str | None]:
        """A page of recordings across calls, from the time index (``page.caller_key`` aside).

        Reads index rows bucket by bucket, a page at a time, and the operation rows they point
        to; stops when ``top`` matched, scanning at most a few pages more for a status filter.
        Returns the records and the key to continue after (None: nothing more).
        """
        start, end, after, top = page.start, page.end, page.after, page.top
        records: list[OperationRecord] = []
        budget = top * 4  # index rows read at most per call: a status filter may skip some
        last: str | None = None
        low = time_row_key(end, "", "")[:13]
        high = time_row_key(start, "", "")[:13] + "~\uffff"
        resume = split_index_key(after) if after else None
        for bucket in buckets_between(start, end):
            if resume is not None and bucket > resume[0]:
                continue
            after_row = resume[1] if resume is not None and bucket == resume[0] else None
            query = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high"
            params: dict[str, Any] = {"pk": time_partition(bucket), "low": low, "high": high}
            if after_row is not None:
                query += " and RowKey gt @after"
                params["after"] = after_row
            while budget > 0:
                want = min(top - len(records), budget)
                pointers: list[tuple[str, str, str]] = []
                async for entity in self._table.query_entities(
                    query,
                    parameters=params,
                    results_per_page=want,
                    select=["RowKey", "CallId", "OperationId"],
                ):
                    key = f"{bucket}/{entity['RowKey']}"
                    pointers.append((key, str(entity["CallId"]), str(entity["OperationId"])))
                    if len(pointers) >= want:
                        break
                budget -= len(pointers)
                for key, record in await self.indexed(pointers):
                    last = key
                    if record is not None and page.wants(record.status.value):
                        records.append(record)
                if len(records) >= top:
                    return records, last
                if len(pointers) < want:
                    break  # this bucket is done
                query_after = pointers[-1][0].split("/", 1)[1]
                if "@after" not in query:
                    query += " and RowKey gt @after"
                params["after"] = query_after
            if budget <= 0:
                return records, last
        return records, None

    async def sweep_index(self, buckets: list[str], *, written_before: datetime, limit: int) -> int:
        """Delete the index rows of ``buckets`` (hours, shared/ledger/index.py) that point to
        nothing; rows written at or after ``written_before`` are left (their operation row's
        write may still be on its way). Returns how many went.

        One partition query per bucket, then, if any row was found, one query for the operation
        rows whose ``IndexKey`` falls in those hours: the cost grows with the hours swept, not
        with the recordings in them (no read per index row). Overlapping runs may both count a
        row one of them deleted.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError

        candidates: list[tuple[str, str, str]] = []  # (bucket, row key, etag)
        for bucket in buckets:
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk and UpdatedAt lt @before",
                parameters={"pk": time_partition(bucket), "before": written_before},
                results_per_page=min(limit, 1000),
                select=["RowKey"],
            ):
                candidates.append((bucket, str(entity["RowKey"]), str(entity.metadata["etag"])))
                if len(candidates) >= limit:
                    break
            if len(candidates) >= limit:
                break
        if not candidates:
            return 0
        # Bucket names sort as the hours do, and every index key of an hour starts "<bucket>/".
        first, last = min(buckets), max(buckets)
        pointed: set[str] = set()
        async for entity in self._table.query_entities(
            f"{Column.INDEX_KEY} ge @low and {Column.INDEX_KEY} lt @high",
            parameters={"low": f"{first}/", "high": f"{last}0"},  # "0" sorts right after "/"
            results_per_page=1000,
            select=[Column.INDEX_KEY],
        ):
            pointed.add(str(entity[Column.INDEX_KEY]))
        swept = 0
        for bucket, row, etag in candidates:
            if f"{bucket}/{row}" in pointed:
                continue
            try:
                await self._table.delete_entity(
                    time_partition(bucket),
                    row,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue  # rewritten by a redelivery meanwhile: looked at again next hour
            # (A row another run deleted first is no error: the SDK takes a 404 as done.)
            swept += 1
        return swept

    # ------------------------------------------------------------------ the caller index

    async def _index_caller_call(self, key: str, call_id: str) -> None:
        from azure.data.tables import UpdateMode

        now = self._clock()
        await self._table.upsert_entity(
            {
                "PartitionKey": caller_partition(key),
                "RowKey": table_key(call_id),
                "Kind": ROW_KIND_CALLER_INDEX,
                "CallId": normalize_id(call_id),
                "UpdatedAt": now,
            },
            mode=UpdateMode.MERGE,
        )

    async def caller_calls(self, key: str, *, limit: int | None = None) -> list[str]:
        """The calls of one caller (by :func:`~shared.ledger.identity.caller_key`), from the caller
        index: one partition query (a page per 1000 calls), whatever the table holds; the first
        ``limit`` (in the index's order), or all."""
        calls: list[str] = []
        async for entity in self._table.query_entities(
            "PartitionKey eq @pk",
            parameters={"pk": caller_partition(key)},
            select=["CallId"],
            results_per_page=min(limit or 1000, 1000),
        ):
            calls.append(str(entity["CallId"]))
            if limit is not None and len(calls) >= limit:
                break
        return calls

    async def caller_recordings(
        self, key: str, query: RecordingQuery
    ) -> tuple[list[OperationRecord], str | None]:
        """One caller's recordings newest first, from the caller index: the work grows with
        that caller's calls (one partition query each, 16 at a time), not with the table. Same
        paging as :meth:`list_recordings`; every call of the caller is read, none left out."""
        import asyncio

        from shared.ledger.index import order_key, row_time, split_index_key

        gate = asyncio.Semaphore(16)

        async def rows_of(call_id: str) -> list[OperationRecord]:
            async with gate:
                return await self.list_call(call_id)

        calls = await self.caller_calls(key)
        found: list[tuple[tuple[int, str], str, OperationRecord]] = []
        for records in await asyncio.gather(*(rows_of(call_id) for call_id in calls)):
            for record in records:
                index = str(record.get(Column.INDEX_KEY) or "")
                parts = split_index_key(index)
                if parts is None or not query.start <= row_time(parts[1]) <= query.end:
                    continue
                if not query.wants(record.status.value):
                    continue
                found.append((order_key(index), index, record))
        found.sort(key=lambda item: item[0])
        if query.after is not None:
            found = [item for item in found if item[0] > order_key(query.after)]
        page = found[: query.top]
        more = len(found) > query.top
        return [item[2] for item in page], page[-1][1] if more and page else None

    async def forget_caller_call(self, key: str, call_id: str) -> None:
        """Remove one call from a caller's index (the call forgot, or erased, who called)."""
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            await self._table.delete_entity(caller_partition(key), table_key(call_id))

    async def delete(self, record: OperationRecord) -> None:
        await self._table.delete_entity(table_key(record.call_id), table_key(record.operation_id))

    async def remove_stale(
        self,
        updated_before: datetime,
        *,
        limit: int,
        identity_before: datetime | None = None,
    ) -> dict[str, int]:
        """Delete rows of every kind (operations, claims) last updated before ``updated_before``.

        At most ``limit`` rows per call; returns how many of each kind went. A row written after
        it was read is kept (ETag), and a row another instance removed first is not an error.

        ``identity_before``: a call's row still naming its caller and not written since then
        forgets who called (:meth:`forget_call_identity`), counted as :data:`IDENTITY_FORGOTTEN`.
        The same query finds both, so a run with nothing to do costs no request more; this is
        the bound for a call whose metadata was captured but whose recording never came.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        query = "UpdatedAt lt @cutoff"
        parameters: dict[str, Any] = {"cutoff": updated_before}
        if identity_before is not None:
            # Spaces around the parentheses: the SDK finds @parameters by splitting on spaces.
            query = (
                "( UpdatedAt lt @cutoff ) or ( Kind eq @call and "
                f"{IdentityColumn.CALLER_KIND} gt @empty and UpdatedAt lt @identity )"
            )
            parameters |= {"call": ROW_KIND_CALL, "empty": "", "identity": identity_before}
        stale = []
        forgettable: list[str] = []
        async for entity in self._table.query_entities(
            query, parameters=parameters, results_per_page=min(limit, 1000)
        ):
            if entity["UpdatedAt"] < updated_before:
                stale.append(entity)
            else:
                forgettable.append(str(entity["CallId"]))
            if len(stale) + len(forgettable) >= limit:
                break
        removed: dict[str, int] = {}
        for call_id in forgettable:
            if await self.forget_call_identity(call_id):
                removed[IDENTITY_FORGOTTEN] = removed.get(IDENTITY_FORGOTTEN, 0) + 1
        for entity in stale:
            try:
                await self._table.delete_entity(
                    entity["PartitionKey"],
                    entity["RowKey"],
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
            kind = str(entity.get("Kind") or ROW_KIND_OPERATION)
            removed[kind] = removed.get(kind, 0) + 1
        return removed

    async def forget_call_identity(self, call_id: str) -> bool:
        """Clear who called from the call's row and from its operation rows that still name the
        caller (a failed or abandoned recording keeps what its first write copied), and drop the
        call from its caller's index, once no recording of the call is live
        (shared/ledger/identity.py: identity follows retention).

        One partition query reads the call's row and its operations; the clearing merges go in
        entity group transactions on the rows' ETags, the call's row in the first, so a download
        whose first write came in between (it goes in one transaction with that row) makes this
        decide again. The rows are cleared before the index row goes: a crash between them leaves
        an index row that leads to a call naming nobody. True when this call forgot its caller.
        """
        from azure.data.tables import TableTransactionError

        partition = table_key(call_id)
        for _ in range(MAX_CONFLICT_RETRIES):
            guard: Seen | None = None
            holders: list[Seen] = []
            live = False
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": partition},
                select=["RowKey", "Kind", "Status", *IDENTITY_COLUMNS],
            ):
                seen = Seen(dict(entity), str(entity.metadata["etag"]))
                if entity["RowKey"] == CALL_GUARD_ROW:
                    guard = seen
                elif is_operation_row(entity):
                    live = live or entity.get("Status") in LIVE_STATUSES
                    if cleared_identity(entity):
                        holders.append(seen)
            if guard is None or live:
                return False
            cleared = cleared_identity(guard.fields)
            if not cleared and not holders:
                return False
            call_row = {"PartitionKey": partition, "RowKey": CALL_GUARD_ROW}
            operations: list[Any] = [
                _merge_on({**call_row, **cleared, "UpdatedAt": self._clock()}, guard.etag)
            ]
            for holder in holders:
                row = {"PartitionKey": partition, "RowKey": holder.fields["RowKey"]}
                # No UpdatedAt: forgetting who called does not move a row's horizon.
                operations.append(
                    _merge_on({**row, **cleared_identity(holder.fields)}, holder.etag)
                )
            try:
                # A transaction holds 100 operations: the call's row goes in the first.
                for first in range(0, len(operations), 100):
                    await self._table.submit_transaction(operations[first : first + 100])
            except TableTransactionError as error:
                if error.status_code in (404, 412):
                    continue  # written or removed meanwhile: read again and decide again
                raise
            key = guard.fields.get(IdentityColumn.CALLER_KEY)
            if key:
                await self.forget_caller_call(str(key), call_id)
            log_event(log, "ledger", call_id=normalize_id(call_id), call_metadata="forgotten")
            return True
        raise LedgerConflict(partition, CALL_GUARD_ROW)
