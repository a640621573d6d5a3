"""Starting a recordResponse on a live call: used by the API and by the bot flow.

Graph answers ``POST .../recordResponse`` with the ``recordOperation`` and its id in the
``Location`` header. The ledger row is written once Graph has answered (the operation id does not
exist before), with ``RequestedAt`` taken before the call: ``running`` (or ``requested`` while
Graph still queues it), or ``completed``/``failed`` at once when the reply already says so. No
notification follows such a reply, so a completed one with a recording becomes a download job
right here.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.graph.errors import (
    GraphAuthorizationError,
    GraphClientError,
    GraphCredentialError,
    GraphError,
    GraphThrottledError,
    GraphUnavailableError,
)
from shared.graph.models import RecordOperation, RecordResponseRequest, normalize_id
from shared.jobs import JOB_TIME_TO_LIVE, DownloadJob
from shared.ledger import OperationLedger, OperationStatus, result_fields, utc_now
from shared.problems import Problem, validation_problem

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.graph.client import GraphCallsClient

log = logging.getLogger(__name__)

# Graph call ids are GUIDs; anything else would only be an attempt to reach another Graph path.
_CALL_ID = re.compile(r"^[A-Za-z0-9-]{1,128}$")
DEFAULT_RETRY_AFTER_SECONDS = 5


def checked_call_id(value: str | None) -> str:
    """The route's ``callId``, or a 400 problem naming it."""
    if not value or not _CALL_ID.fullmatch(value):
        raise Problem(
            400,
            "callId: must be a Graph call id (letters, digits and dashes, at most 128)",
            "Invalid call id",
            {"errors": [{"field": "callId", "message": "not a Graph call id"}]},
        )
    return value


def parse_record_request(body: bytes) -> RecordResponseRequest:
    """The request body as Graph's recordResponse parameters: 400 if not JSON, 422 if invalid."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Problem(
            400,
            "body: not valid JSON; send the recordResponse parameters as a JSON object",
            "Invalid JSON",
        ) from None
    try:
        return RecordResponseRequest.model_validate(data)
    except ValidationError as error:
        raise validation_problem(error.errors()) from None  # type: ignore[arg-type]


@dataclass(frozen=True)
class RecordingStarted:
    """What Graph said about a new record operation, and what this app did with it."""

    call_id: str
    operation_id: str
    operation: RecordOperation
    ledger_status: OperationStatus | None
    job_enqueued: bool

    @property
    def status_path(self) -> str:
        return f"/api/recordings/{self.call_id}/{self.operation_id}"

    def to_json(self) -> dict[str, Any]:
        """The operation as Graph returned it, minus the recording's access token."""
        body = self.operation.to_wire()
        body.pop("recordingAccessToken", None)
        body["id"] = self.operation_id
        body["callId"] = self.call_id
        return body


def _ledger_transition(operation: RecordOperation) -> tuple[OperationStatus, dict[str, Any]]:
    result = operation.result_info
    fields = result_fields(result.code, result.subcode, result.message) if result else {}
    if operation.status == "running":
        return OperationStatus.RUNNING, fields
    if operation.status == "completed":
        if operation.recording_location and operation.recording_access_token is not None:
            return OperationStatus.COMPLETED, fields
        return OperationStatus.FAILED, {
            **fields,
            "FailureReason": "Graph reported the recording completed without a recordingLocation",
        }
    if operation.status == "failed":
        return OperationStatus.FAILED, {
            **fields,
            "FailureReason": "Graph reported the recordResponse failed in its reply",
        }
    return OperationStatus.REQUESTED, fields


async def start_recording(
    call_id: str,
    request: RecordResponseRequest,
    *,
    graph: GraphCallsClient,
    ledger: OperationLedger,
    queue: QueueClient,
    started_by: str,
    tenant_id: str | None = None,
    within: float | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RecordingStarted:
    """Ask Graph to record, then write the ledger row (and the job, if already completed).

    Raises :class:`GraphError` when Graph refuses; the ledger is untouched then.
    """
    from azure.core.exceptions import AzureError

    if request.client_context is None:
        # Graph echoes it in the completion notification: it correlates the two sides.
        request = request.model_copy(update={"client_context": str(uuid.uuid4())})
    requested_at = clock()
    operation, operation_id = await graph.record_response(call_id, request, within=within)
    operation = operation.model_copy(update={"id": operation.id or operation_id})
    call_key = normalize_id(call_id)
    status, fields = _ledger_transition(operation)

    job_enqueued = False
    if status is OperationStatus.COMPLETED:
        # Enqueue before the ledger: the job is what saves the recording.
        job = DownloadJob.from_operation(operation, call_id=call_key, tenant_id=tenant_id)
        await queue.send_message(
            job.to_message(), time_to_live=int(JOB_TIME_TO_LIVE.total_seconds())
        )
        job_enqueued = True

    ledger_status: OperationStatus | None = status
    try:
        await ledger.advance(
            call_key,
            operation_id,
            status,
            RequestedAt=requested_at,
            ClientContext=request.client_context,
            StartedBy=started_by,
            MaxRecordDurationSeconds=request.max_record_duration_in_seconds,
            **fields,
        )
    except AzureError as error:
        # Graph is already recording: failing the request now would make the caller start a
        # second one. The completion notification writes the row later anyway.
        ledger_status = None
        log.error(
            "recordResponse call=%s operation=%s started but the ledger write failed: %s",
            call_key,
            operation_id,
            type(error).__name__,
            extra={"call_id": call_key, "operation_id": operation_id},
        )
    log.info(
        "recordResponse call=%s operation=%s status=%s ledger=%s job=%s by=%s",
        call_key,
        operation_id,
        operation.status,
        ledger_status.value if ledger_status else "not written",
        job_enqueued,
        started_by,
        extra={
            "call_id": call_key,
            "operation_id": operation_id,
            "client_context": request.client_context,
        },
    )
    return RecordingStarted(call_key, operation_id, operation, ledger_status, job_enqueued)


def problem_for_graph_error(error: GraphError) -> Problem:
    """What the API caller gets when Graph refuses or fails (Graph's own words, no internals)."""
    extensions: dict[str, Any] = {
        "graphStatus": error.status,
        "graphCode": error.code,
        "graphRequestId": error.request_id,
        "clientRequestId": error.client_request_id,
    }
    said = f"{error.code}: {error.message}"
    if isinstance(error, GraphAuthorizationError | GraphCredentialError):
        # Our credential, not the caller's: nothing the caller can fix by changing the request.
        return Problem(
            502,
            f"the bot's identity was refused by Graph ({said})",
            "Graph refused the bot's identity",
            extensions,
        )
    if isinstance(error, GraphThrottledError | GraphUnavailableError):
        retry_after = math.ceil(error.retry_after or DEFAULT_RETRY_AFTER_SECONDS)
        return Problem(
            503,
            f"Graph is throttling or unavailable after {error.attempts} attempt(s) ({said}); "
            f"retry after {retry_after} s",
            "Graph unavailable",
            extensions,
            {"Retry-After": str(retry_after)},
        )
    if isinstance(error, GraphClientError) and error.status is not None:
        return Problem(
            error.status,
            f"Graph refused the recordResponse ({said})",
            "Graph refused the request",
            extensions,
        )
    return Problem(502, f"Graph did not answer usably ({said})", "Graph failed", extensions)
