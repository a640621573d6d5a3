"""Queue trigger on ``recording-downloads``: stream each recording into Blob Storage."""

from __future__ import annotations

import azure.functions as func

from shared.bot.hooks import tell_download_settled
from shared.download import TransientDownloadError, process_job
from shared.hostconfig import is_last_delivery
from shared.queues import DOWNLOAD_QUEUE
from shared.services import ready_services

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=DOWNLOAD_QUEUE, connection="AzureWebJobsStorage")
async def download_recording(msg: func.QueueMessage) -> None:
    # A transient failure propagates on purpose: queue triggers have no retry policy of their
    # own, so raising is what makes the host redeliver the message and, in the end, poison it.
    services = await ready_services()
    body = msg.get_body()
    try:
        outcome = await process_job(
            body,
            settings=services.settings,
            http=services.recording_http,
            container=services.storage.container,
            ledger=services.ledger,
            dequeue_count=msg.dequeue_count,
            transcriptions=(
                services.storage.transcription_queue
                if services.settings.transcription_enabled
                else None
            ),
        )
    except TransientDownloadError:
        # Still retrying: the bot hangs up anyway once BOT_HANG_UP_WAIT_SECONDS are over.
        await tell_download_settled(
            services.call_events(),
            body,
            None,
            hang_up_wait_seconds=services.settings.hang_up_wait_seconds,
            last_delivery=is_last_delivery(msg.dequeue_count),
        )
        raise
    # Stored or failed: the bot flow may now thank the caller and hang up (once per call).
    await tell_download_settled(
        services.call_events(),
        body,
        outcome,
        hang_up_wait_seconds=services.settings.hang_up_wait_seconds,
    )
