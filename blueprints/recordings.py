"""/api/recordings: where a call's recordings are (GET), and their erasure (DELETE).

- ``GET /api/recordings/{callId}/{operationId}``, ``GET /api/recordings?callId=``: status;
- ``DELETE /api/recordings/{callId}/{operationId}``, ``DELETE /api/recordings?callId=``: erase
  (blob deleted, ledger row ``erased`` and kept until the ledger horizon), ``204``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.functions as func

from blueprints.guard import MANAGEMENT_AUTH_LEVEL, guarded
from shared.audit import Action
from shared.auth.management import Role
from shared.clock import utc_now
from shared.edge import check_id, storage_failure
from shared.erasure import erase_call, erase_operation
from shared.graph.ids import normalize_id
from shared.logevents import log_event
from shared.problems import Problem, json_response, not_found
from shared.recording_access import operation_status
from shared.services import ready_services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.route(
    route="recordings/{callId}/{operationId}", methods=["GET"], auth_level=MANAGEMENT_AUTH_LEVEL
)
@guarded(Role.READ, Action.STATUS)
async def recording_status(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.route_params.get("callId"))
        operation_id = check_id("operationId", req.route_params.get("operationId"))
    except Problem as problem:
        log_event(log, "status: rejected request", reason=problem.detail)
        return problem.to_response()

    services = await ready_services()
    try:
        record = await services.ledger.get(call_id, operation_id)
        if record is None:
            log_event(log, "status: unknown", call_id=call_id, operation_id=operation_id)
            return _unknown_operation(call_id, operation_id).to_response()
        body = await operation_status(
            record,
            blob_service=services.storage.blob_service,
            container_name=services.storage.container_name,
            now=utc_now(),
            url_ttl=timedelta(minutes=services.settings.status_url_ttl_minutes),
            transcript_max_bytes=services.settings.transcription_max_response_bytes,
        )
    except Exception as error:
        return storage_failure(
            error, "status: storage unavailable", call_id=call_id, operation_id=operation_id
        ).to_response()
    log_event(
        log,
        "status",
        call_id=record.call_id,
        operation_id=record.operation_id,
        status=record.status.value,
        url="recordingUrl" in body,
    )
    return json_response(body, headers={"Cache-Control": "no-store"})


@bp.route(route="recordings", methods=["GET"], auth_level=MANAGEMENT_AUTH_LEVEL)
@guarded(Role.READ, Action.LIST)
async def list_recordings(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.params.get("callId"), where="query")
    except Problem as problem:
        log_event(log, "status: rejected list request", reason=problem.detail)
        return problem.to_response()

    services = await ready_services()
    try:
        records = await services.ledger.list_call(call_id)
    except Exception as error:
        return storage_failure(error, "status: storage unavailable", call_id=call_id).to_response()
    log_event(log, "status: list", call_id=call_id, operations=len(records))
    body = {
        "callId": normalize_id(call_id),
        "operations": [record.to_json() for record in records],
    }
    return json_response(body, headers={"Cache-Control": "no-store"})


@bp.route(
    route="recordings/{callId}/{operationId}",
    methods=["DELETE"],
    auth_level=MANAGEMENT_AUTH_LEVEL,
)
@guarded(Role.ERASE, Action.ERASE)
async def erase_recording(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.route_params.get("callId"))
        operation_id = check_id("operationId", req.route_params.get("operationId"))
    except Problem as problem:
        log_event(log, "erasure: rejected request", reason=problem.detail)
        return problem.to_response()

    services = await ready_services()
    try:
        erased = await erase_operation(
            call_id, operation_id, ledger=services.ledger, container=services.storage.container
        )
    except Exception as error:
        return storage_failure(
            error, "erasure: storage unavailable", call_id=call_id, operation_id=operation_id
        ).to_response()
    if erased is None:
        log_event(log, "erasure: unknown", call_id=call_id, operation_id=operation_id)
        return _unknown_operation(call_id, operation_id).to_response()
    return func.HttpResponse(status_code=204)


@bp.route(route="recordings", methods=["DELETE"], auth_level=MANAGEMENT_AUTH_LEVEL)
@guarded(Role.ERASE, Action.ERASE_CALL)
async def erase_call_recordings(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.params.get("callId"), where="query")
    except Problem as problem:
        log_event(log, "erasure: rejected request", reason=problem.detail)
        return problem.to_response()

    services = await ready_services()
    try:
        erased = await erase_call(
            call_id, ledger=services.ledger, container=services.storage.container
        )
    except Exception as error:
        return storage_failure(error, "erasure: storage unavailable", call_id=call_id).to_response()
    if erased is None:
        log_event(log, "erasure: unknown call", call_id=call_id)
        return not_found(
            f"no record operation is known for call {call_id}", "Call not found"
        ).to_response()
    log_event(log, "erasure: call", call_id=call_id, operations=len(erased))
    return func.HttpResponse(status_code=204)


def _unknown_operation(call_id: str, operation_id: str) -> Problem:
    return not_found(
        f"no record operation {operation_id} is known for call {call_id}",
        "Recording operation not found",
    )
