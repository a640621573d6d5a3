"""Recording lifecycle events: the real azure-eventgrid client against the simulator's topic.

Every step emits its CloudEvent (valid against its shipped schema, parsed by the CloudEvents
SDK, no secret in it); a publish that fails (500, 429 with Retry-After, endpoint down, instance
stopped between the step and the publish) is delivered later exactly as it would have been, with
the same id; a step overtaken by the next still sends its own event; the poison path is recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import azure.functions as func
import pytest

from devtools.graphsim import GraphSimulator
from shared.backoff import Backoff
from shared.events.cloudevent import recording_event
from shared.events.redrive import redrive_pending_events
from shared.events.worker import process_event_job
from shared.graph.models import ResultInfo
from shared.jobs import DownloadJob
from shared.ledger import Transition
from shared.ledger.outbox import EVENT_FAILURE_REASON, PENDING, SENT, EventStep
from shared.services import Services
from shared.telemetry import span
from tests.conftest import use_simulator_identity
from tests.support.clock import Sleeps
from tests.support.functions import invoke
from tests.support.schema_check import problems

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "events"
SECRET_MARKERS = ("sig=", "AccountKey", "Bearer ", "aeg-sas", "access_token", "se=20")


class Stopped:
    """A listener that never publishes: the instance stopped right after the step's write."""

    def __init__(self) -> None:
        self.told: list[tuple[Transition, EventStep]] = []

    def stepped(self, row: Transition, step: EventStep) -> None:
        self.told.append((row, step))


@pytest.fixture
async def events(
    configure: Callable[..., Services],
    monkeypatch: pytest.MonkeyPatch,
    sim: GraphSimulator,
    storage: Any,
) -> Services:
    """Events on, published to the simulator's topic with its managed identity."""
    use_simulator_identity(monkeypatch, sim)
    services = configure(**sim.events_env())
    await services.storage.events_queue.clear_messages()
    with sim.eventgrid.lock:
        sim.eventgrid.faults.clear()
        sim.eventgrid.received.clear()
    return services


async def received(sim: GraphSimulator, call_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        items = sim.eventgrid.received_events(call_id)
        if len(items) >= count or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.02)


def schema_for(event: dict[str, Any]) -> dict[str, Any]:
    step = event["type"].split(".recording.", 1)[1].rsplit(".", 1)[0]
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"recording.{step}.v1.json").read_text())
    return loaded


def parsed_by_the_sdk(item: dict[str, Any]) -> Any:
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.formats.json import JSONFormat

    message = HTTPMessage(headers={"content-type": item["contentType"]}, body=item["body"].encode())
    return from_http(message, JSONFormat())


async def stored(services: Services, sim: GraphSimulator) -> DownloadJob:
    """A recording stored by the real download trigger (its stored step is the event's)."""
    rec = sim.add_recording(duration_seconds=1.0, content_type="audio/wav")
    job = DownloadJob(
        call_id=str(uuid.uuid4()),
        operation_id=str(uuid.uuid4()),
        tenant_id=sim.tenant_id,
        recording_location=rec.location,
        recording_access_token=rec.access_token,
        result_code=200,
        result_subcode=8515,
        received_at=datetime.now(UTC),
    )
    with span("webhook"):  # the recording's trace, as the webhook starts it
        assert await invoke("download_recording", func.QueueMessage(body=job.to_message())) is None
    return job


async def drained(services: Services) -> None:
    assert services.events is not None
    await services.events.drain()


async def run_event_jobs(services: Services, *, backoff: Backoff | None = None) -> list[str]:
    """Every job on recording-events through the real worker, as the trigger would; outcomes."""
    outbox = services.events
    assert outbox is not None
    queue = services.storage.events_queue
    outcomes = []
    async for message in queue.receive_messages(max_messages=32):
        outcome = await process_event_job(
            message.content,
            ledger=services.ledger,
            publisher=outbox.publisher,
            fmt=outbox.format,
            backoff=backoff or Backoff(sleep=Sleeps()),
            dequeue_count=message.dequeue_count,
        )
        outcomes.append(outcome.outcome)
        await queue.delete_message(message)
    return outcomes


# --- every step --------------------------------------------------------------------------------


