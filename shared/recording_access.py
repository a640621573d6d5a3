"""Short-lived, read-only URLs for stored recordings, and the status API's view of an operation.

With an account key (a connection string: Azurite locally) the SAS is signed with the key. With
identity-based storage (Azure) there is no key: the app asks Storage for a user delegation key
with its managed identity and signs with that, so the URL is as narrow as the identity allows and
is revoked with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.blob_layout import transcript_blob_name
from shared.clock import as_utc
from shared.ledger import TRANSCRIBED, Column, OperationRecord, OperationStatus
from shared.logevents import log_event

if TYPE_CHECKING:
    from azure.storage.blob import UserDelegationKey
    from azure.storage.blob.aio import BlobServiceClient

log = logging.getLogger(__name__)

# Clients and Storage disagree on the time by a little; a SAS starting "now" can be refused.
CLOCK_SKEW = timedelta(minutes=5)
# A delegation key serves many URLs; renew it well before it lapses (Storage allows 7 days).
DELEGATION_KEY_LIFETIME = timedelta(hours=6)
DELEGATION_KEY_MIN_REMAINING = timedelta(hours=1)
# The most of a transcript the status API reads: TRANSCRIPTION_MAX_RESPONSE_BYTES' default.
TRANSCRIPT_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ReadUrl:
    url: str
    expires_on: datetime


@dataclass
class _CachedKey:
    key: UserDelegationKey
    expires_on: datetime


# Per account URL. Only an optimisation: any instance can fetch its own key at any time.
_delegation_keys: dict[str, _CachedKey] = {}


def column_time(value: Any) -> datetime | None:
    """A ledger time column (datetime, or ISO text from an older writer) as aware UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return as_utc(value)


async def _delegation_key(blob_service: BlobServiceClient, now: datetime) -> UserDelegationKey:
    # Two requests racing here both fetch a key; harmless, so no lock (locks bind to one loop).
    cached = _delegation_keys.get(blob_service.url)
    if cached is not None and cached.expires_on - now > DELEGATION_KEY_MIN_REMAINING:
        return cached.key
    expires_on = now + DELEGATION_KEY_LIFETIME
    key = await blob_service.get_user_delegation_key(now - CLOCK_SKEW, expires_on)
    _delegation_keys[blob_service.url] = _CachedKey(key, expires_on)
    return key


async def read_url(
    blob_service: BlobServiceClient,
    container_name: str,
    blob_name: str,
    *,
    now: datetime,
    ttl: timedelta,
    not_after: datetime | None = None,
) -> ReadUrl | None:
    """A read-only SAS URL for one blob, valid ``ttl`` from ``now`` and never past ``not_after``.

    None when ``not_after`` has already passed (the recording's retention is over).
    """
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    expires_on = now + ttl
    if not_after is not None:
        if not_after <= now:
            return None
        expires_on = min(expires_on, not_after)
    blob = blob_service.get_blob_client(container_name, blob_name)
    signing: dict[str, Any] = {}
    account_key = getattr(blob_service.credential, "account_key", None)
    if account_key:
        signing["account_key"] = account_key
    else:
        signing["user_delegation_key"] = await _delegation_key(blob_service, now)
    token = generate_blob_sas(
        account_name=str(blob_service.account_name),
        container_name=container_name,
        blob_name=blob_name,
        permission=BlobSasPermissions(read=True),
        start=now - CLOCK_SKEW,
        expiry=expires_on,
        protocol="https" if blob.url.startswith("https://") else None,
        **signing,
    )
    return ReadUrl(url=f"{blob.url}?{token}", expires_on=expires_on)


async def recording_url(
    record: OperationRecord,
    *,
    blob_service: BlobServiceClient,
    container_name: str,
    now: datetime,
    ttl: timedelta,
) -> ReadUrl | None:
    """A read URL of the row's recording, never past its ``ExpiresAt``; None without a blob."""
    if not record.blob_name:
        return None
    return await read_url(
        blob_service,
        container_name,
        record.blob_name,
        now=now,
        ttl=ttl,
        not_after=column_time(record.get(Column.EXPIRES_AT)),
    )


async def operation_status(
    record: OperationRecord,
    *,
    blob_service: BlobServiceClient,
    container_name: str,
    now: datetime,
    url_ttl: timedelta,
    transcript_max_bytes: int = TRANSCRIPT_MAX_BYTES,
) -> dict[str, Any]:
    """The status API body: the ledger row, plus a read URL while the recording is stored.

    ``transcript_max_bytes`` (``TRANSCRIPTION_MAX_RESPONSE_BYTES``): the most of the transcript
    read, so the body is bounded whatever the blob holds.
    """
    body = record.to_json()
    if record.status is not OperationStatus.STORED or not record.blob_name:
        return body
    if record.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIBED:
        text = await transcript_text(
            blob_service, container_name, record.blob_name, max_bytes=transcript_max_bytes
        )
        if text is not None:
            body["transcript"] = text
    if record.get(Column.AUDIO_DELETED_AT):
        return body  # TRANSCRIPTION_KEEP_AUDIO=false: only the transcript was kept
    url = await recording_url(
        record, blob_service=blob_service, container_name=container_name, now=now, ttl=url_ttl
    )
    if url is not None:
        body["recordingUrl"] = url.url
        body["recordingUrlExpiresAt"] = url.expires_on.isoformat()
    return body


async def transcript_text(
    blob_service: BlobServiceClient,
    container_name: str,
    recording_blob_name: str,
    *,
    max_bytes: int = TRANSCRIPT_MAX_BYTES,
) -> str | None:
    """The transcript's text while its blob exists (None once deleted, unreadable or larger than
    ``max_bytes``). One range read of at most ``max_bytes``: the worker never writes a larger
    transcript, and one written another way is not read whole."""
    import json

    from azure.core.exceptions import ResourceNotFoundError

    blob = blob_service.get_blob_client(container_name, transcript_blob_name(recording_blob_name))
    try:
        # One byte more than allowed tells a transcript of exactly max_bytes from a larger one.
        downloader = await blob.download_blob(offset=0, length=max_bytes + 1)
        data = await downloader.readall()
    except ResourceNotFoundError:
        return None
    if len(data) > max_bytes:
        log_event(
            log,
            "status: transcript larger than TRANSCRIPTION_MAX_RESPONSE_BYTES; not shown",
            level=logging.WARNING,
            blob=blob.blob_name,
        )
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        log_event(log, "status: transcript is not JSON", level=logging.WARNING, blob=blob.blob_name)
        return None
    text = document.get("text") if isinstance(document, dict) else None
    return text if isinstance(text, str) else None
