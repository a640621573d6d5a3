"""One recording step as a CloudEvent 1.0: a pure function of the ledger row and the step.

The event is built from the row, never from the moment it is sent: a publish retried an hour later
by another instance sends the same event (same ``id``, ``time``, ``sequence``, ``traceparent`` and
``data``). So every value below comes from columns that no longer change once the step happened:
the step's own time column, the recording's facts (fixed when it was stored), the recording's
trace (written with its stored or failed step). Nothing secret is on the row (no token, no SAS,
no key), and the blob's URL is the plain one: a consumer reads it with its own identity, or asks
the status API for a short-lived URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from shared.blob_layout import transcript_blob_name
from shared.clock import as_utc
from shared.events.caller import caller_of
from shared.ledger import TRANSCRIBED, Column, OperationRecord
from shared.ledger.outbox import TRACEPARENT, TRANSCRIPTION_FAILED_AT, EventStep
from shared.trace_context import usable_traceparent

SPEC_VERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
# The version of every event type's data; a breaking change to one type's data is a new version.
TYPE_VERSION = "v1"

# The column that holds when each step happened.
_TIME_COLUMN = {
    EventStep.ABANDONED: "AbandonedAt",
    EventStep.FAILED: "FailedAt",
    EventStep.STORED: Column.STORED_AT,
    EventStep.TRANSCRIPTION_FAILED: TRANSCRIPTION_FAILED_AT,
    EventStep.TRANSCRIBED: Column.TRANSCRIBED_AT,
    EventStep.EXPIRED: "ExpiredAt",
    EventStep.ERASED: "ErasedAt",
}
_FAILURE_STEPS = frozenset({EventStep.FAILED, EventStep.ABANDONED})
_TRANSCRIPT_STEPS = frozenset({EventStep.TRANSCRIBED, EventStep.TRANSCRIPTION_FAILED})


@dataclass(frozen=True)
class EventFormat:
    """What every event of this deployment shares: its type prefix, its source, where blobs are.

    ``container_url``: the recordings container's URL (no SAS), e.g.
    ``https://<account>.blob.core.windows.net/recordings``.
    """

    type_prefix: str
    source: str
    container_url: str

    def event_type(self, step: EventStep) -> str:
        """``<prefix>.recording.<step>.v1``, e.g. ``com.contoso.callrecording.recording.stored.v1``."""
        return f"{self.type_prefix}.recording.{step.value}.{TYPE_VERSION}"

    def blob_url(self, blob_name: str) -> str:
        return f"{self.container_url.rstrip('/')}/{quote(blob_name, safe='/')}"


def event_id(call_id: str, operation_id: str, step: EventStep) -> str:
    """The same for every delivery of one recording's step: a redelivery is recognisable."""
    return f"{call_id}:{operation_id}:{step.value}"


def subject(call_id: str, operation_id: str) -> str:
    return f"/calls/{call_id}/recordings/{operation_id}"


def recording_event(record: OperationRecord, step: EventStep, fmt: EventFormat) -> dict[str, Any]:
    """The CloudEvent (structured JSON form) of ``step`` of the recording ``record`` describes."""
    event: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event_id(record.call_id, record.operation_id, step),
        "source": fmt.source,
        "type": fmt.event_type(step),
        "subject": subject(record.call_id, record.operation_id),
        "time": _iso(record.get(_TIME_COLUMN[step]) or record.get("UpdatedAt")),
        "datacontenttype": DATA_CONTENT_TYPE,
        # The CloudEvents sequence extension: lexicographic order is the lifecycle's order.
        "sequence": f"{step.sequence:02d}",
        "data": _data(record, step, fmt),
    }
    traceparent = usable_traceparent(record.get(TRACEPARENT), job="event", ids={})
    if traceparent:
        # The W3C distributed-tracing extension: the event joins the recording's trace.
        event["traceparent"] = traceparent
    if event["time"] is None:
        del event["time"]
    return event


def _data(record: OperationRecord, step: EventStep, fmt: EventFormat) -> dict[str, Any]:
    data: dict[str, Any] = {
        "callId": record.call_id,
        "operationId": record.operation_id,
        "step": step.value,
        "sequence": step.sequence,
        "tenantId": record.get(Column.TENANT_ID) or None,
        "startedBy": record.get(Column.STARTED_BY) or None,
        "caller": caller_of(record),
        "recording": _recording(record, fmt),
    }
    if step in _FAILURE_STEPS:
        data["failure"] = _failure(record)
    if step in _TRANSCRIPT_STEPS:
        data["transcript"] = _transcript(record, step, fmt)
    return data


def _recording(record: OperationRecord, fmt: EventFormat) -> dict[str, Any] | None:
    """The stored recording's facts, once it was stored (None before, or if never)."""
    blob_name = record.blob_name
    if not blob_name or record.get(Column.SHA256) is None:
        return None
    return {
        "url": fmt.blob_url(blob_name),
        "contentType": record.get(Column.CONTENT_TYPE),
        "sizeBytes": record.get(Column.SIZE_BYTES),
        "sha256": record.get(Column.SHA256),
        # From the stored WAV's own header, never from the notification.
        "durationSeconds": record.get(Column.DURATION_SECONDS),
        "storedAt": _iso(record.get(Column.STORED_AT)),
        "expiresAt": _iso(record.get(Column.EXPIRES_AT)),
        "maxDurationSeconds": record.get(Column.MAX_RECORD_DURATION_SECONDS),
    }


def _failure(record: OperationRecord) -> dict[str, Any]:
    """Why there is no recording: the app's reason and Graph's resultInfo with its meaning."""
    return {
        "reason": record.get(Column.FAILURE_REASON) or None,
        "code": record.get(Column.RESULT_CODE),
        "subcode": record.get(Column.RESULT_SUBCODE),
        "meaning": record.get(Column.RESULT_MEANING) or None,
        "message": record.get(Column.RESULT_MESSAGE) or None,
    }


def _transcript(record: OperationRecord, step: EventStep, fmt: EventFormat) -> dict[str, Any]:
    transcribed = step is EventStep.TRANSCRIBED
    blob_name = record.blob_name
    return {
        "status": TRANSCRIBED if transcribed else "transcription_failed",
        "url": fmt.blob_url(transcript_blob_name(blob_name)) if transcribed and blob_name else None,
        "reason": None if transcribed else record.get(Column.TRANSCRIPTION_FAILURE_REASON) or None,
        "audioDeleted": bool(record.get(Column.AUDIO_DELETED_AT)) if transcribed else False,
    }


def _iso(value: object) -> str | None:
    """RFC 3339 in UTC to the millisecond: the same text whether the time comes from the
    step's own write or is read back from Table Storage (which formats fractions its own way)."""
    if isinstance(value, datetime):
        utc = as_utc(value)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    return str(value) if value else None
