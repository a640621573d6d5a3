"""The simulator's HTTP surface (Starlette): identity, Graph calls API, recordings, control API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .calls import CallEngine
from .keys import GRAPH_AUDIENCE, NOTIFICATION_ISSUER, GraphTokenIssuer, KeyRing
from .models import SCENARIOS, CallOptions, RequestRecord
from .recordings import Recording, RecordingStore, parse_fault
from .validation import (
    GraphError,
    validate_answer,
    validate_play_prompt,
    validate_record_response,
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
        if resource != GRAPH_AUDIENCE:
            return JSONResponse(
                {
                    "statusCode": 400,
                    "message": f"This simulator only issues tokens for {GRAPH_AUDIENCE}.",
                },
                status_code=400,
            )
        token, expires_on = ctx.graph_tokens.issue(GRAPH_AUDIENCE)
        return JSONResponse(
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": GRAPH_AUDIENCE,
                "token_type": "Bearer",
                "client_id": ctx.graph_tokens.client_id,
            }
        )

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
        token_problem = (
            "Access token is empty." if token is None else ctx.graph_tokens.verify(token)
        )
        record = RequestRecord(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k: v for k, v in request.headers.items() if k.lower() not in SECRET_HEADERS},
            body=body,
            token_valid=token_problem is None,
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
            return JSONResponse(engine.find_call(call_id).resource())

        async def delete(body: Any, ids: dict[str, str]) -> Response:
            await engine.terminate(call_id)
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
            call = await engine.terminate(request.path_params["call_id"])
        except GraphError as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        return JSONResponse(call.summary())

    async def control_deliveries(request: Request) -> Response:
        with engine.lock:
            return JSONResponse([d.to_dict() for d in engine.deliveries])

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
        Route(f"{call_path}/answer", answer, methods=["POST"]),
        Route(f"{call_path}/recordResponse", record_response, methods=["POST"]),
        Route(f"{call_path}/playPrompt", play_prompt, methods=["POST"]),
        Route(call_path, call_resource, methods=["GET", "DELETE"]),
        Route(f"{call_path}/operations/{{operation_id}}", operation_resource, methods=["GET"]),
        Route("/v1.0/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/recordings/{recording_id}", recording, methods=["GET"]),
        Route("/_sim/health", control_health),
        Route("/_sim/config", control_config),
        Route("/_sim/calls", control_place_call, methods=["POST"]),
        Route("/_sim/calls", control_calls, methods=["GET"]),
        Route("/_sim/calls/{call_id}", control_call, methods=["GET"]),
        Route("/_sim/calls/{call_id}/hangup", control_caller_hangup, methods=["POST"]),
        Route("/_sim/deliveries", control_deliveries),
        Route("/_sim/requests", control_requests),
        Route("/_sim/recordings", control_recordings, methods=["GET", "POST"]),
        Route("/_sim/recordings/{recording_id}", control_recording, methods=["GET", "DELETE"]),
        Route("/_sim/keys/rotate", control_rotate, methods=["POST"]),
        Route("/_sim/faults", control_faults, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


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
    )


class RecordingResponse(Response):
    """Streams a recording chunk by chunk, with the body-level faults (reset, short, slow).

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
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", self.recording.content_type.encode()),
                    (b"content-length", str(size).encode()),
                ],
            }
        )
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
            for piece in self.recording.iter_bytes(limit):
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
