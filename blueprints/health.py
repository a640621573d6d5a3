"""GET /api/health: liveness, and whether settings and storage are ready."""

from __future__ import annotations

import azure.functions as func

from shared.health import health_report
from shared.problems import json_response
from shared.services import app_services

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    healthy, report = await health_report(app_services)
    return json_response(report, status=200 if healthy else 503)
