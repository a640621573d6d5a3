"""Queue trigger on ``recording-downloads``: stream each recording into Blob Storage."""

from __future__ import annotations

import azure.functions as func

from shared.download import process_job
from shared.jobs import DOWNLOAD_QUEUE
from shared.services import ready_services

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=DOWNLOAD_QUEUE, connection="AzureWebJobsStorage")
async def download_recording(msg: func.QueueMessage) -> None:
    # A transient failure propagates on purpose: queue triggers have no retry policy of their
    # own, so raising is what makes the host redeliver the message and, in the end, poison it.
    services = await ready_services()
    await process_job(
        msg.get_body(),
        settings=services.settings,
        http=services.recording_http,
        container=services.storage.container,
        ledger=services.ledger,
        claims=services.claims,
        dequeue_count=msg.dequeue_count,
        transcriptions=(
            services.storage.transcription_queue
            if services.settings.transcription_enabled
            else None
        ),
    )
