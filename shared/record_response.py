"""Starting a recordResponse on a live call: used by the API and by the bot flow alike.

Graph answers ``POST .../recordResponse`` with the ``recordOperation`` and its id in the
``Location`` header. The ledger row is written once Graph has answered (the operation id does not
exist before), with ``RequestedAt`` taken before the call: ``running`` (or ``requested`` while
Graph still queues it), or ``completed``/``failed`` at once when the reply already says so. No
notification follows such a reply, so a completed one with a recording becomes a download job
right here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.clock import utc_now
from shared.enqueue import enqueue_jobs
from shared.graph.errors import GraphError
from shared.graph.ids import normalize_id
from shared.ledger import OperationLedger, OperationStatus
from shared.ledger.identity import Privacy
from shared.logevents import log_event, log_failure

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.graph.client import GraphCallsClient
    from shared.graph.models import RecordOperation, RecordResponseRequest

log = logging.getLogger(__name__)


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


def _first_status(operation: RecordOperation) -> tuple[OperationStatus, str | None]:
    """The ledger status Graph's reply puts the operation in, and why, when it failed."""
    if operation.status == "running":
        return OperationStatus.RUNNING, None
    if operation.status == "completed":
        if operation.recording_location and operation.recording_access_token is not None:
            return OperationStatus.COMPLETED, None
        return (
            OperationStatus.FAILED,
            "Graph reported the recording completed without a recordingLocation",
        )
    if operation.status == "failed":
        return OperationStatus.FAILED, "Graph reported the recordResponse failed in its reply"
    return OperationStatus.REQUESTED, None


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
    attempt: int | None = None,
    caller_identity: Privacy | None = None,
) -> RecordingStarted:
    """Ask Graph to record, then write the ledger row (and the job, if already completed).

    Raises :class:`GraphError` when Graph refuses; the ledger is untouched then.
    ``caller_identity`` (the API's recordings, on calls the bot may not have answered): the
    call's metadata is captured from ``GET /communications/calls/{id}`` if it was not already.
    """
    from azure.core.exceptions import AzureError

    from shared.jobs import DownloadJob

    if request.client_context is None:
        # Graph echoes it in the completion notification: it correlates the two sides.
        request = request.model_copy(update={"client_context": str(uuid.uuid4())})
    requested_at = clock()
    operation, operation_id = await graph.record_response(call_id, request, within=within)
    operation = operation.model_copy(update={"id": operation.id or operation_id})
    call_key = normalize_id(call_id)
    status, failure_reason = _first_status(operation)

    job_enqueued = False
    if status is OperationStatus.COMPLETED:
        # Enqueue before the ledger: the job is what saves the recording.
        job = DownloadJob.from_operation(operation, call_id=call_key, tenant_id=tenant_id)
        (await enqueue_jobs(queue, [job])).raise_if_refused(1)
        job_enqueued = True

    ledger_status: OperationStatus | None = status
    try:
        await ledger.mark_started(
            call_key,
            operation_id,
            status,
            requested_at=requested_at,
            client_context=request.client_context,
            started_by=started_by,
            max_record_duration_seconds=request.max_record_duration_in_seconds,
            result=operation.result_info,
            failure_reason=failure_reason,
            attempt=attempt,
            prompt=_prompt_of(request),
        )
    except AzureError as error:
        # Graph is already recording: failing the request now would make the caller start a
        # second one. The completion notification writes the row later anyway.
        ledger_status = None
        log_failure(
            log,
            "recordResponse ledger write failed",
            error,
            call_id=call_key,
            operation_id=operation_id,
        )
    if caller_identity is not None:
        await capture_from_graph(
            call_key, graph=graph, ledger=ledger, privacy=caller_identity, within=within
        )
    log_event(
        log,
        "recordResponse",
        call_id=call_key,
        operation_id=operation_id,
        status=operation.status,
        ledger=ledger_status.value if ledger_status else "not written",
        job=job_enqueued,
        started_by=started_by,
        client_context=request.client_context,
        attempt=attempt,
    )
    return RecordingStarted(call_key, operation_id, operation, ledger_status, job_enqueued)


def _prompt_of(request: RecordResponseRequest) -> str | None:
    for prompt in request.prompts or []:
        info = getattr(prompt, "media_info", None)
        uri = getattr(info, "uri", None)
        if isinstance(uri, str) and uri:
            return uri
    return None


async def capture_from_graph(
    call_id: str,
    *,
    graph: GraphCallsClient,
    ledger: OperationLedger,
    privacy: Privacy,
    within: float | None = None,
) -> None:
    """Who called, for a call the bot did not see arrive: what ``GET /communications/calls/{id}``
    says, or "unknown" when Graph does not answer. Never fails the recording."""
    from shared.ledger.identity import call_metadata_columns, unknown_call_columns

    try:
        if await ledger.call_fields(call_id):
            return  # captured when the call came in (or by an earlier recording)
        try:
            call = await graph.get_call(call_id, within=within)
            columns = call_metadata_columns(call.to_wire(), privacy=privacy, source="graph")
        except GraphError as error:
            log_event(log, "call metadata: Graph did not say", call_id=call_id, code=error.code)
            columns = unknown_call_columns(privacy)
        await ledger.mark_call_metadata(call_id, columns)
    except Exception as error:
        log_failure(log, "call metadata capture failed", error, call_id=call_id)
