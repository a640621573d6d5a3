"""/api/recordings: where a call's recordings are (GET), and their erasure (DELETE).

- ``GET /api/recordings/{callId}/{operationId}``, ``GET /api/recordings?callId=``: status;
- ``GET /api/recordings?from=&to=&status=&caller=&top=&continuationToken=``: recordings across
  calls, newest first, paged through the ledger's index rows (shared/ledger/index.py);
- ``DELETE /api/recordings/{callId}/{operationId}``, ``DELETE /api/recordings?callId=``: erase
  (blob deleted, ledger row ``erased`` and kept until the ledger horizon), ``204``;
- ``DELETE /api/recordings?caller=``: erase every recording of one caller, ``200`` with counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import azure.functions as func

from blueprints.guard import MANAGEMENT_AUTH_LEVEL, guarded
from shared.audit import Action
from shared.auth.management import Role
from shared.clock import utc_now
from shared.edge import check_id, storage_failure
from shared.erasure import erase_call, erase_caller, erase_operation
from shared.graph.ids import normalize_id
from shared.ledger import OperationStatus
from shared.ledger.identity import caller_key, canonical_caller
from shared.ledger.index import BadToken, RecordingQuery, decode_token, encode_token
from shared.ledger.rows import STATUS_VALUES
from shared.logevents import log_event
from shared.problems import Problem, json_response, not_found
from shared.recording_access import operation_status
from shared.services import ready_services

bp = func.Blueprint()
log = logging.getLogger(__name__)

DEFAULT_TOP = 50
MAX_TOP = 200
DEFAULT_LIST_SPAN = timedelta(days=1)
MAX_LIST_SPAN = timedelta(days=31)


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
async def list_recordings(req: func.HttpRequest) -> func.HttpResponse:
    if req.params.get("callId") is None:
        return await list_across_calls(req)
    return await list_call_recordings(req)


@guarded(Role.READ, Action.LIST)
async def list_call_recordings(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.params.get("callId"), where="query")
        _one_of_call_and_caller(req.params)
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
async def erase_call_recordings(req: func.HttpRequest) -> func.HttpResponse:
    if req.params.get("caller") is not None and req.params.get("callId") is None:
        return await erase_caller_recordings(req)
    return await erase_one_call(req)


@guarded(Role.READ, Action.LIST_ALL)
async def list_across_calls(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/recordings?from=&to=&status=&caller=&top=&continuationToken=``."""
    try:
        query = parse_list_query(req.params, now=utc_now())
    except Problem as problem:
        log_event(log, "status: rejected list request", reason=problem.detail)
        return problem.to_response()
    services = await ready_services()
    try:
        records, last = await services.ledger.recordings(query)
    except Exception as error:
        return storage_failure(error, "status: storage unavailable").to_response()
    log_event(log, "status: list across calls", recordings=len(records), more=last is not None)
    body: dict[str, object] = {"recordings": [record.to_json() for record in records]}
    if last is not None:
        body["continuationToken"] = encode_token(last)
    return json_response(body, headers={"Cache-Control": "no-store"})


@guarded(Role.ERASE, Action.ERASE_CALLER)
async def erase_caller_recordings(req: func.HttpRequest) -> func.HttpResponse:
    """``DELETE /api/recordings?caller=``: a data subject's erasure request; 200, the counts,
    and whether every call of the caller is erased (``complete``: false asks for a repeat)."""
    caller = req.params.get("caller") or ""
    if canonical_caller(caller) is None:
        return bad_query("caller must be a user id or an E.164 number").to_response()
    services = await ready_services()
    try:
        done = await erase_caller(
            caller, ledger=services.ledger, container=services.storage.container
        )
    except Exception as error:
        return storage_failure(error, "erasure: storage unavailable").to_response()
    erased = done.erased if done is not None else []
    recordings = sum(1 for e in erased if e.previous_status is not OperationStatus.ERASED)
    body = {
        "erasedRecordings": recordings,
        "erasedCalls": len({e.call_id for e in erased}),
        "complete": done is None or done.complete,
    }
    return json_response(body, headers={"Cache-Control": "no-store"})


@guarded(Role.ERASE, Action.ERASE_CALL)
async def erase_one_call(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.params.get("callId"), where="query")
        # Both named: erasing the call alone would surprise whoever meant the caller.
        _one_of_call_and_caller(req.params)
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


def bad_query(detail: str) -> Problem:
    return Problem(400, f"query parameter {detail}", "Invalid query")


def _one_of_call_and_caller(params: Mapping[str, str]) -> None:
    if params.get("caller") is not None:
        raise bad_query("caller cannot be given with callId: name a call or a caller")


def parse_list_query(params: Mapping[str, str], *, now: datetime) -> RecordingQuery:
    """The list's query string as a :class:`RecordingQuery`; a :class:`Problem` (400) naming
    the parameter otherwise."""
    end = _time(params.get("to"), "to") or now
    start = _time(params.get("from"), "from") or end - DEFAULT_LIST_SPAN
    if start > end or end - start > MAX_LIST_SPAN:
        raise bad_query(f"from must be before to, at most {MAX_LIST_SPAN.days} days apart")
    statuses = None
    if params.get("status"):
        statuses = frozenset(s.strip() for s in params["status"].split(",") if s.strip())
        if not statuses <= STATUS_VALUES:
            raise bad_query("status must be ledger statuses, comma-separated")
    caller_key_value = None
    if params.get("caller") is not None:
        canonical = canonical_caller(params["caller"])
        if canonical is None:
            raise bad_query("caller must be a user id or an E.164 number")
        caller_key_value = caller_key(canonical)
    try:
        top = int(params.get("top") or DEFAULT_TOP)
    except ValueError:
        raise bad_query(f"top must be 1 to {MAX_TOP}") from None
    if not 1 <= top <= MAX_TOP:
        raise bad_query(f"top must be 1 to {MAX_TOP}")
    after = None
    if params.get("continuationToken"):
        try:
            after = decode_token(params["continuationToken"])
        except BadToken as error:
            raise bad_query(str(error)) from None
    return RecordingQuery(start, end, top, statuses, caller_key_value, after)


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_query(f"{name} must be an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _unknown_operation(call_id: str, operation_id: str) -> Problem:
    return not_found(
        f"no record operation {operation_id} is known for call {call_id}",
        "Recording operation not found",
    )
