"""Queue trigger on ``recording-transcriptions``: a stored recording's transcript (opt-in)."""

from __future__ import annotations

import azure.functions as func

from shared.services import ready_services
from shared.transcription import TRANSCRIPTION_QUEUE, process_transcription

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=TRANSCRIPTION_QUEUE, connection="AzureWebJobsStorage")
async def transcribe_recording(msg: func.QueueMessage) -> None:
    # As for downloads: a transient failure propagates so the host redelivers, then poisons.
    services = await ready_services()
    await process_transcription(
        msg.get_body(),
        settings=services.settings,
        speech=services.speech,
        container=services.storage.container,
        ledger=services.ledger,
        dequeue_count=msg.dequeue_count,
    )
