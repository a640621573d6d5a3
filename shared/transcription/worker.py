"""The transcription worker: one job in, one transcript stored beside its recording (or a reason).

Plain Python taking its collaborators as arguments, like the download worker. The transcript is
``<recording>.transcript.json`` with the recording's ``expiresAt`` tag and metadata, so the
cleanup's tag query deletes both together. The ledger records the outcome in its transcription
columns, never the text. Transient failures (throttling, Speech or storage down) raise
:class:`TransientTranscriptionError`, so the host redelivers and in the end poisons the message;
terminal ones (not a WAV, empty, refused locale or token) are recorded and leave the audio as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, Literal

from shared.backoff import Backoff
from shared.blob_layout import (
    WAV_HEADER_BYTES,
    looks_like_wav,
    tags_from_metadata,
    transcript_blob_name,
)
from shared.clock import Stopwatch, utc_now
from shared.erasure import delete_recording_blob
from shared.ledger import OperationLedger, OperationStatus, Transition
from shared.queue_jobs import JobKind, JobOutcome, QueueJob, run_job
from shared.telemetry import count_outcome, span
from shared.transcription.speech import (
    FastTranscription,
    MultipartAudio,
    SpeechClient,
    TerminalTranscriptionError,
    TransientTranscriptionError,
    definition_for,
)

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient, StorageStreamDownloader

    from shared.settings import Settings
    from shared.transcription.job import TranscriptionJob

Outcome = Literal["transcribed", "already_transcribed", "erased", "failed", "invalid"]
TRANSCRIPT_CONTENT_TYPE = "application/json"
DEFAULT_BACKOFF = Backoff(attempts=4, retry_after_cap_seconds=30.0, budget_seconds=120.0)

TRANSCRIPTION = JobKind(
    event="recording transcription", logger=logging.getLogger(__name__), stage="transcription"
)


@dataclass(frozen=True)
class TranscriptionOutcome(JobOutcome):
    """How one transcription message was settled (a transient failure raises instead)."""

    kind: ClassVar[JobKind] = TRANSCRIPTION
    line: ClassVar[tuple[str, ...]] = ("audio_deleted", "attempts", "duration_ms")

    transcript_blob_name: str | None = None
    text: str | None = None
    audio_deleted: bool = False


async def process_transcription(
    message_text: str | bytes,
    *,
    settings: Settings,
    speech: SpeechClient,
    container: ContainerClient,
    ledger: OperationLedger,
    clock: Callable[[], datetime] = utc_now,
    backoff: Backoff = DEFAULT_BACKOFF,
    dequeue_count: int | None = None,
) -> TranscriptionOutcome:
    """Transcribe the recording a job names, once; raises when the message should come back."""
    from shared.transcription.job import TranscriptionJob

    def start(job: TranscriptionJob, watch: Stopwatch) -> _Transcription:
        return _Transcription(job, watch, settings, speech, container, ledger, clock, backoff)

    return await run_job(
        message_text,
        parse=TranscriptionJob.from_message,
        start=start,
        outcome_type=TranscriptionOutcome,
        dequeue_count=dequeue_count,
    )


@dataclass(eq=False)
class _Transcription(QueueJob["TranscriptionJob", TranscriptionOutcome]):
    """The steps of one job, sharing its collaborators."""

    outcome_type = TranscriptionOutcome

    settings: Settings
    speech: SpeechClient
    container: ContainerClient
    ledger: OperationLedger
    clock: Callable[[], datetime]
    backoff: Backoff

    def __post_init__(self) -> None:
        self.audio = self.container.get_blob_client(self.job.blob_name)
        self.transcript = self.container.get_blob_client(transcript_blob_name(self.job.blob_name))
        # The ledger row as read before anything was written (None: no row).
        self.row: Transition | None = None

    async def run(self) -> TranscriptionOutcome:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            # The row first: an erased recording is not sent to Speech, and the outcome is
            # merged on this ETag, so an erasure from now on is seen (shared/erasure.py).
            self.row = await self.ledger.transcription_target(
                self.job.call_id, self.job.operation_id
            )
            if self.row is not None and self.row.record.status is OperationStatus.ERASED:
                return await self.erased()
            if await self.transcript.exists():
                return await self.settle("already_transcribed")
            try:
                # The first read also gives the size and metadata: no separate properties call.
                downloader = await self.audio.download_blob()
            except ResourceNotFoundError:
                # Erased since the row was read? Then that is the outcome (one more read, only
                # on this path).
                self.row = await self.ledger.transcription_target(
                    self.job.call_id, self.job.operation_id
                )
                if self.row is not None and self.row.record.status is OperationStatus.ERASED:
                    return await self.erased()
                raise TerminalTranscriptionError(
                    "the recording is no longer stored (expired or erased)"
                ) from None
            size = int(downloader.size)
            if size <= WAV_HEADER_BYTES:
                raise TerminalTranscriptionError(
                    f"the recording is empty ({size} bytes): nothing to transcribe"
                )
            result = await self.transcribe(size, downloader)
            with span("transcript write", blob_name=self.transcript.blob_name):
                written = await self.write(result, downloader.properties.metadata or {})
            if not written:
                return await self.settle("already_transcribed")
            return await self.settle("transcribed", result)
        except AzureError as error:
            raise TransientTranscriptionError(
                f"storage failed during transcription ({type(error).__name__})"
            ) from None

    async def transcribe(
        self, size: int, first_read: StorageStreamDownloader[bytes]
    ) -> FastTranscription:
        """Attempts with backoff (Retry-After wins); the last transient error propagates."""

        async def attempt(number: int) -> FastTranscription:
            read = first_read if number == 1 else await self.audio.download_blob()
            audio = await _wav_stream(read)
            body = MultipartAudio(definition_for(self.settings.transcription_locales), audio, size)
            with span("speech transcribe", attempt=number, size_bytes=size):
                return await self.speech.transcribe(
                    body,
                    locales=self.settings.transcription_locales,
                    max_bytes=self.settings.transcription_max_response_bytes,
                )

        return await self.with_retries(self.backoff, attempt)

    async def write(self, result: FastTranscription, audio_metadata: dict[str, str]) -> bool:
        """The transcript blob, with the recording's tags and metadata; False if already there."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import ContentSettings

        document = {
            "callId": self.job.call_id,
            "operationId": self.job.operation_id,
            "recordingBlobName": self.job.blob_name,
            "transcribedAt": self.clock().isoformat(),
            "durationMilliseconds": result.duration_ms,
            "locales": result.locales,
            "text": result.text,
            "phrases": [phrase.to_json() for phrase in result.phrases],
        }
        # The expiresAt tag is what the cleanup queries: the transcript goes with its recording.
        # The recording's metadata carries its tags' values, so they are not read separately.
        data = json.dumps(document, ensure_ascii=False).encode("utf-8")
        limit = self.settings.transcription_max_response_bytes
        if len(data) > limit:
            raise TerminalTranscriptionError(
                f"the transcript would be {len(data)} bytes, more than "
                f"TRANSCRIPTION_MAX_RESPONSE_BYTES={limit}"
            )
        tags = tags_from_metadata(audio_metadata) or await self.audio.get_blob_tags()
        try:
            await self.transcript.upload_blob(
                data,
                content_settings=ContentSettings(content_type=TRANSCRIPT_CONTENT_TYPE),
                metadata=dict(audio_metadata),
                tags=dict(tags),
                match_condition=MatchConditions.IfMissing,
            )
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True

    async def settle(
        self, outcome: Outcome, result: FastTranscription | None = None
    ) -> TranscriptionOutcome:
        """Transcript stored: drop the audio if asked, then tell the ledger."""
        from azure.core.exceptions import ResourceNotFoundError

        deleted_at = None
        if not self.settings.transcription_keep_audio:
            with contextlib.suppress(ResourceNotFoundError):  # an earlier delivery deleted it
                await self.audio.delete_blob(delete_snapshots="include")
            deleted_at = self.clock()
        row = await self.ledger.mark_transcribed(
            self.job.call_id,
            self.job.operation_id,
            transcribed_at=self.clock(),
            audio_deleted_at=deleted_at,
            # Merged on the ETag read before the transcript was written: an erasure since then
            # is read here, and what was just written goes.
            seen=self.row,
        )
        if row is not None and row.record.status is OperationStatus.ERASED:
            return await self.erased()
        count_outcome(outcome, stage="transcription")
        return self.settled(
            outcome,
            transcript_blob_name=self.transcript.blob_name,
            text=result.text if result else None,
            audio_deleted=deleted_at is not None,
        )

    async def erased(self) -> TranscriptionOutcome:
        """The recording was erased: nothing of it stays, whatever this or an earlier delivery
        wrote (a transcript written after the erasure's own deletes)."""
        for name in (self.transcript.blob_name, self.job.blob_name):
            await delete_recording_blob(self.container, name)
        count_outcome("erased", stage="transcription")
        return self.settled("erased", failure_reason="the recording was erased")

    async def record_failure(self, reason: str) -> None:
        await self.ledger.mark_transcription_failed(self.job.call_id, self.job.operation_id, reason)


async def _wav_stream(downloader: StorageStreamDownloader[bytes]) -> AsyncIterator[bytes]:
    """The recording's bytes as one storage stream, refused unless they begin as a WAV file."""
    chunks = downloader.chunks()
    first = b""
    async for chunk in chunks:
        first += chunk
        if len(first) >= 12:
            break
    if not looks_like_wav(first):
        raise TerminalTranscriptionError("the recording is not a WAV file (no RIFF/WAVE header)")

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return rest()
