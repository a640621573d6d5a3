"""GET /api/health: liveness, and whether settings and storage are ready."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.health import health_report
    from shared.problems import json_response

    healthy, report = await health_report()
    return json_response(report, status=200 if healthy else 503)
