"""Steps 3 and 4: settle operations no completion will come for, and trim the ledger's horizon."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from shared.ledger import (
    NO_COMPLETION_REASON,
    ROW_KIND_CLAIM,
    OperationLedger,
    OperationStatus,
)
from shared.ledger.index import buckets_between
from shared.ledger.table import IDENTITY_FORGOTTEN
from shared.logevents import log_event
from shared.retention.summary import CleanupSummary, for_each_row

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
    settled = await for_each_row(
        stale,
        lambda record: ledger.mark_abandoned(
            record.call_id, record.operation_id, NO_COMPLETION_REASON
        ),
        ids=lambda record: (record.call_id, record.operation_id),
        summary=summary,
        failure="cleanup: operation not settled as abandoned",
    )
    for record, result in settled:
        if result.changed:
            summary.operations_abandoned += 1
            log_event(log, "cleanup: operation abandoned", **record.ids(), was=record.status.value)


async def trim_ledger(
    ledger: OperationLedger,
    *,
    now: datetime,
    horizon: timedelta,
    limit: int,
    summary: CleanupSummary,
    identity_after: timedelta | None = None,
) -> None:
    """Delete ledger rows (operations and claims) not updated within ``horizon``; a call's row
    not written within ``identity_after`` (the recording retention) forgets who called, unless a
    recording of the call is still live (then its expiry does it)."""
    removed = await ledger.remove_stale(
        now - horizon,
        limit=limit,
        identity_before=now - identity_after if identity_after is not None else None,
    )
    summary.caller_identities_forgotten += removed.pop(IDENTITY_FORGOTTEN, 0)
    claims = removed.pop(ROW_KIND_CLAIM, 0)
    rows = sum(removed.values())
    summary.claim_rows_deleted += claims
    summary.ledger_rows_deleted += rows
    if rows + claims >= limit:
        summary.limits_reached.append("ledger_rows")


# An index row younger than this may still see its operation row's write (shared/ledger/index.py).
INDEX_SWEEP_GRACE = timedelta(minutes=10)
# Closed hours swept by each hourly run: the one that just closed and two before it, so a run
# the host missed, or a delivery that indexed late into a closed hour, is caught by a later run.
# Older orphans go with the ledger horizon (trim_ledger), like every row; the list never shows one.
INDEX_SWEEP_HOURS = 3
# Index rows looked at per run at most (an hour's recordings, with room to spare).
INDEX_SWEEP_LIMIT = 20_000


async def sweep_recordings_index(
    ledger: OperationLedger, *, now: datetime, limit: int = INDEX_SWEEP_LIMIT
) -> int:
    """Delete recordings-list index rows that point to nothing (a crash between two writes, a
    delivery whose index row lost to another's) in the last closed hours; returns how many."""
    written_before = now - INDEX_SWEEP_GRACE
    newest_closed = written_before - timedelta(hours=1)
    buckets = buckets_between(newest_closed - timedelta(hours=INDEX_SWEEP_HOURS - 1), newest_closed)
    swept = await ledger.sweep_index(buckets, written_before=written_before, limit=limit)
    log_event(log, "cleanup: recordings index swept", hours=",".join(buckets), rows_deleted=swept)
    return swept
