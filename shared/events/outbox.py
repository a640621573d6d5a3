"""Sending each step's event right after its ledger write, without holding up the step.

The ledger tells :class:`EventOutbox` of every step it wrote with its marker
(:mod:`shared.ledger.outbox`). The outbox publishes in a task of its own: the download, the 202
to Graph, the API's answer never wait for Event Grid. On success it marks the step ``sent`` (one
merge, on the ETag of the step's write: the only storage request an event costs when all goes
well). On failure it puts the step on ``recording-events``, whose worker retries on a
``Backoff``. If even that fails, or the instance stops first, the marker is still ``pending`` on
the row and the sweep (:mod:`.redrive`) sends the job a few minutes later. Duplicates are
possible (at least once); every copy has the same ``id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.events.cloudevent import EventFormat, recording_event
from shared.events.publisher import EventPublisher
from shared.ledger.outbox import EventStep
from shared.logevents import log_event, log_failure
from shared.telemetry import count_outcome

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.ledger import OperationLedger, Transition

log = logging.getLogger(__name__)


class EventOutbox:
    """Publishes each announced step in the background; the queue and the sweep catch the rest.

    ``fmt`` gives the deployment's event format, ``queue`` the events queue's client when a
    publish must be retried. Build one per ledger, then set it as the ledger's ``events``;
    :meth:`aclose` waits for publishes in flight.
    """

    def __init__(
        self,
        *,
        ledger: OperationLedger,
        publisher: EventPublisher,
        fmt: Callable[[], EventFormat],
        queue: Callable[[], QueueClient],
    ) -> None:
        self._ledger = ledger
        self.publisher = publisher
        # Built on the first publish: the container's URL comes from the Blob SDK's client.
        self._fmt = fmt
        self._queue = queue
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def format(self) -> EventFormat:
        return self._fmt()

    def stepped(self, row: Transition, step: EventStep) -> None:
        """Start publishing ``step``'s event (built from ``row``, the row after the step)."""
        task = asyncio.get_running_loop().create_task(self._deliver(row, step))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, row: Transition, step: EventStep) -> None:
        record = row.record
        event = recording_event(record, step, self._fmt())
        ids: dict[str, Any] = {
            "call_id": record.call_id,
            "operation_id": record.operation_id,
            "step": step.value,
        }
        try:
            await self.publisher.publish([event])
        except Exception as error:
            reason = getattr(error, "reason", type(error).__name__)
            log_event(
                log,
                "recording event",
                level=logging.WARNING,
                outcome="queued",
                **ids,
                reason=reason,
            )
            await self._queue_retry(record.call_id, record.operation_id, step, ids)
            return
        count_outcome("published", stage="events")
        try:
            await self._ledger.mark_event_sent(row, step)
        except Exception as error:
            # Published, not marked: the sweep publishes it again (same id), nothing is lost.
            _setback("published_unmarked", error, ids)
            return
        log_event(log, "recording event", outcome="published", **ids, event_id=event["id"])

    async def _queue_retry(
        self, call_id: str, operation_id: str, step: EventStep, ids: dict[str, Any]
    ) -> None:
        from shared.events.job import queue_event

        try:
            await queue_event(self._queue(), call_id, operation_id, step)
        except Exception as error:
            # The marker is still pending on the row: the sweep sends the job later.
            _setback("left_for_sweep", error, ids)

    async def drain(self) -> None:
        """Wait for every publish in flight (tests, benchmarks, shutdown)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self.publisher.aclose()


def _setback(outcome: str, error: BaseException, ids: dict[str, Any]) -> None:
    """A publish that did not end cleanly; the row's marker still owes the event (no loss)."""
    log_failure(log, "recording event", error, logging.WARNING, outcome=outcome, **ids)
