"""The simulator's HTTP surface (Starlette): identity, Graph calls API, recordings, control API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .botconnector import BOT_FRAMEWORK_AUDIENCE, BotConnector
from .calls import CallEngine, check_keys
from .entra import EntraApiTokens
from .eventgrid import EVENTGRID_AUDIENCE, EventGridTopic
from .keys import (
    GRAPH_AUDIENCE,
    JWT_BEARER,
    MONITOR_AUDIENCE,
    NOTIFICATION_ISSUER,
    TOKEN_EXCHANGE_AUDIENCE,
    GraphTokenIssuer,
    KeyRing,
)
from .models import SCENARIOS, CallOptions, RequestRecord
from .recordings import Recording, RecordingStore, parse_fault
from .speech import COGNITIVE_SERVICES_AUDIENCE, TRANSCRIBE_ACTION, fault_response, transcribe
from .throttling import CallsThrottle, ThrottleLimit
from .validation import (
    GraphError,
    validate_answer,
    validate_play_prompt,
    validate_record_response,
    validate_reject,
    validate_subscribe_to_tone,
)

SECRET_HEADERS = frozenset({"authorization", "x-identity-header", "cookie"})
API_FAULTS = ("503", "429", "500", "401", "404", "slow")
MI_API_VERSION = "2019-08-01"


@dataclass
class SimContext:
    keys: KeyRing
    graph_tokens: GraphTokenIssuer
    recordings: RecordingStore
    engine: CallEngine
    identity_header: str
    base_url: Callable[[], str]
    slow_drip_seconds: float
    allow_insecure_callbacks: bool
    config: Callable[[], dict[str, Any]]
    bot_app_id: str = ""
    tenant_id: str = ""
    # Refuse Graph tokens whose appid is not the bot's (the federated path), with 403.
    require_bot_app_token: bool = False
    graph_base_url: Callable[[], str] | None = None
    # Entra tokens for the bot's own API (the management routes).
    entra: EntraApiTokens | None = None
    # The Bot Connector side of Teams chat (/api/messages): its keys, service URL and replies.
    bot_connector: BotConnector | None = None
    # Graph's per-app-per-tenant throttling of the calls API (off unless configured).
    throttle: CallsThrottle = field(default_factory=CallsThrottle)
    # An Event Grid custom topic and its subscriber (the app's lifecycle events).
    eventgrid: EventGridTopic | None = None


def graph_error(
    status: int,
    code: str,
    message: str,
    ids: Mapping[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Graph's error JSON shape, with the request ids echoed in body and headers."""
    request_id = (ids or {}).get("request_id")
    client_request_id = (ids or {}).get("client_request_id")
    request_id = request_id or str(uuid.uuid4())
    client_request_id = client_request_id or request_id
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "request-id": request_id,
                "client-request-id": client_request_id,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            },
        }
    }
    all_headers = {"request-id": request_id, "client-request-id": client_request_id}
    all_headers.update(headers or {})
    return JSONResponse(body, status_code=status, headers=all_headers)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _status_fault(fault: str, arg: float | None, ids: dict[str, str]) -> Response | None:
    if fault in ("503", "429"):
        retry_after = str(int(arg)) if arg is not None else "1"
        message = "Too many requests." if fault == "429" else "Service unavailable."
        code = "TooManyRequests" if fault == "429" else "ServiceUnavailable"
        return graph_error(int(fault), code, message, ids, headers={"Retry-After": retry_after})
    if fault == "500":
        return graph_error(500, "InternalServerError", "Simulated internal error.", ids)
    if fault == "401":
        return graph_error(401, "InvalidAuthenticationToken", "Access token has expired.", ids)
    if fault == "404":
        return graph_error(404, "ItemNotFound", "The resource was not found.", ids)
    return None


