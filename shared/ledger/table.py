"""Reading and advancing ledger rows: the storage mechanics, ETag-guarded and forward-only.

Many instances write the same row (the API, the webhook, the worker, the bot flow, the cleanup),
possibly with events out of order or twice. Every write is a read-modify-write guarded by the
row's ETag, and a transition that would move a row backwards is ignored, so the final state does
not depend on the order events arrive in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.clock import utc_now
from shared.graph.ids import normalize_id
from shared.logevents import log_event

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient


from shared.ledger.rows import (
    MAX_CONFLICT_RETRIES,
    RANK,
    ROW_KIND_CLAIM,
    ROW_KIND_OPERATION,
    STAMP,
    OperationRecord,
    OperationStatus,
    Transition,
    claim_partition,
    etag_of,
    is_operation_row,
    new_operation_row,
    table_key,
    to_record,
)

log = logging.getLogger("shared.ledger")


class LedgerTable:
    """Reads and advances ledger rows. Takes its table client and clock as collaborators."""

    def __init__(self, table: TableClient, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._table = table
        self._clock = clock

    @property
    def table(self) -> TableClient:
        """The table client, for bulk work that reads many rows at once (the cleanup)."""
        return self._table

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
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceNotFoundError,
        )

        partition, row = table_key(call_id), table_key(operation_id)
        extra = {name: value for name, value in fields.items() if value is not None}
        for _ in range(MAX_CONFLICT_RETRIES):
            now = self._clock()
            try:
                current = await self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                entity = new_operation_row(call_id, operation_id, status, now, **extra)
                try:
                    created = await self._table.create_entity(entity)
                except ResourceExistsError:
                    continue  # another writer created it first: read theirs and try again
                log_event(
                    log,
                    "ledger",
                    call_id=entity["CallId"],
                    operation_id=entity["OperationId"],
                    status=status.value,
                    was="new",
                )
                return Transition(to_record(entity), changed=True, etag=etag_of(created))

            as_read = to_record(current)
            if RANK[status] <= RANK[as_read.status]:
                return Transition(as_read, changed=False, etag=current.metadata["etag"])
            moved = await self._merge_forward(
                partition, row, as_read, current.metadata["etag"], status, now, extra
            )
            if moved is not None:
                return moved
            # Someone else moved it (or the cleanup removed it): read it again.
        raise RuntimeError(
            f"ledger row {partition}/{row} kept changing under concurrent writers; giving up"
        )

    async def advance_from(
        self, known: Transition, status: OperationStatus, **fields: Any
    ) -> Transition:
        """:meth:`advance` from a row this instance just wrote, without reading it again.

        ``known`` is that write's outcome (its status and ETag). The merge is conditional on the
        ETag: if anyone wrote the row since (an erasure, a duplicate), it falls back to
        :meth:`advance`, which reads the row and stays forward-only.
        """
        record = known.record
        if known.etag is not None and RANK[status] > RANK[record.status]:
            extra = {name: value for name, value in fields.items() if value is not None}
            partition, row = table_key(record.call_id), table_key(record.operation_id)
            moved = await self._merge_forward(
                partition, row, record, known.etag, status, self._clock(), extra
            )
            if moved is not None:
                return moved
        return await self.advance(record.call_id, record.operation_id, status, **fields)

    async def _merge_forward(
        self,
        partition: str,
        row: str,
        record: OperationRecord,
        etag: str | None,
        status: OperationStatus,
        now: datetime,
        extra: Mapping[str, Any],
    ) -> Transition | None:
        """Merge ``status`` (stamped ``now``) and ``extra`` into the row ``record`` shows, on its
        ``etag``; None when the row was written (or removed) since."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        update = {
            "PartitionKey": partition,
            "RowKey": row,
            "Status": status.value,
            "UpdatedAt": now,
            STAMP[status]: now,
            **extra,
        }
        try:
            updated = await self._table.update_entity(
                update,
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        log_event(
            log,
            "ledger",
            call_id=record.call_id,
            operation_id=record.operation_id,
            status=status.value,
            was=record.status.value,
        )
        merged = {**dict(record.fields), **update}
        return Transition(to_record(merged), changed=True, etag=etag_of(updated))

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

    async def delete(self, record: OperationRecord) -> None:
        await self._table.delete_entity(table_key(record.call_id), table_key(record.operation_id))

    async def remove_stale(self, updated_before: datetime, *, limit: int) -> dict[str, int]:
        """Delete rows of every kind (operations, claims) last updated before ``updated_before``.

        At most ``limit`` rows per call; returns how many of each kind went. A row written after
        it was read is kept (ETag), and a row another instance removed first is not an error.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        stale = []
        async for entity in self._table.query_entities(
            "UpdatedAt lt @cutoff",
            parameters={"cutoff": updated_before},
            results_per_page=min(limit, 1000),
        ):
            stale.append(entity)
            if len(stale) >= limit:
                break
        removed: dict[str, int] = {}
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
