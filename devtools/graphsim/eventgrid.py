"""An Event Grid custom topic (CloudEvents 1.0 input schema) and a webhook subscriber, simulated.

The app publishes its recording events with ``azure-eventgrid`` and its managed identity; this
module answers as Event Grid Basic does, so that the real client is what the tests exercise:

- ``POST /api/events?api-version=2018-01-01`` takes an ``application/cloudevents-batch+json``
  array (or one ``application/cloudevents+json`` event) with ``Authorization: Bearer`` a token
  for ``https://eventgrid.azure.net`` issued by this simulator's managed identity (local auth is
  off, as the Bicep deploys it: no ``aeg-sas-key``). Limits: 1 MB per event, 1 MB and 5 000
  events per request; refusals carry Event Grid's error body (``error.code``, ``message``,
  ``details``). Faults queued on the control API (``500``, ``429:S``, ``503:S``) answer the next
  publishes.
- Accepted events go to each subscription, one event per request
  (``application/cloudevents+json``), after the CloudEvents webhook validation handshake
  (``OPTIONS`` with ``WebHook-Request-Origin``; the endpoint must answer with
  ``WebHook-Allowed-Origin``); failed deliveries are retried, then dead-lettered.
- The built-in subscriber (``/_sim/subscriber``) does the handshake and keeps what it receives;
  ``GET /_sim/subscriber/events`` lists it (the CLI's ``events`` command, ``make demo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

EVENTGRID_AUDIENCE = "https://eventgrid.azure.net"
PUBLISH_API_VERSION = "2018-01-01"
MAX_EVENT_BYTES = 1024 * 1024
MAX_BATCH_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 5000
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
EVENT_CONTENT_TYPE = "application/cloudevents+json"
ORIGIN = "eventgrid.azure.net"
DELIVERY_ATTEMPTS = 5
SUBSCRIBER_PATH = "/_sim/subscriber"


def eventgrid_error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    """Event Grid's error body: ``{"error": {"code", "message", "details": [...]}}``."""
    report = f"Report '{uuid.uuid4()}:{time.strftime('%m/%d/%Y %I:%M:%S %p')}' to our forums."
    body = {
        "error": {
            "code": code,
            "message": f"{message} {report}",
            "details": [{"code": code, "message": message}],
        }
    }
    return JSONResponse(body, status_code=status, headers=headers or None)


@dataclass
class Delivery:
    """One event on its way to one subscription."""

    subscription: str
    event_id: str
    attempts: int = 0
    status: int | None = None
    delivered: bool = False
    dead_lettered: bool = False


