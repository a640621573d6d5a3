"""The management routes' guard: the caller's role checked first, the action audited after.

``@guarded(Role.READ, Action.STATUS)`` under a route's ``@bp.route`` is all a management route
adds: before the route runs, :class:`~shared.auth.management.ManagementAuth` decides who called
and refuses (401/403 problem) a caller without the role; after it, the action and its outcome are
written to the audit trail (:mod:`shared.audit`) and logged. A refused request with a known
identity (a valid token without the role) is audited too; one without (no or invalid token) is
only logged: nobody unauthenticated can fill the table.

The routes' auth level (:data:`MANAGEMENT_AUTH_LEVEL`) is fixed at indexing by
``MANAGEMENT_FUNCTION_KEYS``: ``function`` (the host checks a key) for local development,
``anonymous`` (a token is required, checked here) otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from shared.audit import Action, AuditEntry, AuditTrail, log_audit
from shared.auth.management import FUNCTION_KEYS_INDEXED, Caller, Refused, Role
from shared.logevents import log_event, log_failure
from shared.services import app_services
from shared.storage import Resource

log = logging.getLogger(__name__)

MANAGEMENT_AUTH_LEVEL = (
    func.AuthLevel.FUNCTION if FUNCTION_KEYS_INDEXED else func.AuthLevel.ANONYMOUS
)

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


def guarded(role: Role, action: Action) -> Callable[[Handler], Handler]:
    """Require ``role`` of the route's caller and audit the route's ``action``."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def route(req: func.HttpRequest) -> func.HttpResponse:
            services = app_services()
            try:
                caller = await services.management_auth.authorize(req.headers, req.params, role)
            except Refused as refusal:
                log_event(
                    log,
                    "management: refused",
                    action=action.value,
                    role=role.value,
                    failure=refusal.failure,
                    status=refusal.problem.status,
                    **(refusal.caller.log_fields() if refusal.caller else {}),
                )
                if refusal.caller is not None:
                    await _audit(req, action, role, refusal.caller, refusal.problem.status, None)
                return refusal.problem.to_response()
            response = await handler(req)
            await _audit(req, action, role, caller, response.status_code, response)
            return response

        return route

    return decorate


def _response_json(response: func.HttpResponse | None) -> dict[str, Any]:
    if response is None or response.mimetype != "application/json":
        return {}
    try:
        body = json.loads(response.get_body())
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _audit(
    req: func.HttpRequest,
    action: Action,
    role: Role,
    caller: Caller,
    outcome: int,
    response: func.HttpResponse | None,
) -> None:
    call_id = req.route_params.get("callId") or req.params.get("callId") or ""
    operation_id = req.route_params.get("operationId")
    read_url_issued = None
    if action is Action.START and 200 <= outcome < 300:
        # The operation a start created is known from the answer only.
        started = _response_json(response).get("id")
        operation_id = started if isinstance(started, str) else None
    elif action is Action.STATUS and 200 <= outcome < 300:
        read_url_issued = "recordingUrl" in _response_json(response)
    entry = AuditEntry(
        action=action,
        call_id=call_id,
        operation_id=operation_id,
        caller=caller,
        role=role.value,
        outcome=outcome,
        read_url_issued=read_url_issued,
    )
    services = app_services()
    try:
        await services.storage.ensure_once((Resource.TABLE,))
        await AuditTrail(services.storage.table).record(entry)
    except Exception as error:
        # The action happened: its answer stands, and the log event (at ERROR) carries the
        # whole entry, so the trail has no hole an operator cannot see.
        log_audit(entry, recorded=False)
        log_failure(log, "audit: row not written", error)
        return
    log_audit(entry, recorded=True)