async def test_every_step_emits_its_event_valid_parsable_and_without_secrets(
    events: Services, sim: GraphSimulator
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from shared.telemetry import use_providers

    use_providers(TracerProvider())
    try:
        job = await stored(events, sim)
    finally:
        use_providers(None)
    ledger = events.ledger
    call, op = job.call_id, job.operation_id
    now = datetime.now(UTC)
    await ledger.mark_transcription_failed(call, op, "Speech refused the locale")
    await ledger.mark_transcribed(call, op, transcribed_at=now)
    await ledger.mark_expired(call, op)
    failed_call, failed_op = str(uuid.uuid4()), str(uuid.uuid4())
    await ledger.mark_failed(
        failed_call, failed_op, "recordOperation failed", result=ResultInfo(code=400, subcode=8510)
    )
    abandoned = await ledger.mark_abandoned(str(uuid.uuid4()), str(uuid.uuid4()), "call ended")
    erased = await ledger.mark_erased(call_erased := str(uuid.uuid4()), str(uuid.uuid4()))
    await drained(events)

    # Each step publishes in the background and Event Grid does not order deliveries: a
    # consumer orders a recording's events by their sequence, as this does.
    lifecycle = sorted(await received(sim, call, 4), key=lambda item: item["event"]["sequence"])
    others = [
        *(await received(sim, failed_call, 1)),
        *(await received(sim, abandoned.record.call_id, 1)),
        *(await received(sim, call_erased, 1)),
    ]
    assert [i["event"]["data"]["step"] for i in lifecycle] == [
        "stored",
        "transcription_failed",
        "transcribed",
        "expired",
    ]
    assert [i["event"]["data"]["step"] for i in others] == ["failed", "abandoned", "erased"]
    for item in [*lifecycle, *others]:
        event = item["event"]
        assert problems(schema_for(event), event) == [], event
        sdk = parsed_by_the_sdk(item)
        assert sdk.get_id() == event["id"]
        assert sdk.get_type() == event["type"]
        assert (
            event["subject"]
            == f"/calls/{event['data']['callId']}/recordings/" + (event["data"]["operationId"])
        )
        for marker in SECRET_MARKERS:
            assert marker not in item["body"]
        assert item["contentType"].startswith("application/cloudevents+json")
    stored_event = lifecycle[0]["event"]
    assert stored_event["id"] == f"{call}:{op}:stored"
    assert stored_event["type"] == "org.example.callrecording.recording.stored.v1"
    assert stored_event["data"]["recording"]["url"].endswith(f"/recordings/{call}/{op}.wav")
    # The length comes from the stored WAV's header (the simulator's recording lasts 1 s).
    assert stored_event["data"]["recording"]["durationSeconds"] == pytest.approx(1.0, abs=0.01)
    assert stored_event["data"]["tenantId"] == sim.tenant_id
    # Every event of the recording joins its trace (the one the download ran in).
    traces = {i["event"].get("traceparent", "")[3:35] for i in lifecycle}
    assert len(traces) == 1
    assert traces != {""}
    # Four distinct sequences, in the lifecycle's order.
    assert len({i["event"]["sequence"] for i in lifecycle}) == 4
    failure = others[0]["event"]["data"]["failure"]
    assert (failure["code"], failure["subcode"]) == (400, 8510)
    assert failure["meaning"]
    # Each step's marker says sent: one merge per event, nothing left for the sweep.
    row = await ledger.get(call, op)
    assert row is not None
    for step in ("stored", "transcription_failed", "transcribed", "expired"):
        assert row.get(EventStep(step).column) == SENT
    assert erased.changed


async def test_events_off_writes_no_marker(
    services: Services, storage: Any, configure: Callable[..., Services]
) -> None:
    ledger = services.ledger
    assert services.events is None
    transition = await ledger.mark_failed(str(uuid.uuid4()), str(uuid.uuid4()), "no")
    assert not any(name.startswith("Event") for name in transition.record.fields)


# --- never lost ------------------------------------------------------------------------------


async def test_a_publish_answered_500_is_queued_and_delivered_with_the_same_id(
    events: Services, sim: GraphSimulator
) -> None:
    sim.queue_eventgrid_faults("500")
    job = await stored(events, sim)
    await drained(events)
    assert sim.eventgrid.received_events(job.call_id) == []
    row = await events.ledger.get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(EventStep.STORED.column) == PENDING
    expected = recording_event(row, EventStep.STORED, events.events.format)  # type: ignore[union-attr]

    assert await run_event_jobs(events) == ["published"]
    [item] = await received(sim, job.call_id, 1)
    assert item["event"] == expected
    row = await events.ledger.get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(EventStep.STORED.column) == SENT


async def test_throttled_publish_waits_retry_after_then_delivers(
    events: Services, sim: GraphSimulator
) -> None:
    sim.queue_eventgrid_faults("429:7")  # the outbox's own attempt
    job = await stored(events, sim)
    await drained(events)
    sim.queue_eventgrid_faults("429:3")  # the worker's first attempt
    sleeps = Sleeps()
    assert await run_event_jobs(events, backoff=Backoff(sleep=sleeps)) == ["published"]
    assert len(sleeps.delays) == 1
    assert 3 <= sleeps.delays[0] < 3.2
    [item] = await received(sim, job.call_id, 1)
    assert item["event"]["id"] == f"{job.call_id}:{job.operation_id}:stored"


async def test_endpoint_down_then_back_delivers_the_same_event(
    events: Services, sim: GraphSimulator, configure: Callable[..., Services]
) -> None:
    down = configure(EVENTS_ENDPOINT="https://127.0.0.1:9/api/events")
    job = await stored(down, sim)
    await drained(down)
    row = await down.ledger.get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(EventStep.STORED.column) == PENDING
    up = configure(EVENTS_ENDPOINT=sim.events_endpoint or "")
    assert await run_event_jobs(up) == ["published"]
    [item] = await received(sim, job.call_id, 1)
    assert item["event"] == recording_event(row, EventStep.STORED, up.events.format)  # type: ignore[union-attr]


async def test_instance_stopped_between_step_and_publish_is_redriven_by_the_sweep(
    events: Services, sim: GraphSimulator
) -> None:
    ledger = events.ledger
    stopped = Stopped()
    ledger.events = stopped  # the step is written; the process dies before it publishes
    job = await stored(events, sim)
    await ledger.mark_expired(job.call_id, job.operation_id)  # overtaken before its event went out
    assert [step for _, step in stopped.told] == [EventStep.STORED, EventStep.EXPIRED]
    at_step = [
        recording_event(row.record, step, events.events.format) for row, step in stopped.told
    ]  # type: ignore[union-attr]
    ledger.events = events.events

    queue = events.storage.events_queue
    early = await redrive_pending_events(
        ledger, queue, now=datetime.now(UTC), after=timedelta(minutes=5)
    )
    assert early.jobs == 0  # too recent: its own instance may still publish it
    later = await redrive_pending_events(
        ledger, queue, now=datetime.now(UTC) + timedelta(minutes=6), after=timedelta(minutes=5)
    )
    assert (later.rows, later.jobs) == (1, 2)
    assert sorted(await run_event_jobs(events)) == ["published", "published"]
    items = await received(sim, job.call_id, 2)
    # Both steps, each exactly as it would have been sent at its step; ordered by sequence.
    assert sorted((i["event"] for i in items), key=lambda e: e["sequence"]) == at_step
    again = await redrive_pending_events(
        ledger, queue, now=datetime.now(UTC) + timedelta(minutes=6), after=timedelta(minutes=5)
    )
    assert again.jobs == 0


async def test_a_duplicate_job_publishes_nothing_once_sent(
    events: Services, sim: GraphSimulator
) -> None:
    from shared.events.job import queue_event

    job = await stored(events, sim)
    await drained(events)
    await queue_event(events.storage.events_queue, job.call_id, job.operation_id, EventStep.STORED)
    assert await run_event_jobs(events) == ["not_owed"]
    assert len(await received(sim, job.call_id, 1)) == 1


async def test_last_delivery_records_the_failure_and_keeps_the_event_owed(
    events: Services, sim: GraphSimulator
) -> None:
    from shared.events.publisher import TransientPublishError

    sim.queue_eventgrid_faults("500", "500", "500")
    job = await stored(events, sim)
    await drained(events)
    queue = events.storage.events_queue
    [message] = [m async for m in queue.receive_messages(max_messages=32)]
    outbox = events.events
    assert outbox is not None
    with pytest.raises(TransientPublishError):
        await process_event_job(
            message.content,
            ledger=events.ledger,
            publisher=outbox.publisher,
            fmt=outbox.format,
            backoff=Backoff(attempts=2, sleep=Sleeps()),
            dequeue_count=5,  # host.json maxDequeueCount: the last delivery
        )
    row = await events.ledger.get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(EventStep.STORED.column) == PENDING
    assert "Event Grid answered 500" in row.get(EVENT_FAILURE_REASON)


async def test_a_refused_event_is_marked_undeliverable() -> None:
    from shared.events.publisher import TerminalPublishError, publish_error

    class Response:
        status_code = 413
        headers: ClassVar[dict[str, str]] = {}

        def json(self) -> dict[str, Any]:
            return {"error": {"code": "RequestEntityTooLarge", "message": "secret stuff"}}

    class Refused(Exception):
        status_code = 413
        response = Response()

    error = publish_error(Refused())
    assert isinstance(error, TerminalPublishError)
    assert error.reason == "Event Grid answered 413 (RequestEntityTooLarge)"


# --- the simulated topic behaves like Event Grid ----------------------------------------------


async def test_the_topic_refuses_a_wrong_audience_and_oversized_events(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    import httpx

    assert sim.events_endpoint is not None
    assert sim.tls_ca_file is not None
    token, _ = sim.graph_tokens.issue()  # a Graph token, not an Event Grid one
    url = f"{sim.events_endpoint}?api-version=2018-01-01"
    headers = {"Content-Type": "application/cloudevents-batch+json; charset=utf-8"}
    event = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=sim.tls_ca_file)
    ) as client:
        wrong = await client.post(
            url, json=[event], headers={**headers, "Authorization": f"Bearer {token}"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "Unauthorized"
        good, _ = sim.graph_tokens.issue("https://eventgrid.azure.net")
        auth = {**headers, "Authorization": f"Bearer {good}"}
        big = await client.post(url, json=[{**event, "data": "x" * (1024 * 1024)}], headers=auth)
        assert big.status_code == 413
        many = await client.post(url, json=[event] * 5001, headers=auth)
        assert many.status_code == 400
        bad = await client.post(url, json=[{"id": "1"}], headers=auth)
        assert bad.status_code == 400
        assert "specversion" in bad.json()["error"]["message"]


async def test_the_cleanup_purges_poisoned_event_jobs_and_the_row_still_owes_the_event(
    events: Services, sim: GraphSimulator, configure: Callable[..., Services]
) -> None:
    """A poisoned event job holds no token and owes nothing the row does not: the cleanup
    deletes it (an unreadable message too), the marker stays pending, and the sweep re-sends."""
    from shared.events.job import EventJob
    from shared.retention import run_cleanup
    from shared.settings import get_settings
    from tests.support.clock import Clock

    down = configure(EVENTS_ENDPOINT="https://127.0.0.1:9/api/events")
    job = await stored(down, sim)
    await drained(down)
    poison = down.storage.events_poison_queue
    await poison.clear_messages()
    owed = EventJob(call_id=job.call_id, operation_id=job.operation_id, step=EventStep.STORED)
    await poison.send_message(owed.to_message())
    await poison.send_message("not an event job")
    max_age = timedelta(minutes=get_settings().poison_message_max_age_minutes)
    later = datetime.now(UTC) + max_age + timedelta(minutes=1)

    summary = await run_cleanup(
        container=down.storage.container,
        ledger=down.ledger,
        poison_queue=down.storage.poison_queue,
        events_poison_queue=poison,
        settings=get_settings(),
        clock=Clock(later),
    )

    assert summary.errors == 0
    assert (summary.poison_messages_purged, summary.poison_messages_unreadable) == (2, 1)
    assert (await poison.get_queue_properties()).approximate_message_count == 0
    row = await down.ledger.get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(EventStep.STORED.column) == PENDING
    up = configure(EVENTS_ENDPOINT=sim.events_endpoint or "")
    await up.storage.events_queue.clear_messages()
    swept = await redrive_pending_events(
        up.ledger, up.storage.events_queue, now=later, after=timedelta(minutes=5)
    )
    assert swept.jobs >= 1
    assert "published" in await run_event_jobs(up)
    assert await received(sim, job.call_id, 1)
