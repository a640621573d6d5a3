"""What one cleanup run may do and what it did, and the bounded concurrency its steps share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

# The blob convention (name, expiresAt tag) is the download worker's: one definition, in store.

if TYPE_CHECKING:
    pass


log = logging.getLogger("shared.retention")

BATCH_DELETE_MAX = 256  # the Blob Batch API's limit per request

LEDGER_CONCURRENCY = 16
# A young poison message this run received is handed straight back; the timeout only matters if
# that hand-back fails, and then the message reappears well before the next run.
POISON_VISIBILITY_SECONDS = 30
POISON_PAGE = 32  # the Queue service's maximum per receive
# The column the ledger stamps when a row becomes expired (its ``{Status}At`` convention).
EXPIRED_AT = "ExpiredAt"


@dataclass(frozen=True)
class CleanupLimits:
    """The most each step does in one run (the rest waits for the next run)."""

    expired_recordings: int = 2048
    poison_messages: int = 256
    abandoned_operations: int = 256
    ledger_rows: int = 1024


@dataclass
class CleanupSummary:
    """Counts of what one run did; logged as one line and returned."""

    recordings_found_expired: int = 0
    recordings_deleted: int = 0
    recordings_already_gone: int = 0
    recordings_not_deleted: int = 0
    rows_marked_expired: int = 0
    poison_messages_purged: int = 0
    poison_failures_recorded: int = 0
    poison_messages_unreadable: int = 0
    poison_messages_kept: int = 0
    operations_abandoned: int = 0
    ledger_rows_deleted: int = 0
    claim_rows_deleted: int = 0
    errors: int = 0
    limits_reached: list[str] = field(default_factory=list)
    failed_steps: list[str] = field(default_factory=list)

    def log_fields(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return " ".join(
            f"{name}={','.join(value) or '-' if isinstance(value, list) else value}"
            for name, value in self.log_fields().items()
        )


async def bounded_gather(
    calls: Sequence[Callable[[], Awaitable[Any]]], *, concurrency: int = LEDGER_CONCURRENCY
) -> list[Any]:
    """Run ``calls`` with at most ``concurrency`` in flight; exceptions are returned, not raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls), return_exceptions=True))
