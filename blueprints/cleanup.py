"""Timers: the retention cleanup (expired recordings, stale poison messages, ledger upkeep),
and the hourly sweep of the recordings list's index rows that point to nothing."""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.functions as func

from shared.bot.open_calls import settle_open_calls
from shared.clock import utc_now
from shared.retention import run_cleanup, sweep_recordings_index
from shared.services import ready_services
from shared.telemetry import count_outcome

bp = func.Blueprint()
log = logging.getLogger(__name__)

# Hourly at minute 20 (6-field NCRONTAB): the index's buckets are hours, and the hour that just
# closed is past the sweep's grace by then. Not in the five-minute cleanup: its reads stay what
# they were, and an index row is looked at a few times in all, not every five minutes.
INDEX_SWEEP_SCHEDULE = "0 20 * * * *"


@bp.timer_trigger(
    schedule="%CLEANUP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True
)
async def cleanup(timer: func.TimerRequest) -> None:
    if timer.past_due:
        # A missed schedule is harmless (the next run finds everything still due), but visible.
        log.warning("cleanup: timer is past due; running now")
    services = await ready_services()
    summary = await run_cleanup(
        container=services.storage.container,
        ledger=services.ledger,
        poison_queue=services.storage.poison_queue,
        transcription_poison_queue=services.storage.transcription_poison_queue,
        events_poison_queue=(
            services.storage.events_poison_queue if services.settings.events_enabled else None
        ),
        settings=services.settings,
        clock=utc_now,
    )
    settings = services.settings
    if settings.bot_flow_enabled:
        # Calls the bot left open (their download never settled): thank-you and hang-up now.
        await settle_open_calls(
            services.ledger,
            services.call_events(),
            now=utc_now(),
            wait=timedelta(seconds=settings.hang_up_wait_seconds),
        )
    count_outcome("expired", stage="cleanup", amount=summary.rows_marked_expired)
    count_outcome("abandoned", stage="cleanup", amount=summary.operations_abandoned)


@bp.timer_trigger(
    schedule=INDEX_SWEEP_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True
)
async def sweep_recordings_list(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("index sweep: timer is past due; running now")
    services = await ready_services()
    await sweep_recordings_index(services.ledger, now=utc_now())
