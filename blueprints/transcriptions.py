"""Queue trigger on ``recording-transcriptions``: a stored recording's transcript (opt-in)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.logevents import log_event
from shared.queues import TRANSCRIPTION_QUEUE
from shared.services import ready_services
from shared.transcription import process_transcription

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.queue_trigger(arg_name="msg", queue_name=TRANSCRIPTION_QUEUE, connection="AzureWebJobsStorage")
async def transcribe_recording(msg: func.QueueMessage) -> None:
    # As for downloads: a transient failure propagates so the host redelivers, then poisons.
    services = await ready_services()
    if not services.settings.transcription_enabled:
        # Jobs queued before transcription was turned off: settled, not retried into poison.
        log_event(log, "recording transcription", outcome="skipped", reason="disabled")
        return
    await process_transcription(
        msg.get_body(),
        settings=services.settings,
        speech=services.speech,
        container=services.storage.container,
        ledger=services.ledger,
        dequeue_count=msg.dequeue_count,
    )
