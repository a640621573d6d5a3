"""POST /api/calls/{callId}/recordResponse: start a recordResponse on a live call."""

from __future__ import annotations

import azure.functions as func

from blueprints.guard import MANAGEMENT_AUTH_LEVEL, guarded
from shared.audit import Action
from shared.auth.management import Role
from shared.edge import (
    check_id,
    is_storage_failure,
    parse_record_request,
    problem_for_graph_error,
)
from shared.enqueue import QueueUnavailable
from shared.graph.errors import GraphError
from shared.problems import Problem, json_response, unavailable
from shared.record_response import start_recording
from shared.services import ready_services

bp = func.Blueprint()


@bp.route(
    route="calls/{callId}/recordResponse",
    methods=["POST"],
    auth_level=MANAGEMENT_AUTH_LEVEL,
)
@guarded(Role.RECORD, Action.START)
async def start_record_response(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.route_params.get("callId"))
        request = parse_record_request(req.get_body())
        services = await ready_services()
        started = await start_recording(
            call_id,
            request,
            graph=services.graph,
            ledger=services.ledger,
            queue=services.storage.queue,
            started_by="api",
            caller_identity=services.settings.caller_identity,
        )
    except Problem as problem:
        return problem.to_response()
    except GraphError as error:
        return problem_for_graph_error(error).to_response()
    except Exception as error:
        if not (isinstance(error, QueueUnavailable) or is_storage_failure(error)):
            raise
        # Only the download job of a reply that was already completed gets here.
        detail = (
            f"Graph recorded, but its download job could not be queued ({type(error).__name__})"
        )
        return unavailable(detail, retry_after=None, title="Storage unavailable").to_response()
    return json_response(started.to_json(), status=202, headers={"Location": started.status_path})
