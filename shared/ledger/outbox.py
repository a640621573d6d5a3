"""The events outbox on the operation's own row: a step's event is owed from the write that made it.

Downstream systems learn a recording's life from events (``shared/events``). An event must go out
at least once once its step happened, even if the publish fails or the instance stops right after
the ledger write. So the step's own ledger write also sets that step's marker column
(``EventStored = pending``...): no extra request, and no step without its marker. The publisher
sets it to ``sent`` after Event Grid accepted the event (one merge, on the ETag of the step's
write); a sweep re-drives markers still ``pending`` a few minutes after the row's last write.

One marker per step, not one per row: a step can be overtaken (stored, then expired before the
stored event went out) and each still owes its own event. The ledger writes the markers only while
something listens (``EventMarkers.events``, set by the composition root when events are on), and
tells the listener of each changed step; the listener never blocks the step's writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from shared.ledger.rows import ROW_KIND_OPERATION, OperationStatus, Transition, to_record
from shared.ledger.table import Keep, LedgerTable, Seen, Write
from shared.telemetry import current_traceparent


class EventStep(StrEnum):
    """A step of a recording's life that downstream systems are told about."""

    ABANDONED = "abandoned"
    FAILED = "failed"
    STORED = "stored"
    TRANSCRIPTION_FAILED = "transcription_failed"
    TRANSCRIBED = "transcribed"
    EXPIRED = "expired"
    ERASED = "erased"

    @property
    def column(self) -> str:
        """The step's marker column, e.g. ``EventTranscriptionFailed``."""
        return "Event" + "".join(part.capitalize() for part in self.value.split("_"))

    @property
    def sequence(self) -> int:
        """The step's place in a recording's life: a later step always has a larger number.

        Deterministic (the same on every delivery of the step's event) and independent of which
        instance wrote what when: a consumer keeps the largest it has seen per recording and
        drops an event below it as stale (Event Grid does not keep order).
        """
        return _SEQUENCE[self]


_SEQUENCE = {step: number for number, step in enumerate(EventStep, start=1)}

# The status a step moves the row to (the transcription steps move none: they are columns).
STEP_OF_STATUS = {
    OperationStatus.ABANDONED: EventStep.ABANDONED,
    OperationStatus.FAILED: EventStep.FAILED,
    OperationStatus.STORED: EventStep.STORED,
    OperationStatus.EXPIRED: EventStep.EXPIRED,
    OperationStatus.ERASED: EventStep.ERASED,
}

# Values of a marker column.
PENDING = "pending"
SENT = "sent"
UNDELIVERABLE = "undeliverable"

# The recording's trace (W3C traceparent), written with the step that ends the download (stored
# or failed), so that every later event of the recording joins that trace.
TRACEPARENT = "Traceparent"
# The time of a transcription failure (the status steps have their own ``<Status>At`` column).
TRANSCRIPTION_FAILED_AT = "TranscriptionFailedAt"
# Why the last publish of one of the row's events failed (the poison path, for operators).
EVENT_FAILURE_REASON = "EventFailureReason"
EVENT_FAILED_AT = "EventFailedAt"

_TRACED_STEPS = frozenset({EventStep.STORED, EventStep.FAILED, EventStep.ABANDONED})


class StepListener(Protocol):
    """Told of each step the ledger wrote with its marker; must return at once (never awaits the
    publish: the step's writer is a download, a webhook or an API call)."""

    def stepped(self, row: Transition, step: EventStep) -> None: ...


def pending_steps(fields: Mapping[str, Any]) -> list[EventStep]:
    """The steps of a row whose events are still owed, in their order."""
    return [step for step in EventStep if fields.get(step.column) == PENDING]


