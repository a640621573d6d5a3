"""Telemetry end to end: one trace per recording, attributes, metrics, and no secret in any of it.

A real call in the Graph simulator drives the real webhook (``POST /api/calls`` with signed
JWTs) and the real download worker (the queue trigger, fed from Azurite's queue), with the
OpenTelemetry SDK's in-memory exporters installed for each test through
:func:`shared.telemetry.use_providers` (nothing global is changed for the rest of the suite).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.azurite import free_port
from devtools.graphsim import GraphSimulator
from shared import telemetry
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus
from shared.logevents import REDACTED, log_event
from shared.services import Services
from shared.storage import StorageClients
from tests.data import source_document as doc
from tests.support.functions import http_request, invoke
from tests.support.inbox import Inbox, serve_inbox

from .conftest import BOT_APP_ID, use_simulator_identity

ROOT = Path(__file__).resolve().parents[1]
URL = "http://localhost:7071/api/calls"
JWT_PATTERN = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*")


# --------------------------------------------------------------------------- fixtures


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        found.extend(item.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(tracer_provider, meter_provider)
    yield Telemetry(spans, reader)
    telemetry.use_providers(None, None)
    tracer_provider.shutdown()
    meter_provider.shutdown()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    handler = _Records()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.records
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    with serve_inbox() as box:
        yield box


@pytest.fixture(scope="module")
def sim(inbox: Inbox) -> Iterator[GraphSimulator]:
    with GraphSimulator(
        BOT_APP_ID, time_scale=0.01, callback_url=f"{inbox.base_url}/api/calls"
    ) as running:
        yield running


@pytest.fixture
async def bot_app(
    storage: StorageClients,
    sim: GraphSimulator,
    inbox: Inbox,
    configure: Callable[..., Services],
    monkeypatch: pytest.MonkeyPatch,
) -> StorageClients:
    """The app answering calls with the simulator as Graph, with empty storage."""
    use_simulator_identity(monkeypatch, sim)
    configure(
        INBOUND_OPENID_CONFIGURATION_URL=sim.openid_configuration_url,
        GRAPH_BASE_URL=sim.graph_base_url,
        GRAPH_CREDENTIAL_MODE="managedIdentity",
        CALLBACK_BASE_URL=inbox.base_url,
        BOT_AUTO_ANSWER="true",
        BOT_RECORD_MAX_DURATION_SECONDS="5",
        BOT_HANG_UP_AFTER_RECORDING="true",
        # The inbox serves no prompts: the shipped ones would fail there (8536), not in Graph.
        BOT_RECORD_PROMPT_URI="none",
        BOT_REPROMPT_URI="none",
        BOT_THANK_YOU_PROMPT_URI="none",
    )
    return storage


@dataclass
class Call:
    """Carries a simulated call through the real webhook and the real worker."""

    sim: GraphSimulator
    inbox: Inbox
    storage: StorageClients
    handled: int = 0
    secrets: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    worker_outcomes: list[str] = field(default_factory=list)

    async def pump(self) -> None:
        """Post what the simulator sent to the webhook, then run the worker on the queue."""
        batch = self.inbox.take(self.handled)
        self.handled += len(batch)
        for notification in batch:
            data = notification.get("resourceData") or {}
            if data.get("recordingAccessToken"):
                self.secrets.add(data["recordingAccessToken"])
            bearer = self.sim.sign_token()
            self.secrets.add(bearer)
            response = await invoke(
                "notifications",
                http_request(
                    "POST",
                    URL,
                    body={"value": [notification]},
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {bearer}",
                    },
                ),
            )
            self.statuses.append(response.status_code)
        async for message in self.storage.queue.receive_messages(max_messages=32):
            body = message.content
            await invoke(
                "download_recording",
                func.QueueMessage(body=body),
            )
            await self.storage.queue.delete_message(message)
            self.worker_outcomes.append("ran")

    async def run_until(self, done: Callable[[], Any], within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while True:
            await self.pump()
            if await done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the call did not reach the expected state")
            await asyncio.sleep(0.02)


async def stored_operation(storage: StorageClients, call_id: str) -> str | None:
    for record in await OperationLedger(storage.table).list_call(call_id):
        if record.status is OperationStatus.STORED:
            return record.operation_id
    return None


@pytest.fixture
async def recorded_call(
    bot_app: StorageClients,
    sim: GraphSimulator,
    inbox: Inbox,
    otel: Telemetry,
    log_records: list[logging.LogRecord],
) -> tuple[Call, str, str]:
    """A whole call: answered, recorded, the recording stored; (call, call id, operation id)."""
    call = Call(sim, inbox, bot_app, handled=len(inbox.take(0)))
    call_id = sim.place_call()

    async def done() -> bool:
        return (
            await stored_operation(bot_app, call_id) is not None
            and sim.call(call_id).state == "terminated"
        )

    await call.run_until(done)
    await call.pump()  # the hang-up's own notifications
    operation_id = await stored_operation(bot_app, call_id)
    assert operation_id is not None
    return call, call_id, operation_id


def spans_of(otel: Telemetry, trace_id: int) -> list[ReadableSpan]:
    return [s for s in otel.finished() if s.context.trace_id == trace_id]


def attribute(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(name)


# --------------------------------------------------------------------------- one trace


async def test_one_trace_from_the_completion_webhook_to_the_stored_recording(
    recorded_call: tuple[Call, str, str], otel: Telemetry
) -> None:
    call, call_id, operation_id = recorded_call
    assert set(call.statuses) == {202}

    [download] = [
        s for s in otel.named("recording download") if attribute(s, "operation_id") == operation_id
    ]
    trace_id = download.context.trace_id
    in_trace = spans_of(otel, trace_id)
    by_id = {s.context.span_id: s for s in in_trace}

    # The worker's span is the child of the producer span that queued the job...
    assert download.parent is not None
    send = by_id[download.parent.span_id]
    assert send.name == "recording-downloads send"
    assert send.kind is trace.SpanKind.PRODUCER
    assert download.kind is trace.SpanKind.CONSUMER
    assert attribute(send, "operation_id") == operation_id
    # ... which is the child of the webhook's span for the completion notification ...
    assert send.parent is not None
    webhook = by_id[send.parent.span_id]
    assert webhook.name == "POST /api/calls"
    assert webhook.parent is None
    assert attribute(webhook, "status") == 202
    assert attribute(webhook, "outcome") == "accepted"
    # ... and the blob commit and the ledger's "stored" are the worker's children.
    children = {
        s.name: s for s in in_trace if s.parent and s.parent.span_id == download.context.span_id
    }
    assert {"recording commit", "ledger stored"} <= set(children)
    assert attribute(children["recording commit"], "size_bytes") > 0

    # Attributes, with the log keys' names.
    recording = call.sim.operation(operation_id)
    assert attribute(download, "call_id") == call_id
    assert attribute(download, "operation_id") == operation_id
    assert attribute(download, "outcome") == "stored"
    assert attribute(download, "size_bytes") == attribute(
        children["recording commit"], "size_bytes"
    )
    assert attribute(download, "latency_ms") >= 0
    assert recording is not None


async def test_graph_requests_are_client_spans_with_graphs_ids(
    recorded_call: tuple[Call, str, str], otel: Telemetry
) -> None:
    _, call_id, _ = recorded_call
    graph_spans = [s for s in otel.finished() if s.name.startswith("graph ")]
    actions = {
        attribute(s, "graph_action") for s in graph_spans if attribute(s, "call_id") == call_id
    }
    assert {"answer", "recordResponse", "hangUp"} <= actions
    for graph_span in graph_spans:
        assert graph_span.kind is trace.SpanKind.CLIENT
        # Each is a child of the webhook request that made it, or (the thank-you and the
        # hang-up, once the recording is stored) of the worker's step after the download.
        assert graph_span.parent is not None
        parent = next(s for s in otel.finished() if s.context.span_id == graph_span.parent.span_id)
        assert parent.name in ("POST /api/calls", "bot flow after download")
        assert re.fullmatch(r"[0-9a-f-]{36}", attribute(graph_span, "client_request_id"))
        assert attribute(graph_span, "graph_request_id")
        assert attribute(graph_span, "graph_status") in (200, 201, 202, 204)
    # The simulator saw the very client-request-id each span carries.
    seen = {r.headers.get("client-request-id") for r in call_requests(recorded_call[0].sim)}
    assert {attribute(s, "client_request_id") for s in graph_spans} <= seen


def call_requests(sim: GraphSimulator) -> list[Any]:
    return [r for r in sim.requests if "/communications/calls" in r.path]


async def test_deadline_latencies_and_outcomes_are_metrics(
    recorded_call: tuple[Call, str, str],
    otel: Telemetry,
    log_records: list[logging.LogRecord],
) -> None:
    [answered] = otel.points(telemetry.ANSWER_LATENCY)
    assert answered.count == 1
    assert 0 < answered.sum < 15_000  # Graph's deadline
    [stored_latency] = otel.points(telemetry.STORED_LATENCY)
    assert stored_latency.count == 1
    assert stored_latency.sum >= 0
    outcomes = {p.attributes["outcome"]: p.value for p in otel.points(telemetry.OUTCOMES)}
    assert outcomes.get("stored") == 1
    assert "failed" not in outcomes
    # The same latency is on the log line, under the name the alert rules query.
    [line] = [r for r in log_records if getattr(r, "event", None) == "bot flow: answered"]
    assert line.answer_latency_ms == pytest.approx(answered.sum)


async def test_no_secret_in_any_span_metric_or_log_record(
    recorded_call: tuple[Call, str, str],
    otel: Telemetry,
    log_records: list[logging.LogRecord],
) -> None:
    call = recorded_call[0]
    assert any(not s.startswith("eyJ") for s in call.secrets)  # a recording access token
    assert any(s.startswith("eyJ") for s in call.secrets)  # and the JWTs
    texts: list[str] = []
    for finished in otel.finished():
        texts.append(finished.name)
        texts.append(repr(dict(finished.attributes or {})))
        texts.append(str(finished.status.description))
        texts.extend(repr(dict(event.attributes or {})) for event in finished.events)
        texts.extend(repr(dict(link.attributes or {})) for link in finished.links)
    for name in (telemetry.ANSWER_LATENCY, telemetry.STORED_LATENCY, telemetry.OUTCOMES):
        texts.extend(repr(dict(point.attributes)) for point in otel.points(name))
    for record in log_records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))
    everything = "\n".join(texts)
    assert len(otel.finished()) > 10
    assert len(log_records) > 10
    leaked = [secret[:12] for secret in call.secrets if secret in everything]
    assert leaked == []
    assert not JWT_PATTERN.search(everything)


# --------------------------------------------------------------------------- the job's trace context


async def test_a_job_without_trace_context_is_still_downloaded_in_a_trace_of_its_own(
    storage: StorageClients, otel: Telemetry
) -> None:
    with GraphSimulator(BOT_APP_ID) as sim:
        rec = sim.add_recording(duration_seconds=1)
        old = {
            "version": 1,
            "call_id": "4f1f0500-7d1f-4f5c-9d4c-7f6e8e0a0b01",
            "operation_id": "0fe0b9d5-1ad1-4e6c-9f1e-2b3c4d5e6f70",
            "recording_location": rec.location,
            "recording_access_token": rec.access_token,
            "received_at": "2026-11-23T12:00:00Z",
        }  # a message written before jobs carried a traceparent
        await invoke("download_recording", func.QueueMessage(body=json.dumps(old).encode()))
    [download] = otel.named("recording download")
    assert download.parent is None
    assert attribute(download, "outcome") == "stored"
    record = await OperationLedger(storage.table).get(old["call_id"], old["operation_id"])
    assert record is not None
    assert record.status is OperationStatus.STORED


async def test_under_the_hosts_invocation_the_worker_joins_the_jobs_trace_and_links_the_host(
    storage: StorageClients, sim: GraphSimulator, otel: Telemetry
) -> None:
    rec = sim.add_recording(duration_seconds=1)
    with telemetry.span("webhook"):
        sent = telemetry.current_traceparent()
    job = DownloadJob(
        call_id="4f1f0500-7d1f-4f5c-9d4c-7f6e8e0a0b02",
        operation_id="0fe0b9d5-1ad1-4e6c-9f1e-2b3c4d5e6f71",
        recording_location=rec.location,
        recording_access_token=rec.access_token,
        received_at=datetime.now(UTC),
        traceparent=sent,
    )
    # In Azure the worker attaches the host's trace context before calling the function.
    with telemetry.span("host invocation", kind=trace.SpanKind.SERVER):
        await invoke("download_recording", func.QueueMessage(body=job.to_message().encode()))
    [webhook] = otel.named("webhook")
    [host] = otel.named("host invocation")
    [download] = otel.named("recording download")
    assert download.context.trace_id == webhook.context.trace_id != host.context.trace_id
    assert download.parent is not None
    assert download.parent.span_id == webhook.context.span_id
    assert [link.context.span_id for link in download.links] == [host.context.span_id]


async def test_a_failed_recording_is_counted_by_graphs_subcode(
    storage: StorageClients,
    sim: GraphSimulator,
    otel: Telemetry,
    configure: Callable[..., Services],
) -> None:
    configure(INBOUND_OPENID_CONFIGURATION_URL=sim.openid_configuration_url)
    notification = copy.deepcopy(doc.COMPLETION_NOTIFICATION["value"][0])
    data = notification["resourceData"]
    data["status"] = "failed"
    data["resultInfo"]["subcode"] = 8510
    data.pop("recordingLocation", None)
    data.pop("recordingAccessToken", None)
    response = await invoke(
        "notifications",
        http_request(
            "POST",
            URL,
            body={"value": [notification]},
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {sim.sign_token()}",
            },
        ),
    )
    assert response.status_code == 202
    [point] = otel.points(telemetry.OUTCOMES)
    assert dict(point.attributes) == {"outcome": "failed", "result_subcode": 8510, "stage": "graph"}
    assert point.value == 1
    [webhook] = otel.named("POST /api/calls")
    assert attribute(webhook, "result_subcode") == 8510


def test_the_job_keeps_a_valid_traceparent_and_drops_a_malformed_one() -> None:
    base = {
        "call_id": "c",
        "operation_id": "o",
        "recording_location": "https://file.location/x",
        "recording_access_token": "t",
        "received_at": "2026-11-23T12:00:00Z",
    }
    valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    job = DownloadJob.model_validate({**base, "traceparent": valid})
    assert DownloadJob.from_message(job.to_message()).traceparent == valid
    for broken in ("", "00-xyz", "not a trace\nparent", 17):
        assert DownloadJob.model_validate({**base, "traceparent": broken}).traceparent is None
    assert DownloadJob.model_validate(base).with_traceparent(None).traceparent is None


def test_without_a_tracer_the_job_carries_no_trace_context() -> None:
    # The OpenTelemetry API alone (no SDK installed globally in this suite) traces nothing.
    with telemetry.span("not recorded"):
        assert telemetry.current_traceparent() is None


# --------------------------------------------------------------------------- attributes, not text


def test_log_event_sets_the_same_fields_on_the_current_span(
    otel: Telemetry, log_records: list[logging.LogRecord]
) -> None:
    log = logging.getLogger("tests.telemetry")
    with telemetry.span("work"):
        log_event(log, "recording download", outcome="stored", size_bytes=42, call_id="c 1")
        log_event(log, "noise", level=logging.DEBUG, outcome="ignored")
    [work] = otel.named("work")
    assert dict(work.attributes or {}) == {"outcome": "stored", "size_bytes": 42, "call_id": "c 1"}
    record = next(r for r in log_records if getattr(r, "event", None) == "recording download")
    assert record.getMessage() == 'recording download outcome=stored size_bytes=42 call_id="c 1"'
    assert (record.outcome, record.size_bytes) == ("stored", 42)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "access_token",
        "recording_access_token",
        "authorization",
        "sig",
        "api_key",
        "client_secret",
        "sas",
        "jwt",
        "Signature",
    ],
)
def test_a_field_named_like_a_secret_is_redacted_everywhere(
    name: str, otel: Telemetry, log_records: list[logging.LogRecord]
) -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    with telemetry.span("work"):
        log_event(logging.getLogger("tests.telemetry"), "oops", **{name: secret})
    [work] = otel.named("work")
    assert dict(work.attributes or {}) == {name: REDACTED}
    [record] = [r for r in log_records if getattr(r, "event", None) == "oops"]
    assert secret not in record.getMessage()
    assert secret not in repr(record.__dict__)


@pytest.mark.parametrize("name", ["call_id", "tokens_used", "assignment", "monkey", "design"])
def test_ordinary_field_names_are_not_redacted(name: str, otel: Telemetry) -> None:
    with telemetry.span("work"):
        log_event(logging.getLogger("tests.telemetry"), "fine", **{name: "v"})
    [work] = otel.named("work")
    assert dict(work.attributes or {}) == {name: "v"}


def test_a_failing_span_records_the_error_type_not_its_text(otel: Telemetry) -> None:
    with pytest.raises(RuntimeError), telemetry.span("work"):
        raise RuntimeError("GET https://host/recording?sig=abc failed")
    [work] = otel.named("work")
    assert work.status.status_code is trace.StatusCode.ERROR
    assert work.status.description == "RuntimeError"
    assert work.events == ()


# --------------------------------------------------------------------------- start-up


def _import_app(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_a_connection_string_the_distro_is_not_even_imported() -> None:
    env = {k: v for k, v in os.environ.items() if k != telemetry.CONNECTION_STRING_SETTING}
    code = (
        "import sys, function_app\n"
        "from opentelemetry import trace\n"
        "heavy = [m for m in sys.modules if m.startswith(('azure.monitor', 'opentelemetry.sdk'))]\n"
        "print(heavy, type(trace.get_tracer_provider()).__name__)\n"
    )
    result = _import_app(env, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] ProxyTracerProvider"


def test_with_a_connection_string_the_distro_is_configured_once_with_the_managed_identity() -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: no telemetry leaves the box
    env = {
        **os.environ,
        telemetry.CONNECTION_STRING_SETTING: (
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint={closed}/;LiveEndpoint={closed}/"
        ),
        "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        "IDENTITY_ENDPOINT": f"{closed}/msi/token",
        "IDENTITY_HEADER": "header",
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_functions",
    }
    code = (
        "import os, function_app\n"
        "from opentelemetry import trace\n"
        "from shared import telemetry\n"
        "again = telemetry.configure_from_environment()\n"
        "provider = trace.get_tracer_provider()\n"
        "processors = provider._active_span_processor._span_processors\n"
        "[exporter] = [p.span_exporter for p in processors if hasattr(p, 'span_exporter')]\n"
        "credential = type(exporter._credential).__name__\n"
        "print(again, type(provider).__name__, credential, flush=True)\n"
        "os._exit(0)  # no flush on exit: nothing is sent anywhere\n"
    )
    result = _import_app(env, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True TracerProvider ManagedIdentityCredential"
