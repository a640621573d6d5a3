"""The transcription job: what the download worker puts on ``recording-transcriptions``.

It names a stored recording and nothing else (no token, no text), so it may wait on the queue as
long as the recording itself is kept; past that there is nothing left to transcribe.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from shared.job_message import JobMessageModel, MessageKind
from shared.queue_jobs import InvalidJobMessage, send_job
from shared.queues import TRANSCRIPTION_QUEUE

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.settings import Settings


class InvalidTranscriptionJobError(InvalidJobMessage):
    """A queue message that is not a transcription job (the message says which field)."""


class TranscriptionJob(JobMessageModel):
    """Version 1 of the transcription job message."""

    kind: ClassVar[MessageKind] = MessageKind(
        "transcription", "a transcription job", InvalidTranscriptionJobError
    )

    blob_name: str = Field(min_length=1)
    stored_at: datetime
    traceparent: str | None = None


async def queue_transcription(
    settings: Settings,
    queue: QueueClient | None,
    *,
    call_id: str,
    operation_id: str,
    blob_name: str,
    stored_at: datetime | None = None,
) -> bool:
    """Put a stored recording's transcription job on its queue, when transcription is enabled.

    Returns whether a job was sent. Storage errors propagate: the caller (the download worker)
    treats them as transient, so the download message comes back and the job is sent again (a
    duplicate job finds the transcript and does nothing).
    """
    if not settings.transcription_enabled or queue is None:
        return False
    job = TranscriptionJob(
        call_id=call_id,
        operation_id=operation_id,
        blob_name=blob_name,
        stored_at=stored_at or datetime.now(UTC),
        traceparent=None,
    )
    # A job outliving the recording could only fail: it expires from the queue with it.
    time_to_live = int(timedelta(minutes=settings.recording_retention_minutes).total_seconds())
    await send_job(queue, job, queue_name=TRANSCRIPTION_QUEUE, time_to_live=max(time_to_live, 1))
    return True
