"""Recording lifecycle events: the retry queue's trigger and the sweep of events still owed."""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.functions as func

from shared.clock import utc_now
from shared.logevents import log_event
from shared.queues import EVENTS_QUEUE
from shared.services import ready_services

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.queue_trigger(arg_name="msg", queue_name=EVENTS_QUEUE, connection="AzureWebJobsStorage")
async def publish_recording_event(msg: func.QueueMessage) -> None:
    # A transient failure propagates: the host redelivers, then poisons (recorded on the row).
    from shared.events.worker import process_event_job

    services = await ready_services()
    outbox = services.events
    if outbox is None:
        # Jobs queued before events were turned off: settled, not retried into poison.
        log_event(log, "recording event", outcome="skipped", reason="disabled")
        return
    await process_event_job(
        msg.get_body(),
        ledger=services.ledger,
        publisher=outbox.publisher,
        fmt=outbox.format,
        dequeue_count=msg.dequeue_count,
    )


@bp.timer_trigger(
    schedule="%CLEANUP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True
)
async def redrive_recording_events(timer: func.TimerRequest) -> None:
    services = await ready_services()
    settings = services.settings
    if not settings.events_enabled:
        return
    from shared.events.redrive import redrive_pending_events

    await redrive_pending_events(
        services.ledger,
        services.storage.events_queue,
        now=utc_now(),
        after=timedelta(minutes=settings.events_redrive_after_minutes),
    )
