"""The events worker: one event job in, the step's event published (or the failure recorded).

The third worker on :mod:`shared.queue_jobs`: it reads the row (is the event still owed?),
builds the event from it, publishes with inline retries on a ``Backoff`` (Event Grid's
``Retry-After`` wins), then marks the step ``sent`` on the ETag of its read. A transient failure
gives the message back to the host, which redelivers and in the end poisons it; on that last
delivery the failure is recorded on the row and the marker stays ``pending``, so the sweep
(:mod:`.redrive`) sends the job again later: an event is never dropped for an outage. Only an
event Event Grid refuses as such (malformed, too large) is marked ``undeliverable``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from shared.backoff import Backoff
from shared.events.cloudevent import EventFormat, recording_event
from shared.events.publisher import EventPublisher
from shared.ledger import OperationLedger
from shared.ledger.outbox import PENDING
from shared.queue_jobs import JobKind, JobOutcome, QueueJob, run_job
from shared.telemetry import count_outcome

if TYPE_CHECKING:
    from shared.clock import Stopwatch
    from shared.events.job import EventJob

Outcome = Literal["published", "not_owed", "failed", "invalid"]
DEFAULT_BACKOFF = Backoff(attempts=4, retry_after_cap_seconds=30.0, budget_seconds=60.0)

PUBLISH = JobKind(event="recording event", logger=logging.getLogger(__name__), stage="events")


@dataclass(frozen=True)
class EventOutcome(JobOutcome):
    """How one event job was settled (a transient failure raises instead)."""

    kind: ClassVar[JobKind] = PUBLISH
    line: ClassVar[tuple[str, ...]] = ("step", "event_id", "attempts", "duration_ms")

    step: str | None = None
    event_id: str | None = None


async def process_event_job(
    message_text: str | bytes,
    *,
    ledger: OperationLedger,
    publisher: EventPublisher,
    fmt: EventFormat,
    backoff: Backoff = DEFAULT_BACKOFF,
    dequeue_count: int | None = None,
) -> EventOutcome:
    """Publish the event a job names, unless it went out already; raises to have it back."""
    from shared.events.job import EventJob

    def start(job: EventJob, watch: Stopwatch) -> _Publish:
        return _Publish(job, watch, ledger, publisher, fmt, backoff)

    return await run_job(
        message_text,
        parse=EventJob.from_message,
        start=start,
        outcome_type=EventOutcome,
        dequeue_count=dequeue_count,
    )


@dataclass(eq=False)
class _Publish(QueueJob["EventJob", EventOutcome]):
    outcome_type = EventOutcome

    ledger: OperationLedger
    publisher: EventPublisher
    fmt: EventFormat
    backoff: Backoff

    async def run(self) -> EventOutcome:
        step = self.job.step
        row = await self.ledger.event_row(self.job.call_id, self.job.operation_id)
        if row is None or row.record.get(step.column) != PENDING:
            # Sent meanwhile (the outbox, another delivery), or the row is gone: nothing owed.
            return self.settled("not_owed", step=step.value)
        event = recording_event(row.record, step, self.fmt)

        async def attempt(_number: int) -> None:
            await self.publisher.publish([event])

        await self.with_retries(self.backoff, attempt)
        await self.ledger.mark_event_sent(row, step)
        count_outcome("published", stage=PUBLISH.stage)
        return self.settled("published", step=step.value, event_id=event["id"])

    async def failed(self, reason: str) -> EventOutcome:
        # Terminal: Event Grid refused this event as it is.
        await self._record(reason, final=True)
        count_outcome("failed", stage=PUBLISH.stage)
        return self.settled("failed", failure_reason=reason, step=self.job.step.value)

    async def record_failure(self, reason: str) -> None:
        """The last delivery gave up: recorded on the row; the marker stays owed."""
        await self._record(reason, final=False)

    async def _record(self, reason: str, *, final: bool) -> None:
        await self.ledger.mark_event_failed(
            self.job.call_id, self.job.operation_id, self.job.step, reason, final=final
        )
