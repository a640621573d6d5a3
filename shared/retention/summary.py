"""What one cleanup run may do and what it did, and the bounded concurrency its steps share."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from shared.logevents import log_failure

log = logging.getLogger("shared.retention")

Row = TypeVar("Row")
Result = TypeVar("Result")

BATCH_DELETE_MAX = 256  # the Blob Batch API's limit per request

LEDGER_CONCURRENCY = 16
# A young poison message this run received is handed straight back; the timeout only matters if
# that hand-back fails, and then the message reappears well before the next run.
POISON_VISIBILITY_SECONDS = 30
POISON_PAGE = 32  # the Queue service's maximum per receive


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
    # Calls that forgot who called: their last recording expired, or none came in time.
    caller_identities_forgotten: int = 0
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


def note_failure(
    summary: CleanupSummary,
    event: str,
    error: BaseException,
    *,
    call_id: str,
    operation_id: str,
) -> None:
    """One failed write of a step: counted in the run's errors, one line naming the operation."""
    summary.errors += 1
    log_failure(log, event, error, call_id=call_id, operation_id=operation_id)


async def for_each_row(
    rows: Sequence[Row],
    action: Callable[[Row], Awaitable[Result]],
    *,
    ids: Callable[[Row], tuple[str, str]],
    summary: CleanupSummary,
    failure: str,
) -> list[tuple[Row, Result]]:
    """``action`` on every row, :data:`LEDGER_CONCURRENCY` at a time; the rows it succeeded on.

    A row whose action failed is noted (:func:`note_failure`, event ``failure``) and left for the
    next run: one row's failure never stops the others.
    """
    results = await bounded_gather([functools.partial(action, row) for row in rows])
    done: list[tuple[Row, Result]] = []
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, BaseException):
            call_id, operation_id = ids(row)
            note_failure(summary, failure, result, call_id=call_id, operation_id=operation_id)
        else:
            done.append((row, result))
    return done
