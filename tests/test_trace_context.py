"""Trace context never decides a job's fate, on any queue, whatever JSON its field holds.

Each shape of ``traceparent`` goes through the real workers (``process_job`` against the
simulator's recording, ``process_transcription`` against its Speech stand-in) on real Azurite:
the job is processed, in a trace of its own, and at most one warning names the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.graphsim import GraphSimulator
from shared import telemetry
from shared.backoff import Backoff
from shared.download import DownloadRetry, new_http_client, process_job
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus
from shared.services import app_services
from shared.trace_context import usable_traceparent
from shared.transcription import process_transcription
from tests.support.recordings import stored_for_transcription

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# Every JSON type, and the strings a careless or hostile sender might write.
UNUSABLE: dict[str, object] = {
    "null": None,
    "number": 17,
    "float": 1.5,
    "true": True,
    "object": {"traceparent": VALID},
    "array": [VALID],
    "empty": "",
    "malformed": "00-xyz",
    "newline": "not a trace\nparent",
    "uppercase": VALID.upper(),
    "version ff": "ff" + VALID[2:],
    "zero trace id": f"00-{'0' * 32}-b7ad6b7169203331-01",
    "zero span id": f"00-0af7651916cd43dd8448eb211c80319c-{'0' * 16}-01",
    "overlong": VALID + "-" + "a" * 60_000,
    "valid then more": VALID + "-00",
}
SHAPES = list(UNUSABLE.items())


@pytest.fixture(scope="module")
def sim(start_simulator: Callable[..., GraphSimulator]) -> GraphSimulator:
    return start_simulator()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_providers(provider, None)
    yield exporter
    telemetry.use_providers(None, None)
    provider.shutdown()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)
    async with new_http_client(timeout) as client:
        yield client


def warnings_about_the_field(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "trace context ignored"]


def with_traceparent(message: str, value: object) -> str:
    body = json.loads(message)
    body["traceparent"] = value
    return json.dumps(body)


# --------------------------------------------------------------------------- download jobs


@pytest.mark.parametrize(("shape", "value"), SHAPES, ids=[name for name, _ in SHAPES])
async def test_a_download_job_runs_whatever_its_traceparent_holds(
    shape: str,
    value: object,
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = sim.add_recording(duration_seconds=1)
    job = DownloadJob(
        call_id=str(uuid.uuid4()),
        operation_id=str(uuid.uuid4()),
        recording_location=rec.location,
        recording_access_token=rec.access_token,
        received_at=datetime.now(UTC),
    )
    outcome = await process_job(
        with_traceparent(job.to_message(), value),
        settings=app_services().settings,
        http=http,
        container=storage.container,
        ledger=OperationLedger(storage.table),
        retry=DownloadRetry(base_seconds=0.01),
    )

    assert outcome.outcome == "stored"
    record = await OperationLedger(storage.table).get(job.call_id, job.operation_id)
    assert record is not None
    assert record.status is OperationStatus.STORED
    # In a trace of its own.
    [download] = [s for s in spans.get_finished_spans() if s.name == "recording download"]
    assert download.parent is None
    # Silent for null (what a sender that traced nothing writes), one warning otherwise, which
    # names the field and the job, never the value.
    warned = warnings_about_the_field(caplog)
    if value is None:
        assert warned == []
    else:
        assert len(warned) == 1
        [line] = warned
        assert line.levelno == logging.WARNING
        assert (line.field, line.job, line.call_id) == ("traceparent", "download", job.call_id)  # type: ignore[attr-defined]
        assert len(line.getMessage()) < 400


async def test_a_download_job_with_a_valid_traceparent_continues_that_trace(
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    spans: InMemorySpanExporter,
) -> None:
    rec = sim.add_recording(duration_seconds=1)
    job = DownloadJob(
        call_id=str(uuid.uuid4()),
        operation_id=str(uuid.uuid4()),
        recording_location=rec.location,
        recording_access_token=rec.access_token,
        received_at=datetime.now(UTC),
        traceparent=VALID,
    )
    outcome = await process_job(
        job.to_message(),
        settings=app_services().settings,
        http=http,
        container=storage.container,
        ledger=OperationLedger(storage.table),
    )
    assert outcome.outcome == "stored"
    [download] = [s for s in spans.get_finished_spans() if s.name == "recording download"]
    assert download.parent is not None
    assert f"{download.context.trace_id:032x}" == VALID.split("-")[1]


# --------------------------------------------------------------------------- transcription jobs


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize(("shape", "value"), SHAPES, ids=[name for name, _ in SHAPES])
async def test_a_transcription_job_runs_whatever_its_traceparent_holds(
    shape: str,
    value: object,
    transcribing: GraphSimulator,
    storage: Any,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    job = await stored_for_transcription(
        storage, b"".join(transcribing.add_recording(duration_seconds=1.0).iter_bytes())
    )
    outcome = await process_transcription(
        with_traceparent(job.to_message(), value),
        settings=app_services().settings,
        speech=app_services().speech,
        container=storage.container,
        ledger=OperationLedger(storage.table),
        backoff=Backoff(sleep=_no_sleep),
        dequeue_count=1,
    )

    assert outcome.outcome == "transcribed"
    [transcription] = [s for s in spans.get_finished_spans() if s.name == "recording transcription"]
    assert transcription.parent is None
    warned = warnings_about_the_field(caplog)
    assert len(warned) == (0 if value is None else 1)
    for line in warned:
        assert (line.field, line.job, line.call_id) == ("traceparent", "transcription", job.call_id)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the rule itself


def test_only_a_w3c_traceparent_is_kept() -> None:
    assert usable_traceparent(VALID, job="test") == VALID
    assert usable_traceparent(f" {VALID}\n", job="test") == VALID
    for _, value in SHAPES:
        assert usable_traceparent(value, job="test") is None


def test_a_continued_trace_ignores_anything_but_text(spans: InMemorySpanExporter) -> None:
    # Typed as text, but read from a message: a number is not a reason to fail.
    with telemetry.continue_trace(17, "job"):  # type: ignore[arg-type]
        pass
    [job] = spans.get_finished_spans()
    assert job.parent is None
