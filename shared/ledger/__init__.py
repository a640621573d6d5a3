"""The operations ledger: one Table Storage row per record operation, moved only forward.

- :mod:`.rows`: columns, statuses, keys, the record the app sees;
- :mod:`.table`: reading and advancing rows (ETag-guarded, forward-only), once-per-call claims;
- :mod:`.lease`: the download lease, held on the operation's own row;
- :mod:`.transitions`: :class:`OperationLedger`, one ``mark_*`` per thing that happens.
"""

from shared.ledger.lease import Lease
from shared.ledger.rows import (
    ABANDONED_REASON,
    CLAIM_PARTITION_PREFIX,
    NO_COMPLETION_REASON,
    POISONED_REASON,
    ROW_KIND_CLAIM,
    ROW_KIND_OPERATION,
    TRANSCRIBED,
    TRANSCRIPTION_FAILED,
    Column,
    OperationRecord,
    OperationStatus,
    Transition,
    claim_partition,
    job_result,
    result_fields,
    table_key,
)
from shared.ledger.table import LedgerTable
from shared.ledger.transitions import OperationLedger

__all__ = [
    "ABANDONED_REASON",
    "CLAIM_PARTITION_PREFIX",
    "NO_COMPLETION_REASON",
    "POISONED_REASON",
    "ROW_KIND_CLAIM",
    "ROW_KIND_OPERATION",
    "TRANSCRIBED",
    "TRANSCRIPTION_FAILED",
    "Column",
    "Lease",
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
