"""The download worker's core: one queue message in, one recording stored (or one clear failure).

Plain Python taking its collaborators as arguments, so tests drive it without the Functions host.
The delivery's skeleton (invalid messages, the trace, terminal and transient errors, the last
delivery, the outcome's log line) is :func:`shared.queue_jobs.run_job`; this module is the
download itself. The blueprint lets :class:`TransientDownloadError` propagate: queue triggers
have no function-level retry policy, so raising is how a message comes back after the visibility
timeout and, after ``maxDequeueCount`` deliveries, lands on the poison queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from shared.blob_layout import (
    RecordingFacts,
    WavFacts,
    blob_name_for,
    content_type_for,
    expiry_for,
    wav_facts,
)
from shared.clock import Stopwatch, as_utc, utc_now
from shared.download.fetch import (
    DownloadRetry,
    TerminalDownloadError,
    TransientDownloadError,
    guard,
    open_recording,
)
from shared.download.outcome import DownloadOutcome, Outcome
from shared.download.store import (
    BlockWriter,
    RecordingTooLarge,
    StoredRecording,
    find_stored,
    stored_from_row,
)
from shared.download.url_guard import Resolver, UrlPolicy, resolve_host
from shared.erasure import erase_if_erased
from shared.graph.ids import GRAPH_ID_RULE, is_graph_id
from shared.ledger import (
    DownloadLease,
    LeaseAttempt,
    LeaseLost,
    OperationLedger,
    OperationStatus,
    Transition,
)
from shared.queue_jobs import QueueJob, run_job
from shared.telemetry import count_outcome, record_stored_latency, span

# httpx loads where a request is made: the webhook, which imports this, never needs it.
if TYPE_CHECKING:
    import httpx
    from azure.storage.blob.aio import ContainerClient
    from azure.storage.queue.aio import QueueClient

    from shared.jobs import DownloadJob
    from shared.settings import Settings

DEFAULT_RETRY = DownloadRetry()


async def process_job(
    message_text: str | bytes,
    *,
    settings: Settings,
    http: httpx.AsyncClient,
    container: ContainerClient,
    ledger: OperationLedger,
    clock: Callable[[], datetime] = utc_now,
    retry: DownloadRetry = DEFAULT_RETRY,
    resolve: Resolver = resolve_host,
    dequeue_count: int | None = None,
    transcriptions: QueueClient | None = None,
) -> DownloadOutcome:
    """Download the recording a job names into the recordings container, exactly once.

    Returns how the message was settled; raises :class:`TransientDownloadError` when the message
    should be delivered again later.
    """

    async def record_invalid(call_id: str, operation_id: str, reason: str) -> None:
        await ledger.mark_failed(call_id, operation_id, f"invalid job: {reason}")
        count_outcome("failed", stage="invalid_job")

    def start(job: DownloadJob, watch: Stopwatch) -> _Download:
        return _Download(
            job, watch, settings, http, container, ledger, clock, retry, resolve, transcriptions
        )

    return await run_job(
        message_text,
        parse=_parse,
        start=start,
        outcome_type=DownloadOutcome,
        dequeue_count=dequeue_count,
        record_invalid=record_invalid,
    )


def _parse(message_text: str | bytes) -> DownloadJob:
    from shared.jobs import DownloadJob, InvalidJobError

    job = DownloadJob.from_message(message_text)
    bad_ids = [name for name in ("call_id", "operation_id") if not is_graph_id(getattr(job, name))]
    if bad_ids:
        # The webhook refuses such ids; a message written another way still gets its row.
        raise InvalidJobError(f"{' and '.join(bad_ids)} not {GRAPH_ID_RULE}")
    return job


@dataclass(eq=False)
class _Download(QueueJob["DownloadJob", DownloadOutcome]):
    """The steps of one job, sharing its collaborators."""

    outcome_type = DownloadOutcome

    settings: Settings
    http: httpx.AsyncClient
    container: ContainerClient
    ledger: OperationLedger
    clock: Callable[[], datetime]
    retry: DownloadRetry
    resolve: Resolver
    transcriptions: QueueClient | None

    def __post_init__(self) -> None:
        self.policy = UrlPolicy.from_settings(
            self.settings.allow_insecure_recording_urls,
            self.settings.recording_allowed_host_suffixes,
        )
        self.blob_name = blob_name_for(self.job.call_id, self.job.operation_id)
        self.lease = DownloadLease(self.ledger, clock=self.clock)

    async def run(self) -> DownloadOutcome:
        # The job is the record of the completion notification: the "downloading" write
        # carries its facts and takes the download lease too, so the webhook's hot path
        # needs no ledger round trip. The row it returns also says whether anything is left
        # to do: no blob read first.
        lease = await self.lease_or_wait()
        status = lease.row.record.status
        if status is OperationStatus.ERASED:
            return self.erased()  # erased before its download started: nothing to fetch
        if status is OperationStatus.STORED:
            return await self.already_stored(
                stored_from_row(lease.row.record, self.blob_name), row=lease.row
            )
        if status is OperationStatus.EXPIRED:
            return self.gone()  # its retention is over: never store it again
        if lease.tried_before:
            # An earlier holder may have committed the blob just before it stopped.
            existing = await find_stored(self.container, self.blob_name)
            if existing is not None:
                return await self.already_stored(existing)
        return await self.download()

    async def close(self) -> None:
        await self.lease.release()

    async def lease_or_wait(self) -> LeaseAttempt:
        """Hold the download lease, or the row that says there is nothing left to do.

        A duplicate delivery waits (bounded) rather than downloading a second time: when the
        holder stores the recording the row says so; when it gave up, its lease is given back
        or runs out and this delivery takes over.
        """
        # Every recording this app starts (the record API, the bot) carries a clientContext,
        # which Graph echoes, and has its row from when Graph accepted the request: read it,
        # then write on its ETag. A completion without one was not started here and has no
        # row yet: create it blind, one request. Either guess only costs a request.
        create_first = self.job.client_context is None
        while True:
            lease = await self.lease.take(
                self.job, blob_name=self.blob_name, create_first=create_first
            )
            if lease.held or lease.nothing_left:
                return lease
            create_first = False
            if self.watch.elapsed_seconds >= self.retry.lease_wait_seconds:
                raise TransientDownloadError("another delivery is still downloading this recording")
            poll = self.retry.lease_poll_seconds
            await self.retry.sleep(poll * (0.5 + self.retry.jitter() / 2))

    async def download(self) -> DownloadOutcome:
        """Attempts with inline retries; the last transient error propagates."""
        return await self.with_retries(self.retry, lambda _number: self._attempt())

    async def _attempt(self) -> DownloadOutcome:
        from azure.core.exceptions import AzureError

        max_bytes = self.settings.recording_max_bytes
        writer = BlockWriter(self.container.get_blob_client(self.blob_name), max_bytes=max_bytes)
        token = self.job.recording_access_token.get_secret_value()
        try:
            url = await guard(self.job.recording_location, self.policy, self.resolve)
            async with open_recording(
                self.http, url, token, self.policy, resolve=self.resolve
            ) as response:
                declared = _content_length(response)
                if declared is not None and declared > max_bytes:
                    raise TerminalDownloadError(_too_large(max_bytes, declared))
                async for chunk in response.aiter_bytes():
                    await writer.write(chunk)
                    await self.lease.keep_alive()
                if declared is not None and response.num_bytes_downloaded != declared:
                    raise TransientDownloadError(
                        f"recording body ended after {response.num_bytes_downloaded} of "
                        f"{declared} bytes"
                    )
                declared_type = response.headers.get("content-type")
            downloaded_at = self.clock()
            facts = RecordingFacts(
                call_id=self.job.call_id,
                operation_id=self.job.operation_id,
                client_context=self.job.client_context,
                result_code=self.job.result_code,
                result_subcode=self.job.result_subcode,
                size_bytes=writer.size,
                sha256=writer.sha256,
                content_type=content_type_for(declared_type, writer.head),
                downloaded_at=downloaded_at,
                expires_at=expiry_for(downloaded_at, self.settings.recording_retention_minutes),
            )
            with span(
                "recording commit",
                blob_name=self.blob_name,
                size_bytes=writer.size,
                **self.job.log_fields(),
            ):
                committed = await writer.commit(facts)
        except RecordingTooLarge:
            raise TerminalDownloadError(_too_large(max_bytes, None)) from None
        except LeaseLost:
            raise TransientDownloadError(
                "download lease expired and was taken over by another delivery"
            ) from None
        except AzureError as error:
            raise TransientDownloadError(
                f"writing the recording to storage failed ({type(error).__name__})"
            ) from None
        if not committed:
            existing = await find_stored(self.container, self.blob_name)
            if existing is not None:
                return await self.already_stored(existing)
        # The audio's facts from the bytes stored, never from what the notification said.
        return await self.stored(facts, wav_facts(writer.head, writer.size))

    async def stored(self, facts: RecordingFacts, audio: WavFacts | None) -> DownloadOutcome:
        recording = StoredRecording(
            blob_name=self.blob_name,
            size_bytes=facts.size_bytes,
            sha256=facts.sha256,
            content_type=facts.content_type,
            expires_at=facts.expires_at,
        )
        with span("ledger stored", call_id=facts.call_id, operation_id=facts.operation_id):
            transition = await self._mark_stored(
                recording, stored_at=facts.downloaded_at, audio=audio, audio_read=True
            )
        return await self._after_stored(
            "stored", recording, transition, committed_at=facts.downloaded_at
        )

    async def already_stored(
        self, existing: StoredRecording, *, row: Transition | None = None
    ) -> DownloadOutcome:
        """A duplicate job: nothing is downloaded. ``row``: the ledger already says stored."""
        # Otherwise make sure the ledger says stored (the first run may have died between the
        # commit and the ledger write).
        transition = row if row is not None else await self._mark_stored(existing, stored_at=None)
        return await self._after_stored("already_stored", existing, transition, committed_at=None)

    async def _mark_stored(
        self,
        recording: StoredRecording,
        *,
        stored_at: datetime | None,
        audio: WavFacts | None = None,
        audio_read: bool = False,
    ) -> Transition:
        """``stored``, on the ETag of this delivery's last write (its lease): no read first.

        ``audio``: the WAV facts of the bytes this delivery stored (``audio_read``: they were
        read, so None means "not a WAV it can read"); a duplicate has none to add.
        """
        transition = await self.ledger.mark_stored(
            self.job.call_id,
            self.job.operation_id,
            blob_name=recording.blob_name,
            size_bytes=recording.size_bytes,
            sha256=recording.sha256,
            content_type=recording.content_type,
            stored_at=stored_at,
            expires_at=recording.expires_at,
            audio=audio,
            audio_read=audio_read,
            after=self.lease.held_row,
        )
        self.lease.wrote(transition)
        return transition

    async def _after_stored(
        self,
        outcome: Outcome,
        recording: StoredRecording,
        transition: Transition,
        *,
        committed_at: datetime | None,
    ) -> DownloadOutcome:
        # The row as read after the commit: an erasure that came first wins (shared/erasure.py).
        if await erase_if_erased(
            transition, container=self.container, blob_name=recording.blob_name
        ):
            return self.erased()
        await self.queue_transcription(committed_at)
        if outcome == "stored":
            count_outcome("stored")
        return self._settled(
            outcome,
            blob_name=recording.blob_name,
            size_bytes=recording.size_bytes,
            sha256=recording.sha256,
            content_type=recording.content_type,
            committed_at=committed_at,
        )

    async def queue_transcription(self, stored_at: datetime | None) -> None:
        """Opt-in: the stored recording's transcription job (sent again by a duplicate)."""
        from shared.transcription.job import queue_transcription

        try:
            await queue_transcription(
                self.settings,
                self.transcriptions,
                call_id=self.job.call_id,
                operation_id=self.job.operation_id,
                blob_name=self.blob_name,
                stored_at=stored_at,
            )
        except Exception as error:
            raise TransientDownloadError(
                f"queueing the transcription failed ({type(error).__name__})"
            ) from None

    def erased(self) -> DownloadOutcome:
        return self._settled("erased", failure_reason="the operation was erased")

    def gone(self) -> DownloadOutcome:
        return self._settled("expired", failure_reason="the recording's retention is over")

    async def record_failure(self, reason: str) -> None:
        """``failed``; a lease this delivery holds is given back in the same write."""
        transition = await self.ledger.mark_failed(
            self.job.call_id, self.job.operation_id, reason, after=self.lease.held_row
        )
        self.lease.wrote(transition)

    def _settled(
        self,
        outcome: Outcome,
        *,
        blob_name: str | None = None,
        size_bytes: int | None = None,
        sha256: str | None = None,
        content_type: str | None = None,
        failure_reason: str | None = None,
        committed_at: datetime | None = None,
    ) -> DownloadOutcome:
        latency_ms = None
        if committed_at is not None:
            latency_ms = round((committed_at - as_utc(self.job.received_at)).total_seconds() * 1000)
            record_stored_latency(latency_ms)
        return self.settled(
            outcome,
            blob_name=blob_name,
            size_bytes=size_bytes,
            sha256=sha256,
            content_type=content_type,
            failure_reason=failure_reason,
            latency_ms=latency_ms,
        )


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _too_large(max_bytes: int, declared: int | None) -> str:
    size = f"{declared} bytes" if declared is not None else f"more than {max_bytes} bytes"
    return f"recording is too large: {size}, RECORDING_MAX_BYTES is {max_bytes}"
