"""Recordings through the app under the real Azure Monitor distro, in a process of their own.

tests/test_whole_traces.py runs ``python -m tests.appinsights_probe <spec.json>``: the distro
installs global providers, which must not leak into the rest of the suite. The environment holds
the app's settings and ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (its ingestion endpoint is the
test's capture server); importing ``function_app`` configures the distro from it, as in Azure.

For each recording of the spec, the completion notification is posted to the real webhook under
a host request's trace context (in Azure the Python worker joins the host's context on each
invocation), then each download job on the queue is run by the real queue trigger under a host
invocation of its own. Every provider is flushed before the process ends. Prints one JSON object:
the webhook's statuses, the ledger's statuses and the sampler the distro's provider uses.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import azure.functions as func
from opentelemetry import context, metrics, trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


@contextmanager
def under_the_host(traceparent: str) -> Iterator[None]:
    """What the Python worker does per invocation with PYTHON_ENABLE_OPENTELEMETRY."""
    token = context.attach(TraceContextTextMapPropagator().extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        context.detach(token)


async def call(function: Any, argument: Any) -> Any:
    result = function(argument)
    return await result if inspect.isawaitable(result) else result


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    import function_app  # configures the distro from the environment, as in Azure
    from shared.ledger import OperationLedger
    from shared.services import app_services

    functions = {
        f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()
    }
    storage = app_services().storage
    statuses: list[int] = []
    invocation = 0
    for recording in spec["recordings"]:
        request = func.HttpRequest(
            method="POST",
            url="http://localhost:7071/api/calls",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {recording['bearer']}",
            },
            params={},
            route_params={},
            body=json.dumps(recording["payload"]).encode(),
        )
        with under_the_host(recording["host_traceparent"]):
            response = await call(functions["notifications"], request)
        statuses.append(response.status_code)
        async for message in storage.queue.receive_messages(max_messages=32):
            invocation += 1
            host = f"00-{invocation:032x}-{invocation:016x}-01"  # another host trace per invocation
            with under_the_host(host):
                await call(functions["download_recording"], func.QueueMessage(body=message.content))
            await storage.queue.delete_message(message)
    ledger = OperationLedger(storage.table)
    stored: dict[str, str | None] = {}
    for recording in spec["recordings"]:
        record = await ledger.get(recording["call_id"], recording["operation_id"])
        stored[recording["operation_id"]] = record.status.value if record else None
    provider = trace.get_tracer_provider()
    return {
        "statuses": statuses,
        "ledger": stored,
        "sampler": provider.sampler.get_description(),  # type: ignore[attr-defined]
    }


def main() -> None:
    # As under the Functions Python worker: the root logger at INFO (the worker forwards
    # it), the distro's handler beside it; warnings also to stderr, for the test's report.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger().handlers[0].setLevel(logging.WARNING)
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(run(spec))
    # Everything batched goes out now, before the report: the test reads what was sent.
    flushed = [
        trace.get_tracer_provider().force_flush(10_000),  # type: ignore[attr-defined]
        get_logger_provider().force_flush(10_000),  # type: ignore[attr-defined]
        metrics.get_meter_provider().force_flush(10_000),  # type: ignore[attr-defined]
    ]
    print(json.dumps({**result, "flushed": flushed}), flush=True)


if __name__ == "__main__":
    main()
