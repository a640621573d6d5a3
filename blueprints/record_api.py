"""POST /api/calls/{callId}/recordResponse: start a recordResponse on a live call."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.route(
    route="calls/{callId}/recordResponse",
    methods=["POST"],
    auth_level=func.AuthLevel.FUNCTION,
)
async def start_record_response(req: func.HttpRequest) -> func.HttpResponse:
    from azure.core.exceptions import AzureError

    from shared.graph.client import get_graph_client
    from shared.graph.errors import GraphError
    from shared.ledger import OperationLedger
    from shared.problems import Problem, json_response
    from shared.record_api import (
        checked_call_id,
        parse_record_request,
        problem_for_graph_error,
        start_recording,
    )
    from shared.settings import get_settings
    from shared.storage import get_storage

    try:
        call_id = checked_call_id(req.route_params.get("callId"))
        request = parse_record_request(req.get_body())
        settings = get_settings()
        storage = get_storage(settings)
        started = await start_recording(
            call_id,
            request,
            graph=get_graph_client(settings),
            ledger=OperationLedger(storage.table),
            queue=storage.queue,
            started_by="api",
        )
    except Problem as problem:
        return problem.to_response()
    except GraphError as error:
        return problem_for_graph_error(error).to_response()
    except AzureError as error:
        # Only the download job of a reply that was already completed gets here.
        detail = (
            f"Graph recorded, but its download job could not be queued ({type(error).__name__})"
        )
        return Problem(503, detail, "Storage unavailable").to_response()
    return json_response(started.to_json(), status=202, headers={"Location": started.status_path})
