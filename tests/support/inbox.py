"""The bot's callback on loopback, for tests that hand the simulator's notifications on themselves.

The Graph simulator posts its notifications here instead of to the app; the test takes them in
order and gives each to the code under test (the bot flow, or the webhook) when it chooses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.loopback import LoopbackServer


class Inbox:
    """Every notification posted to the callback, and the prompts fetched, in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []
        self.prompts_served: list[str] = []
        self.base_url = ""

    def take(self, start: int) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received[start:])


@contextmanager
def serve_inbox(*, prompts: bool = False) -> Iterator[Inbox]:
    """An inbox on loopback: ``POST /api/calls`` keeps the notifications and answers 202.

    With ``prompts``, ``GET /api/prompts/{name}.wav`` is the app's own prompt route, as Graph
    fetches it (the simulator checks the format).
    """
    box = Inbox()

    async def callback(request: Request) -> Response:
        body = await request.json()
        with box.lock:
            box.received.extend(body.get("value", []))
        return Response(status_code=202)

    async def prompt(request: Request) -> Response:
        from tests.support.functions import http_request, invoke

        name = request.path_params["name"]
        with box.lock:
            box.prompts_served.append(name)
        served = await invoke(
            "prompt",
            http_request("GET", str(request.url), route_params={"name": name}),
        )
        return Response(
            served.get_body(), status_code=served.status_code, media_type=served.mimetype
        )

    routes = [Route("/api/calls", callback, methods=["POST"])]
    if prompts:
        routes.append(Route("/api/prompts/{name}.wav", prompt, methods=["GET"]))
    with LoopbackServer(Starlette(routes=routes)) as server:
        box.base_url = server.base_url
        yield box
