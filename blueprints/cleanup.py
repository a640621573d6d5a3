"""Timer: the retention cleanup (expired recordings, stale poison messages, ledger upkeep)."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.timer_trigger(
    schedule="%CLEANUP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True
)
async def cleanup(timer: func.TimerRequest) -> None:
    from shared.ledger import OperationLedger, utc_now
    from shared.retention import run_cleanup
    from shared.settings import get_settings
    from shared.storage import get_storage

    if timer.past_due:
        # A missed schedule is harmless (the next run finds everything still due), but visible.
        log.warning("cleanup: timer is past due; running now")
    settings = get_settings()
    storage = get_storage(settings)
    await run_cleanup(
        container=storage.container,
        ledger=OperationLedger(storage.table),
        poison_queue=storage.poison_queue,
        settings=settings,
        clock=utc_now,
    )
