"""Calls the bot left open: the cleanup timer moves them on when nothing else did.

The after-recording step (thank-you, hang-up) normally runs when the worker settles the download,
or once ``BOT_HANG_UP_WAIT_SECONDS`` have passed while it retries. If the worker never runs for a
recording (its instance died, its message was poisoned before the wait was up), nobody would hang
up. The cleanup asks here: for each call whose latest bot recording finished recording longer
than the wait ago, the bot flow is told it is overdue; the flow's own once-per-call claims keep a
call that was already moved on untouched.

The same sweep finishes what Graph refused under throttling, since Graph sends nothing more for
it: a hang-up refused past its budget gave its claim back, so the flow hangs up now; a
recordResponse refused past its budget left a failed row of its own (``RECORD_REFUSED_REASON``),
so the flow records again within the call's attempts, else hangs up. Each run retries each call
once; past the window the call has long been ended by the caller or the platform.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shared.ledger import STILL_RECORDING, Column, OperationLedger, OperationRecord
from shared.logevents import log_event

if TYPE_CHECKING:
    from shared.bot.hooks import CallEventHandler

log = logging.getLogger(__name__)

# Past this a call the bot left open has long been ended by the caller or the platform.
OPEN_CALL_WINDOW = timedelta(minutes=30)
# Rows one sweep reads. Every bot recording of the window is a candidate (whether its call is
# still open is known only from its claims), and Table Storage returns them in call-id order,
# not by age: past this many, the same calls come first on every run and the rest are never
# looked at, so reaching it is logged.
SWEEP_LIMIT = 1000


def _attempt(record: OperationRecord) -> tuple[int, datetime]:
    """Attempt number, then request time: a refused attempt retried by a later notification
    (the same number) is superseded by the retry."""
    value = record.get(Column.ATTEMPT)
    requested = record.get(Column.REQUESTED_AT)
    return (
        int(value) if isinstance(value, int) else 1,
        requested if isinstance(requested, datetime) else datetime.min.replace(tzinfo=UTC),
    )


async def settle_open_calls(
    ledger: OperationLedger,
    handler: CallEventHandler,
    *,
    now: datetime,
    wait: timedelta,
    window: timedelta = OPEN_CALL_WINDOW,
    limit: int = SWEEP_LIMIT,
) -> int:
    """Tell the bot flow about each call left open; returns how many calls it was told about."""
    candidates = await ledger.query(
        "StartedBy eq @bot and UpdatedAt lt @ready and UpdatedAt gt @since",
        {"bot": "bot", "ready": now - wait, "since": now - window},
        limit=limit,
    )
    if len(candidates) >= limit:
        log_event(
            log,
            "cleanup: more bot recordings than one open-call sweep reads; some calls are missed",
            level=logging.WARNING,
            limit=limit,
            window_minutes=window.total_seconds() / 60,
        )
    calls: dict[str, list[OperationRecord]] = defaultdict(list)
    for record in candidates:
        calls[record.call_id].append(record)
    told = 0
    for call_id in calls:
        # The call's latest attempt decides, even if it is too recent to be a candidate itself:
        # an earlier attempt that ended in silence must not hang up on the re-recording.
        rows = [r for r in await ledger.list_call(call_id) if r.get(Column.STARTED_BY) == "bot"]
        if not rows:
            continue
        latest = max(rows, key=_attempt)
        updated = latest.get("UpdatedAt")
        # Still recording: not the cleanup's to move on here; its abandon step settles those.
        if latest.status in STILL_RECORDING or not isinstance(updated, datetime):
            continue
        if updated >= now - wait:
            continue
        await handler.on_recording_settled(call_id, latest.operation_id, overdue=True)
        told += 1
    if told:
        log_event(log, "cleanup: open calls moved on", calls=told)
    return told
