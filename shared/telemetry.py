"""OpenTelemetry for the app: traces, metrics and the trace context a download job carries.

The core speaks only the OpenTelemetry *API*, which does nothing (and costs next to nothing)
until an SDK is installed. In Azure, :func:`configure_from_environment` (called once from
``function_app.py``) installs the Azure Monitor distro when ``APPLICATIONINSIGHTS_CONNECTION_STRING``
is set, authenticated with the app's managed identity (Application Insights has local auth
off); without it (local runs, tests) nothing is imported and nothing is exported. Tests install
an SDK with :func:`use_providers` instead, so no global state is changed for the whole suite.

One trace per recording: the webhook's span context travels in the download job as a W3C
``traceparent`` (:func:`current_traceparent`), and the worker continues it
(:func:`continue_trace`), so webhook → enqueue → download → blob commit → ledger ``stored`` share
one trace id (Application Insights' ``operation_Id``).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

log = logging.getLogger(__name__)

CONNECTION_STRING_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
INSTRUMENTATION_NAME = "recordresponse"
TRACEPARENT = "traceparent"
# The share of recordings' traces kept (shared.trace_sampling).
SAMPLING_RATIO_SETTING = "TELEMETRY_SAMPLING_RATIO"
DEFAULT_SAMPLING_RATIO = 1.0
# The distro's and exporter's own loggers: never exported through themselves.
EXPORTER_LOGGERS = "azure.monitor.opentelemetry"

# Metric names (Application Insights: customMetrics.name); attributes land in customDimensions.
ANSWER_LATENCY = "call.answer.latency"
STORED_LATENCY = "recording.stored.latency"
OUTCOMES = "recording.outcomes"

_propagator = TraceContextTextMapPropagator()
# When the notification being handled arrived (monotonic seconds), for the answer deadline.
_received: ContextVar[float | None] = ContextVar("notification_received", default=None)
_configured = False
_tracer_provider: TracerProvider | None = None
_meter_provider: MeterProvider | None = None


# --------------------------------------------------------------------------- start-up


def configure_from_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """Install the Azure Monitor distro once, when Application Insights is configured.

    Returns whether telemetry is exported. Without a connection string this imports nothing:
    a local run or a test pays no cold-start cost for it.
    """
    global _configured
    connection_string = (environ.get(CONNECTION_STRING_SETTING) or "").strip()
    if not connection_string:
        return False
    if _configured:
        return True
    # Imported only here: the distro and its SDK cost real time at cold start.
    from azure.identity import ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor

    from shared.telemetry_ids import RecordingIdsLogProcessor, RecordingIdsSpanProcessor

    # The Functions resource detector only (as the Functions Python worker sets it): the
    # distro's default also probes the VM metadata endpoint, a wasted request at cold start.
    os.environ.setdefault("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "azure_functions")
    ratio = sampling_ratio(environ)
    configure_azure_monitor(
        connection_string=connection_string,
        # Application Insights accepts only Entra tokens (DisableLocalAuth): the app's
        # user-assigned identity (Monitoring Metrics Publisher) is AZURE_CLIENT_ID.
        credential=ManagedIdentityCredential(client_id=environ.get("AZURE_CLIENT_ID") or None),
        # Storage calls become dependency spans; HTTP libraries stay off: Graph requests get
        # their own spans (shared.graph.client) and a recording's URL is not telemetry.
        instrumentation_options={
            name: {"enabled": name == "azure_sdk"}
            for name in (
                "azure_sdk",
                "django",
                "fastapi",
                "flask",
                "httpx",
                "psycopg2",
                "requests",
                "urllib",
                "urllib3",
            )
        },
        enable_live_metrics=False,
        enable_performance_counters=False,
        # By trace id (not the distro's default, by rate span by span); made parent-based below.
        sampling_ratio=ratio,
        # The call and operation ids on every span and log item of a recording's trace,
        # Storage's dependency spans included (their instrumentation knows no ids).
        span_processors=[RecordingIdsSpanProcessor()],
        log_record_processors=[RecordingIdsLogProcessor()],
    )
    _configured = True
    sampler = _sample_whole_traces(ratio)
    _keep_the_exporters_own_errors_out_of_its_logs()
    log.info(
        "telemetry: exporting to Application Insights with the managed identity, sampler %s",
        sampler,
    )
    return True


def _sample_whole_traces(ratio: float) -> str:
    """Make the distro's provider keep or drop each recording's trace whole (see
    :mod:`shared.trace_sampling`); returns the sampler's description.

    The distro takes no sampler object, only a ratio; its tracer provider reads ``sampler``
    whenever a tracer is made, and none is made before this runs (the app's own tracer and the
    Azure SDK's are made on first use).
    """
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from shared.trace_sampling import whole_trace_sampler

    provider = trace.get_tracer_provider()
    if not isinstance(provider, SdkTracerProvider):
        log.warning("telemetry: the distro installed no SDK tracer provider; sampling as it chose")
        return "unknown"
    provider.sampler = whole_trace_sampler(ratio)
    return str(provider.sampler.get_description())


def _keep_the_exporters_own_errors_out_of_its_logs() -> None:
    """The exporter logs each failed export; exported as logs, each failure made another
    record to export: a flush (and the shutdown's) never ended while ingestion refused them.
    """
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, LoggingHandler):
            handler.addFilter(_not_from_the_exporter)


def _not_from_the_exporter(record: logging.LogRecord) -> bool:
    return not record.name.startswith(EXPORTER_LOGGERS)


def sampling_ratio(environ: Mapping[str, str] = os.environ) -> float:
    """The share of recordings' traces kept, from ``TELEMETRY_SAMPLING_RATIO`` (default 1.0).

    The settings model refuses a value outside 0..1 (``GET /api/health`` names it); here, at
    start-up, such a value keeps every trace rather than stopping the app from loading.
    """
    raw = (environ.get(SAMPLING_RATIO_SETTING) or "").strip()
    if not raw:
        return DEFAULT_SAMPLING_RATIO
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:  # NaN fails both comparisons
        log.warning(
            "telemetry: %s=%r is not a number from 0 to 1; keeping every trace",
            SAMPLING_RATIO_SETTING,
            raw[:40],
        )
        return DEFAULT_SAMPLING_RATIO
    return ratio


def use_providers(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Use these providers instead of the global ones (tests); ``None`` goes back to global."""
    global _tracer_provider, _meter_provider
    _tracer_provider = tracer_provider
    _meter_provider = meter_provider


# --------------------------------------------------------------------------- traces


def tracer() -> Tracer:
    return _tracer_for(_tracer_provider or trace.get_tracer_provider())


@functools.cache
def _tracer_for(provider: TracerProvider) -> Tracer:
    return provider.get_tracer(INSTRUMENTATION_NAME)


@contextmanager
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """A child span of the current one; an exception marks it as an error and propagates."""
    with _started(name, kind=kind, attributes=attributes) as current:
        yield current


@contextmanager
def _started(
    name: str, *, kind: SpanKind, attributes: Mapping[str, Any], **options: Any
) -> Iterator[Span]:
    # An exception's text can carry request details (a URL, a header), so a span records only
    # its type: the log line of the outcome says the rest, in words chosen for it.
    with tracer().start_as_current_span(
        name,
        kind=kind,
        attributes=span_attributes(attributes),
        record_exception=False,
        set_status_on_exception=False,
        **options,
    ) as current:
        try:
            yield current
        except BaseException as error:
            if current.is_recording():
                current.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise


def current_traceparent() -> str | None:
    """The current span context as a W3C ``traceparent``, or None when nothing is traced."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def continue_trace(
    traceparent: str | None, name: str, *, kind: SpanKind = SpanKind.CONSUMER, **attributes: Any
) -> Iterator[Span]:
    """A span that continues the trace ``traceparent`` names (a child of the sender's span).

    The span that was current (in Azure: the host's invocation of this function) is kept as a
    link, so the invocation's own trace still leads here. Without a valid ``traceparent`` (an
    older job, or a sender that traced nothing) this is an ordinary child span.
    """
    here = trace.get_current_span().get_span_context()
    # Typed as text, yet it comes from a queue message: anything else starts a trace of its own.
    parent = (
        _propagator.extract({TRACEPARENT: traceparent})
        if isinstance(traceparent, str) and traceparent
        else None
    )
    sent = trace.get_current_span(parent).get_span_context() if parent is not None else None
    if parent is None or sent is None or not sent.is_valid:
        with span(name, kind=kind, **attributes) as current:
            yield current
        return
    links = [Link(here)] if here.is_valid and here.trace_id != sent.trace_id else []
    with _started(name, kind=kind, attributes=attributes, context=parent, links=links) as current:
        yield current


def set_span_attributes(fields: Mapping[str, Any]) -> None:
    """Set ``fields`` on the current span, when one is recording (``None`` values left out)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(span_attributes(fields))


def mark_error(description: str) -> None:
    """Mark the current span as failed (the description is a reason, never a secret)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_status(Status(StatusCode.ERROR, description))


def span_attributes(fields: Mapping[str, Any]) -> dict[str, str | bool | int | float]:
    """Attribute values OpenTelemetry accepts: scalars as they are, anything else as text."""
    attributes: dict[str, str | bool | int | float] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            attributes[name] = value
        else:
            attributes[name] = str(value)
    return attributes


# --------------------------------------------------------------------------- deadlines


@contextmanager
def notification_received(at: float | None = None) -> Iterator[None]:
    """Within this block, :func:`ms_since_notification` measures from ``at`` (default: now).

    The webhook opens it as a request arrives; the bot flow, which runs inside, reads it when
    Graph accepts the answer (Graph drops a call not answered within 15 s of its notification).
    """
    token = _received.set(time.monotonic() if at is None else at)
    try:
        yield
    finally:
        _received.reset(token)


def ms_since_notification() -> float | None:
    """Milliseconds since the current notification arrived; None outside the webhook."""
    received = _received.get()
    return None if received is None else round((time.monotonic() - received) * 1000, 1)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Instruments:
    """The app's metrics, matched to the platform's deadlines."""

    answer_latency: Histogram
    stored_latency: Histogram
    outcomes: Counter


def instruments() -> Instruments:
    return _instruments_for(_meter_provider or metrics.get_meter_provider())


@functools.cache
def _instruments_for(provider: MeterProvider) -> Instruments:
    meter = provider.get_meter(INSTRUMENTATION_NAME)
    return Instruments(
        answer_latency=meter.create_histogram(
            ANSWER_LATENCY,
            unit="ms",
            description="Incoming-call notification received to answer accepted by Graph "
            "(Graph drops a call not answered within 15 s).",
        ),
        stored_latency=meter.create_histogram(
            STORED_LATENCY,
            unit="ms",
            description="Completion notification received to recording committed to Blob "
            "Storage (the platform discards recordings soon after the call).",
        ),
        outcomes=meter.create_counter(
            OUTCOMES,
            unit="{operation}",
            description="Record operations settled, by outcome (stored, failed, abandoned, "
            "poisoned, expired, erased) and, for failures, result_subcode.",
        ),
    )


def record_answer_latency(latency_ms: float) -> None:
    instruments().answer_latency.record(latency_ms)


def record_stored_latency(latency_ms: float) -> None:
    instruments().stored_latency.record(latency_ms)


def count_outcome(
    outcome: str,
    *,
    result_subcode: int | None = None,
    stage: str | None = None,
    amount: int = 1,
) -> None:
    """Count settled operations.

    ``result_subcode`` splits Graph's failures by reason (8510 initial silence...); ``stage``
    says where a failure happened (``graph``, ``download``, ``invalid_job``, ``cleanup``).
    """
    if amount <= 0:
        return
    attributes: dict[str, str | int] = {"outcome": outcome}
    if result_subcode is not None:
        attributes["result_subcode"] = result_subcode
    if stage is not None:
        attributes["stage"] = stage
    instruments().outcomes.add(amount, attributes)
