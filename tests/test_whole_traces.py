"""Whole traces in what the Azure Monitor exporter actually sends, not only in an in-memory SDK.

The real distro and exporter run in a subprocess (tests/appinsights_probe.py: the distro sets
global providers) with a connection string whose ``IngestionEndpoint`` is a capture server on
127.0.0.1. It speaks TLS with a throwaway CA, as the exporter's bearer-token policy refuses plain
HTTP, and the token comes from the Graph simulator's managed-identity endpoint, as it would from
Azure's. The server keeps every envelope POSTed to ``/v2.1/track`` (gzip'd JSON lines).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import gzip
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devtools.azurite import Azurite, free_port
from devtools.graphsim import GraphSimulator
from devtools.graphsim.tls import TlsFiles, make_tls_files
from shared import telemetry
from shared.settings_model import Settings
from shared.storage import StorageClients
from tests.data import source_document as doc

from .conftest import BOT_APP_ID

ROOT = Path(__file__).resolve().parents[1]
# The spans of one recording, webhook to "stored" (docs/operations.md lists them).
RECORDING_SPANS = {
    "POST /api/calls",
    "recording-downloads send",
    "recording download",
    "recording commit",
    "ledger stored",
}

# Log events of the webhook written before the body (and so the ids) is read: once per instance.
BEFORE_THE_BODY = {"inbound auth: configuration loaded", "inbound auth: JWKS refetched"}


# --------------------------------------------------------------------------- the capture server


@dataclass
class Ingestion:
    """Application Insights' ingestion endpoint on 127.0.0.1: keeps what it is sent."""

    tls: TlsFiles
    port: int = field(default_factory=free_port)
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def app(self) -> Starlette:
        async def track(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip" or body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            # A JSON array of envelopes (the exporter's form) or one envelope per line.
            items: list[dict[str, Any]] = []
            for line in body.decode().splitlines():
                if line.strip():
                    parsed = json.loads(line)
                    items.extend(parsed if isinstance(parsed, list) else [parsed])
            with self.lock:
                self.envelopes.extend(items)
                self.authorizations.append(request.headers.get("authorization", ""))
            accepted = len(items)
            return JSONResponse(
                {"itemsReceived": accepted, "itemsAccepted": accepted, "errors": []}
            )

        # The exporter joins the endpoint and "/v2.1/track" as they come (a "//" included).
        return Starlette(routes=[Route("/{prefix:path}v2.1/track", track, methods=["POST"])])

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            taken, self.envelopes[:] = list(self.envelopes), []
            return taken


@pytest.fixture(scope="module")
def ingestion() -> Iterator[Ingestion]:
    import uvicorn

    server_state = Ingestion(make_tls_files())
    config = uvicorn.Config(
        server_state.app(),
        host="127.0.0.1",
        port=server_state.port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(server_state.tls.cert_file),
        ssl_keyfile=str(server_state.tls.key_file),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="ingestion")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ingestion endpoint did not start")
        time.sleep(0.01)
    yield server_state
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def sim(start_simulator: Callable[..., GraphSimulator]) -> GraphSimulator:
    return start_simulator()


# --------------------------------------------------------------------------- running the app


@dataclass
class Recording:
    call_id: str
    operation_id: str
    host_trace_id: str
    payload: dict[str, Any]
    bearer: str

    def spec(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "operation_id": self.operation_id,
            "host_traceparent": f"00-{self.host_trace_id}-{secrets.token_hex(8)}-01",
            "payload": self.payload,
            "bearer": self.bearer,
        }


def recording(sim: GraphSimulator, host_trace_id: str | None = None) -> Recording:
    """A completion notification for one of the simulator's recordings, signed for the webhook."""
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    rec = sim.add_recording(duration_seconds=1)
    notification = copy.deepcopy(doc.COMPLETION_NOTIFICATION["value"][0])
    notification["resourceUrl"] = f"/communications/calls/{call_id}/operations/{operation_id}"
    data = notification["resourceData"]
    data["@odata.id"] = notification["resourceUrl"]
    data["id"] = operation_id
    data["recordingLocation"] = rec.location
    data["recordingAccessToken"] = rec.access_token
    return Recording(
        call_id,
        operation_id,
        host_trace_id or secrets.token_hex(16),
        {"value": [notification]},
        sim.sign_token(),
    )


def run_probe(
    recordings: list[Recording],
    *,
    azurite: Azurite,
    sim: GraphSimulator,
    ingestion: Ingestion,
    tmp_path: Path,
    ratio: str,
) -> dict[str, Any]:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"recordings": [r.spec() for r in recordings]}))
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APPLICATIONINSIGHTS_", "OTEL_", "AZURE_", "MSI_", "IDENTITY_"))
    }
    env = {
        **inherited,
        "AzureWebJobsStorage": azurite.connection_string,
        "BOT_APP_ID": BOT_APP_ID,
        "ALLOW_INSECURE_RECORDING_URLS": "true",
        "INBOUND_OPENID_CONFIGURATION_URL": sim.openid_configuration_url,
        # A new instrumentation key each run: the exporter's offline store is per key, so
        # nothing a previous run left behind is sent again here.
        telemetry.CONNECTION_STRING_SETTING: (
            f"InstrumentationKey={uuid.uuid4()};IngestionEndpoint={ingestion.endpoint}"
        ),
        telemetry.SAMPLING_RATIO_SETTING: ratio,
        # The exporter's HTTP client (requests) trusts the capture server's throwaway CA.
        "REQUESTS_CA_BUNDLE": str(ingestion.tls.ca_file),
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_SDKSTATS_DISABLED": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        **sim.managed_identity_env(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.appinsights_probe", str(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    (tmp_path / "stderr.txt").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["flushed"] == [True, True, True], result.stderr[-4000:]
    return report


# --------------------------------------------------------------------------- envelopes


def operation_id_of(envelope: dict[str, Any]) -> str | None:
    value: str | None = envelope.get("tags", {}).get("ai.operation.id")
    return value


def base_data(envelope: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = envelope.get("data", {}).get("baseData", {})
    return data


def kind(envelope: dict[str, Any]) -> str:
    return str(envelope.get("data", {}).get("baseType"))


def properties(envelope: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = base_data(envelope).get("properties") or {}
    return props


def spans_and_logs(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests, dependencies and traces (log records); metrics aside."""
    return [
        e
        for e in envelopes
        if kind(e) in ("RequestData", "RemoteDependencyData", "MessageData", "ExceptionData")
    ]


def about(envelopes: list[dict[str, Any]], operation_id: str) -> list[dict[str, Any]]:
    return [e for e in envelopes if properties(e).get("operation_id") == operation_id]


# --------------------------------------------------------------------------- tests


async def test_one_operation_id_from_the_webhook_to_stored_in_the_exported_envelopes(
    storage: StorageClients,
    azurite: Azurite,
    sim: GraphSimulator,
    ingestion: Ingestion,
    tmp_path: Path,
) -> None:
    ingestion.take()
    one = recording(sim)
    report = await asyncio.to_thread(
        run_probe,
        [one],
        azurite=azurite,
        sim=sim,
        ingestion=ingestion,
        tmp_path=tmp_path,
        ratio="1.0",
    )
    assert report["statuses"] == [202]
    assert report["ledger"] == {one.operation_id: "stored"}
    assert report["sampler"].startswith("ParentBased{root:ApplicationInsightsSampler1.0")

    sent = ingestion.take()
    items = spans_and_logs(sent)
    in_trace = [e for e in items if operation_id_of(e) == one.host_trace_id]
    # Every item of the recording, from the webhook to "stored", in ONE operation: the host
    # request's trace, which the job carried across the queue.
    names = {base_data(e).get("name") for e in in_trace if kind(e) != "MessageData"}
    assert names >= RECORDING_SPANS, sorted(n for n in names if n)
    assert {e["name"] for e in in_trace} >= {
        "Microsoft.ApplicationInsights.Request",
        "Microsoft.ApplicationInsights.RemoteDependency",
        "Microsoft.ApplicationInsights.Message",
    }
    # ... with the call and operation ids on each item: requests, dependencies (Storage's
    # included) and log records.
    # Only what happens before the body is read cannot name them: the signing keys' first fetch
    # on an instance (authentication comes first, on purpose).
    missing = [
        (e["name"], base_data(e).get("name") or base_data(e).get("message"))
        for e in in_trace
        if (
            properties(e).get("call_id") != one.call_id
            or properties(e).get("operation_id") != one.operation_id
        )
        and properties(e).get("event") not in BEFORE_THE_BODY
    ]
    assert missing == []
    # Nothing about this recording went to another operation.
    strays = [e for e in about(items, one.operation_id) if operation_id_of(e) != one.host_trace_id]
    assert strays == []
    # The webhook's own per-request line names the call.
    [request_line] = [
        e
        for e in in_trace
        if kind(e) == "MessageData" and properties(e).get("event") == "POST /api/calls"
    ]
    assert properties(request_line)["outcome"] == "accepted"
    # Exported with the simulator's managed-identity token, never without one.
    assert ingestion.authorizations
    assert all(a.startswith("Bearer ey") for a in ingestion.authorizations)
    print(
        f"envelopes={len(sent)} spans_and_logs={len(items)} in_trace={len(in_trace)} "
        f"kinds={sorted(collections.Counter(kind(e) for e in in_trace).items())}"
    )


def _kept(trace_id: str, ratio: float) -> bool:
    # The exporter's own trace-id score: the sampler keeps a trace when it is below the ratio.
    from azure.monitor.opentelemetry.exporter.export.trace._utils import _get_DJB2_sample_score

    return _get_DJB2_sample_score(trace_id) < ratio


def _trace_ids(count: int, *, kept: bool, ratio: float) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        candidate = secrets.token_hex(16)
        if _kept(candidate, ratio) is kept:
            found.append(candidate)
    return found


async def test_a_sampled_recording_is_kept_or_dropped_whole_and_its_log_events_always_stay(
    storage: StorageClients,
    azurite: Azurite,
    sim: GraphSimulator,
    ingestion: Ingestion,
    tmp_path: Path,
) -> None:
    ingestion.take()
    ratio = 0.5
    kept = [recording(sim, t) for t in _trace_ids(2, kept=True, ratio=ratio)]
    dropped = [recording(sim, t) for t in _trace_ids(2, kept=False, ratio=ratio)]
    report = await asyncio.to_thread(
        run_probe,
        [kept[0], dropped[0], kept[1], dropped[1]],
        azurite=azurite,
        sim=sim,
        ingestion=ingestion,
        tmp_path=tmp_path,
        ratio=str(ratio),
    )
    assert report["statuses"] == [202] * 4
    assert set(report["ledger"].values()) == {"stored"}
    items = spans_and_logs(ingestion.take())

    for one in kept:
        mine = about(items, one.operation_id)
        spans = [e for e in mine if kind(e) != "MessageData"]
        assert {base_data(e).get("name") for e in spans} >= RECORDING_SPANS
        assert {operation_id_of(e) for e in mine} == {one.host_trace_id}
        # Application Insights counts each kept item as 1/ratio items.
        assert {e.get("sampleRate") for e in spans} == {ratio * 100}
    for one in dropped:
        mine = about(items, one.operation_id)
        # No span of a dropped trace, however far from the webhook ...
        assert [base_data(e).get("name") for e in mine if kind(e) != "MessageData"] == []
        # ... and its log events all there: the alert rules count them.
        events = {properties(e).get("event") for e in mine if kind(e) == "MessageData"}
        assert {"notification", "recording download"} <= events


def test_the_sampling_setting_is_one_setting_everywhere() -> None:
    name = telemetry.SAMPLING_RATIO_SETTING
    field_info = Settings.model_fields["telemetry_sampling_ratio"]
    assert field_info.alias == name
    assert field_info.default == telemetry.DEFAULT_SAMPLING_RATIO == 1.0
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert float(example[name]) == field_info.default
    readme_rows = [
        line for line in (ROOT / "README.md").read_text().splitlines() if f"| `{name}` |" in line
    ]
    assert len(readme_rows) == 1
    assert f"`{field_info.default}`" in readme_rows[0]
    module = (ROOT / "infra/modules/functionapp.bicep").read_text()
    assert f"  {name}: telemetrySamplingRatio\n" in module
    main = (ROOT / "infra/main.bicep").read_text()
    assert f"param telemetrySamplingRatio string = '{field_info.default}'" in main
    assert name in (ROOT / "docs/operations.md").read_text()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", 1.0), ("1.0", 1.0), ("0.25", 0.25), ("0", 0.0), ("1", 1.0), (" 0.5 ", 0.5)],
)
def test_the_start_up_reads_the_ratio(raw: str, expected: float) -> None:
    assert telemetry.sampling_ratio({telemetry.SAMPLING_RATIO_SETTING: raw}) == expected


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "nan", "inf", "half"])
def test_a_ratio_outside_0_to_1_is_refused_by_settings_and_keeps_every_trace_at_start_up(
    raw: str,
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="TELEMETRY_SAMPLING_RATIO"):
        Settings.model_validate(
            {
                "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                "BOT_APP_ID": "b",
                **{telemetry.SAMPLING_RATIO_SETTING: raw},
            }
        )
    assert telemetry.sampling_ratio({telemetry.SAMPLING_RATIO_SETTING: raw}) == 1.0


def test_the_ids_reach_spans_and_log_records_made_inside_a_recordings_span() -> None:
    from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared.telemetry_ids import RecordingIdsLogProcessor, RecordingIdsSpanProcessor

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(RecordingIdsSpanProcessor())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(RecordingIdsLogProcessor())
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    tracer = tracer_provider.get_tracer("test")
    logger = logger_provider.get_logger("test")
    with (
        tracer.start_as_current_span(
            "recording download", attributes={"call_id": "c", "operation_id": "o"}
        ),
        tracer.start_as_current_span("PUT blob"),
    ):  # as Storage's instrumentation makes it
        logger.emit(body="written without ids", attributes={"x": 1})
    with tracer.start_as_current_span("unrelated"):
        logger.emit(body="no recording here")
    by_name = {s.name: dict(s.attributes or {}) for s in spans.get_finished_spans()}
    assert by_name["PUT blob"] == {"call_id": "c", "operation_id": "o"}
    assert by_name["unrelated"] == {}
    records: list[ReadableLogRecord] = list(logs.get_finished_logs())
    attributes = [dict(r.log_record.attributes or {}) for r in records]
    assert attributes == [{"x": 1, "call_id": "c", "operation_id": "o"}, {}]
