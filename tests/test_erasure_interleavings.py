"""Erasure is final for everything accepted, whatever runs beside it and in whatever order.

Property: a call's completions are on the queue (some with a row from the start, some with none:
the bot flow off); deliveries, duplicate deliveries, redeliveries, the transcriptions a stored
recording queues, and erasures of the call or of one recording all run at once. Every storage
request any of them sends waits for its turn, and Hypothesis picks whose turn comes next, so each
example is one interleaving at the granularity of single requests. However it goes, once an
erasure has answered, nothing of what it erased is in blob storage and the ledger says
``erased``.

Real Azurite, the simulator's recordings and Speech over real HTTP, the real workers.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.pipeline.transport import AioHttpTransport
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devtools.graphsim import GraphSimulator
from shared.backoff import Backoff
from shared.download import DownloadRetry, TransientDownloadError
from shared.download.worker import process_job
from shared.erasure import erase_call, erase_operation
from shared.hostconfig import max_dequeue_count
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus
from shared.services import Services, close_services, use_services
from shared.settings import Settings
from shared.storage import _client_options, _storage_retry_options
from shared.transcription import TransientTranscriptionError, process_transcription
from tests.conftest import settings_from, use_simulator_identity
from tests.support.clock import Sleeps

# Which task a storage request belongs to (None: the test's own setup and checks, not gated).
TASK: contextvars.ContextVar[str | None] = contextvars.ContextVar("task", default=None)
QUIET_TIMEOUT_SECONDS = 30.0


class Scheduler:
    """Runs tasks so that only one is between two storage requests at a time; ``choose`` picks
    which waiting request goes next."""

    def __init__(self, choose: Callable[[list[str]], str]) -> None:
        self.choose = choose
        self.parked: dict[str, asyncio.Future[None]] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.turns = 0
        # Once the schedule is over (or given up: Hypothesis ran out of choices), requests go
        # straight through, so that a task's clean-up (a lease given back) never waits forever.
        self.open = False

    async def turn(self) -> None:
        name = TASK.get()
        if name is None or self.open:
            return
        future = asyncio.get_running_loop().create_future()
        self.parked[name] = future
        await future

    def spawn(self, name: str, work: Callable[[], Awaitable[Any]]) -> None:
        name = f"{name} ({len(self.tasks) + 1})"  # unique: a job may be queued twice

        async def run() -> Any:
            TASK.set(name)
            await self.turn()  # a task starts when it is chosen, like any request
            return await work()

        self.tasks[name] = asyncio.create_task(run(), name=name)

    def _quiet(self) -> bool:
        return all(task.done() or name in self.parked for name, task in self.tasks.items())

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.open = True
            for future in self.parked.values():
                if not future.done():
                    future.set_result(None)
            self.parked.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = loop.time() + QUIET_TIMEOUT_SECONDS
            while not self._quiet():
                busy = [n for n, t in self.tasks.items() if not t.done() and n not in self.parked]
                assert loop.time() < deadline, f"{busy} neither finished nor sent a request"
                await asyncio.sleep(0.001)
            if not self.parked:
                break
            name = self.choose(sorted(self.parked))
            self.turns += 1
            self.parked.pop(name).set_result(None)
        for task in self.tasks.values():
            task.result()  # an unexpected error fails the example


class GatedTransport(AioHttpTransport):
    """The real transport; a task's request waits for the scheduler to choose it."""

    def __init__(self, scheduler: Scheduler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scheduler = scheduler

    async def send(self, request: Any, **kwargs: Any) -> Any:
        await self.scheduler.turn()
        return await super().send(request, **kwargs)


@dataclass
class Operation:
    id: str
    started_here: bool  # the bot or the API started it: a row from the start, a clientContext
    duplicate: bool  # a second delivery of its completion runs at once with the first
    erase_alone: bool  # an operator erases this one recording
    job: DownloadJob | None = None


@dataclass(frozen=True)
class Plan:
    operations: tuple[Operation, ...]
    erase_call: bool
    keep_audio: bool


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    count = draw(st.integers(min_value=1, max_value=3))
    operations = tuple(
        Operation(
            str(uuid.UUID(int=draw(st.integers(0, 2**64)) or 1, version=4)),
            started_here=draw(st.booleans()),
            duplicate=draw(st.booleans()),
            erase_alone=draw(st.booleans()),
        )
        for _ in range(count)
    )
    erase_whole_call = draw(st.booleans()) or not any(op.erase_alone for op in operations)
    return Plan(operations, erase_whole_call, keep_audio=draw(st.booleans()))


@dataclass
class Outcomes:
    call_erasure: list[Any] | str | None = "not run"
    erased_alone: dict[str, bool] = field(default_factory=dict)


class TranscriptionQueue:
    """Stands in for ``recording-transcriptions``: a job sent is a transcription task at once."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self.send = send

    async def send_message(self, message: str, **kwargs: Any) -> None:
        self.send(message)


@pytest.fixture
def transcribing_settings(
    app_env: dict[str, str], sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    use_simulator_identity(monkeypatch, sim)
    with sim.engine.lock:
        sim.engine.api_faults.pop("transcribe", None)
    return settings_from(
        {
            **app_env,
            "TRANSCRIPTION_ENABLED": "true",
            "TRANSCRIPTION_ENDPOINT": sim.base_url,
            "TRANSCRIPTION_LOCALES": "en-US",
        }
    )


async def one_example(
    base: Settings, sim: GraphSimulator, plan: Plan, choose: Callable[[list[str]], str]
) -> tuple[Outcomes, int]:
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient

    settings = base.model_copy(update={"transcription_keep_audio": plan.keep_audio})
    services = Services(settings)
    use_services(services)
    await services.storage.ensure_once()
    scheduler = Scheduler(choose)
    connection = settings.storage_connection_string
    assert connection is not None
    call_id = str(uuid.uuid4())
    outcomes = Outcomes()
    # The app's own timeouts and retries (the blob SDK's defaults wait 15 s before a retry).
    options = {**_client_options(), **_storage_retry_options()}
    async with (
        BlobServiceClient.from_connection_string(
            connection, transport=GatedTransport(scheduler), **options
        ) as blob_service,
        TableServiceClient.from_connection_string(
            connection, transport=GatedTransport(scheduler), **_client_options()
        ) as table_service,
    ):
        container = blob_service.get_container_client(services.storage.container_name)
        ledger = OperationLedger(table_service.get_table_client(services.storage.table_name))
        retry = DownloadRetry(base_seconds=0.001, lease_wait_seconds=0.05, lease_poll_seconds=0.005)

        def transcribe(message: str, delivery: int = 1) -> None:
            async def work() -> None:
                try:
                    await process_transcription(
                        message,
                        settings=settings,
                        speech=services.speech,
                        container=container,
                        ledger=ledger,
                        backoff=Backoff(sleep=Sleeps()),
                        dequeue_count=delivery,
                    )
                except TransientTranscriptionError:
                    if delivery < max_dequeue_count():
                        transcribe(message, delivery + 1)

            scheduler.spawn(f"transcribe #{delivery}", work)

        queue = TranscriptionQueue(transcribe)

        def deliver(op: Operation, copy: int, delivery: int = 1) -> None:
            assert op.job is not None
            message = op.job.to_message()

            async def work() -> None:
                try:
                    await process_job(
                        message,
                        settings=settings,
                        http=services.recording_http,
                        container=container,
                        ledger=ledger,
                        retry=retry,
                        dequeue_count=delivery,
                        transcriptions=queue,  # type: ignore[arg-type]
                    )
                except TransientDownloadError:
                    if delivery < max_dequeue_count():
                        deliver(op, copy, delivery + 1)  # the host redelivers it

            scheduler.spawn(f"download {op.id} copy {copy} #{delivery}", work)

        # What was accepted before anything runs: the rows the app wrote when Graph accepted
        # its own recordResponse, and every completion's job on the queue.
        for op in plan.operations:
            recording = sim.add_recording(duration_seconds=1)
            context = "started here" if op.started_here else None
            if op.started_here:
                await services.ledger.mark_started(
                    call_id,
                    op.id,
                    OperationStatus.RUNNING,
                    requested_at=datetime.now(UTC),
                    client_context=context,
                    started_by="api",
                    max_record_duration_seconds=10,
                )
            op.job = DownloadJob(
                call_id=call_id,
                operation_id=op.id,
                client_context=context,
                recording_location=recording.location,
                recording_access_token=recording.access_token,
                result_code=200,
                result_subcode=8515,
                received_at=datetime.now(UTC),
            )
            deliver(op, 1)
            if op.duplicate:
                deliver(op, 2)

        if plan.erase_call:

            async def erase_the_call() -> None:
                outcomes.call_erasure = await erase_call(
                    call_id, ledger=ledger, container=container
                )

            scheduler.spawn("erase call", erase_the_call)
        for op in plan.operations:
            if op.erase_alone:

                async def erase_one(op: Operation = op) -> None:
                    erased = await erase_operation(
                        call_id, op.id, ledger=ledger, container=container
                    )
                    outcomes.erased_alone[op.id] = erased is not None  # 204, else 404

                scheduler.spawn(f"erase {op.id}", erase_one)

        try:
            await scheduler.run()
        finally:
            # Whatever ended the schedule, every task ends before the clients close.
            await asyncio.gather(*scheduler.tasks.values(), return_exceptions=True)

    # What is left, read outside the schedule.
    left = {b.name async for b in services.storage.container.list_blobs(f"{call_id}/")}
    rows = {op.id: await services.ledger.get(call_id, op.id) for op in plan.operations}
    erased_ops = [op for op in plan.operations if outcomes.erased_alone.get(op.id)]
    if plan.erase_call:
        # A 204, or a 404 (no row yet when it listed), the call's guard holds all the same.
        erased_ops = list(plan.operations)
    for op in erased_ops:
        prefix = f"{call_id}/{op.id}"
        assert not [name for name in left if name.startswith(prefix)], (op, left)
        row = rows[op.id]
        assert row is not None, op
        assert row.status is OperationStatus.ERASED, (op, row.status)
    return outcomes, scheduler.turns


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans(), data=st.data())
def test_nothing_erased_survives_any_interleaving(
    transcribing_settings: Settings, sim: GraphSimulator, plan: Plan, data: st.DataObject
) -> None:
    def choose(names: list[str]) -> str:
        return data.draw(st.sampled_from(names))

    async def run() -> None:
        try:
            outcomes, turns = await one_example(transcribing_settings, sim, plan, choose)
        finally:
            await close_services()
        event(f"call erasure answered {'404' if outcomes.call_erasure is None else '204'}")
        event(f"{turns // 10 * 10}+ storage requests interleaved")

    asyncio.run(run())


# -- one interleaving each, named ------------------------------------------------------------


def first_of(*prefixes: str) -> Callable[[list[str]], str]:
    """A schedule: the first waiting task whose name starts with the earliest prefix listed."""

    def choose(names: list[str]) -> str:
        for prefix in prefixes:
            for name in names:
                if name.startswith(prefix):
                    return name
        return names[0]

    return choose


def run_example(
    settings: Settings, sim: GraphSimulator, plan: Plan, choose: Callable[[list[str]], str]
) -> Outcomes:
    async def run() -> Outcomes:
        try:
            outcomes, _ = await one_example(settings, sim, plan, choose)
            return outcomes
        finally:
            await close_services()

    return asyncio.run(run())


def test_a_call_erased_while_its_completion_waits_on_the_queue_downloads_nothing(
    transcribing_settings: Settings, sim: GraphSimulator
) -> None:
    """The bot flow off: no row exists when the erasure lists the call (it answers 404), the
    completion's job runs afterwards, finds the call's guard and writes ``erased``."""
    op = Operation(str(uuid.uuid4()), started_here=False, duplicate=False, erase_alone=False)
    before = len(sim.requests)
    outcomes = run_example(
        transcribing_settings,
        sim,
        Plan((op,), erase_call=True, keep_audio=True),
        first_of("erase call", "download"),
    )
    assert outcomes.call_erasure is None  # nothing was known: 404, and still nothing is kept
    recording_requests = [r for r in sim.requests[before:] if "/recordings/" in r.path]
    assert recording_requests == []


# -- the windows the guard and the ETags close, each forced once -------------------------------


class EraseCallFirst:
    """A table client whose next transaction (a download's first write) comes just after the
    call's erasure: the transaction was decided on the guard as it was before."""

    def __init__(self, table: Any, erase: Callable[[], Awaitable[Any]]) -> None:
        self._table = table
        self._erase: Callable[[], Awaitable[Any]] | None = erase
        self.erasure: Any = "not run"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    async def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        if self._erase is not None:
            erase, self._erase = self._erase, None
            self.erasure = await erase()
        return await self._table.submit_transaction(operations, **kwargs)


@pytest.mark.parametrize("started_here", [False, True])
async def test_an_erasure_between_the_read_and_the_first_write_wins(
    storage: Any, sim: GraphSimulator, started_here: bool
) -> None:
    from shared.download import new_http_client
    from shared.settings import get_settings

    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    ledger = OperationLedger(storage.table)
    context = "started here" if started_here else None
    if started_here:
        await ledger.mark_started(
            call_id,
            operation_id,
            OperationStatus.RUNNING,
            requested_at=datetime.now(UTC),
            client_context=context,
            started_by="api",
            max_record_duration_seconds=10,
        )
    rec = sim.add_recording(duration_seconds=1)
    job = DownloadJob(
        call_id=call_id,
        operation_id=operation_id,
        client_context=context,
        recording_location=rec.location,
        recording_access_token=rec.access_token,
        received_at=datetime.now(UTC),
    )
    table = EraseCallFirst(
        storage.table, lambda: erase_call(call_id, ledger=ledger, container=storage.container)
    )
    async with new_http_client() as http:
        outcome = await process_job(
            job.to_message(),
            settings=get_settings(),
            http=http,
            container=storage.container,
            ledger=OperationLedger(table),  # type: ignore[arg-type]
            retry=DownloadRetry(base_seconds=0.01),
        )
    assert outcome.outcome == "erased"
    assert rec.request_count == 0
    # Started here, the erasure found its row (204); otherwise it found none (404).
    assert (table.erasure is None) is (not started_here)
    row = await ledger.get(call_id, operation_id)
    assert row is not None
    assert row.status is OperationStatus.ERASED
    assert [b async for b in storage.container.list_blobs(f"{call_id}/")] == []


class EraseDuringTranscription(OperationLedger):
    """The recording is erased at one point of a transcription: ``after_read`` (the worker has
    read the row; the erasure's deletes come before the transcript exists) or ``before_merge``
    (the transcript is written; the erasure deletes it, the merge must not say transcribed)."""

    def __init__(self, table: Any, container: Any, when: str) -> None:
        super().__init__(table)
        self.container = container
        self.when = when

    async def erase(self, call_id: str, operation_id: str) -> None:
        erased = await erase_operation(
            call_id, operation_id, ledger=OperationLedger(self._table), container=self.container
        )
        assert erased is not None

    async def transcription_target(self, call_id: str, operation_id: str) -> Any:
        row = await super().transcription_target(call_id, operation_id)
        if self.when == "after_read":
            await self.erase(call_id, operation_id)
        return row

    async def mark_transcribed(self, call_id: str, operation_id: str, **fields: Any) -> Any:
        if self.when == "before_merge":
            await self.erase(call_id, operation_id)
        return await super().mark_transcribed(call_id, operation_id, **fields)


@pytest.mark.parametrize("when", ["after_read", "before_merge"])
async def test_an_erasure_during_a_transcription_leaves_no_transcript(
    transcribing_settings: Settings,
    configure: Callable[..., Services],
    storage: Any,
    sim: GraphSimulator,
    when: str,
) -> None:
    from shared.transcription.job import TranscriptionJob

    services = configure(
        TRANSCRIPTION_ENABLED="true",
        TRANSCRIPTION_ENDPOINT=sim.base_url,
        TRANSCRIPTION_LOCALES="en-US",
    )
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    name = f"{call_id}/{operation_id}.wav"
    audio = b"".join(sim.add_recording(duration_seconds=1).iter_bytes())
    await storage.container.upload_blob(name, audio)
    await OperationLedger(storage.table).mark_stored(
        call_id,
        operation_id,
        blob_name=name,
        size_bytes=len(audio),
        sha256=None,
        content_type="audio/wav",
        expires_at=None,
    )
    job = TranscriptionJob(
        call_id=call_id, operation_id=operation_id, blob_name=name, stored_at=datetime.now(UTC)
    )
    outcome = await process_transcription(
        job.to_message(),
        settings=services.settings,
        speech=services.speech,
        container=storage.container,
        ledger=EraseDuringTranscription(storage.table, storage.container, when),
        backoff=Backoff(sleep=Sleeps()),
        dequeue_count=1,
    )
    assert outcome.outcome == "erased"
    assert [b async for b in storage.container.list_blobs(f"{call_id}/")] == []
    row = await OperationLedger(storage.table).get(call_id, operation_id)
    assert row is not None
    assert row.status is OperationStatus.ERASED
    assert row.get("TranscriptionStatus") is None  # nothing says transcribed


async def test_a_transcription_job_for_an_erased_recording_sends_nothing_to_speech(
    transcribing_settings: Settings,
    configure: Callable[..., Services],
    storage: Any,
    sim: GraphSimulator,
) -> None:
    from shared.transcription.job import TranscriptionJob

    services = configure(TRANSCRIPTION_ENABLED="true", TRANSCRIPTION_ENDPOINT=sim.base_url)
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    ledger = OperationLedger(storage.table)
    await ledger.advance(call_id, operation_id, OperationStatus.STORED, BlobName="x.wav")
    await erase_call(call_id, ledger=ledger, container=storage.container)
    before = len(sim.requests)
    job = TranscriptionJob(
        call_id=call_id, operation_id=operation_id, blob_name="x.wav", stored_at=datetime.now(UTC)
    )
    outcome = await process_transcription(
        job.to_message(),
        settings=services.settings,
        speech=services.speech,
        container=storage.container,
        ledger=ledger,
        dequeue_count=1,
    )
    assert outcome.outcome == "erased"
    assert len(sim.requests) == before


async def test_the_calls_guard_row_is_no_operation_and_goes_at_the_horizon(
    storage: Any,
) -> None:
    from datetime import timedelta

    from shared.ledger import CALL_GUARD_ROW, table_key

    call_id = str(uuid.uuid4())
    ledger = OperationLedger(storage.table)
    assert await erase_call(call_id, ledger=ledger, container=storage.container) is None
    guard = await storage.table.get_entity(table_key(call_id), CALL_GUARD_ROW)
    assert guard["Kind"] == "call"
    assert guard["ErasedAt"] is not None
    assert set(guard) == {"PartitionKey", "RowKey", "Kind", "CallId", "ErasedAt", "UpdatedAt"}
    assert await ledger.list_call(call_id) == []
    assert await ledger.get(call_id, CALL_GUARD_ROW) is None
    # An operation id that looks like the guard's key is another row.
    assert table_key("~call") != CALL_GUARD_ROW
    removed = await ledger.remove_stale(datetime.now(UTC) + timedelta(days=1), limit=1000)
    assert removed.get("call", 0) >= 1
