"""POST /api/messages: chat activities the Bot Connector posts to the bot (Teams chat).

Anonymous at the host, like the calling webhook: the Bot Connector sends no function key, so
every request is authenticated here from its Bot Framework token (checked against the activity's
``serviceUrl`` and ``channelId``) before the bot acts. A chat message gets one line on how to use
the bot; every other activity (conversationUpdate, typing...) is acknowledged with nothing sent.
"""

from __future__ import annotations

import logging
import time

import azure.functions as func

from shared.auth.errors import InboundAuthError, TokenMissing
from shared.logevents import log_event
from shared.problems import Problem, unavailable
from shared.services import app_services
from shared.settings import SettingsError

bp = func.Blueprint()
log = logging.getLogger(__name__)

SETTINGS_RETRY_AFTER_SECONDS = 30
USAGE = (
    "I record spoken answers on calls: select the call button at the top of this chat, "
    "and after the beep say your answer, then press #."
)


@bp.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def messages(req: func.HttpRequest) -> func.HttpResponse:
    from shared.messaging.activity import check_service_url, read_activity
    from shared.messaging.connector import ReplyFailed

    started = time.perf_counter()

    def answer(response: func.HttpResponse, outcome: str, **details: object) -> func.HttpResponse:
        log_event(
            log,
            "POST /api/messages",
            status=response.status_code,
            outcome=outcome,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            **details,
        )
        return response

    authorization = req.headers.get("Authorization")
    if not (authorization or "").strip():
        return answer(TokenMissing().to_problem().to_response(), "unauthenticated")
    try:
        services = app_services()
    except SettingsError as error:
        log.error("POST /api/messages cannot run: %s", error)
        problem = unavailable(
            "the app's settings are invalid; see the logs or GET /api/health",
            retry_after=SETTINGS_RETRY_AFTER_SECONDS,
        )
        return answer(problem.to_response(), "misconfigured")
    try:
        activity = read_activity(req.get_body(), content_type=req.headers.get("Content-Type"))
    except Problem as problem:
        return answer(problem.to_response(), "rejected", detail=problem.detail)
    try:
        await services.channel_auth.validate_authorization(
            authorization, service_url=activity.service_url, channel_id=activity.channel_id
        )
    except InboundAuthError as error:
        outcome = "unauthenticated" if error.status == 401 else "signing_keys_unavailable"
        return answer(error.to_problem().to_response(), outcome, failure=error.failure)

    if not activity.is_message:
        return answer(func.HttpResponse(status_code=200), "acknowledged", type=activity.type)
    settings = services.settings
    try:
        check_service_url(
            activity.service_url,
            allow_insecure=settings.allow_insecure_recording_urls and not settings.running_in_azure,
        )
        await services.bot_connector.reply(activity, USAGE)
    except Problem as problem:
        return answer(problem.to_response(), "rejected", detail=problem.detail)
    except ReplyFailed as failure:
        problem = Problem(502, f"the reply could not be sent: {failure}", "Reply not sent")
        return answer(problem.to_response(), "reply_failed", reason=str(failure))
    return answer(
        func.HttpResponse(status_code=200), "replied", channel=activity.channel_id or None
    )
