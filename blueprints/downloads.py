"""Queue trigger on ``recording-downloads``: stream each recording into Blob Storage."""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.queue_trigger(
    arg_name="msg", queue_name="recording-downloads", connection="AzureWebJobsStorage"
)
async def download_recording(msg: func.QueueMessage) -> None:
    # A transient failure propagates on purpose: queue triggers have no retry policy of their
    # own, so raising is what makes the host redeliver the message and, in the end, poison it.
    from shared.download import DownloadClaims, process_job, recording_http_client
    from shared.ledger import OperationLedger
    from shared.settings import get_settings
    from shared.storage import get_storage

    settings = get_settings()
    storage = get_storage(settings)
    await process_job(
        msg.get_body(),
        settings=settings,
        http=recording_http_client(),
        container=storage.container,
        ledger=OperationLedger(storage.table),
        claims=DownloadClaims(storage.table),
        dequeue_count=msg.dequeue_count,
    )
