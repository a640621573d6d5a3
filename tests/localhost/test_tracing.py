"""The local host's recording traces: the trace id a developer follows from webhook to ledger."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from devtools.localhost.tracing import RecordingTraces, install, uninstall
from shared.telemetry import continue_trace, current_traceparent, span


@pytest.fixture
def traces() -> Iterator[RecordingTraces]:
    yield install()
    uninstall()


def test_a_recording_download_reports_the_webhooks_trace_id(
    traces: RecordingTraces, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devtools.localhost")
    with span("POST /api/calls"):
        traceparent = current_traceparent()
    assert traceparent is not None
    webhook_trace_id = traceparent.split("-")[1]

    # The worker, later and elsewhere, continues the trace the job carries.
    with continue_trace(traceparent, "recording download", call_id="c-1", operation_id="op-1"):
        pass

    assert traces.trace_id("op-1") == webhook_trace_id
    [line] = [r.getMessage() for r in caplog.records if "recording traced" in r.getMessage()]
    assert f"trace_id={webhook_trace_id}" in line
    assert "operation_id=op-1" in line


def test_other_spans_are_not_reported(traces: RecordingTraces) -> None:
    with span("ledger stored", operation_id="op-2"):
        pass
    assert traces.trace_id("op-2") is None
