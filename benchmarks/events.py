"""Figure 10: recording lifecycle events (issue 28): stored → subscriber, and what events cost.

The app side is the ledger's ``stored`` and ``expired`` writes with events on, as the download
worker and the cleanup make them: each write carries its event marker, the outbox publishes the
event with the real ``azure-eventgrid`` client and the app's managed identity (the simulator
process's), and marks the step ``sent``. The simulator process's Event Grid topic checks the
token, accepts the batch and delivers it to its webhook subscriber (validation handshake first).

Latency: from the moment the ``stored`` write returned (the step happened) to the subscriber's
receipt of the event, both on this machine's clock. Cost: the storage requests of one recording's
``stored`` and ``expired`` writes and everything events add to them (the markers' clears), with
events on, minus the same two writes with events off, counted at the SDK's transport (blob, queue
and table). Goal: at most 2 per recording.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.harness import Figure, Goal
from benchmarks.rig import Rig, StorageRequestCounter, app_settings_env, new_id, run_async

if TYPE_CHECKING:
    from shared.services import Services

REPEATS = 60
QUICK_REPEATS = 25
SHA256 = "0" * 64


def events_env(rig: Rig) -> dict[str, str]:
    """The app's settings for the simulator process's topic and managed identity."""
    response = httpx.get(f"{rig.recordings.base_url}/_sim/config", timeout=10.0, trust_env=False)
    response.raise_for_status()
    config: dict[str, Any] = response.json()
    if not config.get("eventsEnv"):
        raise RuntimeError("the simulator process runs without TLS: no Event Grid topic")
    env = config["env"]
    return {
        "IDENTITY_ENDPOINT": env["IDENTITY_ENDPOINT"],
        "IDENTITY_HEADER": env["IDENTITY_HEADER"],
        **config["eventsEnv"],
    }


async def received_at(rig: Rig, http: httpx.AsyncClient, call_id: str, step: str) -> float:
    """When the subscriber received ``step``'s event of ``call_id`` (epoch seconds)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = await http.get(
            f"{rig.recordings.base_url}/_sim/subscriber/events", params={"callId": call_id}
        )
        for item in response.json()["events"]:
            if (item["event"].get("data") or {}).get("step") == step:
                return float(item["receivedAt"])
        await asyncio.sleep(0.005)
    raise RuntimeError(f"the subscriber never received {step} of {call_id}")


async def one_recording(services: Services, *, drain: bool) -> tuple[str, float]:
    """``stored`` then ``expired`` for a new recording; (call id, when ``stored`` returned)."""
    call_id, operation_id = new_id(), new_id()
    now = datetime.now(UTC)
    await services.ledger.mark_stored(
        call_id,
        operation_id,
        blob_name=f"{call_id}/{operation_id}.wav",
        size_bytes=32044,
        sha256=SHA256,
        content_type="audio/wav",
        expires_at=now + timedelta(minutes=60),
        stored_at=now,
    )
    stored = time.time()
    if drain and services.events is not None:
        await services.events.drain()
    await services.ledger.mark_expired(call_id, operation_id)
    if drain and services.events is not None:
        await services.events.drain()
    return call_id, stored


def storage_requests(counter: StorageRequestCounter) -> int:
    """Blob, queue and table requests (the publishes to Event Grid count as "other")."""
    by_service = counter.by_service()
    return sum(by_service.get(service, 0) for service in ("blob", "queue", "table"))


def run(rig: Rig, *, quick: bool) -> Figure:
    figure = Figure("10", "Lifecycle events: stored → subscriber, and their storage requests")
    repeats = QUICK_REPEATS if quick else REPEATS
    figure.parameters = {"repeats": repeats, "steps_per_recording": ["stored", "expired"]}

    async def measure() -> dict[str, list[float]]:
        from shared.services import Services, use_services
        from shared.settings import get_settings

        settings = get_settings()
        on = Services(settings)
        off = Services(settings.model_copy(update={"events_endpoint": None}))
        use_services(on)  # closed with the loop's services by run_async
        await on.storage.ensure_resources()
        results: dict[str, list[float]] = {}
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            await one_recording(on, drain=True)  # warm-up: token, connections, handshake
            await one_recording(off, drain=False)
            for _ in range(repeats):
                with StorageRequestCounter(rig.azurite) as counter:
                    await one_recording(off, drain=False)
                without = storage_requests(counter)
                with StorageRequestCounter(rig.azurite) as counter:
                    call_id, stored = await one_recording(on, drain=True)
                by_service = counter.by_service()
                results.setdefault("extra", []).append(storage_requests(counter) - without)
                results.setdefault("queue", []).append(by_service.get("queue", 0))
                results.setdefault("publishes", []).append(by_service.get("other", 0))
                arrived = await received_at(rig, http, call_id, "stored")
                results.setdefault("latency", []).append(arrived - stored)
        await off.aclose()
        return results

    with app_settings_env(events_env(rig)):
        results = run_async(measure)

    figure.metric(
        "stored → subscriber",
        "ms",
        [seconds * 1000 for seconds in results["latency"]],
        with_p99=True,
        description="the stored write returned → the webhook subscriber received the event "
        "(publish with a cached token, Event Grid accept, delivery)",
    )
    figure.metric(
        "extra storage requests per recording",
        "requests",
        results["extra"],
        goal=Goal("<=", 2),
        description="stored + expired with events on, minus the same with events off "
        "(goal: at most 2; one marker clear per step)",
    )
    figure.metric(
        "Event Grid publishes per recording",
        "requests",
        results["publishes"],
        description="one per step (stored, expired); none retried in this run",
    )
    figure.metric(
        "queue requests per recording",
        "requests",
        results["queue"],
        description="event jobs sent when a publish failed (0 when Event Grid takes every "
        "publish at once)",
    )
    return figure
