"""Ledger rows: their columns, statuses and keys, and the record the rest of the app sees.

One Table Storage row per record operation (partition = call, row = operation), and the
once-per-call claim rows in partitions of their own. A status only ever moves forward
(:data:`RANK`); the groups of statuses the rest of the app asks about are named here, once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

from shared.graph.ids import normalize_id
from shared.graph.subcodes import describe_subcode
from shared.ledger.identity import CALL_COLUMNS, call_view

if TYPE_CHECKING:
    from shared.graph.models import ResultInfo
    from shared.jobs import DownloadJob

ROW_KIND_OPERATION = "operation"
ROW_KIND_CLAIM = "claim"
ROW_KIND_CALL = "call"
# Index rows (shared/ledger/index.py): a caller's calls, and recordings by the hour they came.
ROW_KIND_CALLER_INDEX = "callerIndex"
ROW_KIND_TIME_INDEX = "timeIndex"
# The call's erasure guard: one row in the call's own partition, beside its operations, so that a
# download's first write and the guard can be read in one query and written in one transaction
# (shared/ledger/lease.py). No operation's key can start with "~" (``table_key`` escapes it).
CALL_GUARD_ROW = "~call"
# Table keys may not hold / \\ # ? or control characters, and stop at 1 KiB; "%" is escaped too
# so that the escaping cannot be forged.
_FORBIDDEN_KEY_CHARS = str.maketrans(
    {c: f"%{ord(c):02X}" for c in "/\\#?%" + "".join(map(chr, [*range(32), *range(127, 160)]))}
)
_MAX_KEY_LENGTH = 256
# Once-per-call claims live in partitions of their own: no operation id, whatever it looks like,
# can collide with a claim row, and a claim row is never mistaken for an operation.
CLAIM_PARTITION_PREFIX = "~claims~"


class Column:
    """Ledger column names (PascalCase, as Table Storage shows them)."""

    ATTEMPT = "Attempt"
    BLOB_NAME = "BlobName"
    CALL_END_MESSAGE = "CallEndMessage"
    CLIENT_CONTEXT = "ClientContext"
    COMPLETED_AT = "CompletedAt"
    CONTENT_TYPE = "ContentType"
    # The download lease (shared/ledger/lease.py): storage internals, not shown by the API.
    DOWNLOAD_HOLDER = "DownloadHolder"
    DOWNLOAD_LEASE_UNTIL = "DownloadLeaseUntil"
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
    # The stored WAV's own header (shared/blob_layout.py: wav_facts); absent: not a WAV we read.
    DURATION_SECONDS = "DurationSeconds"
    SAMPLE_RATE = "SampleRate"
    CHANNELS = "Channels"
    BITS_PER_SAMPLE = "BitsPerSample"
    AUDIO_FORMAT = "AudioFormat"
    # The prompt Graph played before recording (its URI), as the recordResponse asked.
    PROMPT = "Prompt"
    # Where the recording's index row is (shared/ledger/index.py): storage internals.
    INDEX_KEY = "IndexKey"


# Values of ``Column.TRANSCRIPTION_STATUS``.
TRANSCRIBED = "transcribed"
TRANSCRIPTION_FAILED = "transcription_failed"


# Why an operation was settled without a recording, in the words the status API shows.
ABANDONED_REASON = "the call ended before the recording completed; no completion will follow"
NO_COMPLETION_REASON = "no completion notification arrived"
POISONED_REASON = "download kept failing; message poisoned"
TRANSCRIPTION_POISONED_REASON = "transcription job could not be processed; message poisoned"


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
RANK: dict[OperationStatus, int] = {
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
STATUS_VALUES = frozenset(status.value for status in OperationStatus)
# Each status stamps its own time column, e.g. ``StoredAt``.
STAMP = {status: f"{status.value.capitalize()}At" for status in OperationStatus}

STILL_RECORDING = frozenset({OperationStatus.REQUESTED, OperationStatus.RUNNING})
"""Graph is recording (or about to): no completion has come yet. Only the call's end (the bot)
or the cleanup's abandon step, when none came in time, settles these; nothing moves the call on
while its latest recording is here."""

NOTHING_LEFT_TO_DOWNLOAD = frozenset(
    {OperationStatus.STORED, OperationStatus.EXPIRED, OperationStatus.ERASED}
)
"""No delivery downloads this recording again: it is stored, or its retention or an erasure
ended it. A delivery that finds its row here stops waiting for the download lease. (``failed``
is not here: a later delivery of the same completion may still store the recording.)"""

RETENTION_OVER = frozenset({OperationStatus.EXPIRED, OperationStatus.ERASED})
"""The recording is gone: its row keeps no caller identity (cleared in the same write)."""

RECORDING_FATE_KNOWN = frozenset({OperationStatus.FAILED} | NOTHING_LEFT_TO_DOWNLOAD)
"""The download is over one way or the other (stored, failed, expired, erased): the bot's
after-recording step (thank-you, hang-up) may run."""


def table_key(value: str) -> str:
    """A Table Storage key for an id: canonical form, characters Tables forbid escaped.

    Graph's ids are GUIDs (the edge refuses anything else); this stays total for whatever reaches
    storage another way (an old or hand-written queue message): overlong keys end in a digest.
    """
    key = normalize_id(value).translate(_FORBIDDEN_KEY_CHARS)
    if key.startswith("~"):
        key = "%7E" + key[1:]  # "~" leads the call's guard row (CALL_GUARD_ROW) and nothing else
    if len(key) > _MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode()).hexdigest()
        key = f"{key[: _MAX_KEY_LENGTH - 65]}~{digest}"
    return key


def claim_partition(call_id: str) -> str:
    """The partition of a call's once-per-call claim rows (e.g. "answer", "hang-up")."""
    return CLAIM_PARTITION_PREFIX + table_key(call_id)


