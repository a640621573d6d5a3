"""Steps 3 and 4: settle operations no completion will come for, and trim the ledger's horizon."""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.ledger import (
    NO_COMPLETION_REASON,
    ROW_KIND_CLAIM,
    OperationLedger,
    OperationStatus,
)

# The blob convention (name, expiresAt tag) is the download worker's: one definition, in store.
from shared.logevents import log_event

if TYPE_CHECKING:
    pass

from shared.retention.summary import (
    CleanupSummary,
    bounded_gather,
)

log = logging.getLogger("shared.retention")


async def abandon_stale_operations(
    ledger: OperationLedger,
    *,
    now: datetime,
    after: timedelta,
    limit: int,
    summary: CleanupSummary,
) -> None:
    """Settle operations still requested/running ``after`` their start as ``abandoned``."""
    stale = await ledger.query(
        "( Status eq @running and RunningAt lt @cutoff ) or "
        "( Status eq @requested and RequestedAt lt @cutoff )",
        {
            "running": OperationStatus.RUNNING.value,
            "requested": OperationStatus.REQUESTED.value,
            "cutoff": now - after,
        },
        limit=limit,
    )
    if len(stale) >= limit:
        summary.limits_reached.append("abandoned_operations")
    results = await bounded_gather(
        [
            functools.partial(
                ledger.mark_abandoned, record.call_id, record.operation_id, NO_COMPLETION_REASON
            )
            for record in stale
        ]
    )
    for record, result in zip(stale, results, strict=True):
        if isinstance(result, BaseException):
            summary.errors += 1
            log_event(
                log,
                "cleanup: operation not settled as abandoned",
                level=logging.ERROR,
                call_id=record.call_id,
                operation_id=record.operation_id,
                error=type(result).__name__,
            )
        elif result.changed:
            summary.operations_abandoned += 1
            log_event(
                log,
                "cleanup: operation abandoned",
                call_id=record.call_id,
                operation_id=record.operation_id,
                was=record.status.value,
            )


async def trim_ledger(
    ledger: OperationLedger,
    *,
    now: datetime,
    horizon: timedelta,
    limit: int,
    summary: CleanupSummary,
) -> None:
    """Delete ledger rows (operations and claims) not updated within ``horizon``."""
    removed = await ledger.remove_stale(now - horizon, limit=limit)
    claims = removed.pop(ROW_KIND_CLAIM, 0)
    rows = sum(removed.values())
    summary.claim_rows_deleted += claims
    summary.ledger_rows_deleted += rows
    if rows + claims >= limit:
        summary.limits_reached.append("ledger_rows")
