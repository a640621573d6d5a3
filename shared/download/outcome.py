"""How a download job was settled: the outcome, its one log line, and messages that are not jobs.

A transient failure raises instead (the host redelivers the message); everything else ends here
with exactly one ``recording download outcome=...`` line carrying the same fields as the result.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Literal

from shared.clock import Stopwatch
from shared.ledger import OperationLedger
from shared.logevents import log_event
from shared.telemetry import count_outcome

log = logging.getLogger("shared.download.worker")

Outcome = Literal["stored", "already_stored", "failed", "invalid", "erased", "expired"]


@dataclass(frozen=True)
class DownloadOutcome:
    """How one message was settled (a transient failure raises instead)."""

    outcome: Outcome
    call_id: str | None
    operation_id: str | None
    blob_name: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    failure_reason: str | None = None
    attempts: int = 0
    duration_ms: int = 0
    latency_ms: int | None = None


async def settle_invalid(
    message_text: str | bytes, reason: str, ledger: OperationLedger, watch: Stopwatch
) -> DownloadOutcome:
    """Settle a message that is not a job: recorded where it can be, never retried."""
    call_id, operation_id = _readable_ids(message_text)
    if call_id and operation_id:
        await ledger.mark_failed(call_id, operation_id, f"invalid job: {reason}")
        count_outcome("failed", stage="invalid_job")
    log_outcome(
        logging.ERROR,
        "invalid",
        call_id,
        operation_id,
        duration_ms=watch.elapsed_ms,
        reason=reason,
    )
    return DownloadOutcome(
        "invalid", call_id, operation_id, failure_reason=reason, duration_ms=watch.elapsed_ms
    )


def _readable_ids(message_text: str | bytes) -> tuple[str | None, str | None]:
    """The call and operation ids of a broken message, when they can still be read."""
    try:
        data = json.loads(message_text)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    ids = []
    for name in ("call_id", "operation_id"):
        value = data.get(name)
        ids.append(value.strip() if isinstance(value, str) and value.strip() else None)
    return ids[0], ids[1]


def log_outcome(
    level: int,
    outcome: str,
    call_id: str | None,
    operation_id: str | None,
    *,
    size_bytes: int | None = None,
    attempts: int = 0,
    duration_ms: int = 0,
    latency_ms: int | None = None,
    reason: str | None = None,
) -> None:
    """The one log line per outcome."""
    log_event(
        log,
        "recording download",
        level=level,
        outcome=outcome,
        call_id=call_id,
        operation_id=operation_id,
        size_bytes=size_bytes,
        attempts=attempts,
        duration_ms=duration_ms,
        latency_ms=latency_ms,
        reason=reason,
    )
