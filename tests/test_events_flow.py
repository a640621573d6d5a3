"""Lifecycle events through the bot flow, end to end: a subscriber sees each recording's steps.

Real calls from the Graph simulator, the bot flow, the registered download and transcription
triggers, the cleanup and the erasure; the app publishes with the real azure-eventgrid client to
the simulator's topic, whose webhook subscriber keeps what Event Grid would deliver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from devtools.graphsim import GraphSimulator
from shared.erasure import erase_operation
from shared.retention import run_cleanup
from shared.services import Services, app_services
from tests.support.functions import invoke
from tests.support.inbox import Inbox
from tests.test_bot_flow import WebhookStandIn, bot_env, inbox, new_flow, sim

__all__ = ["bot_env", "inbox", "sim"]  # the bot flow's fixtures, used here as they are there


@pytest.fixture
async def eventful(
    bot_env: GraphSimulator, configure: Callable[..., Services], storage: Any
) -> GraphSimulator:
    """The bot flow with lifecycle events and transcription, against the simulator."""
    configure(
        **bot_env.events_env(),
        TRANSCRIPTION_ENABLED="true",
        TRANSCRIPTION_ENDPOINT=bot_env.base_url,
        TRANSCRIPTION_LOCALES="en-US",
        RECORDING_RETENTION_MINUTES="60",
    )
    await app_services().storage.ensure_resources()
    await app_services().storage.transcription_queue.clear_messages()
    with bot_env.eventgrid.lock:
        bot_env.eventgrid.received.clear()
    return bot_env


async def recorded_call(sim: GraphSimulator, inbox: Inbox, storage: Any) -> tuple[str, str]:
    """One call answered, recorded, stored by the download trigger and hung up."""
    webhook = WebhookStandIn(inbox, [new_flow()], storage)
    call_id = sim.place_call()
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")
    (operation,) = [op for op in sim.operations if op.kind == "record" and op.call_id == call_id]
    return call_id, operation.id


async def steps_received(sim: GraphSimulator, call_id: str, last: str) -> list[dict[str, Any]]:
    services = app_services()
    assert services.events is not None
    deadline = time.monotonic() + 10
    while True:
        await services.events.drain()
        events = sim.received_events(call_id)
        if any(e["data"]["step"] == last for e in events) or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.02)


def in_sequence_order(events: list[dict[str, Any]]) -> list[str]:
    """The steps as a consumer keeps them: ordered by sequence, duplicates (same id) dropped."""
    seen: dict[str, dict[str, Any]] = {event["id"]: event for event in events}
    return [e["data"]["step"] for e in sorted(seen.values(), key=lambda e: e["sequence"])]


async def test_stored_transcribed_expired_reach_the_subscriber_in_sequence(
    eventful: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = eventful
    call_id, operation_id = await recorded_call(sim, inbox, storage)
    services = app_services()
    transcriptions = services.storage.transcription_queue
    (message,) = [m async for m in transcriptions.receive_messages(max_messages=32)]
    await invoke("transcribe_recording", func.QueueMessage(body=message.content))
    await transcriptions.delete_message(message)
    await run_cleanup(
        container=services.storage.container,
        ledger=services.ledger,
        poison_queue=services.storage.poison_queue,
        settings=services.settings,
        clock=lambda: datetime.now(UTC) + timedelta(hours=2),
    )

    events = await steps_received(sim, call_id, "expired")
    assert in_sequence_order(events) == ["stored", "transcribed", "expired"]
    assert {e["subject"] for e in events} == {f"/calls/{call_id}/recordings/{operation_id}"}
    # One recording, one trace: every event carries the recording's trace id.
    assert len({e.get("traceparent", "")[3:35] for e in events}) == 1
    transcribed = next(e for e in events if e["data"]["step"] == "transcribed")
    assert transcribed["data"]["transcript"]["url"].endswith(".transcript.json")


async def test_stored_then_erased_reach_the_subscriber_in_sequence(
    eventful: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = eventful
    call_id, operation_id = await recorded_call(sim, inbox, storage)
    services = app_services()
    erased = await erase_operation(
        call_id, operation_id, ledger=services.ledger, container=services.storage.container
    )
    assert erased is not None

    events = await steps_received(sim, call_id, "erased")
    assert in_sequence_order(events) == ["stored", "erased"]
    erased_event = next(e for e in events if e["data"]["step"] == "erased")
    assert erased_event["id"] == f"{call_id}:{operation_id}:erased"
    assert erased_event["data"]["recording"]["sha256"]
