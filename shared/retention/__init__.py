"""Retention: the cleanup run that enforces how long recordings, tokens and ledger rows live.

Graph's terms forbid keeping call media, and poisoned download jobs still hold access tokens, so
one timer run does four bounded steps, each safe to run on two instances at once:

1. delete the recordings whose ``expiresAt`` index tag has passed (a tag query, so the cost grows
   with the number of expired recordings, never with the number stored) and mark them ``expired``
   (one ETag-guarded merge per row, no read per row);
2. purge poisoned jobs (downloads, transcriptions, events) older than a few minutes, recording
   each failure first;
3. settle operations left ``requested``/``running`` long after any completion could come as
   ``abandoned``;
4. delete ledger rows (operations and claims) older than the ledger horizon.

Apart from those, an hourly run sweeps the recordings list's index rows that point to nothing
(:func:`sweep_recordings_index`): hourly, because an hour is the index's own bucket.

Every step stops at its limit; whatever is left is found again by the next run (continuation by
re-query, no cursor to keep). Ledger transitions are forward-only and deleting something already
deleted is success, so overlapping runs converge on the same state.
"""

from shared.retention.expiry import (
    expire_recordings,
    expired_filter,
    mark_rows_expired,
    portable_batch_boundary,
)
from shared.retention.poison import purge_poison_messages
from shared.retention.run import run_cleanup
from shared.retention.summary import BATCH_DELETE_MAX, CleanupLimits, CleanupSummary
from shared.retention.upkeep import (
    abandon_stale_operations,
    sweep_recordings_index,
    trim_ledger,
)

__all__ = [
    "BATCH_DELETE_MAX",
    "CleanupLimits",
    "CleanupSummary",
    "abandon_stale_operations",
    "expire_recordings",
    "expired_filter",
    "mark_rows_expired",
    "portable_batch_boundary",
    "purge_poison_messages",
    "run_cleanup",
    "sweep_recordings_index",
    "trim_ledger",
]
