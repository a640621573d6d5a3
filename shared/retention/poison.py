"""Step 2: purge poisoned jobs, recording each failure first.

Download jobs hold recording access tokens: they must not linger. Transcription jobs hold none,
but a job the host poisoned without the worker recording it (the worker crashed, or the message
was unreadable to the trigger) would otherwise leave its row saying nothing: the purge records
``transcription_failed`` for it, keeping a reason the worker already recorded. Event jobs hold
none either, and their rows still owe the event (the events sweep re-sends it): they only go.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.clock import as_utc
from shared.ledger import (
    POISONED_REASON,
    TRANSCRIPTION_POISONED_REASON,
    OperationLedger,
    Transition,
    job_result,
)
from shared.logevents import log_event, log_failure
from shared.queue_jobs import InvalidJobMessage
from shared.retention.summary import POISON_PAGE, POISON_VISIBILITY_SECONDS, CleanupSummary

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

log = logging.getLogger("shared.retention")


def _inserted_before(message: QueueMessage, cutoff: datetime) -> bool:
    inserted = message.inserted_on
    if inserted is None:
        return True  # no insertion time: treat as old rather than keep a token indefinitely
    return as_utc(inserted) < cutoff


@dataclass(frozen=True)
class PoisonedJobs:
    """One poison queue's jobs: their name in log lines, and how one's failure is recorded
    (raising :class:`InvalidJobMessage` when the message is not such a job)."""

    name: str
    record: Callable[[OperationLedger, str], Awaitable[tuple[str, str, Transition | None]]]


async def _record_download(
    ledger: OperationLedger, content: str
) -> tuple[str, str, Transition | None]:
    from shared.jobs import DownloadJob

    job = DownloadJob.from_message(content)
    transition = await ledger.mark_failed(
        job.call_id, job.operation_id, POISONED_REASON, result=job_result(job)
    )
    return job.call_id, job.operation_id, transition


async def _record_transcription(
    ledger: OperationLedger, content: str
) -> tuple[str, str, Transition | None]:
    from shared.transcription.job import TranscriptionJob

    job = TranscriptionJob.from_message(content)
    transition = await ledger.mark_transcription_failed(
        job.call_id, job.operation_id, TRANSCRIPTION_POISONED_REASON, unless_recorded=True
    )
    return job.call_id, job.operation_id, transition


async def _record_event(
    ledger: OperationLedger, content: str
) -> tuple[str, str, Transition | None]:
    """Nothing to record: the step's event marker stays ``pending`` (the worker recorded the
    failure on its last delivery), so the events sweep sends the job again; the poisoned copy
    is only clutter."""
    from shared.events.job import EventJob

    job = EventJob.from_message(content)
    return job.call_id, job.operation_id, None


DOWNLOADS = PoisonedJobs("download", _record_download)
TRANSCRIPTIONS = PoisonedJobs("transcription", _record_transcription)
EVENTS = PoisonedJobs("event", _record_event)


async def _purge_one(
    poison_queue: QueueClient,
    ledger: OperationLedger,
    message: QueueMessage,
    summary: CleanupSummary,
    jobs: PoisonedJobs,
) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        recorded = await jobs.record(ledger, message.content)
    except InvalidJobMessage as error:
        # Nobody can act on it, and it may still hold a token: it goes, with a note in the log.
        recorded = None
        summary.poison_messages_unreadable += 1
        log_event(
            log,
            "cleanup: poison message unreadable; deleting it",
            level=logging.WARNING,
            message_id=message.id,
            reason=str(error),
        )
    except Exception as error:
        # Keep the message: the failure is not recorded yet, the next run tries again.
        summary.errors += 1
        summary.poison_messages_kept += 1
        log_failure(
            log, f"cleanup: poisoned {jobs.name} job not recorded", error, message_id=message.id
        )
        return
    if recorded is not None:
        call_id, operation_id, transition = recorded
        if transition is not None and transition.changed:
            summary.poison_failures_recorded += 1
        log_event(
            log,
            f"cleanup: poisoned {jobs.name} job purged",
            call_id=call_id,
            operation_id=operation_id,
            status=transition.record.status.value if transition is not None else None,
        )
    # Not found: an overlapping run deleted it, or the receipt lapsed and it comes round again.
    with contextlib.suppress(ResourceNotFoundError):
        await poison_queue.delete_message(message)
    summary.poison_messages_purged += 1


async def purge_poison_messages(
    poison_queue: QueueClient,
    ledger: OperationLedger,
    *,
    now: datetime,
    max_age: timedelta,
    limit: int,
    summary: CleanupSummary,
    jobs: PoisonedJobs = DOWNLOADS,
) -> None:
    """Record and delete poisoned jobs inserted more than ``max_age`` ago (download jobs unless
    ``jobs`` says otherwise)."""
    from azure.core.exceptions import ResourceNotFoundError

    cutoff = now - max_age
    pages = poison_queue.receive_messages(
        messages_per_page=min(POISON_PAGE, limit),
        visibility_timeout=POISON_VISIBILITY_SECONDS,
        max_messages=limit,
    ).by_page()
    try:
        received = await _purge_pages(poison_queue, ledger, pages, cutoff, summary, jobs)
    except ResourceNotFoundError as error:
        if jobs is DOWNLOADS or getattr(error, "error_code", None) != "QueueNotFound":
            raise
        return  # transcription never ran on this account: its poison queue does not exist
    if received >= limit:
        summary.limits_reached.append("poison_messages")


async def _purge_pages(
    poison_queue: QueueClient,
    ledger: OperationLedger,
    pages: AsyncIterator[AsyncIterator[QueueMessage]],
    cutoff: datetime,
    summary: CleanupSummary,
    jobs: PoisonedJobs,
) -> int:
    """Purge the old messages of ``pages``; how many messages were received."""
    received = 0
    async for page in pages:
        reached_young = False
        async for message in page:
            received += 1
            if _inserted_before(message, cutoff):
                await _purge_one(poison_queue, ledger, message, summary, jobs)
                continue
            reached_young = True
            summary.poison_messages_kept += 1
            # Hand it straight back (receiving hid it) so the queue looks untouched.
            # By id and receipt: passing the message would re-send its (decoded) content.
            await poison_queue.update_message(
                message.id, pop_receipt=message.pop_receipt, visibility_timeout=0
            )
        # The queue is roughly oldest-first: after a young message the rest are young too.
        if reached_young:
            break
    return received
