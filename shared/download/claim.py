"""The download claim: at most one instance downloads a given recording at a time.

The claim is the operation row's download lease (shared/ledger/lease.py): taking it is the
``downloading`` write, renewing it is a small merge while the body streams, and the ``stored``
(or ``failed``) write gives it back. One delivery holds one :class:`DownloadClaim`, which carries
the row's latest ETag so that none of these writes reads the row first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.clock import utc_now
from shared.ledger import Column, Lease, Transition

if TYPE_CHECKING:
    from shared.jobs import DownloadJob
    from shared.ledger import OperationLedger

CLAIM_TIME_TO_LIVE = timedelta(seconds=20)
# Renew well before expiry: a renewal is one small table write per few staged blocks.
CLAIM_RENEW_AFTER = timedelta(seconds=5)


class ClaimLost(Exception):
    """Another instance took over this claim (it had expired): this attempt must stop."""


class DownloadClaim:
    """One delivery's hold on one recording. Takes the ledger and the clock."""

    def __init__(
        self,
        ledger: OperationLedger,
        *,
        clock: Callable[[], datetime] = utc_now,
        time_to_live: timedelta = CLAIM_TIME_TO_LIVE,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._ttl = time_to_live
        self.holder = uuid.uuid4().hex
        # The row after this holder's last write (or as last read), with its ETag.
        self.row: Transition | None = None
        self._renewed_at: datetime | None = None

    @property
    def held(self) -> bool:
        return self.row is not None and self.row.record.get(Column.DOWNLOAD_HOLDER) == self.holder

    @property
    def held_row(self) -> Transition | None:
        """The row as this holder last wrote it, while it holds the lease (else None)."""
        return self.row if self.held else None

    async def take(self, job: DownloadJob, *, blob_name: str, create_first: bool) -> Lease:
        """Write ``downloading`` with this holder's lease, or learn why not (the row says)."""
        now = self._clock()
        lease = await self._ledger.mark_downloading(
            job,
            blob_name=blob_name,
            holder=self.holder,
            now=now,
            lease_until=now + self._ttl,
            create_first=create_first,
        )
        self.row = lease.row
        if lease.held:
            self._renewed_at = now
        return lease

    async def keep_alive(self) -> None:
        """Renew the lease if it is due; raises :class:`ClaimLost` if someone took it over."""
        if self.row is None or self._renewed_at is None:
            return
        now = self._clock()
        if now - self._renewed_at < CLAIM_RENEW_AFTER:
            return
        renewed = await self._ledger.renew_download_lease(self.row, self.holder, now + self._ttl)
        if renewed is None:
            self._renewed_at = None
            raise ClaimLost
        self.row, self._renewed_at = renewed, now

    def settled(self, row: Transition) -> None:
        """While holding the lease, this holder wrote ``row`` (``stored``, ``failed``): it
        replaces the last write (the lease goes with it, or :meth:`release` gives it back)."""
        if self.held:
            self.row = row

    async def release(self) -> None:
        """Give the lease back unless the last write already did (or it was lost)."""
        if self.row is not None and self._renewed_at is not None and self.held:
            row, self._renewed_at = self.row, None
            await self._ledger.release_download_lease(row, self.holder)
