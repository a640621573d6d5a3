"""The audit trail of the management API: who read, listed, started or erased which recording.

One row per action in the ledger's table (``recordingoperations``), in partitions of their own
(``~audit~<call>``, beside the ``~claims~`` precedent) so no operation or claim row can collide
with one. The row key starts with the operation's key and then the time, so a recording's audit
is one range query; actions on a whole call (list, erase a call) use the call-scope prefix
:data:`CALL_SCOPE` and appear in the audit of each of the call's recordings.

Audit rows have no ``UpdatedAt`` column on purpose: the ledger's horizon sweep deletes every row
whose ``UpdatedAt`` has passed, and the audit must outlive the ledger. They carry ``RecordedAt``
instead, swept by :func:`sweep_audit` after ``AUDIT_RETENTION_DAYS``. Each action is also one
structured log event (``audit``). A token is never stored or logged: only the ids it names.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.clock import utc_now
from shared.graph.ids import normalize_id
from shared.ledger.rows import table_key
from shared.logevents import log_event

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.auth.management import Caller

log = logging.getLogger(__name__)

ROW_KIND_AUDIT = "audit"
AUDIT_PARTITION_PREFIX = "~audit~"
# The row-key prefix of actions on a whole call; "~" sorts after every escaped id character.
CALL_SCOPE = "~call"
# A recording's audit is read in one page or two; beyond this the answer says it was cut.
MAX_ENTRIES = 1000


class Action(StrEnum):
    STATUS = "status"  # a recording's status, with its read URL once stored
    LIST = "list"  # a call's operations
    START = "start"  # a recordResponse started through the API
    ERASE = "erase"  # one recording erased
    ERASE_CALL = "erase_call"  # every recording of a call erased
    LIST_ALL = "list_all"  # recordings across calls
    ERASE_CALLER = "erase_caller"  # every recording of one caller erased (never who: see docs)
    AUDIT = "audit"  # a recording's audit read


class Column:
    ACTION = "Action"
    ROLE = "Role"
    VIA = "CallerVia"
    OBJECT_ID = "CallerObjectId"
    APP_ID = "CallerAppId"
    TENANT_ID = "CallerTenantId"
    OUTCOME = "Outcome"
    READ_URL_ISSUED = "ReadUrlIssued"
    RECORDED_AT = "RecordedAt"


def audit_partition(call_id: str) -> str:
    return AUDIT_PARTITION_PREFIX + table_key(call_id)


def _time_key(at: datetime) -> str:
    # Fixed width, so the row keys of one prefix sort by time.
    return at.strftime("%Y%m%dT%H%M%S%fZ")


@dataclass(frozen=True)
class AuditEntry:
    """One action on the management API, as the trail keeps it."""

    action: Action
    call_id: str
    operation_id: str | None
    caller: Caller
    role: str
    outcome: int
    read_url_issued: bool | None = None


class AuditTrail:
    """Writes and reads audit rows. Takes its table client and clock as collaborators."""

    def __init__(self, table: TableClient, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._table = table
        self._clock = clock

    async def record(self, entry: AuditEntry) -> None:
        """Write one audit row and its log event (raises when storage refuses the row)."""
        now = self._clock()
        operation = normalize_id(entry.operation_id) if entry.operation_id else ""
        prefix = table_key(operation) if operation else CALL_SCOPE
        row = {
            "PartitionKey": audit_partition(entry.call_id),
            "RowKey": f"{prefix}~{_time_key(now)}~{uuid.uuid4().hex[:12]}",
            "Kind": ROW_KIND_AUDIT,
            "CallId": normalize_id(entry.call_id),
            "OperationId": operation,
            Column.ACTION: entry.action.value,
            Column.ROLE: entry.role,
            Column.VIA: entry.caller.via,
            Column.OBJECT_ID: entry.caller.object_id,
            Column.APP_ID: entry.caller.app_id,
            Column.TENANT_ID: entry.caller.tenant_id,
            Column.OUTCOME: entry.outcome,
            Column.READ_URL_ISSUED: entry.read_url_issued,
            Column.RECORDED_AT: now,
        }
        await self._table.create_entity({k: v for k, v in row.items() if v is not None})

    async def for_recording(
        self, call_id: str, operation_id: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """The recording's audit, oldest first, with the call-wide actions; and whether cut."""
        partition = audit_partition(call_id)
        operation = normalize_id(operation_id)
        prefixes = (table_key(operation), CALL_SCOPE)
        entries: list[dict[str, Any]] = []
        truncated = False
        for prefix in prefixes:
            async for entity in self._table.query_entities(
                "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                parameters={"pk": partition, "low": f"{prefix}~", "high": f"{prefix}~~"},
                results_per_page=min(MAX_ENTRIES, 1000),
            ):
                # A raw id that merely starts like this one shares the key range.
                if entity.get("OperationId") not in (operation, ""):
                    continue
                if len(entries) >= MAX_ENTRIES:
                    truncated = True
                    break
                entries.append(to_json(entity))
        entries.sort(key=lambda item: str(item["at"]))
        return entries, truncated

    async def sweep(self, recorded_before: datetime, *, limit: int) -> int:
        """Delete audit rows recorded before ``recorded_before``, at most ``limit``; how many."""
        from azure.core.exceptions import ResourceNotFoundError

        stale = []
        async for entity in self._table.query_entities(
            "Kind eq @kind and RecordedAt lt @cutoff",
            parameters={"kind": ROW_KIND_AUDIT, "cutoff": recorded_before},
            results_per_page=min(limit, 1000),
        ):
            stale.append(entity)
            if len(stale) >= limit:
                break
        removed = 0
        for entity in stale:
            try:
                await self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])
            except ResourceNotFoundError:
                continue  # another instance's cleanup took it first
            removed += 1
        return removed


def to_json(entity: dict[str, Any]) -> dict[str, Any]:
    """An audit row as the audit route shows it."""
    at = entity.get(Column.RECORDED_AT)
    body: dict[str, Any] = {
        "at": at.isoformat() if isinstance(at, datetime) else at,
        "action": entity.get(Column.ACTION),
        "callId": entity.get("CallId"),
        "operationId": entity.get("OperationId") or None,
        "role": entity.get(Column.ROLE),
        "outcome": entity.get(Column.OUTCOME),
        "caller": {
            "via": entity.get(Column.VIA),
            "objectId": entity.get(Column.OBJECT_ID),
            "appId": entity.get(Column.APP_ID),
            "tenantId": entity.get(Column.TENANT_ID),
        },
    }
    if Column.READ_URL_ISSUED in entity:
        body["readUrlIssued"] = entity[Column.READ_URL_ISSUED]
    return body


def log_audit(entry: AuditEntry, *, recorded: bool) -> None:
    """The action's structured log event: ids and outcome, never the token."""
    log_event(
        log,
        "audit",
        level=logging.INFO if recorded else logging.ERROR,
        action=entry.action.value,
        call_id=entry.call_id,
        operation_id=entry.operation_id,
        role=entry.role,
        outcome=entry.outcome,
        read_url_issued=entry.read_url_issued,
        recorded=recorded,
        **entry.caller.log_fields(),
    )
