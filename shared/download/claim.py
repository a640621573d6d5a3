"""The download claim: at most one instance downloads a given recording at a time.

The same job can reach two instances at once (a duplicate notification, a redelivery while the
first attempt still runs). Instances share nothing in memory, so the claim is a Table Storage row
beside the operation's ledger row that only one writer can create. Unlike the ledger's
once-per-call claims it expires: an instance that dies mid-download must not block the recording
forever, so the holder renews it while it streams and anyone may take over an expired one
(ETag-guarded, so exactly one taker wins).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.ledger import ROW_KIND_CLAIM, claim_partition, table_key, utc_now

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

CLAIM_TIME_TO_LIVE = timedelta(seconds=20)
# Renew well before expiry: a renewal is one small table write per few staged blocks.
CLAIM_RENEW_AFTER = timedelta(seconds=5)


def _row_key(operation_id: str) -> str:
    return f"download-{table_key(operation_id)}"


class ClaimLost(Exception):
    """Another instance took over this claim (it had expired): this attempt must stop."""


class DownloadClaims:
    """Acquire, renew and release download claims. Takes its table client and clock."""

    def __init__(
        self,
        table: TableClient,
        *,
        clock: Callable[[], datetime] = utc_now,
        time_to_live: timedelta = CLAIM_TIME_TO_LIVE,
    ) -> None:
        self._table = table
        self._clock = clock
        self._ttl = time_to_live

    def new_holder(self) -> DownloadClaim:
        return DownloadClaim(self, uuid.uuid4().hex)

    async def _acquire(self, call_id: str, operation_id: str, holder: str) -> str | None:
        """The claim row's ETag once ``holder`` holds it; None when another holder does."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import UpdateMode

        now = self._clock()
        entity: dict[str, Any] = {
            "PartitionKey": claim_partition(call_id),
            "RowKey": _row_key(operation_id),
            "Kind": ROW_KIND_CLAIM,
            "CallId": call_id,
            "OperationId": operation_id,
            "Holder": holder,
            "CreatedAt": now,
            "UpdatedAt": now,
            "ExpiresAt": now + self._ttl,
        }
        try:
            created = await self._table.create_entity(entity)
            return str(created.get("etag") or "") or "*"
        except ResourceExistsError:
            pass
        try:
            current = await self._table.get_entity(entity["PartitionKey"], entity["RowKey"])
        except ResourceNotFoundError:
            return None  # released a moment ago; the caller polls again
        if current.get("Holder") != holder and current["ExpiresAt"] > now:
            return None
        try:
            updated = await self._table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return str(updated.get("etag") or "") or "*"

    async def _renew(self, call_id: str, operation_id: str, holder: str) -> str:
        etag = await self._acquire(call_id, operation_id, holder)
        if etag is None:
            raise ClaimLost
        return etag

    async def _release(self, call_id: str, operation_id: str, holder: str, etag: str) -> None:
        """Delete the claim row if it is still ours as last written (its ETag): no read first.

        A claim taken over after ours expired has another ETag: the delete is refused, and the
        new holder's row stays.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if etag == "*":  # the service gave no ETag (not seen): check the holder first
            try:
                current = await self._table.get_entity(
                    claim_partition(call_id), _row_key(operation_id)
                )
            except ResourceNotFoundError:
                return
            if current.get("Holder") != holder:
                return
            etag = str(current.metadata["etag"])
        try:
            await self._table.delete_entity(
                claim_partition(call_id),
                _row_key(operation_id),
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return


class DownloadClaim:
    """One attempt's hold on one recording."""

    def __init__(self, claims: DownloadClaims, holder: str) -> None:
        self._claims = claims
        self._holder = holder
        self._key: tuple[str, str] | None = None
        self._etag: str | None = None
        self._renewed_at: datetime | None = None

    async def try_acquire(self, call_id: str, operation_id: str) -> bool:
        etag = await self._claims._acquire(call_id, operation_id, self._holder)
        if etag is not None:
            self._key = (call_id, operation_id)
            self._etag = etag
            self._renewed_at = self._claims._clock()
        return etag is not None

    async def keep_alive(self) -> None:
        """Renew the claim if it is due; raises :class:`ClaimLost` if someone took it over."""
        if self._key is None or self._renewed_at is None:
            return
        now = self._claims._clock()
        if now - self._renewed_at < CLAIM_RENEW_AFTER:
            return
        self._etag = await self._claims._renew(*self._key, self._holder)
        self._renewed_at = now

    async def release(self) -> None:
        if self._key is not None and self._etag is not None:
            key, self._key = self._key, None
            await self._claims._release(*key, self._holder, self._etag)
