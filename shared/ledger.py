"""The operations ledger: one Table Storage row per record operation, moved only forward.

Many instances write the same row (the API, the webhook, the worker, the bot flow, the cleanup),
possibly with events out of order or twice. Every write is a read-modify-write guarded by the
row's ETag, and a transition that would move a row backwards is ignored, so the final state does
not depend on the order events arrive in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.graph.models import ResultInfo, normalize_id
from shared.graph.subcodes import describe_subcode
from shared.logevents import log_event

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.jobs import DownloadJob

log = logging.getLogger(__name__)

ROW_KIND_OPERATION = "operation"
ROW_KIND_CLAIM = "claim"
_MAX_CONFLICT_RETRIES = 8
# Table keys may not hold / \\ # ? or control characters, and stop at 1 KiB; "%" is escaped too
# so that the escaping cannot be forged.
_FORBIDDEN_KEY_CHARS = str.maketrans(
    {c: f"%{ord(c):02X}" for c in "/\\#?%" + "".join(map(chr, [*range(32), *range(127, 160)]))}
)
_MAX_KEY_LENGTH = 256
# Claims live in partitions of their own: no operation id, whatever it looks like, can collide
# with a claim row, and a claim row is never mistaken for an operation.
CLAIM_PARTITION_PREFIX = "~claims~"


class Column:
    """Ledger column names (PascalCase, as Table Storage shows them)."""

    ATTEMPT = "Attempt"
    BLOB_NAME = "BlobName"
    CALL_END_MESSAGE = "CallEndMessage"
    CLIENT_CONTEXT = "ClientContext"
    COMPLETED_AT = "CompletedAt"
    CONTENT_TYPE = "ContentType"
    EXPIRES_AT = "ExpiresAt"
    FAILURE_REASON = "FailureReason"
    MAX_RECORD_DURATION_SECONDS = "MaxRecordDurationSeconds"
    REQUESTED_AT = "RequestedAt"
    RESULT_CODE = "ResultCode"
    RESULT_MEANING = "ResultMeaning"
    RESULT_MESSAGE = "ResultMessage"
    RESULT_SUBCODE = "ResultSubcode"
    SHA256 = "Sha256"
    SIZE_BYTES = "SizeBytes"
    STARTED_BY = "StartedBy"
    STORED_AT = "StoredAt"
    TENANT_ID = "TenantId"
    # Transcription (opt-in): its outcome lives beside the Status, never the text itself.
    TRANSCRIPTION_STATUS = "TranscriptionStatus"
    TRANSCRIPTION_FAILURE_REASON = "TranscriptionFailureReason"
    TRANSCRIBED_AT = "TranscribedAt"
    AUDIO_DELETED_AT = "AudioDeletedAt"


# Values of ``Column.TRANSCRIPTION_STATUS``.
TRANSCRIBED = "transcribed"
TRANSCRIPTION_FAILED = "transcription_failed"


# Why an operation was settled without a recording, in the words the status API shows.
ABANDONED_REASON = "the call ended before the recording completed; no completion will follow"
NO_COMPLETION_REASON = "no completion notification arrived"
POISONED_REASON = "download kept failing; message poisoned"


class OperationStatus(StrEnum):
    REQUESTED = "requested"
    RUNNING = "running"
    ABANDONED = "abandoned"
    COMPLETED = "completed"
    DOWNLOADING = "downloading"
    FAILED = "failed"
    STORED = "stored"
    EXPIRED = "expired"
    ERASED = "erased"


# Progress order. A write is applied only if it moves the row strictly forward, which makes
# duplicates no-ops and late events harmless. Notable consequences, all intended:
# - a completion that arrives after the operation was settled as abandoned still wins (the
#   recording exists and must be fetched);
# - a download failure never overwrites a stored recording (a duplicate job that failed later);
# - expired is final;
# - erased (an operator's erasure) is above everything: nothing moves an erased row again.
_RANK: dict[OperationStatus, int] = {
    OperationStatus.REQUESTED: 0,
    OperationStatus.RUNNING: 1,
    OperationStatus.ABANDONED: 2,
    OperationStatus.COMPLETED: 3,
    OperationStatus.DOWNLOADING: 4,
    OperationStatus.FAILED: 5,
    OperationStatus.STORED: 6,
    OperationStatus.EXPIRED: 7,
    OperationStatus.ERASED: 8,
}
_STATUS_VALUES = frozenset(status.value for status in OperationStatus)
# Each status stamps its own time column, e.g. ``StoredAt``.
_STAMP = {status: f"{status.value.capitalize()}At" for status in OperationStatus}


def table_key(value: str) -> str:
    """A Table Storage key for an id: canonical form, characters Tables forbid escaped.

    Graph's ids are GUIDs (the edge refuses anything else); this stays total for whatever reaches
    storage another way (an old or hand-written queue message): overlong keys end in a digest.
    """
    key = normalize_id(value).translate(_FORBIDDEN_KEY_CHARS)
    if len(key) > _MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode()).hexdigest()
        key = f"{key[: _MAX_KEY_LENGTH - 65]}~{digest}"
    return key


def claim_partition(call_id: str) -> str:
    """The partition of a call's claim rows (once-per-call steps, download claims)."""
    return CLAIM_PARTITION_PREFIX + table_key(call_id)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OperationRecord:
    """One ledger row, as the rest of the app sees it."""

    call_id: str
    operation_id: str
    status: OperationStatus
    fields: Mapping[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def blob_name(self) -> str | None:
        value = self.fields.get("BlobName")
        return str(value) if value else None

    def to_json(self) -> dict[str, Any]:
        """The row for the status API: camelCase keys, ISO timestamps, no storage internals."""
        body: dict[str, Any] = {
            "callId": self.call_id,
            "operationId": self.operation_id,
            "status": self.status.value,
        }
        for name, value in sorted(self.fields.items()):
            if name in {"PartitionKey", "RowKey", "Status", "Kind", "CallId", "OperationId"}:
                continue
            key = name[0].lower() + name[1:]
            body[key] = value.isoformat() if isinstance(value, datetime) else value
        return body


@dataclass(frozen=True)
class Transition:
    """The outcome of a write: the row after it, and whether this write changed it."""

    record: OperationRecord
    changed: bool


def _to_record(entity: Mapping[str, Any]) -> OperationRecord:
    return OperationRecord(
        call_id=str(entity.get("CallId") or entity["PartitionKey"]),
        operation_id=str(entity.get("OperationId") or entity["RowKey"]),
        status=OperationStatus(entity["Status"]),
        fields=dict(entity),
    )


def _is_operation(entity: Mapping[str, Any]) -> bool:
    return entity.get("Kind", ROW_KIND_OPERATION) == ROW_KIND_OPERATION and (
        entity.get("Status") in _STATUS_VALUES
    )


def result_fields(code: int | None, subcode: int | None, message: str | None) -> dict[str, Any]:
    """Ledger columns for a Graph ``resultInfo``, including what the subcode means."""
    fields: dict[str, Any] = {}
    if code is not None:
        fields[Column.RESULT_CODE] = code
    if subcode is not None:
        fields[Column.RESULT_SUBCODE] = subcode
        fields[Column.RESULT_MEANING] = describe_subcode(subcode)
    if message:
        fields[Column.RESULT_MESSAGE] = message[:1024]
    return fields


def _result(result: ResultInfo | None) -> dict[str, Any]:
    return result_fields(result.code, result.subcode, result.message) if result else {}


def job_result(job: DownloadJob) -> ResultInfo | None:
    """The completion's ``resultInfo`` as the download job carries it."""
    if job.result_code is None and job.result_subcode is None and not job.result_message:
        return None
    return ResultInfo(code=job.result_code, subcode=job.result_subcode, message=job.result_message)


class OperationLedger:
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
        if not _is_operation(entity):
            return None  # not an operation row (e.g. written by an older version): not found
        return _to_record(entity)

    async def list_call(self, call_id: str) -> list[OperationRecord]:
        """Every operation of one call, oldest first."""
        query = "PartitionKey eq @pk and Kind eq @kind"
        params = {"pk": table_key(call_id), "kind": ROW_KIND_OPERATION}
        records = [
            _to_record(entity)
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
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import UpdateMode

        partition, row = table_key(call_id), table_key(operation_id)
        extra = {name: value for name, value in fields.items() if value is not None}
        for _ in range(_MAX_CONFLICT_RETRIES):
            now = self._clock()
            try:
                current = await self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                entity = {
                    "PartitionKey": partition,
                    "RowKey": row,
                    "Kind": ROW_KIND_OPERATION,
                    "CallId": normalize_id(call_id),
                    "OperationId": normalize_id(operation_id),
                    "Status": status.value,
                    "CreatedAt": now,
                    "UpdatedAt": now,
                    _STAMP[status]: now,
                    **extra,
                }
                try:
                    await self._table.create_entity(entity)
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
                return Transition(_to_record(entity), changed=True)

            previous = OperationStatus(current["Status"])
            if _RANK[status] <= _RANK[previous]:
                return Transition(_to_record(current), changed=False)
            update = {
                "PartitionKey": partition,
                "RowKey": row,
                "Status": status.value,
                "UpdatedAt": now,
                _STAMP[status]: now,
                **extra,
            }
            try:
                await self._table.update_entity(
                    update,
                    mode=UpdateMode.MERGE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # someone else moved it (or the cleanup removed it): re-read
            log_event(
                log,
                "ledger",
                call_id=current.get("CallId", partition),
                operation_id=current.get("OperationId", row),
                status=status.value,
                was=previous.value,
            )
            merged = {**dict(current), **update}
            return Transition(_to_record(merged), changed=True)
        raise RuntimeError(
            f"ledger row {partition}/{row} kept changing under concurrent writers; giving up"
        )

    # ----------------------------------------------------------------- the domain's transitions

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
                **_result(result),
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
            **{Column.CLIENT_CONTEXT: client_context, **_result(result)},
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
    ) -> Transition:
        return await self.advance(
            call_id,
            operation_id,
            OperationStatus.FAILED,
            **{
                Column.FAILURE_REASON: reason,
                Column.CLIENT_CONTEXT: client_context,
                Column.TENANT_ID: tenant_id,
                **_result(result),
            },
        )

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

    async def mark_downloading(self, job: DownloadJob, *, blob_name: str) -> Transition:
        """The worker took the job: this first write records the completion's facts too."""
        return await self.advance(
            job.call_id,
            job.operation_id,
            OperationStatus.DOWNLOADING,
            **{
                Column.BLOB_NAME: blob_name,
                Column.COMPLETED_AT: job.received_at,
                Column.CLIENT_CONTEXT: job.client_context,
                Column.TENANT_ID: job.tenant_id,
                **_result(job_result(job)),
            },
        )

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
    ) -> Transition:
        return await self.advance(
            call_id,
            operation_id,
            OperationStatus.STORED,
            **{
                Column.BLOB_NAME: blob_name,
                Column.SIZE_BYTES: size_bytes,
                Column.SHA256: sha256,
                Column.CONTENT_TYPE: content_type,
                Column.STORED_AT: stored_at,
                Column.EXPIRES_AT: expires_at,
            },
        )

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
    ) -> Transition | None:
        """The transcript is stored (the Status column is not the transcription's to move)."""
        return await self._merge_transcription(
            call_id,
            operation_id,
            {
                Column.TRANSCRIPTION_STATUS: TRANSCRIBED,
                Column.TRANSCRIBED_AT: transcribed_at,
                Column.AUDIO_DELETED_AT: audio_deleted_at,
                # A failure recorded by an earlier delivery no longer applies.
                Column.TRANSCRIPTION_FAILURE_REASON: "",
            },
        )

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
        for _ in range(_MAX_CONFLICT_RETRIES):
            try:
                current = await self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                return None
            if not _is_operation(current):
                return None
            if current.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIBED:
                return Transition(_to_record(current), changed=False)
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
            return Transition(_to_record({**dict(current), **update}), changed=True)
        raise RuntimeError(
            f"ledger row {partition}/{row} kept changing under concurrent writers; giving up"
        )

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
            records.append(_to_record(entity))
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
