"""POST /api/calls: Graph's notification callback.

Anonymous at the host on purpose: Graph cannot send a function key, so every request is
authenticated here, from its signed bearer token, before the body is even read.
"""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="calls", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def notifications(req: func.HttpRequest) -> func.HttpResponse:
    import logging
    import time

    from shared.auth import InboundAuthError, get_inbound_validator
    from shared.ledger import OperationLedger
    from shared.notifications import (
        QueueUnavailable,
        call_event_handler,
        read_notifications,
        route_notifications,
    )
    from shared.problems import Problem
    from shared.settings import SettingsError, get_settings
    from shared.storage import get_storage

    log = logging.getLogger(__name__)
    started = time.perf_counter()
    request_id = req.headers.get("client-request-id") or req.headers.get("request-id")

    def answer(response: func.HttpResponse, outcome: str, **details: object) -> func.HttpResponse:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        text = " ".join(f"{name}={value}" for name, value in details.items())
        log.info(
            "POST /api/calls status=%s outcome=%s request_id=%s elapsed_ms=%s %s",
            response.status_code,
            outcome,
            request_id,
            elapsed_ms,
            text,
            extra={"status": response.status_code, "outcome": outcome, "request_id": request_id},
        )
        return response

    try:
        settings = get_settings()
    except SettingsError as error:
        # 503, not a crash: Graph retries, and the notification is not lost while an operator
        # fixes the setting. The detail stays generic on this anonymous endpoint; the log names it.
        log.error("POST /api/calls cannot run: %s", error)
        problem = Problem(
            503,
            "the app's settings are invalid; see the logs or GET /api/health",
            headers={"Retry-After": "30"},
        )
        return answer(problem.to_response(), "misconfigured")
    try:
        identity = await get_inbound_validator(settings).validate_authorization(
            req.headers.get("Authorization")
        )
    except InboundAuthError as error:
        outcome = "unauthenticated" if error.status == 401 else "signing_keys_unavailable"
        return answer(error.to_problem().to_response(), outcome, failure=error.failure)

    try:
        payload = read_notifications(
            req.get_body(),
            content_type=req.headers.get("Content-Type"),
            content_length=req.headers.get("Content-Length"),
        )
    except Problem as problem:
        return answer(problem.to_response(), "rejected", detail=repr(problem.detail))

    storage = get_storage(settings)
    try:
        report = await route_notifications(
            payload,
            tenant_id=identity.tenant_id,
            queue=storage.queue,
            ledger=OperationLedger(storage.table),
            handler=call_event_handler(settings, storage),
        )
    except QueueUnavailable as error:
        return answer(
            Problem(503, str(error), headers={"Retry-After": "5"}).to_response(),
            "queue_unavailable",
        )

    outcomes = " ".join(f"{name}={count}" for name, count in sorted(report.outcomes.items()))
    return answer(
        func.HttpResponse(status_code=202),
        "accepted",
        tenant_id=identity.tenant_id,
        notifications=len(payload.value),
        outcomes=repr(outcomes),
    )
