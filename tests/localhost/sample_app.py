"""A small function app for the local host's own tests (independent of the real app's functions).

Every invocation is recorded in module-level lists the tests read; the functions run on the
host's event loop, the tests on theirs, so only plain appends and reads cross between them.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

queue_deliveries: list[dict[str, Any]] = []
timer_firings: list[tuple[str, func.TimerRequest]] = []
in_flight: list[int] = [0]
max_in_flight: list[int] = [0]


def reset() -> None:
    queue_deliveries.clear()
    timer_firings.clear()
    in_flight[0] = 0
    max_in_flight[0] = 0


@app.route(route="items/{itemId}/parts/{part:int}", methods=["GET", "POST"], auth_level="anonymous")
async def describe_request(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(
            {
                "method": req.method,
                "url": req.url,
                "route_params": dict(req.route_params),
                "params": dict(req.params),
                "headers": {name: req.headers[name] for name in req.headers},
                "body": req.get_body().decode(),
            }
        ),
        mimetype="application/json",
    )


@app.route(route="secret/{name}", methods=["GET"])  # the app's default level: function
async def guarded(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        f"hello {req.route_params['name']}",
        status_code=201,
        headers={"X-Sample": "yes"},
        mimetype="text/html",
        charset="latin-1",
    )


@app.route(route="env/{name}", methods=["GET"], auth_level="anonymous")
def read_setting(req: func.HttpRequest) -> func.HttpResponse:
    # A sync function: the worker runs these in a thread.
    value = os.environ.get(req.route_params["name"])
    if value is None:
        return func.HttpResponse(status_code=404)
    return func.HttpResponse(value)


@app.route(route="broken", methods=["GET"], auth_level="anonymous")
async def broken(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("internal detail that must not reach the client")


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="AzureWebJobsStorage")
async def record_message(msg: func.QueueMessage) -> None:
    """Records what it got; fails while ``fail_until`` >= the dequeue count; waits if ``hold``."""
    body = msg.get_body()
    delivery: dict[str, Any] = {
        "message": msg,
        "id": msg.id,
        "body": body,
        "dequeue_count": msg.dequeue_count,
        "completed": False,
    }
    queue_deliveries.append(delivery)
    try:
        instructions = json.loads(body)
    except ValueError:
        instructions = {}
    if not isinstance(instructions, dict):
        instructions = {}
    in_flight[0] += 1
    max_in_flight[0] = max(max_in_flight[0], in_flight[0])
    try:
        gather = int(instructions.get("gather", 0))
        # Wait (bounded) until that many invocations run at once: proves concurrency without
        # timing assumptions.
        for _ in range(500):
            if in_flight[0] >= gather:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(float(instructions.get("hold", 0)))
        if int(instructions.get("fail_until", 0)) >= (msg.dequeue_count or 0):
            raise RuntimeError("failing on request")
    finally:
        in_flight[0] -= 1
    delivery["completed"] = True


@app.timer_trigger(arg_name="timer", schedule="%SAMPLE_SCHEDULE%")
async def tick(timer: func.TimerRequest) -> None:
    timer_firings.append(("tick", timer))


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
def startup_tick(timer: func.TimerRequest) -> None:
    timer_firings.append(("startup_tick", timer))
