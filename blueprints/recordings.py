"""GET /api/recordings/{callId}/{operationId} and GET /api/recordings?callId=: where recordings are."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)

# Graph ids are GUIDs; anything much longer is not an id (and would not fit a table key).
_MAX_ID_LENGTH = 256


def _invalid_id(name: str, value: str) -> str | None:
    """Why ``value`` is not usable as the id named ``name``, or None if it is."""
    if not value.strip():
        return f"{name} is required"
    if len(value) > _MAX_ID_LENGTH:
        return f"{name} is longer than {_MAX_ID_LENGTH} characters"
    if any(ord(character) < 32 for character in value):
        return f"{name} contains control characters"
    return None


@bp.route(
    route="recordings/{callId}/{operationId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION
)
async def recording_status(req: func.HttpRequest) -> func.HttpResponse:
    from datetime import timedelta

    from azure.core.exceptions import AzureError

    from shared.ledger import OperationLedger, utc_now
    from shared.problems import Problem, json_response
    from shared.recording_access import operation_status
    from shared.settings import get_settings
    from shared.storage import get_storage

    call_id = req.route_params.get("callId", "")
    operation_id = req.route_params.get("operationId", "")
    for name, value in (("callId", call_id), ("operationId", operation_id)):
        reason = _invalid_id(name, value)
        if reason:
            log.info("status: rejected request, %s", reason)
            return Problem(400, reason, "Invalid recording id", {"field": name}).to_response()

    settings = get_settings()
    storage = get_storage(settings)
    try:
        record = await OperationLedger(storage.table).get(call_id, operation_id)
        if record is None:
            log.info("status: unknown call_id=%s operation_id=%s", call_id, operation_id)
            return Problem(
                404,
                f"no record operation {operation_id} is known for call {call_id}",
                "Recording operation not found",
            ).to_response()
        body = await operation_status(
            record,
            blob_service=storage.blob_service,
            container_name=storage.container_name,
            now=utc_now(),
            url_ttl=timedelta(minutes=settings.status_url_ttl_minutes),
        )
    except AzureError as error:
        log.error(
            "status: storage unavailable call_id=%s operation_id=%s (%s)",
            call_id,
            operation_id,
            type(error).__name__,
        )
        return Problem(
            503, "storage is unavailable; retry shortly", headers={"Retry-After": "5"}
        ).to_response()
    log.info(
        "status: call_id=%s operation_id=%s status=%s url=%s",
        record.call_id,
        record.operation_id,
        record.status.value,
        "recordingUrl" in body,
        extra={"call_id": record.call_id, "operation_id": record.operation_id},
    )
    return json_response(body, headers={"Cache-Control": "no-store"})


@bp.route(route="recordings", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_recordings(req: func.HttpRequest) -> func.HttpResponse:
    from azure.core.exceptions import AzureError

    from shared.graph.models import normalize_id
    from shared.ledger import OperationLedger
    from shared.problems import Problem, json_response
    from shared.settings import get_settings
    from shared.storage import get_storage

    call_id = req.params.get("callId", "")
    reason = _invalid_id("callId", call_id)
    if reason:
        log.info("status: rejected list request, %s", reason)
        return Problem(
            400, f"query parameter {reason}", "Invalid query", {"field": "callId"}
        ).to_response()

    storage = get_storage(get_settings())
    try:
        records = await OperationLedger(storage.table).list_call(call_id)
    except AzureError as error:
        log.error("status: storage unavailable call_id=%s (%s)", call_id, type(error).__name__)
        return Problem(
            503, "storage is unavailable; retry shortly", headers={"Retry-After": "5"}
        ).to_response()
    log.info("status: call_id=%s operations=%d", call_id, len(records), extra={"call_id": call_id})
    body = {
        "callId": normalize_id(call_id),
        "operations": [record.to_json() for record in records],
    }
    return json_response(body, headers={"Cache-Control": "no-store"})
