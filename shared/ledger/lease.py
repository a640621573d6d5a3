"""The download lease: who is downloading a recording, held on the operation's own ledger row.

The same job can reach two instances at once (a duplicate notification, a redelivery while the
first attempt still runs). Instances share nothing in memory, so the row says who holds the
download (``DownloadHolder``) and until when (``DownloadLeaseUntil``). Taking the lease is the
``downloading`` write itself: one conditional write, no claim row to create and delete. The
lease expires so that an instance that dies mid-download does not block the recording forever;
anyone may take over an expired one, ETag-guarded, so exactly one taker wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.ledger.rows import (
    MAX_CONFLICT_RETRIES,
    RANK,
    STAMP,
    Column,
    OperationStatus,
    Transition,
    etag_of,
    new_operation_row,
    table_key,
    to_record,
)

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

# Nothing is left to download once a row is here (stored, expired, erased).
_SETTLED_RANK = RANK[OperationStatus.STORED]
# A row at or past ``downloading`` was downloaded before: its blob may exist already.
_TRIED_RANK = RANK[OperationStatus.DOWNLOADING]


@dataclass(frozen=True)
class Lease:
    """The outcome of trying to take a download lease.

    ``row`` is the row after this write (when ``held``) or as read (when not: another holder's
    lease runs, or the row is settled). ``tried_before``: the row shows an earlier download,
    whose blob may have been committed just before that holder stopped.
    """

    row: Transition
    held: bool
    tried_before: bool = False

    @property
    def settled(self) -> bool:
        """Nothing is left to download (stored, expired, erased): waiting is over."""
        return RANK[self.row.record.status] >= _SETTLED_RANK


def lease_columns(holder: str, until: datetime) -> dict[str, Any]:
    return {Column.DOWNLOAD_HOLDER: holder, Column.DOWNLOAD_LEASE_UNTIL: until}


def _held_by_another(entity: Any, holder: str, now: datetime) -> bool:
    current = entity.get(Column.DOWNLOAD_HOLDER) or ""
    until = entity.get(Column.DOWNLOAD_LEASE_UNTIL)
    return current not in ("", holder) and isinstance(until, datetime) and until > now


async def take_lease(
    table: TableClient,
    call_id: str,
    operation_id: str,
    *,
    holder: str,
    until: datetime,
    now: datetime,
    create_first: bool,
    fields: dict[str, Any],
) -> Lease:
    """Write ``downloading`` with ``fields`` and the lease, unless that is not this holder's to do.

    ``create_first``: no row is expected (a completion the app did not start itself), so the
    write is a blind create and a new recording costs one request; otherwise the row is read
    first. Either guess is only a cost: both orders end in the same row.
    """
    from azure.core import MatchConditions
    from azure.core.exceptions import (
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )
    from azure.data.tables import UpdateMode

    partition, row = table_key(call_id), table_key(operation_id)
    status = OperationStatus.DOWNLOADING
    extra = {name: value for name, value in fields.items() if value is not None}
    lease = lease_columns(holder, until)
    missing = create_first
    for _ in range(MAX_CONFLICT_RETRIES):
        if missing:
            entity = new_operation_row(call_id, operation_id, status, now, **extra, **lease)
            try:
                created = await table.create_entity(entity)
            except ResourceExistsError:
                missing = False  # someone created it first: read theirs
            else:
                return Lease(
                    Transition(to_record(entity), changed=True, etag=etag_of(created)), True
                )
        try:
            current = await table.get_entity(partition, row)
        except ResourceNotFoundError:
            missing = True
            continue
        previous = OperationStatus(current["Status"])
        as_read = Transition(to_record(current), changed=False, etag=current.metadata["etag"])
        if RANK[previous] >= _SETTLED_RANK or _held_by_another(current, holder, now):
            return Lease(as_read, held=False)
        update: dict[str, Any] = {"PartitionKey": partition, "RowKey": row, "UpdatedAt": now}
        if RANK[status] > RANK[previous]:
            update |= {"Status": status.value, STAMP[status]: now, **extra}
        update |= lease
        try:
            updated = await table.update_entity(
                update,
                mode=UpdateMode.MERGE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            continue  # written meanwhile: read again
        merged = to_record({**dict(current), **update})
        return Lease(
            Transition(merged, changed="Status" in update, etag=etag_of(updated)),
            held=True,
            tried_before=RANK[previous] >= _TRIED_RANK,
        )
    raise RuntimeError(
        f"ledger row {partition}/{row} kept changing under concurrent writers; giving up"
    )


async def write_lease(
    table: TableClient, known: Transition, holder: str, until: datetime | None
) -> Transition | None:
    """Renew (``until``) or give back (``None``) a lease this holder has; the row after it.

    Guarded by the ETag of this holder's last write. If someone else wrote the row since (an
    erasure, say), the row is read again: still ours, the write is repeated on the new ETag;
    taken over by another holder, None (renewing) or nothing to give back.
    """
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    partition = table_key(known.record.call_id)
    row = table_key(known.record.operation_id)
    columns = lease_columns(holder, until) if until is not None else {Column.DOWNLOAD_HOLDER: ""}
    etag, fields = known.etag, dict(known.record.fields)
    for _ in range(MAX_CONFLICT_RETRIES):
        if etag is not None:
            update = {"PartitionKey": partition, "RowKey": row, **columns}
            try:
                updated = await table.update_entity(
                    update,
                    mode=UpdateMode.MERGE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceNotFoundError:
                return None
            except ResourceModifiedError:
                pass
            else:
                return Transition(
                    to_record({**fields, **update}), changed=False, etag=etag_of(updated)
                )
        try:
            current = await table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        if (current.get(Column.DOWNLOAD_HOLDER) or "") != holder:
            return None  # taken over (our lease had run out): the row is not ours to write
        etag, fields = current.metadata["etag"], dict(current)
    return None
