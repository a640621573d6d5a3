"""POST /api/calls: Graph's notification callback.

Anonymous at the host on purpose: Graph cannot send a function key, so every request is
authenticated here, from its signed bearer token, before the body is even read.
"""

from __future__ import annotations

import logging
import time

import azure.functions as func

from shared.auth.errors import InboundAuthError
from shared.logevents import log_event
from shared.notification_ids import recording_ids
from shared.notifications import NotStored, read_notifications, route_notifications
from shared.notifications.reading import LegacyCallNotification
from shared.problems import Problem, unavailable
from shared.services import app_services
from shared.settings import SettingsError
from shared.telemetry import mark_error, notification_received, span

bp = func.Blueprint()
log = logging.getLogger(__name__)

# What Graph is asked to wait before resending: a fix of the settings takes an operator longer.
RETRY_AFTER_SECONDS = 5
SETTINGS_RETRY_AFTER_SECONDS = 30


@bp.route(route="calls", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def notifications(req: func.HttpRequest) -> func.HttpResponse:
    # The span roots the recording's trace (in Azure, under the host's request span); the
    # arrival time is what the answer deadline is measured from.
    with notification_received(), span("POST /api/calls"):
        return await _handle(req)


async def _handle(req: func.HttpRequest) -> func.HttpResponse:
    started = time.perf_counter()
    request_id = req.headers.get("client-request-id") or req.headers.get("request-id")
    # Once the body is read: the ids operators search a call's telemetry by.
    ids: dict[str, str] = {}

    def answer(response: func.HttpResponse, outcome: str, **details: object) -> func.HttpResponse:
        log_event(
            log,
            "POST /api/calls",
            status=response.status_code,
            outcome=outcome,
            request_id=request_id,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            **ids,
            **details,
        )
        if response.status_code >= 500:
            mark_error(outcome)
        return response

    try:
        # No storage set-up up front: the queue answers whether the account is fresh (see
        # on_missing_queue below), and the ledger's table is made sure of only when this
        # payload writes the ledger. A completion then loads neither the Blob nor Tables SDK.
        services = app_services()
    except SettingsError as error:
        # 503, not a crash: Graph retries, and the notification is not lost while an operator
        # fixes the setting. The detail stays generic on this anonymous endpoint; the log names it.
        log.error("POST /api/calls cannot run: %s", error)
        problem = unavailable(
            "the app's settings are invalid; see the logs or GET /api/health",
            retry_after=SETTINGS_RETRY_AFTER_SECONDS,
        )
        return answer(problem.to_response(), "misconfigured")
    try:
        identity = await services.inbound.validate_authorization(req.headers.get("Authorization"))
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
        return answer(problem.to_response(), "rejected", detail=problem.detail)
    except LegacyCallNotification as legacy:
        # 204 asks the platform to send this notification again in the Graph format.
        return answer(
            func.HttpResponse(status_code=204),
            "legacy_format",
            tenant_id=identity.tenant_id,
            legacy_call_id=legacy.legacy_call_id,
        )
    ids.update(recording_ids(payload.value))

    try:
        report = await route_notifications(
            payload,
            tenant_id=identity.tenant_id,
            queue=services.storage.queue,
            ledger=services.ready_ledger,
            handler=await services.ready_call_events(),
            # A missing queue means a fresh account: everything the app uses is created then,
            # so the first recording's download finds its container and table.
            on_missing_queue=services.storage.ensure_once,
        )
    except NotStored as error:
        return answer(
            unavailable(str(error), retry_after=RETRY_AFTER_SECONDS).to_response(), "not_stored"
        )
    except Exception as error:
        # Never a bare 500: the sender retries a 503, and nothing it sent is lost meanwhile.
        log.error("POST /api/calls failed unexpectedly (%s)", type(error).__name__)
        log.debug("POST /api/calls failure", exc_info=True)
        return answer(
            unavailable(
                "the notification could not be processed; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            ).to_response(),
            "error",
            error=type(error).__name__,
        )

    return answer(
        func.HttpResponse(status_code=202),
        "accepted",
        tenant_id=identity.tenant_id,
        notifications=len(payload.value),
        outcomes=" ".join(f"{name}={count}" for name, count in sorted(report.outcomes.items())),
    )
