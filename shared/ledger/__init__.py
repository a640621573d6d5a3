"""The operations ledger: one Table Storage row per record operation, moved only forward.

The ledger is the only writer of a row's status and of its download lease:

- :mod:`.rows`: columns, statuses and their groups, keys, the record the app sees;
- :mod:`.table`: reading rows, the one ETag-guarded conflict retry every write goes through,
  forward-only moves, once-per-call claims;
- :mod:`.lease`: the download lease (:class:`DownloadLease`), held on the operation's own row;
- :mod:`.transitions`: :class:`OperationLedger`, one ``mark_*`` per thing that happens.
"""

from shared.ledger.lease import (
    LEASE_RENEW_AFTER,
    LEASE_TIME_TO_LIVE,
    DownloadLease,
    LeaseAttempt,
    LeaseLost,
)
from shared.ledger.rows import (
    ABANDONED_REASON,
    CALL_GUARD_ROW,
    NO_COMPLETION_REASON,
    NOTHING_LEFT_TO_DOWNLOAD,
    POISONED_REASON,
    RECORDING_FATE_KNOWN,
    ROW_KIND_CLAIM,
    ROW_KIND_OPERATION,
    STILL_RECORDING,
    TRANSCRIBED,
    TRANSCRIPTION_FAILED,
    TRANSCRIPTION_POISONED_REASON,
    Column,
    OperationRecord,
    OperationStatus,
    Transition,
    claim_partition,
    job_result,
    result_fields,
    table_key,
)
from shared.ledger.table import LedgerConflict, LedgerTable
from shared.ledger.transitions import OperationLedger

__all__ = [
    "ABANDONED_REASON",
    "CALL_GUARD_ROW",
    "LEASE_RENEW_AFTER",
    "LEASE_TIME_TO_LIVE",
    "NOTHING_LEFT_TO_DOWNLOAD",
    "NO_COMPLETION_REASON",
    "POISONED_REASON",
    "RECORDING_FATE_KNOWN",
    "ROW_KIND_CLAIM",
    "ROW_KIND_OPERATION",
    "STILL_RECORDING",
    "TRANSCRIBED",
    "TRANSCRIPTION_FAILED",
    "TRANSCRIPTION_POISONED_REASON",
    "Column",
    "DownloadLease",
    "LeaseAttempt",
    "LeaseLost",
    "LedgerConflict",
    "LedgerTable",
    "OperationLedger",
    "OperationRecord",
    "OperationStatus",
    "Transition",
    "claim_partition",
    "job_result",
    "result_fields",
    "table_key",
]