@dataclass
class EventGridTopic:
    """The topic's state: what it accepted, where it delivers, what the subscriber received."""

    base_url: Callable[[], str]
    audience_problem: Callable[[str, str], str | None]
    delivery_retry_seconds: float = 0.2
    accepted: list[dict[str, Any]] = field(default_factory=list)
    publishes: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    validated: set[str] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def default_subscriber(self) -> str:
        return f"{self.base_url()}{SUBSCRIBER_PATH}"

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        problem = (
            "The request has no Authorization header with a bearer token."
            if scheme.lower() != "bearer" or not token.strip()
            else self.audience_problem(token.strip(), EVENTGRID_AUDIENCE)
        )
        record: dict[str, Any] = {"at": time.time(), "tokenValid": problem is None, "status": 0}
        with self.lock:
            self.publishes.append(record)
            fault = self.faults.pop(0) if self.faults else None
        response = await self._answer(request, problem, fault)
        record["status"] = response.status_code
        return response

    async def _answer(self, request: Request, problem: str | None, fault: str | None) -> Response:
        if request.query_params.get("api-version") != PUBLISH_API_VERSION:
            return eventgrid_error(
                400, "BadRequest", f"The api-version must be {PUBLISH_API_VERSION}."
            )
        if problem is not None:
            return eventgrid_error(401, "Unauthorized", problem)
        if fault is not None:
            name, _, arg = fault.partition(":")
            if name == "429":
                return eventgrid_error(
                    429, "TooManyRequests", "Publish rate exceeded.", **{"Retry-After": arg or "1"}
                )
            if name == "503":
                return eventgrid_error(
                    503, "ServiceUnavailable", "Service unavailable.", **{"Retry-After": arg or "1"}
                )
            return eventgrid_error(500, "InternalServerError", "Simulated internal error.")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (BATCH_CONTENT_TYPE, EVENT_CONTENT_TYPE):
            return eventgrid_error(
                400,
                "BadRequest",
                f"This topic takes the CloudEvents 1.0 schema: Content-Type {BATCH_CONTENT_TYPE}.",
            )
        body = await request.body()
        if len(body) > MAX_BATCH_BYTES:
            return eventgrid_error(
                413, "RequestEntityTooLarge", f"The request exceeds {MAX_BATCH_BYTES} bytes."
            )
        try:
            parsed = json.loads(body)
        except ValueError:
            return eventgrid_error(400, "BadRequest", "The request body is not valid JSON.")
        events = parsed if isinstance(parsed, list) else [parsed]
        if content_type == BATCH_CONTENT_TYPE and not isinstance(parsed, list):
            return eventgrid_error(400, "BadRequest", "A batch must be a JSON array of events.")
        if not events or len(events) > MAX_BATCH_EVENTS:
            return eventgrid_error(
                400, "BadRequest", f"A batch holds 1 to {MAX_BATCH_EVENTS} events."
            )
        for index, event in enumerate(events):
            refusal = _event_problem(event)
            if refusal is not None:
                return eventgrid_error(400, "BadRequest", f"Event {index}: {refusal}")
            if len(json.dumps(event).encode()) > MAX_EVENT_BYTES:
                return eventgrid_error(
                    413, "RequestEntityTooLarge", f"Event {index} exceeds {MAX_EVENT_BYTES} bytes."
                )
        with self.lock:
            self.accepted.extend(events)
            subscriptions = list(self.subscriptions) or [self.default_subscriber()]
        loop = asyncio.get_running_loop()
        for event in events:
            for endpoint in subscriptions:
                task = loop.create_task(self._deliver(endpoint, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return Response(status_code=200)

    # -- delivery -------------------------------------------------------------------------------

    async def _validate(self, client: httpx.AsyncClient, endpoint: str) -> bool:
        if endpoint in self.validated:
            return True
        response = await client.request(
            "OPTIONS", endpoint, headers={"WebHook-Request-Origin": ORIGIN}
        )
        allowed = response.headers.get("webhook-allowed-origin", "")
        if response.status_code == 200 and allowed in (ORIGIN, "*"):
            self.validated.add(endpoint)
            return True
        return False

    async def _deliver(self, endpoint: str, event: dict[str, Any]) -> None:
        delivery = Delivery(endpoint, str(event.get("id")))
        with self.lock:
            self.deliveries.append(delivery)
        async with httpx.AsyncClient(timeout=5) as client:
            for attempt in range(1, DELIVERY_ATTEMPTS + 1):
                delivery.attempts = attempt
                with contextlib.suppress(httpx.HTTPError):
                    if await self._validate(client, endpoint):
                        response = await client.post(
                            endpoint,
                            content=json.dumps(event),
                            headers={"Content-Type": f"{EVENT_CONTENT_TYPE}; charset=utf-8"},
                        )
                        delivery.status = response.status_code
                        if 200 <= response.status_code < 300:
                            delivery.delivered = True
                            return
                await asyncio.sleep(self.delivery_retry_seconds * attempt)
        delivery.dead_lettered = True

    # -- the built-in subscriber ----------------------------------------------------------------

    async def subscriber(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            origin = request.headers.get("webhook-request-origin")
            if not origin:
                return Response(status_code=400)
            return Response(status_code=200, headers={"WebHook-Allowed-Origin": origin})
        body = await request.body()
        try:
            event = json.loads(body)
        except ValueError:
            return Response(status_code=400)
        item = {
            "receivedAt": time.time(),
            "contentType": request.headers.get("content-type", ""),
            "body": body.decode("utf-8"),
            "event": event,
        }
        with self.lock:
            self.received.append(item)
        return Response(status_code=200)

    def received_events(self, call_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            items = list(self.received)
        if call_id:
            items = [i for i in items if (i["event"].get("data") or {}).get("callId") == call_id]
        return items

    # -- control API ----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        async def received(request: Request) -> Response:
            return JSONResponse(
                {"events": self.received_events(request.query_params.get("callId"))}
            )

        async def state(request: Request) -> Response:
            with self.lock:
                return JSONResponse(
                    {
                        "accepted": len(self.accepted),
                        "publishes": list(self.publishes),
                        "subscriptions": list(self.subscriptions) or [self.default_subscriber()],
                        "deliveries": [d.__dict__ for d in self.deliveries],
                    }
                )

        async def faults(request: Request) -> Response:
            body = await request.json()
            names = [str(f) for f in body.get("faults") or []]
            for name in names:
                if name.partition(":")[0] not in ("500", "429", "503"):
                    return JSONResponse({"error": f"unknown fault {name!r}"}, status_code=400)
            with self.lock:
                self.faults.extend(names)
                return JSONResponse({"pending": list(self.faults)})

        async def subscribe(request: Request) -> Response:
            body = await request.json()
            endpoint = str(body.get("endpoint") or "")
            async with httpx.AsyncClient(timeout=5) as client:
                try:
                    valid = await self._validate(client, endpoint)
                except httpx.HTTPError:
                    valid = False
            if not valid:
                return eventgrid_error(
                    400, "BadRequest", "Webhook validation handshake failed for the endpoint."
                )
            with self.lock:
                self.subscriptions.append(endpoint)
            return JSONResponse({"endpoint": endpoint})

        return [
            Route("/api/events", self.publish, methods=["POST"]),
            Route(SUBSCRIBER_PATH, self.subscriber, methods=["OPTIONS", "POST"]),
            Route(f"{SUBSCRIBER_PATH}/events", received, methods=["GET"]),
            Route("/_sim/eventgrid", state, methods=["GET"]),
            Route("/_sim/eventgrid/faults", faults, methods=["POST"]),
            Route("/_sim/eventgrid/subscriptions", subscribe, methods=["POST"]),
        ]


def _event_problem(event: object) -> str | None:
    """Why ``event`` is not a CloudEvent 1.0 in structured JSON form, or None."""
    if not isinstance(event, dict):
        return "not a JSON object."
    if event.get("specversion") != "1.0":
        return "specversion must be 1.0."
    for name in ("id", "source", "type"):
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return f"the required attribute '{name}' is missing or empty."
    return None


def event_lines(items: list[dict[str, Any]]) -> list[str]:
    """One line per received event, in arrival order: time, sequence, type, subject, trace id."""
    lines = []
    for item in items:
        event = item.get("event") or {}
        received = time.strftime("%H:%M:%S", time.localtime(item.get("receivedAt", 0)))
        kind = str(event.get("type", "?")).split(".recording.", 1)[-1]
        traceparent = str(event.get("traceparent") or "")
        trace = traceparent.split("-")[1] if traceparent.count("-") == 3 else "-"
        lines.append(
            f"{received}  seq={event.get('sequence', '?')}  {kind:<30} "
            f"{event.get('subject', '?')}  trace={trace}"
        )
    return lines


def list_received(sim_url: str, call_id: str | None, *, as_json: bool) -> int:
    """The CLI's ``events`` command: what the built-in subscriber received (for one call)."""
    params = {"callId": call_id} if call_id else {}
    response = httpx.get(f"{sim_url}{SUBSCRIBER_PATH}/events", params=params, timeout=10)
    items = response.json().get("events", [])
    if as_json:
        print(json.dumps([item["event"] for item in items], indent=2))
    else:
        for line in event_lines(items) or ["no events received yet"]:
            print(line)
    return 0 if response.status_code == 200 else 1
