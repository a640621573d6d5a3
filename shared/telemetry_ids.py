"""The call and operation ids on every item of a recording's trace, not only on the app's own.

Operators find a recording by its call id (docs/operations.md). The app's spans and log events
name it, but the items made inside them do not: Storage's dependency spans (the Azure SDK's
instrumentation), a log line written without ``log_event``. These processors copy the ids of the
nearest span that has them onto each new span and log record that lacks them, so that every
``requests``, ``dependencies`` and ``traces`` row of a recording carries ``call_id`` and
``operation_id`` in ``customDimensions``.

The OpenTelemetry SDK is imported here: :func:`shared.telemetry.configure_from_environment`
imports this module only when it installs the Azure Monitor distro.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import Span, SpanProcessor

RECORDING_IDS = ("call_id", "operation_id")


def _ids_of(span: object) -> dict[str, Any]:
    """The recording ids ``span`` carries (only the SDK's spans can be read)."""
    attributes = getattr(span, "attributes", None)
    if not isinstance(attributes, Mapping):
        return {}
    return {name: attributes[name] for name in RECORDING_IDS if attributes.get(name)}


class RecordingIdsSpanProcessor(SpanProcessor):
    """A new span without ids takes its local parent's (a remote parent carries none)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        own = _ids_of(span)
        if len(own) == len(RECORDING_IDS):
            return
        inherited = _ids_of(trace.get_current_span(parent_context))
        missing = {name: value for name, value in inherited.items() if name not in own}
        if missing:
            span.set_attributes(missing)


class RecordingIdsLogProcessor(LogRecordProcessor):
    """A log record without ids takes those of the span it was written in."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        attributes = record.attributes
        if attributes is None:
            return
        context = getattr(record, "context", None)
        for name, value in _ids_of(trace.get_current_span(context)).items():
            if not attributes.get(name):
                attributes[name] = value  # type: ignore[index]

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
