"""Fixtures for the simulator's own tests: a running simulator and a loopback "bot"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.graphsim import GraphSimulator
from devtools.loopback import LoopbackServer
from tests.conftest import BOT_APP_ID

CALLS = "/communications/calls"


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Bot:
    """A minimal bot callback on loopback: it records every POST and answers 202."""

    url: str
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    status_code: int = 202
    # Answers for the next POSTs, in order; then status_code.
    script: list[int] = field(default_factory=list)

    def notifications(self) -> list[dict[str, Any]]:
        with self.lock:
            return [n for r in self.received for n in r.body.get("value", [])]

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait (bounded) until a received notification matches."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for notification in self.notifications():
                if match(notification):
                    return notification
            time.sleep(0.01)
        raise TimeoutError("no matching notification reached the bot")


@pytest.fixture
def sim() -> Iterator[GraphSimulator]:
    with GraphSimulator(BOT_APP_ID, time_scale=0.01, recording_retention_seconds=30.0) as running:
        yield running


@pytest.fixture
def bot() -> Iterator[Bot]:
    holder: list[Bot] = []

    async def callback(request: Request) -> Response:
        body = await request.json()
        target = holder[0]
        with target.lock:
            target.received.append(Received(dict(request.headers), body))
            status = target.script.pop(0) if target.script else target.status_code
        return Response(status_code=status)

    app = Starlette(routes=[Route("/api/calls", callback, methods=["POST"])])
    with LoopbackServer(app) as server:
        holder.append(Bot(url=f"{server.base_url}/api/calls"))
        yield holder[0]


@pytest.fixture
def graph(sim: GraphSimulator) -> Iterator[httpx.Client]:
    """An httpx client on the simulator's Graph base URL with a valid bearer token."""
    headers = {"Authorization": f"Bearer {sim.graph_token()}"}
    with httpx.Client(base_url=sim.graph_base_url, headers=headers, timeout=5.0) as client:
        yield client


def answer_body(
    callback_url: str, media: str = "#microsoft.graph.serviceHostedMediaConfig"
) -> dict[str, Any]:
    return {
        "callbackUri": callback_url,
        "acceptedModalities": ["audio"],
        "mediaConfig": {"@odata.type": media},
    }


def answered_call(
    sim: GraphSimulator,
    bot: Bot,
    graph: httpx.Client,
    *,
    answer: dict[str, Any] | None = None,
    **options: Any,
) -> str:
    """A call placed to the bot and answered (``answer``, else :func:`answer_body`), returned
    once the bot was told it is established; ``options`` are the simulator's for the call."""
    call_id = sim.place_call(callback_url=bot.url, **options)
    bot.wait_for(is_state("incoming"))
    body = answer if answer is not None else answer_body(bot.url)
    assert graph.post(f"{CALLS}/{call_id}/answer", json=body).status_code == 202
    bot.wait_for(is_state("established"))
    return call_id


def is_state(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda n: n["resourceData"].get("state") == state


def is_operation(n: dict[str, Any]) -> bool:
    return "/operations/" in n["resourceUrl"]