def build_app(
    ctx: SimContext,
    on_startup: Callable[[], Awaitable[None]],
    on_shutdown: Callable[[], Awaitable[None]],
) -> Starlette:
    engine = ctx.engine

    # -- identity ----------------------------------------------------------------------------

    async def openid_configuration(request: Request) -> Response:
        base = ctx.base_url()
        return JSONResponse(
            {
                "issuer": NOTIFICATION_ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"{base}/v1/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def jwks(request: Request) -> Response:
        return JSONResponse(ctx.keys.jwks())

    def entra_tokens() -> EntraApiTokens:
        if ctx.entra is None:
            raise RuntimeError("the simulator was built without Entra API tokens")
        return ctx.entra

    async def entra_openid_configuration(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        return JSONResponse(entra_tokens().openid_configuration(ctx.base_url(), tenant))

    async def entra_jwks(request: Request) -> Response:
        return JSONResponse(entra_tokens().jwks())

    async def control_entra_token(request: Request) -> Response:
        """A token for the bot's API with the roles (and ids) the body names: tests, demo."""
        body = await _json(request)
        options: dict[str, Any] = {"roles": [str(r) for r in body.get("roles") or []]}
        for name, option in (
            ("objectId", "object_id"),
            ("appId", "app_id"),
            ("tenantId", "tenant_id"),
            ("audience", "audience"),
            ("version", "version"),
        ):
            if body.get(name):
                options[option] = str(body[name])
        if body.get("lifetimeSeconds") is not None:
            options["lifetime_seconds"] = int(body["lifetimeSeconds"])
        tokens = entra_tokens()
        return JSONResponse(
            {
                "access_token": tokens.token(**options),
                "token_type": "Bearer",
                "expires_in": options.get("lifetime_seconds", tokens.lifetime_seconds),
            }
        )

    async def managed_identity_token(request: Request) -> Response:
        # App Service protocol as azure-identity/msal speak it: GET with api-version and
        # resource, secret in X-IDENTITY-HEADER; answer with expires_on in epoch seconds.
        if not secrets.compare_digest(
            request.headers.get("x-identity-header", ""), ctx.identity_header
        ):
            return JSONResponse(
                {"statusCode": 401, "message": "Invalid X-IDENTITY-HEADER."}, status_code=401
            )
        if request.query_params.get("api-version") != MI_API_VERSION:
            return JSONResponse(
                {"statusCode": 400, "message": f"api-version must be {MI_API_VERSION}."},
                status_code=400,
            )
        resource = request.query_params.get("resource", "").rstrip("/")
        if resource.endswith("/.default"):
            resource = resource[: -len("/.default")]
        if resource == GRAPH_AUDIENCE:
            token, expires_on = ctx.graph_tokens.issue(GRAPH_AUDIENCE)
        elif resource == BOT_FRAMEWORK_AUDIENCE:
            # The bot's replies to chat activities (a managed-identity bot).
            token, expires_on = ctx.graph_tokens.issue(BOT_FRAMEWORK_AUDIENCE)
        elif resource == COGNITIVE_SERVICES_AUDIENCE:
            # Fast transcription (Azure AI Speech) with the managed identity.
            token, expires_on = ctx.graph_tokens.issue(COGNITIVE_SERVICES_AUDIENCE)
        elif resource == EVENTGRID_AUDIENCE:
            # Publishing lifecycle events to the Event Grid topic (local auth is off).
            token, expires_on = ctx.graph_tokens.issue(EVENTGRID_AUDIENCE)
        elif resource == MONITOR_AUDIENCE:
            # Application Insights ingestion with the managed identity (local auth is off).
            token, expires_on = ctx.graph_tokens.issue(MONITOR_AUDIENCE)
        elif resource == TOKEN_EXCHANGE_AUDIENCE:
            # The federated path: this token is the client assertion for the bot's app.
            token, expires_on = ctx.graph_tokens.issue_exchange_token()
        else:
            return JSONResponse(
                {
                    "statusCode": 400,
                    "message": (
                        f"This simulator only issues tokens for {GRAPH_AUDIENCE}, "
                        f"{BOT_FRAMEWORK_AUDIENCE}, {COGNITIVE_SERVICES_AUDIENCE}, {MONITOR_AUDIENCE}, {EVENTGRID_AUDIENCE} and "
                        f"{TOKEN_EXCHANGE_AUDIENCE}."
                    ),
                },
                status_code=400,
            )
        return JSONResponse(
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": ctx.graph_tokens.client_id,
            }
        )

    async def entra_token(request: Request) -> Response:
        """Entra's token endpoint for the client credentials grant with a client assertion
        (Microsoft identity platform, "client credentials flow", third case: a federated
        credential): the assertion must be the managed identity's exchange token."""
        tenant = request.path_params["tenant"]
        # application/x-www-form-urlencoded, read with the standard library (Starlette's
        # request.form() needs python-multipart, which this project does not install).
        form = parse_qs((await request.body()).decode("utf-8", "replace"))

        def field(name: str) -> str:
            values = form.get(name)
            return values[0] if values else ""

        if tenant.lower() != ctx.tenant_id.lower():
            return entra_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if field("grant_type") != "client_credentials":
            return entra_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type; this endpoint serves "
                "client_credentials.",
            )
        client_id = field("client_id")
        if client_id.lower() != ctx.bot_app_id.lower():
            return entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        if field("client_assertion_type") != JWT_BEARER or not field("client_assertion"):
            return entra_error(
                400,
                "invalid_request",
                50027,
                "The request must carry client_assertion_type "
                f"{JWT_BEARER} and a client_assertion.",
            )
        scopes = field("scope").split()
        audiences = {f"{GRAPH_AUDIENCE}/.default": GRAPH_AUDIENCE}
        audiences[f"{BOT_FRAMEWORK_AUDIENCE}/.default"] = BOT_FRAMEWORK_AUDIENCE
        if len(scopes) != 1 or scopes[0] not in audiences:
            return entra_error(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input parameter 'scope' is not valid. "
                f"This simulator issues {' and '.join(audiences)} only.",
            )
        problem = ctx.graph_tokens.verify_assertion(field("client_assertion"))
        if problem is not None:
            code, description = problem
            return entra_error(401, "invalid_client", code, description)
        token, expires_on = ctx.graph_tokens.issue(audiences[scopes[0]], app_id=ctx.bot_app_id)
        lifetime = max(0, expires_on - int(time.time()) - 1)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }
        )

    # -- Azure AI Speech fast transcription ---------------------------------------------------

    async def fast_transcription(request: Request) -> Response:
        token = _bearer(request)
        problem = (
            "Access token is empty."
            if token is None
            else ctx.graph_tokens.audience_problem(token, COGNITIVE_SERVICES_AUDIENCE)
        )
        record = RequestRecord(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k: v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS},
            body=None,
            token_valid=problem is None,
        )
        with engine.lock:
            engine.requests.append(record)
            queue = engine.api_faults.get(TRANSCRIBE_ACTION)
            fault = queue.pop(0) if queue else None
        response: Response | None = None
        if fault is not None:
            name, arg = parse_api_fault(fault)
            if name == "slow":
                await asyncio.sleep(arg if arg is not None else ctx.slow_drip_seconds)
            else:
                await request.body()  # read the upload, as the service does before refusing
                response = fault_response(name, arg)
        if response is None:
            response = await transcribe(request, problem)
        record.status_code = response.status_code
        return response

    # -- calls API ---------------------------------------------------------------------------

    async def api(
        request: Request, action: str, handler: Callable[[Any, dict[str, str]], Awaitable[Response]]
    ) -> Response:
        """Common path of every calls-API request: record it, apply faults, check the token."""
        client_request_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        ids = {"request_id": str(uuid.uuid4()), "client_request_id": client_request_id}
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        token = _bearer(request)
        token_problem, claims = (
            ("Access token is empty.", {}) if token is None else ctx.graph_tokens.claims_of(token)
        )
        app_id = claims.get("appid")
        record = RequestRecord(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k: v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS},
            body=body,
            token_valid=token_problem is None,
            token_app_id=app_id if isinstance(app_id, str) else None,
        )
        with engine.lock:
            engine.requests.append(record)
            queue = engine.api_faults.get(action) or engine.api_faults.get("*")
            fault = queue.pop(0) if queue else None
        response: Response | None = None
        if fault is not None:
            name, arg = parse_api_fault(fault)
            if name == "slow":
                await asyncio.sleep(arg if arg is not None else ctx.slow_drip_seconds)
            else:
                response = _status_fault(name, arg, ids)
        if response is None and token_problem is not None:
            response = graph_error(401, "InvalidAuthenticationToken", token_problem, ids)
        if (
            response is None
            and ctx.require_bot_app_token
            and str(app_id or "").lower() != ctx.bot_app_id.lower()
        ):
            # A simulator check (Graph documents no such error): with require_bot_app_token the
            # calls API takes only the bot's own app tokens, i.e. the federated path.
            response = graph_error(
                403,
                "Forbidden",
                "The token's appid is not the bot's application id.",
                ids,
            )
        if response is None and token_problem is None:
            retry_after = ctx.throttle.admit(app_id, claims.get("tid"))
            if retry_after is not None:
                headers = {"Retry-After": str(retry_after)}
                response = graph_error(
                    429, "TooManyRequests", "Too many requests.", ids, headers=headers
                )
        if response is None:
            if raw and isinstance(body, str):
                response = graph_error(
                    400, "BadRequest", "The request body is not valid JSON.", ids
                )
            else:
                try:
                    response = await handler(body, ids)
                except GraphError as exc:
                    response = graph_error(exc.status, exc.code, exc.message, ids)
        response.headers["request-id"] = ids["request_id"]
        response.headers["client-request-id"] = client_request_id
        record.status_code = response.status_code
        return response

    async def answer(request: Request) -> Response:
        call_id = request.path_params["call_id"]

        async def handle(body: Any, ids: dict[str, str]) -> Response:
            engine.find_call(call_id)
            params = validate_answer(body, allow_insecure=ctx.allow_insecure_callbacks)
            await engine.answer(call_id, params)
            return Response(status_code=202)

        return await api(request, "answer", handle)

    async def reject(request: Request) -> Response:
        call_id = request.path_params["call_id"]

        async def handle(body: Any, ids: dict[str, str]) -> Response:
            engine.find_call(call_id)
            params = validate_reject(body, allow_insecure=ctx.allow_insecure_callbacks)
            await engine.reject(call_id, params)
            return Response(status_code=202)

        return await api(request, "reject", handle)

    async def subscribe_to_tone(request: Request) -> Response:
        call_id = request.path_params["call_id"]

        async def handle(body: Any, ids: dict[str, str]) -> Response:
            engine.find_call(call_id)
            params = validate_subscribe_to_tone(body)
            operation = await engine.start_operation(call_id, "subscribeToTone", params)
            return JSONResponse(
                operation.resource(), headers={"Location": engine.operation_location(operation)}
            )

        return await api(request, "subscribeToTone", handle)

    async def record_response(request: Request) -> Response:
        call_id = request.path_params["call_id"]

        async def handle(body: Any, ids: dict[str, str]) -> Response:
            engine.find_call(call_id)
            params = validate_record_response(body)
            operation = await engine.start_operation(call_id, "record", params)
            return JSONResponse(
                operation.resource(), headers={"Location": engine.operation_location(operation)}
            )

        return await api(request, "recordResponse", handle)

    async def play_prompt(request: Request) -> Response:
        call_id = request.path_params["call_id"]

        async def handle(body: Any, ids: dict[str, str]) -> Response:
            engine.find_call(call_id)
            params = validate_play_prompt(body)
            operation = await engine.start_operation(call_id, "playPrompt", params)
            return JSONResponse(
                operation.resource(), headers={"Location": engine.operation_location(operation)}
            )

        return await api(request, "playPrompt", handle)

    async def call_resource(request: Request) -> Response:
        call_id = request.path_params["call_id"]

        async def get(body: Any, ids: dict[str, str]) -> Response:
            # Get call's example carries the entity's @odata.context.
            base = ctx.graph_base_url() if ctx.graph_base_url else f"{ctx.base_url()}/v1.0"
            return JSONResponse(
                {
                    **engine.find_call(call_id).resource(),
                    "@odata.context": f"{base}/$metadata#communications/calls/$entity",
                }
            )

        async def delete(body: Any, ids: dict[str, str]) -> Response:
            await engine.terminate(call_id, by_bot=True)
            return Response(status_code=204)

        if request.method == "DELETE":
            return await api(request, "hangup", delete)
        return await api(request, "getCall", get)

    async def operation_resource(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        operation_id = request.path_params["operation_id"]

        async def get(body: Any, ids: dict[str, str]) -> Response:
            return JSONResponse(engine.find_operation(call_id, operation_id).resource())

        return await api(request, "getOperation", get)

    async def not_found(request: Request) -> Response:
        return graph_error(
            404, "UnknownError", f"Resource not found for the segment '{request.url.path}'."
        )

    # -- recordings --------------------------------------------------------------------------

    async def recording(request: Request) -> Response:
        ids = {
            "request_id": str(uuid.uuid4()),
            "client_request_id": request.headers.get("client-request-id") or "",
        }
        item = ctx.recordings.get(request.path_params["recording_id"])
        if item is None:
            return graph_error(
                404, "ItemNotFound", "The recording does not exist or was discarded.", ids
            )
        ctx.recordings.count_request(item)
        token = _bearer(request)
        if token is None or not secrets.compare_digest(token, item.access_token):
            return graph_error(
                401, "InvalidAuthenticationToken", "The recording access token is invalid.", ids
            )
        fault = ctx.recordings.pop_fault(item)
        name, arg = parse_fault(fault) if fault else ("", None)
        status_response = _status_fault(name, arg, ids) if fault else None
        if status_response is not None:
            return status_response
        return RecordingResponse(item, name, arg if arg is not None else ctx.slow_drip_seconds)

    # -- control API -------------------------------------------------------------------------

    async def control_place_call(request: Request) -> Response:
        body = await _json(request)
        try:
            options = call_options_from_json(body)
            call = await engine.place_call(options)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"id": call.id, **call.summary()}, status_code=201)

    async def control_calls(request: Request) -> Response:
        with engine.lock:
            calls = [c.summary() for c in engine.calls.values()]
        return JSONResponse(calls)

    async def control_call(request: Request) -> Response:
        try:
            call = engine.find_call(request.path_params["call_id"])
        except GraphError as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        operations = [engine.operations[k.replace("-", "").lower()] for k in call.operations]
        return JSONResponse(
            {
                **call.summary(),
                "resource": call.resource(),
                "operations": [op.resource() for op in operations],
            }
        )

    async def control_caller_hangup(request: Request) -> Response:
        try:
            call = await engine.caller_hangup(request.path_params["call_id"])
        except GraphError as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        return JSONResponse(call.summary())

    async def control_keys(request: Request) -> Response:
        body = await _json(request)
        keys = str(body.get("keys", ""))
        try:
            check_keys(keys)
            sent = await engine.press_keys(request.path_params["call_id"], keys)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except GraphError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse({"keys": keys, "toneNotifications": sent})

    async def control_deliveries(request: Request) -> Response:
        with engine.lock:
            return JSONResponse(
                [{**d.to_dict(), "summary": d.summary()} for d in engine.deliveries]
            )

    async def control_requests(request: Request) -> Response:
        with engine.lock:
            return JSONResponse([r.to_dict() for r in engine.requests])

    async def control_recordings(request: Request) -> Response:
        if request.method == "POST":
            body = await _json(request)
            try:
                item = ctx.recordings.create(
                    size_bytes=body.get("sizeBytes"),
                    duration_seconds=body.get("durationSeconds"),
                    faults=list(body.get("faults") or []),
                    content_type=body.get("contentType") or "application/octet-stream",
                    expires_after_seconds=body.get("expiresAfterSeconds"),
                )
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(item.info(), status_code=201)
        return JSONResponse([r.info() for r in ctx.recordings.all()])

    async def control_recording(request: Request) -> Response:
        item = ctx.recordings.get(request.path_params["recording_id"])
        if item is None:
            return JSONResponse({"error": "no such recording"}, status_code=404)
        if request.method == "DELETE":
            ctx.recordings.delete(item.recording_id)
            return Response(status_code=204)
        return JSONResponse(item.info())

    async def control_rotate(request: Request) -> Response:
        body = await _json(request)
        key = ctx.keys.rotate(keep_old=bool(body.get("keepOld", True)))
        return JSONResponse({"kid": key.kid})

    async def control_faults(request: Request) -> Response:
        body = await _json(request)
        action = str(body.get("action", "*"))
        faults = [str(f) for f in body.get("faults") or []]
        try:
            for fault in faults:
                parse_api_fault(fault)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        with engine.lock:
            engine.api_faults.setdefault(action, []).extend(faults)
        return JSONResponse({"action": action, "pending": engine.api_faults[action]})

    async def control_throttle(request: Request) -> Response:
        if request.method == "POST":
            body = await _json(request)
            try:
                requests = body.get("requests")
                ctx.throttle.configure(
                    None
                    if requests is None
                    else ThrottleLimit(int(requests), float(body.get("windowSeconds", 1.0)))
                )
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(ctx.throttle.to_json())

    async def control_config(request: Request) -> Response:
        # Includes IDENTITY_HEADER: the control API is loopback-only, and the local host and
        # demo read it from here instead of from logs.
        return JSONResponse(ctx.config())

    async def control_health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "scenarios": list(SCENARIOS)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await on_startup()
        try:
            yield
        finally:
            await on_shutdown()

    call_path = "/v1.0/communications/calls/{call_id}"
    routes = [
        Route("/v1/.well-known/OpenIdConfiguration", openid_configuration),
        Route("/v1/keys", jwks),
        Route("/msi/token", managed_identity_token),
        Route("/{tenant}/oauth2/v2.0/token", entra_token, methods=["POST"]),
        Route("/{tenant}/v2.0/.well-known/openid-configuration", entra_openid_configuration),
        Route("/{tenant}/discovery/v2.0/keys", entra_jwks),
        Route(f"{call_path}/answer", answer, methods=["POST"]),
        Route(f"{call_path}/reject", reject, methods=["POST"]),
        Route(f"{call_path}/subscribeToTone", subscribe_to_tone, methods=["POST"]),
        Route(f"{call_path}/recordResponse", record_response, methods=["POST"]),
        Route(f"{call_path}/playPrompt", play_prompt, methods=["POST"]),
        Route(call_path, call_resource, methods=["GET", "DELETE"]),
        Route(f"{call_path}/operations/{{operation_id}}", operation_resource, methods=["GET"]),
        Route("/v1.0/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/recordings/{recording_id}", recording, methods=["GET"]),
        Route("/speechtotext/transcriptions:transcribe", fast_transcription, methods=["POST"]),
        Route("/_sim/health", control_health),
        Route("/_sim/config", control_config),
        Route("/_sim/calls", control_place_call, methods=["POST"]),
        Route("/_sim/calls", control_calls, methods=["GET"]),
        Route("/_sim/calls/{call_id}", control_call, methods=["GET"]),
        Route("/_sim/calls/{call_id}/hangup", control_caller_hangup, methods=["POST"]),
        Route("/_sim/calls/{call_id}/keys", control_keys, methods=["POST"]),
        Route("/_sim/deliveries", control_deliveries),
        Route("/_sim/requests", control_requests),
        Route("/_sim/recordings", control_recordings, methods=["GET", "POST"]),
        Route("/_sim/recordings/{recording_id}", control_recording, methods=["GET", "DELETE"]),
        Route("/_sim/keys/rotate", control_rotate, methods=["POST"]),
        Route("/_sim/faults", control_faults, methods=["POST"]),
        Route("/_sim/throttle", control_throttle, methods=["GET", "POST"]),
        Route("/_sim/entra/token", control_entra_token, methods=["POST"]),
        *(ctx.bot_connector.routes() if ctx.bot_connector is not None else []),
        *(ctx.eventgrid.routes() if ctx.eventgrid is not None else []),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def entra_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    """Entra's token error shape (client credentials flow, "Error response")."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return JSONResponse(
        {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        },
        status_code=status,
    )


def parse_api_fault(fault: str) -> tuple[str, float | None]:
    name, _, arg = fault.partition(":")
    if name not in API_FAULTS:
        raise ValueError(f"unknown API fault {fault!r}; known: {', '.join(API_FAULTS)}")
    return name, (float(arg) if arg else None)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    data = json.loads(raw)
    return data if isinstance(data, dict) else {}


def call_options_from_json(body: dict[str, Any]) -> CallOptions:
    """Control-API JSON (camelCase) to CallOptions."""
    faults = [str(f) for f in body.get("recordingFaults") or []]
    for fault in faults:
        parse_fault(fault)
    hangup_after = body.get("hangupAfterCompletionSeconds")
    keys_after_prompts = [str(k) for k in body.get("keysAfterPrompts") or []]
    for keys in keys_after_prompts:
        check_keys(keys)
    return CallOptions(
        scenario=str(body.get("scenario", "max-duration")),
        callback_url=body.get("callbackUrl"),
        duplicate_established=bool(body.get("duplicateEstablished", False)),
        out_of_order=bool(body.get("outOfOrder", False)),
        notification_delay_seconds=float(body.get("notificationDelaySeconds", 0.0)),
        duplicate_completion=bool(body.get("duplicateCompletion", False)),
        recording_faults=faults,
        speech_seconds=float(body.get("speechSeconds", 3.0)),
        hangup_after_completion_seconds=None if hangup_after is None else float(hangup_after),
        keys_after_prompts=keys_after_prompts,
        caller=str(body.get("caller", "teams-user")),
        **({"caller_number": str(body["callerNumber"])} if body.get("callerNumber") else {}),
    )


class RecordingResponse(Response):
    """Streams a recording chunk by chunk, with the body-level faults (reset, short, slow,
    chunked, not-wav).

    A raw ASGI response because the faults need what Starlette's StreamingResponse cannot do:
    stop mid-body without finishing the message (uvicorn then closes the connection).
    """

    def __init__(self, recording: Recording, fault: str, slow_seconds: float) -> None:
        super().__init__(status_code=200)
        self.recording = recording
        self.fault = fault
        self.slow_seconds = slow_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = self.recording.size
        headers = [(b"content-type", self.recording.content_type.encode())]
        if self.fault != "chunked":
            headers.append((b"content-length", str(size).encode()))
        # Without Content-Length the server sends Transfer-Encoding: chunked, as in the example
        # response of call: recordResponse ("Retrieving the recording file").
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        limit: int | None = None
        if self.fault == "reset":
            limit = size // 2
        elif self.fault == "short":
            limit = max(0, size - max(1, min(4096, size // 10)))
        disconnected = asyncio.Event()

        async def watch() -> None:
            # Stop producing as soon as the client goes away (a slow drip would run forever).
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            for piece in self.recording.iter_bytes(limit, wav=self.fault != "not-wav"):
                if disconnected.is_set():
                    return
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                if self.fault == "slow":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(disconnected.wait(), self.slow_seconds)
            if limit is not None:
                # Return without the final message: uvicorn closes the connection, so the client
                # sees fewer bytes than Content-Length and an aborted transfer.
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
