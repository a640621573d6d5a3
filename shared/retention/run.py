"""One cleanup run: the four steps, each bounded, each safe beside another instance's run."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from shared.ledger import OperationLedger
from shared.retention.expiry import expire_recordings
from shared.retention.poison import EVENTS, TRANSCRIPTIONS, purge_poison_messages
from shared.retention.summary import CleanupLimits, CleanupSummary
from shared.retention.upkeep import abandon_stale_operations, trim_ledger

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient
    from azure.storage.queue.aio import QueueClient

    from shared.settings import Settings

log = logging.getLogger("shared.retention")


class Step(Protocol):
    """One bounded step of a run: what it may do is bound in; when and its counts are given."""

    def __call__(self, *, now: datetime, summary: CleanupSummary) -> Awaitable[None]: ...


async def run_cleanup(
    *,
    container: ContainerClient,
    ledger: OperationLedger,
    poison_queue: QueueClient,
    settings: Settings,
    clock: Callable[[], datetime],
    limits: CleanupLimits | None = None,
    transcription_poison_queue: QueueClient | None = None,
    events_poison_queue: QueueClient | None = None,
) -> CleanupSummary:
    """One cleanup run: every step, each bounded, then one summary log line.

    ``transcription_poison_queue``: its poisoned transcription jobs are recorded and purged too.
    ``events_poison_queue``: its poisoned event jobs are purged (the rows still owe the events).
    """
    limits = limits or CleanupLimits()
    minutes = timedelta(minutes=1)
    purge = functools.partial(
        purge_poison_messages,
        ledger=ledger,
        max_age=settings.poison_message_max_age_minutes * minutes,
        limit=limits.poison_messages,
    )
    steps: dict[str, Step] = {
        "expire_recordings": functools.partial(
            expire_recordings, container, ledger, limit=limits.expired_recordings
        ),
        "purge_poison_messages": functools.partial(purge, poison_queue),
        # Poisoned transcription jobs hold no token, but their rows must say what happened.
        **(
            {
                "purge_transcription_poison_messages": functools.partial(
                    purge, transcription_poison_queue, jobs=TRANSCRIPTIONS
                )
            }
            if transcription_poison_queue is not None
            else {}
        ),
        # Poisoned event jobs: the events sweep re-sends what they owed; the copies only pile up.
        **(
            {
                "purge_events_poison_messages": functools.partial(
                    purge, events_poison_queue, jobs=EVENTS
                )
            }
            if events_poison_queue is not None
            else {}
        ),
        "abandon_stale_operations": functools.partial(
            abandon_stale_operations,
            ledger,
            after=settings.abandon_running_after_minutes * minutes,
            limit=limits.abandoned_operations,
        ),
        "trim_ledger": functools.partial(
            trim_ledger,
            ledger,
            horizon=timedelta(days=settings.ledger_retention_days),
            limit=limits.ledger_rows,
            identity_after=settings.recording_retention_minutes * minutes,
        ),
    }
    now = clock()
    summary = CleanupSummary()
    for name, step in steps.items():
        # One step failing (storage hiccup) must not stop the others: the tokens in the poison
        # queue and the expired recordings are independent obligations.
        try:
            await step(now=now, summary=summary)
        except Exception as error:
            summary.errors += 1
            summary.failed_steps.append(name)
            # Type and service error code only: an SDK error's text can quote the response
            # body, and a queue response holds message contents (access tokens).
            log.error(
                "cleanup: step %s failed (%s, code=%s)",
                name,
                type(error).__name__,
                getattr(error, "error_code", None),
            )
    level = logging.WARNING if summary.errors else logging.INFO
    log.log(level, "cleanup: %s", summary.describe(), extra=summary.log_fields())
    return summary
