"""Step 2: purge poisoned download jobs (they hold access tokens), recording each failure first."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.clock import as_utc
from shared.ledger import (
    POISONED_REASON,
    OperationLedger,
    job_result,
)
from shared.logevents import log_event
from shared.retention.summary import (
    POISON_PAGE,
    POISON_VISIBILITY_SECONDS,
    CleanupSummary,
    note_failure,
)

if TYPE_CHECKING:
    from azure.storage.queue import QueueMessage
    from azure.storage.queue.aio import QueueClient

log = logging.getLogger("shared.retention")


def _inserted_before(message: QueueMessage, cutoff: datetime) -> bool:
    inserted = message.inserted_on
    if inserted is None:
        return True  # no insertion time: treat as old rather than keep a token indefinitely
    return as_utc(inserted) < cutoff


async def _purge_one(
    poison_queue: QueueClient,
    ledger: OperationLedger,
    message: QueueMessage,
    summary: CleanupSummary,
) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    from shared.jobs import DownloadJob, InvalidJobError

    try:
        job: DownloadJob | None = DownloadJob.from_message(message.content)
    except InvalidJobError as error:
        # Nobody can act on it, and it may still hold a token: it goes, with a note in the log.
        job = None
        summary.poison_messages_unreadable += 1
        log_event(
            log,
            "cleanup: poison message unreadable; deleting it",
            level=logging.WARNING,
            message_id=message.id,
            reason=str(error),
        )
    if job is not None:
        try:
            transition = await ledger.mark_failed(
                job.call_id, job.operation_id, POISONED_REASON, result=job_result(job)
            )
        except Exception as error:
            # Keep the message: the failure is not recorded yet, the next run tries again.
            summary.poison_messages_kept += 1
            note_failure(
                summary,
                "cleanup: poisoned job not recorded",
                error,
                call_id=job.call_id,
                operation_id=job.operation_id,
            )
            return
        if transition.changed:
            summary.poison_failures_recorded += 1
        log_event(
            log,
            "cleanup: poisoned download job purged",
            call_id=job.call_id,
            operation_id=job.operation_id,
            status=transition.record.status.value,
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
) -> None:
    """Record and delete poisoned download jobs inserted more than ``max_age`` ago."""
    cutoff = now - max_age
    received = 0
    pages = poison_queue.receive_messages(
        messages_per_page=min(POISON_PAGE, limit),
        visibility_timeout=POISON_VISIBILITY_SECONDS,
        max_messages=limit,
    ).by_page()
    async for page in pages:
        reached_young = False
        async for message in page:
            received += 1
            if _inserted_before(message, cutoff):
                await _purge_one(poison_queue, ledger, message, summary)
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
    if received >= limit:
        summary.limits_reached.append("poison_messages")