# Columns the status API never shows: keys, and who holds the download.
_INTERNAL_COLUMNS = frozenset(
    {
        "PartitionKey",
        "RowKey",
        "Status",
        "Kind",
        "CallId",
        "OperationId",
        Column.DOWNLOAD_HOLDER,
        Column.DOWNLOAD_LEASE_UNTIL,
        Column.INDEX_KEY,
        "CallerKey",
    }
)


class OperationIds(TypedDict):
    call_id: str
    operation_id: str


@dataclass(frozen=True)
class OperationRecord:
    """One ledger row, as the rest of the app sees it."""

    call_id: str
    operation_id: str
    status: OperationStatus
    fields: Mapping[str, Any]

    def ids(self) -> OperationIds:
        """The operation's ids as every log line and span names them."""
        return {"call_id": self.call_id, "operation_id": self.operation_id}

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
            if name in _INTERNAL_COLUMNS or name in _CALL_COLUMNS:
                continue
            key = name[0].lower() + name[1:]
            body[key] = value.isoformat() if isinstance(value, datetime) else value
        # Who called and what was called, grouped (shared/ledger/identity.py).
        body.update(call_view(self.fields))
        return body


_CALL_COLUMNS = frozenset(CALL_COLUMNS)


@dataclass(frozen=True)
class CallGuard:
    """The call's erasure guard row as read: its ETag (None: no row yet) and, once the call was
    erased, when. Every first write of a download goes in one transaction with it."""

    etag: str | None
    erased_at: datetime | None = None
    # The call's metadata (shared/ledger/identity.py), copied onto each recording's first write.
    call_fields: Mapping[str, Any] | None = None

    @property
    def erased(self) -> bool:
        return self.erased_at is not None

    @classmethod
    def of(cls, fields: Mapping[str, Any], etag: str) -> CallGuard:
        erased_at = fields.get(STAMP[OperationStatus.ERASED])
        call_fields = {name: fields[name] for name in CALL_COLUMNS if name in fields}
        return cls(etag, erased_at if isinstance(erased_at, datetime) else None, call_fields)


NO_GUARD = CallGuard(None)


def call_guard_row(call_id: str, now: datetime, **fields: Any) -> dict[str, Any]:
    """The call's guard row (:data:`CALL_GUARD_ROW`); ``fields``: ``ErasedAt`` from an erasure."""
    return {
        "PartitionKey": table_key(call_id),
        "RowKey": CALL_GUARD_ROW,
        "Kind": ROW_KIND_CALL,
        "CallId": normalize_id(call_id),
        # The ledger horizon removes it like any row, by its last update.
        "UpdatedAt": now,
        **fields,
    }


@dataclass(frozen=True)
class Transition:
    """The outcome of a write: the row after it, and whether this write changed it."""

    record: OperationRecord
    changed: bool
    # The row's ETag after this write (or as read): the next write can go without a read.
    etag: str | None = None


def new_operation_row(
    call_id: str, operation_id: str, status: OperationStatus, now: datetime, **fields: Any
) -> dict[str, Any]:
    """A new operation row at ``status``, stamped ``now``, with extra ``fields``."""
    return {
        "PartitionKey": table_key(call_id),
        "RowKey": table_key(operation_id),
        "Kind": ROW_KIND_OPERATION,
        "CallId": normalize_id(call_id),
        "OperationId": normalize_id(operation_id),
        "Status": status.value,
        "CreatedAt": now,
        "UpdatedAt": now,
        STAMP[status]: now,
        **fields,
    }


def etag_of(response: Mapping[str, Any] | None) -> str | None:
    """The ETag a create or update answered with (the SDK returns the response's metadata)."""
    value = (response or {}).get("etag")
    return str(value) if value else None


def to_record(entity: Mapping[str, Any]) -> OperationRecord:
    return OperationRecord(
        call_id=str(entity.get("CallId") or entity["PartitionKey"]),
        operation_id=str(entity.get("OperationId") or entity["RowKey"]),
        status=OperationStatus(entity["Status"]),
        fields=dict(entity),
    )


def is_operation_row(entity: Mapping[str, Any]) -> bool:
    return entity.get("Kind", ROW_KIND_OPERATION) == ROW_KIND_OPERATION and (
        entity.get("Status") in STATUS_VALUES
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


def result_columns(result: ResultInfo | None) -> dict[str, Any]:
    return result_fields(result.code, result.subcode, result.message) if result else {}


def job_result(job: DownloadJob) -> ResultInfo | None:
    """The completion's ``resultInfo`` as the download job carries it."""
    from shared.graph.models import ResultInfo

    if job.result_code is None and job.result_subcode is None and not job.result_message:
        return None
    return ResultInfo(code=job.result_code, subcode=job.result_subcode, message=job.result_message)