class EventMarkers(LedgerTable):
    """The outbox's verbs: markers written with each step, cleared once the event is out."""

    # Set by the composition root when events are on; None: no marker, nobody told.
    events: StepListener | None = None

    def event_marker(self, step: EventStep) -> dict[str, Any]:
        """The columns the step's own write adds: its marker (and the recording's trace)."""
        if self.events is None:
            return {}
        columns: dict[str, Any] = {step.column: PENDING}
        traceparent = current_traceparent()
        if traceparent and step in _TRACED_STEPS:
            columns[TRACEPARENT] = traceparent
        return columns

    def announce(self, row: Transition | None, step: EventStep) -> None:
        """Tell the listener that ``row``'s write made ``step`` (when it changed the row)."""
        if self.events is None or row is None or not row.changed:
            return
        if row.record.fields.get(step.column) == PENDING:
            self.events.stepped(row, step)

    async def event_row(self, call_id: str, operation_id: str) -> Transition | None:
        """The row as it is now, with its ETag (None: no operation row)."""

        def decide(current: Seen | None) -> Keep[Transition | None]:
            if current is None or current.fields.get("Kind", ROW_KIND_OPERATION) != (
                ROW_KIND_OPERATION
            ):
                return Keep(None)
            return Keep(current.transition(changed=False))

        return await self._rewrite(call_id, operation_id, decide)

    async def mark_event_sent(self, row: Transition, step: EventStep) -> bool:
        """Event Grid accepted ``step``'s event: its marker says ``sent``.

        One merge on the ETag ``row`` carries; if the row was written since, it is read again and
        the marker cleared only if it still says ``pending``. ``UpdatedAt`` is not touched: the
        row's age is the age of its last step. False when there was nothing to clear.
        """
        return await self._settle_marker(row, step, {step.column: SENT})

    async def mark_event_failed(
        self, call_id: str, operation_id: str, step: EventStep, reason: str, *, final: bool
    ) -> None:
        """A publish of ``step``'s event failed: the reason is kept on the row. ``final``: the
        event can never be accepted (Event Grid refused it as malformed or too large): its marker
        says ``undeliverable`` and the sweep leaves it; otherwise it stays ``pending``."""
        row = await self.event_row(call_id, operation_id)
        if row is None:
            return
        columns: dict[str, Any] = {
            EVENT_FAILURE_REASON: f"{step.value}: {reason}"[:1024],
            EVENT_FAILED_AT: self._clock(),
        }
        if final:
            columns[step.column] = UNDELIVERABLE
        await self._settle_marker(row, step, columns)

    async def _settle_marker(
        self, row: Transition, step: EventStep, columns: Mapping[str, Any]
    ) -> bool:
        def decide(current: Seen | None) -> Keep[bool] | Write[bool]:
            if current is None or current.fields.get(step.column) != PENDING:
                return Keep(False)
            return Write(columns, lambda _after: True)

        record = row.record
        known = Seen(record.fields, row.etag) if row.etag is not None else None
        return await self._rewrite(record.call_id, record.operation_id, decide, known=known)

    async def rows_with_pending_events(
        self, *, updated_before: datetime, limit: int
    ) -> list[Transition]:
        """Rows last written before ``updated_before`` that still owe an event, with their ETags.

        The step's write sets ``UpdatedAt`` and its marker together, and clearing a marker leaves
        ``UpdatedAt`` alone: a row found here had its step long enough ago that its publish, had
        it worked, would have cleared the marker.
        """
        owed = " or ".join(f"{step.column} eq @pending" for step in EventStep)
        query = f"Kind eq @kind and UpdatedAt lt @cutoff and ( {owed} )"
        parameters = {"kind": ROW_KIND_OPERATION, "cutoff": updated_before, "pending": PENDING}
        rows: list[Transition] = []
        async for entity in self._table.query_entities(
            query, parameters=parameters, results_per_page=min(limit, 1000)
        ):
            etag = entity.metadata.get("etag")
            rows.append(Transition(to_record(entity), changed=False, etag=etag))
            if len(rows) >= limit:
                break
        return rows


__all__ = [
    "EVENT_FAILED_AT",
    "EVENT_FAILURE_REASON",
    "PENDING",
    "SENT",
    "STEP_OF_STATUS",
    "TRACEPARENT",
    "TRANSCRIPTION_FAILED_AT",
    "UNDELIVERABLE",
    "EventMarkers",
    "EventStep",
    "StepListener",
    "pending_steps",
]
