"""The sweep: events still owed a few minutes after their step are sent to the events queue.

The outbox publishes right after a step, from the instance that wrote it. That instance may stop
first, its publish and its queue send may both fail: the row's marker then says ``pending``
with nobody working on it. The sweep finds such rows (their last write older than
``EVENTS_REDRIVE_AFTER_MINUTES``) and puts one job per owed step on ``recording-events``; the
worker publishes them. A job already on its way makes a duplicate job, not a duplicate event:
the worker finds the marker ``sent`` and does nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.ledger.outbox import pending_steps
from shared.logevents import log_event, log_failure

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.ledger import OperationLedger

log = logging.getLogger(__name__)
# Rows per run: the rest are found by the next run.
REDRIVE_LIMIT = 500


@dataclass
class Redriven:
    rows: int = 0
    jobs: int = 0
    errors: int = 0


async def redrive_pending_events(
    ledger: OperationLedger,
    queue: QueueClient,
    *,
    now: datetime,
    after: timedelta,
    limit: int = REDRIVE_LIMIT,
) -> Redriven:
    """Queue a job for each event still owed by a row last written before ``now - after``."""
    from shared.events.job import queue_event

    summary = Redriven()
    rows = await ledger.rows_with_pending_events(updated_before=now - after, limit=limit)
    for row in rows:
        summary.rows += 1
        record = row.record
        for step in pending_steps(record.fields):
            try:
                await queue_event(queue, record.call_id, record.operation_id, step)
            except Exception as error:
                summary.errors += 1
                log_failure(
                    log,
                    "events redrive",
                    error,
                    logging.WARNING,
                    **record.ids(),
                    step=step.value,
                )
                continue
            summary.jobs += 1
    # Anything redriven means an instance stopped between a step and its publish: worth a look.
    level = logging.WARNING if summary.jobs or summary.errors else logging.INFO
    log_event(log, "events redrive", level=level, **asdict(summary))
    return summary
