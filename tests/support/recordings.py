"""How a test looks at the recordings the app stored: the container itself, or the status route
a client asks (``GET /api/recordings/{callId}/{operationId}``, through the registered function)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.blob_layout import EXPIRES_AT_FORMAT
from tests.support.functions import http_request, invoke

if TYPE_CHECKING:
    from shared.transcription.job import TranscriptionJob


async def put_recording(
    storage: Any, call_id: str, operation_id: str, expires_at: datetime, data: bytes = b"RIFF"
) -> str:
    """Upload a recording the way the worker does (naming, metadata, expiry tag); its name."""
    name = f"{call_id}/{operation_id}.wav"
    await storage.container.upload_blob(
        name,
        data,
        overwrite=True,
        metadata={"callid": call_id, "operationid": operation_id},
        tags={"expiresAt": expires_at.astimezone(UTC).strftime(EXPIRES_AT_FORMAT)},
    )
    return name


async def blob_names(storage: Any) -> set[str]:
    """The name of every blob in the recordings container (recordings and transcripts)."""
    return {blob.name async for blob in storage.container.list_blobs()}


async def recording_status(call_id: str, operation_id: str) -> func.HttpResponse:
    response: func.HttpResponse = await invoke(
        "recording_status",
        http_request(
            "GET",
            f"http://localhost/api/recordings/{call_id}/{operation_id}",
            route_params={"callId": call_id, "operationId": operation_id},
        ),
    )
    return response


async def stored_for_transcription(storage: Any, data: bytes) -> TranscriptionJob:
    """A recording stored as the download worker leaves it (blob, ``stored`` row with its size
    and SHA-256), and the transcription job the worker would queue for it."""
    from shared.ledger import OperationLedger
    from shared.transcription.job import TranscriptionJob

    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    name = await put_recording(storage, call_id, operation_id, expires_at, data)
    await OperationLedger(storage.table).mark_stored(
        call_id,
        operation_id,
        blob_name=name,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="audio/wav",
        expires_at=expires_at,
    )
    return TranscriptionJob(
        call_id=call_id, operation_id=operation_id, blob_name=name, stored_at=datetime.now(UTC)
    )
