"""Trace ids of recordings, locally: an in-process OpenTelemetry SDK that remembers and logs them.

In Azure the distro exports every span to Application Insights, where a recording's trace is one
operation. Locally nothing is exported; with ``trace_recordings`` the local host installs the SDK
for the app (through :func:`shared.telemetry.use_providers`, so nothing global changes) and logs
``recording traced trace_id=... call_id=... operation_id=...`` when the worker settles a job, so a
developer can follow one recording from the webhook to the ledger.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from shared.logevents import log_event

log = logging.getLogger("devtools.localhost")

RECORDING_SPAN = "recording download"


class RecordingTraces(SpanProcessor):
    """The trace id of each recording download span that ended, by operation id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_operation: dict[str, str] = {}

    def on_end(self, span: ReadableSpan) -> None:
        if span.name != RECORDING_SPAN or span.context is None:
            return
        attributes = span.attributes or {}
        operation_id = str(attributes.get("operation_id") or "")
        trace_id = format(span.context.trace_id, "032x")
        with self._lock:
            if operation_id:
                self._by_operation[operation_id] = trace_id
        log_event(
            log,
            "recording traced",
            trace_id=trace_id,
            call_id=attributes.get("call_id"),
            operation_id=operation_id or None,
            outcome=attributes.get("outcome"),
        )

    def trace_id(self, operation_id: str) -> str | None:
        with self._lock:
            return self._by_operation.get(operation_id)


def install() -> RecordingTraces:
    """Give the app an SDK tracer provider that reports recording traces; returns the reporter."""
    from shared.telemetry import use_providers

    traces = RecordingTraces()
    provider = TracerProvider()
    provider.add_span_processor(traces)
    use_providers(tracer_provider=provider)
    return traces


def uninstall() -> None:
    from shared.telemetry import use_providers

    use_providers(None)
