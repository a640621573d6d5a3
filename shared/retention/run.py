"""One cleanup run: the four steps, each bounded, each safe beside another instance's run."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

# The blob convention (name, expiresAt tag) is the download worker's: one definition, in store.
from shared.ledger import (
    OperationLedger,
)

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient
    from azure.storage.queue.aio import QueueClient

    from shared.settings import Settings

from shared.retention.expiry import (
    expire_recordings,
)
from shared.retention.poison import (
    TRANSCRIPTIONS,
    purge_poison_messages,
)
from shared.retention.summary import (
    CleanupLimits,
    CleanupSummary,
)
from shared.retention.upkeep import (
    abandon_stale_operations,
    trim_ledger,
)

log = logging.getLogger("shared.retention")


async def run_cleanup(
    *,
    container: ContainerClient,
    ledger: OperationLedger,
    poison_queue: QueueClient,
    settings: Settings,
    clock: Callable[[], datetime],
    limits: CleanupLimits | None = None,
    transcription_poison_queue: QueueClient | None = None,
) -> CleanupSummary:
    """One cleanup run: every step, each bounded, then one summary log line.

    ``transcription_poison_queue``: its poisoned transcription jobs are recorded and purged too.
    """
    limits = limits or CleanupLimits()
    now = clock()
    summary = CleanupSummary()
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        (
            "expire_recordings",
            lambda: expire_recordings(
                container, ledger, now=now, limit=limits.expired_recordings, summary=summary
            ),
        ),
        (
            "purge_poison_messages",
            lambda: purge_poison_messages(
                poison_queue,
                ledger,
                now=now,
                max_age=timedelta(minutes=settings.poison_message_max_age_minutes),
                limit=limits.poison_messages,
                summary=summary,
            ),
        ),
        *(
            [
                (
                    "purge_transcription_poison_messages",
                    lambda: purge_poison_messages(
                        transcription_poison_queue,
                        ledger,
                        now=now,
                        max_age=timedelta(minutes=settings.poison_message_max_age_minutes),
                        limit=limits.poison_messages,
                        summary=summary,
                        jobs=TRANSCRIPTIONS,
                    ),
                )
            ]
            if transcription_poison_queue is not None
            else []
        ),
        (
            "abandon_stale_operations",
            lambda: abandon_stale_operations(
                ledger,
                now=now,
                after=timedelta(minutes=settings.abandon_running_after_minutes),
                limit=limits.abandoned_operations,
                summary=summary,
            ),
        ),
        (
            "trim_ledger",
            lambda: trim_ledger(
                ledger,
                now=now,
                horizon=timedelta(days=settings.ledger_retention_days),
                limit=limits.ledger_rows,
                summary=summary,
            ),
        ),
    ]
    for name, step in steps:
        # One step failing (storage hiccup) must not stop the others: the tokens in the poison
        # queue and the expired recordings are independent obligations.
        try:
            await step()
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
