"""The download lease: at most one instance downloads a given recording at a time.

The same job can reach two instances at once (a duplicate notification, a redelivery while the
first attempt still runs). Instances share nothing in memory, so the operation's own ledger row
says who holds the download (``DownloadHolder``) and until when (``DownloadLeaseUntil``). Taking
the lease is the ``downloading`` write itself (one conditional write, with the completion's
facts, in one transaction with the call's erasure guard: :mod:`shared.erasure`), renewing it is a small merge while the body streams, and the ``stored`` (or ``failed``)
write gives it back. The lease expires so that an instance that dies mid-download does not block
the recording forever; anyone may take over an expired one, ETag-guarded, so exactly one taker
wins. One delivery holds one :class:`DownloadLease`, which carries the row's latest ETag so that
none of these writes reads the row first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.clock import utc_now
from shared.ledger.identity import cleared_identity
from shared.ledger.rows import (
    NOTHING_LEFT_TO_DOWNLOAD,
    RANK,
    STAMP,
    Column,
    OperationStatus,
    Transition,
    job_result,
    new_operation_row,
    result_columns,
)
from shared.ledger.table import Keep, LedgerConflict, Seen, Write

if TYPE_CHECKING:
    from shared.jobs import DownloadJob
    from shared.ledger.table import LedgerTable

LEASE_TIME_TO_LIVE = timedelta(seconds=20)
# Renew well before expiry: a renewal is one small table write per few staged blocks.
LEASE_RENEW_AFTER = timedelta(seconds=5)
# A row at or past ``downloading`` was downloaded before: its blob may exist already.
_TRIED_RANK = RANK[OperationStatus.DOWNLOADING]


class LeaseLost(Exception):
    """Another instance took over this lease (it had expired): this attempt must stop."""


@dataclass(frozen=True)
class LeaseAttempt:
    """What trying to take the download lease found.

    ``row`` is the row after this write (when ``held``) or as read (when not: another holder's
    lease runs, or there is nothing left to download). ``tried_before``: the row shows an earlier
    download, whose blob may have been committed just before that holder stopped.
    """

    row: Transition
    held: bool
    tried_before: bool = False

    @property
    def nothing_left(self) -> bool:
        """Nothing is left to download (stored, expired, erased): waiting is over."""
        return self.row.record.status in NOTHING_LEFT_TO_DOWNLOAD


def _lease_columns(holder: str, until: datetime) -> dict[str, Any]:
    return {Column.DOWNLOAD_HOLDER: holder, Column.DOWNLOAD_LEASE_UNTIL: until}


def _held_by_another(fields: Mapping[str, Any], holder: str, now: datetime) -> bool:
    current = fields.get(Column.DOWNLOAD_HOLDER) or ""
    until = fields.get(Column.DOWNLOAD_LEASE_UNTIL)
    return current not in ("", holder) and isinstance(until, datetime) and until > now


class DownloadLease:
    """One delivery's hold on one recording. Takes the ledger and the clock.

    Its ``now`` is the holder's clock, which lease times (its own, other holders') are compared on.
    """

    def __init__(
        self,
        ledger: LedgerTable,
        *,
        clock: Callable[[], datetime] = utc_now,
        time_to_live: timedelta = LEASE_TIME_TO_LIVE,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._ttl = time_to_live
        self.holder = uuid.uuid4().hex
        # The row after this holder's last write (or as last read), with its ETag.
        self.row: Transition | None = None
        self._renewed_at: datetime | None = None
        # This delivery's index row (shared/ledger/index.py), written once.
        self._indexed: str | None = None

    @property
    def held(self) -> bool:
        return self.row is not None and self.row.record.get(Column.DOWNLOAD_HOLDER) == self.holder

    @property
    def held_row(self) -> Transition | None:
        """The row as this holder last wrote it, while it holds the lease (else None)."""
        return self.row if self.held else None

    async def take(self, job: DownloadJob, *, blob_name: str, create_first: bool) -> LeaseAttempt:
        """Write ``downloading`` with this holder's lease, or learn why not (the row says).

        The write records the completion's facts too (when it arrived, its result, its
        clientContext), so the webhook's hot path needs no ledger round trip. ``create_first``:
        no row is expected (a completion the app did not start itself), so the write is a blind
        create and a new recording costs one request; otherwise the row is read first. Either
        guess is only a cost: both orders end in the same row.

        The write is guarded by the call's erasure (see :meth:`LedgerTable._rewrite`): it goes in
        one transaction with the call's guard row, so a call erased before it, even one whose
        erasure found no row of this operation, ends this delivery with the row ``erased`` and
        nothing downloaded.
        """
        now = self._clock()
        status = OperationStatus.DOWNLOADING
        if self._indexed is None:
            # The recordings list's index row first: a crash before the row below leaves an
            # index row pointing to nothing, which the list skips and the cleanup sweeps.
            self._indexed = await self._ledger.index_recording(
                job.call_id, job.operation_id, job.received_at or now
            )
        facts = {
            Column.INDEX_KEY: self._indexed,
            Column.BLOB_NAME: blob_name,
            Column.COMPLETED_AT: job.received_at,
            Column.CLIENT_CONTEXT: job.client_context,
            Column.TENANT_ID: job.tenant_id,
            **result_columns(job_result(job)),
        }
        extra = {name: value for name, value in facts.items() if value is not None}
        lease = _lease_columns(self.holder, now + self._ttl)

        def decide(current: Seen | None) -> Keep[LeaseAttempt] | Write[LeaseAttempt]:
            if current is None:
                row = new_operation_row(
                    job.call_id, job.operation_id, status, now, **extra, **lease
                )
                return Write(row, lambda after: LeaseAttempt(after.transition(changed=True), True))
            previous = current.record.status
            if previous in NOTHING_LEFT_TO_DOWNLOAD or _held_by_another(
                current.fields, self.holder, now
            ):
                return Keep(LeaseAttempt(current.transition(changed=False), held=False))
            forward = RANK[status] > RANK[previous]
            columns: dict[str, Any] = {"UpdatedAt": now}
            if forward:
                columns |= {"Status": status.value, STAMP[status]: now, **extra}
            columns |= lease
            return Write(
                columns,
                lambda after: LeaseAttempt(
                    after.transition(changed=forward),
                    held=True,
                    tried_before=RANK[previous] >= _TRIED_RANK,
                ),
            )

        def decide_erased(current: Seen | None) -> Keep[LeaseAttempt] | Write[LeaseAttempt]:
            # The call was erased after this completion was accepted: nothing is downloaded, and
            # the row says erased with the ids and the time alone (no completion facts).
            def then(after: Seen) -> LeaseAttempt:
                return LeaseAttempt(after.transition(changed=True), held=False)

            erased = OperationStatus.ERASED
            if current is None:
                return Write(new_operation_row(job.call_id, job.operation_id, erased, now), then)
            if current.record.status is erased:
                return Keep(LeaseAttempt(current.transition(changed=False), held=False))
            columns = {"Status": erased.value, "UpdatedAt": now, STAMP[erased]: now}
            return Write({**columns, **cleared_identity(current.fields)}, then)

        attempt = await self._ledger._rewrite(
            job.call_id, job.operation_id, decide, absent=create_first, erased=decide_erased
        )
        self.row = attempt.row
        if attempt.held:
            self._renewed_at = now
        return attempt

    async def keep_alive(self) -> None:
        """Renew the lease if it is due; raises :class:`LeaseLost` if someone took it over."""
        if self.row is None or self._renewed_at is None:
            return
        now = self._clock()
        if now - self._renewed_at < LEASE_RENEW_AFTER:
            return
        renewed = await self._write(self.row, _lease_columns(self.holder, now + self._ttl))
        if renewed is None:
            self._renewed_at = None
            raise LeaseLost
        self.row, self._renewed_at = renewed, now

    def wrote(self, row: Transition) -> None:
        """While holding the lease, this holder wrote ``row`` (``stored``, ``failed``): it
        replaces the last write (the lease goes with it, or :meth:`release` gives it back)."""
        if self.held:
            self.row = row

    async def release(self) -> None:
        """Give the lease back early (the message goes back to the queue), unless the last
        write already did (or it was lost)."""
        if self.row is not None and self._renewed_at is not None and self.held:
            row, self._renewed_at = self.row, None
            await self._write(row, {Column.DOWNLOAD_HOLDER: ""})

    async def _write(self, known: Transition, columns: Mapping[str, Any]) -> Transition | None:
        """Merge lease ``columns`` into the row this holder last wrote; the row after it.

        Guarded by the ETag of that write. If someone else wrote the row since (an erasure,
        say), it is read again: still ours, the write is repeated on the new ETag; taken over
        by another holder (or gone), None.
        """

        def decide(current: Seen | None) -> Keep[Transition | None] | Write[Transition | None]:
            if current is None or (current.fields.get(Column.DOWNLOAD_HOLDER) or "") != self.holder:
                return Keep(None)  # taken over (our lease had run out): not ours to write
            return Write(columns, lambda after: after.transition(changed=False))

        record = known.record
        seen = Seen(record.fields, known.etag) if known.etag is not None else None
        try:
            return await self._ledger._rewrite(
                record.call_id, record.operation_id, decide, known=seen
            )
        except LedgerConflict:
            return None  # it kept changing under us: as good as lost
