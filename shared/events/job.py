"""The event job: one recording step whose event still has to reach Event Grid.

It names the row and the step, nothing else: the worker builds the event from the row, so a job
sent twice, or long after the step, publishes the same event, and a job whose event already went
out (the row's marker says ``sent``) does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from shared.job_message import JobMessageModel, MessageKind
from shared.ledger.outbox import EventStep
from shared.queue_jobs import InvalidJobMessage, send_job
from shared.queues import EVENT_JOB_TIME_TO_LIVE, EVENTS_QUEUE

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient


class InvalidEventJobError(InvalidJobMessage):
    """A queue message that is not an event job (the message says which field)."""


class EventJob(JobMessageModel):
    """Version 1 of the event job message."""

    kind: ClassVar[MessageKind] = MessageKind("event", "an event job", InvalidEventJobError)

    step: EventStep
    traceparent: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "operation_id": self.operation_id, "step": self.step.value}


async def queue_event(queue: QueueClient, call_id: str, operation_id: str, step: EventStep) -> None:
    """Put ``step``'s event job on ``recording-events`` (the queue is created if missing)."""
    job = EventJob(call_id=call_id, operation_id=operation_id, step=step)
    await send_job(
        queue,
        job,
        queue_name=EVENTS_QUEUE,
        time_to_live=int(EVENT_JOB_TIME_TO_LIVE.total_seconds()),
    )
