"""The audit trail's triggers: its route, and the daily sweep past its horizon.

- ``GET /api/recordings/{callId}/{operationId}/audit``: who read, started or erased a recording.
  Needs the ``Recordings.Audit`` role, apart from ``Recordings.Read``: whoever may read
  recordings need not see who else did. Reading the audit is itself audited.
- a daily timer deletes audit rows older than ``AUDIT_RETENTION_DAYS``. Daily, not in the
  five-minute cleanup: a horizon of days gains nothing from 288 sweeps a day, and the cleanup's
  round trips stay what they were.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.functions as func

from blueprints.guard import MANAGEMENT_AUTH_LEVEL, guarded
from shared.audit import Action, AuditTrail
from shared.auth.management import Role
from shared.clock import utc_now
from shared.edge import check_id, storage_failure
from shared.graph.ids import normalize_id
from shared.logevents import log_event
from shared.problems import Problem, json_response
from shared.services import ready_services

bp = func.Blueprint()
log = logging.getLogger(__name__)

# Daily at 03:17 UTC (6-field NCRONTAB); off the hour, away from other jobs' minute zero.
AUDIT_SWEEP_SCHEDULE = "0 17 3 * * *"
# Rows deleted per run at most; the rest waits a day (a day's actions are far fewer).
AUDIT_SWEEP_LIMIT = 5000


@bp.route(
    route="recordings/{callId}/{operationId}/audit",
    methods=["GET"],
    auth_level=MANAGEMENT_AUTH_LEVEL,
)
@guarded(Role.AUDIT, Action.AUDIT)
async def recording_audit(req: func.HttpRequest) -> func.HttpResponse:
    try:
        call_id = check_id("callId", req.route_params.get("callId"))
        operation_id = check_id("operationId", req.route_params.get("operationId"))
    except Problem as problem:
        log_event(log, "audit: rejected request", reason=problem.detail)
        return problem.to_response()

    services = await ready_services()
    try:
        entries, truncated = await AuditTrail(services.storage.table).for_recording(
            call_id, operation_id
        )
    except Exception as error:
        return storage_failure(
            error, "audit: storage unavailable", call_id=call_id, operation_id=operation_id
        ).to_response()
    body = {
        "callId": normalize_id(call_id),
        "operationId": normalize_id(operation_id),
        "entries": entries,
        "truncated": truncated,
    }
    return json_response(body, headers={"Cache-Control": "no-store"})


@bp.timer_trigger(
    schedule=AUDIT_SWEEP_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True
)
async def sweep_audit(timer: func.TimerRequest) -> None:
    services = await ready_services()
    horizon = timedelta(days=services.settings.audit_retention_days)
    removed = await AuditTrail(services.storage.table).sweep(
        utc_now() - horizon, limit=AUDIT_SWEEP_LIMIT
    )
    log_event(
        log,
        "audit: swept",
        rows_deleted=removed,
        limit_reached=removed >= AUDIT_SWEEP_LIMIT,
        past_due=timer.past_due,
    )
