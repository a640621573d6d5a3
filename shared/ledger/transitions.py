"""The ledger in the domain's words: one method per thing that happens to a recording.

Each ``mark_*`` is an :meth:`~shared.ledger.table.LedgerTable.advance` with the columns that event
records; callers never spell column names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.graph.ids import normalize_id
from shared.logevents import log_event

if TYPE_CHECKING:
    from shared.graph.models import ResultInfo
    from shared.jobs import DownloadJob

from shared.ledger.lease import Lease, take_lease, write_lease
from shared.ledger.rows import (
    MAX_CONFLICT_RETRIES,
    TRANSCRIBED,
    TRANSCRIPTION_FAILED,
    Column,
    OperationStatus,
    Transition,
    is_operation_row,
    job_result,
    result_columns,
    table_key,
    to_record,
)
from shared.ledger.table import LedgerTable

log = logging.getLogger("shared.ledger")


class OperationLedger(LedgerTable):
    """The operations ledger: :class:`LedgerTable`'s mechanics, spoken in the domain's words."""

    async def mark_started(
        self,
        call_id: str,
        operation_id: str,
        status: OperationStatus,
        *,
        requested_at: datetime,
        client_context: str | None,
        started_by: str,
        max_record_duration_seconds: int,
        result: ResultInfo | None = None,
        failure_reason: str | None = None,
        attempt: int | None = None,
    ) -> Transition:
        """A recordResponse Graph accepted: its first status is whatever Graph's reply said.

        ``attempt`` numbers the bot's recordings of one call (1, then 2 after a re-prompt...).
        """
        return await self.advance(
            call_id,
            operation_id,
            status,
            **{
                Column.REQUESTED_AT: requested_at,
                Column.CLIENT_CONTEXT: client_context,
                Column.STARTED_BY: started_by,
                Column.MAX_RECORD_DURATION_SECONDS: max_record_duration_seconds,
                Column.FAILURE_REASON: failure_reason,
                Column.ATTEMPT: attempt,
                **result_columns(result),
            },
        )

    async def mark_completed(
        self,
        call_id: str,
        operation_id: str,
        *,
        result: ResultInfo | None = None,
        client_context: str | None = None,
    ) -> Transition:
        return await self.advance(
            call_id,
            operation_id,
            OperationStatus.COMPLETED,
            **{Column.CLIENT_CONTEXT: client_context, **result_columns(result)},
        )

    async def mark_failed(
        self,
        call_id: str,
        operation_id: str,
        reason: str,
        *,
        result: ResultInfo | None = None,
        client_context: str | None = None,
        tenant_id: str | None = None,
        after: Transition | None = None,
    ) -> Transition:
        """``after``: the worker's last write (its lease), given back in this same write."""
        columns = {
            Column.FAILURE_REASON: reason,
            Column.CLIENT_CONTEXT: client_context,
            Column.TENANT_ID: tenant_id,
            **result_columns(result),
        }
        if after is not None:
            columns[Column.DOWNLOAD_HOLDER] = ""
            return await self.advance_from(after, OperationStatus.FAILED, **columns)
        return await self.advance(call_id, operation_id, OperationStatus.FAILED, **columns)

    async def mark_abandoned(
        self,
        call_id: str,
        operation_id: str,
        reason: str,
        *,
        call_end_message: str | None = None,
    ) -> Transition:
        return await self.advance(
            call_id,
            operation_id,
            OperationStatus.ABANDONED,
            **{
                Column.FAILURE_REASON: reason,
                Column.CALL_END_MESSAGE: call_end_message[:512] if call_end_message else None,
            },
        )

    async def mark_downloading(
        self,
        job: DownloadJob,
        *,
        blob_name: str,
        holder: str,
        now: datetime,
        lease_until: datetime,
        create_first: bool,
    ) -> Lease:
        """The worker took the job: ``downloading``, and ``holder``'s download lease, one write.

        It records the completion's facts too (when it arrived, its result, its clientContext),
        so the webhook's hot path needs no ledger round trip. The row it returns says whether
        anything is left to do (shared/ledger/lease.py). ``now`` is the holder's clock, which
        its lease times (``lease_until``, other holders' leases) are compared on.
        """
        return await take_lease(
            self._table,
            job.call_id,
            job.operation_id,
            holder=holder,
            until=lease_until,
            now=now,
            create_first=create_first,
            fields={
                Column.BLOB_NAME: blob_name,
                Column.COMPLETED_AT: job.received_at,
                Column.CLIENT_CONTEXT: job.client_context,
                Column.TENANT_ID: job.tenant_id,
                **result_columns(job_result(job)),
            },
        )

    async def renew_download_lease(
        self, known: Transition, holder: str, until: datetime
    ) -> Transition | None:
        """The row with ``holder``'s lease renewed, or None if another holder took it over."""
        return await write_lease(self._table, known, holder, until)

    async def release_download_lease(self, known: Transition, holder: str) -> None:
        """Give the lease back early (the message goes back to the queue)."""
        await write_lease(self._table, known, holder, None)

    async def mark_stored(
        self,
        call_id: str,
        operation_id: str,
        *,
        blob_name: str,
        size_bytes: int,
        sha256: str | None,
        content_type: str | None,
        expires_at: datetime | None,
        stored_at: datetime | None = None,
        after: Transition | None = None,
    ) -> Transition:
        """``after``: this instance's last write (its lease); the row is then not read again."""
        columns = {
            Column.BLOB_NAME: blob_name,
            Column.SIZE_BYTES: size_bytes,
            Column.SHA256: sha256,
            Column.CONTENT_TYPE: content_type,
            Column.STORED_AT: stored_at,
            Column.EXPIRES_AT: expires_at,
            # The download is over: its lease goes in the same write.
            Column.DOWNLOAD_HOLDER: "",
        }
        if after is not None:
            return await self.advance_from(after, OperationStatus.STORED, **columns)
        return await self.advance(call_id, operation_id, OperationStatus.STORED, **columns)

    async def mark_expired(self, call_id: str, operation_id: str) -> Transition:
        return await self.advance(call_id, operation_id, OperationStatus.EXPIRED)

    async def mark_erased(self, call_id: str, operation_id: str) -> Transition:
        """An operator erased the recording; the row stays (auditable) until the ledger horizon."""
        return await self.advance(call_id, operation_id, OperationStatus.ERASED)

    async def mark_transcribed(
        self,
        call_id: str,
        operation_id: str,
        *,
        transcribed_at: datetime,
        audio_deleted_at: datetime | None = None,
        first: bool = False,
    ) -> Transition | None:
        """The transcript is stored (the Status column is not the transcription's to move).

        ``first``: this delivery wrote the transcript (its conditional create succeeded), so no
        earlier ``transcribed`` can be overwritten: the merge goes unread (``If-Match: *``) and
        returns None. Otherwise the row is read first and a ``transcribed`` one is left alone.
        """
        fields = {
            Column.TRANSCRIPTION_STATUS: TRANSCRIBED,
            Column.TRANSCRIBED_AT: transcribed_at,
            Column.AUDIO_DELETED_AT: audio_deleted_at,
            # A failure recorded by an earlier delivery no longer applies.
            Column.TRANSCRIPTION_FAILURE_REASON: "",
        }
        if first:
            await self._merge_unread(call_id, operation_id, fields)
            return None
        return await self._merge_transcription(call_id, operation_id, fields)

    async def mark_transcription_failed(
        self, call_id: str, operation_id: str, reason: str
    ) -> Transition | None:
        """The recording could not be transcribed; a transcript already stored wins."""
        return await self._merge_transcription(
            call_id,
            operation_id,
            {
                Column.TRANSCRIPTION_STATUS: TRANSCRIPTION_FAILED,
                Column.TRANSCRIPTION_FAILURE_REASON: reason[:1024],
            },
        )

    async def _merge_unread(
        self, call_id: str, operation_id: str, fields: Mapping[str, Any]
    ) -> None:
        """Merge columns into an existing row without reading it; nothing when there is no row."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import UpdateMode

        partition, row = table_key(call_id), table_key(operation_id)
        update = {
            "PartitionKey": partition,
            "RowKey": row,
            "UpdatedAt": self._clock(),
            **{name: value for name, value in fields.items() if value is not None},
        }
        try:
            await self._table.update_entity(
                update, mode=UpdateMode.MERGE, match_condition=MatchConditions.Unconditionally
            )
        except ResourceNotFoundError:
            return
        log_event(
            log,
            "ledger",
            call_id=normalize_id(call_id),
            operation_id=normalize_id(operation_id),
            transcription_status=fields.get(Column.TRANSCRIPTION_STATUS),
        )

    async def _merge_transcription(
        self, call_id: str, operation_id: str, fields: Mapping[str, Any]
    ) -> Transition | None:
        """Merge transcription columns into an existing row (None when there is no row).

        Forward-only like :meth:`advance`: ``transcribed`` is final, and only a failure may be
        overwritten (by a later delivery that succeeded).
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        partition, row = table_key(call_id), table_key(operation_id)
        extra = {name: value for name, value in fields.items() if value is not None}
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                current = await self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                return None
            if not is_operation_row(current):
                return None
            if current.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIBED:
                return Transition(to_record(current), changed=False)
            update = {"PartitionKey": partition, "RowKey": row, "UpdatedAt": self._clock(), **extra}
            try:
                await self._table.update_entity(
                    update,
                    mode=UpdateMode.MERGE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue
            except ResourceNotFoundError:
                return None
            log_event(
                log,
                "ledger",
                call_id=current.get("CallId", partition),
                operation_id=current.get("OperationId", row),
                transcription_status=extra[Column.TRANSCRIPTION_STATUS],
            )
            return Transition(to_record({**dict(current), **update}), changed=True)
        raise RuntimeError(
            f"ledger row {partition}/{row} kept changing under concurrent writers; giving up"
        )
