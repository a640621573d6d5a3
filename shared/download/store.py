"""Writing a recording into the ``recordings`` container: name, blocks, metadata, expiry tag.

A body up to one block (4 MiB: every recordResponse recording) is held in memory and written in
one conditional Put Blob once it has arrived intact; a larger one is staged as blocks while it
streams and its block list committed at the end. Either way a reader (the status API, a user)
never sees a partial blob, and memory holds at most one block whatever the recording's size.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from shared.graph.ids import normalize_id
from shared.ledger import Column, OperationRecord

if TYPE_CHECKING:
    from azure.storage.blob import ContentSettings
    from azure.storage.blob.aio import BlobClient, ContainerClient

BLOCK_SIZE = 4 * 1024 * 1024
OCTET_STREAM = "application/octet-stream"
WAV = "audio/wav"
# The index tag the cleanup queries (``"expiresAt" < '<now>'``): fixed-width UTC, so string order
# is time order.
EXPIRES_AT_TAG = "expiresAt"
EXPIRES_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# A recording's transcript (opt-in) is ``<recording blob name>.transcript.json``.
TRANSCRIPT_SUFFIX = ".transcript.json"
# Blob index tag values allow letters, digits, space and + - . / : = _ only.
_TAG_VALUE = re.compile(r"[A-Za-z0-9 +\-./:=_]{0,256}")


def blob_name_for(call_id: str, operation_id: str) -> str:
    """Where a recording is stored: one name per operation, so a duplicate job finds it.

    Ids are put in canonical form (Graph writes GUIDs with and without hyphens) and anything that
    is not a plain id character is percent-encoded, so an id cannot add path segments.
    """
    return f"{_segment(call_id)}/{_segment(operation_id)}.wav"


def transcript_blob_name(recording_blob_name: str) -> str:
    """Where a recording's transcript is stored: beside it, deleted with it."""
    return recording_blob_name + TRANSCRIPT_SUFFIX


def ids_from_blob_name(name: str) -> tuple[str, str] | None:
    """``(call_id, operation_id)`` from a name made by :func:`blob_name_for` (or its
    :func:`transcript_blob_name`), or None."""
    call_part, slash, rest = name.removesuffix(TRANSCRIPT_SUFFIX).partition("/")
    operation_part = rest.rsplit(".", 1)[0] if "." in rest else rest
    if not slash or not call_part or not operation_part or "/" in operation_part:
        return None
    return unquote(call_part), unquote(operation_part)


def _segment(value: str) -> str:
    return quote(normalize_id(value), safe="-_")


def format_tag_time(moment: datetime, *, round_up: bool = True) -> str:
    """A UTC time as a fixed-width, sortable ``expiresAt`` tag value, in whole seconds.

    An expiry is rounded up and "now" in a query rounded down: either way a recording is never
    deleted before its time.
    """
    moment = moment.astimezone(UTC)
    whole = moment.replace(microsecond=0)
    if round_up and whole < moment:
        whole += timedelta(seconds=1)
    return whole.strftime(EXPIRES_AT_FORMAT)


def expiry_for(downloaded_at: datetime, retention_minutes: float) -> datetime:
    """When a recording downloaded at ``downloaded_at`` must be gone (whole seconds, rounded up)."""
    moment = downloaded_at + timedelta(minutes=retention_minutes)
    return datetime.fromtimestamp(math.ceil(moment.timestamp()), tz=UTC)


def content_type_for(declared: str | None, first_bytes: bytes) -> str:
    """The declared content type, or one sniffed from the bytes when Graph says octet-stream."""
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if media_type and media_type != OCTET_STREAM:
        return declared.strip() if declared else media_type
    if len(first_bytes) >= 12 and first_bytes[:4] == b"RIFF" and first_bytes[8:12] == b"WAVE":
        return WAV
    return OCTET_STREAM


def _ascii(value: str) -> str:
    # Metadata travels as HTTP headers: ASCII only. Percent-encoding keeps it readable and exact.
    return quote(value, safe=" -_.:/+=@")


@dataclass(frozen=True)
class RecordingFacts:
    """What is known about a stored recording; becomes blob metadata, tags and ledger columns."""

    call_id: str
    operation_id: str
    client_context: str | None
    result_code: int | None
    result_subcode: int | None
    size_bytes: int
    sha256: str
    content_type: str
    downloaded_at: datetime
    expires_at: datetime

    def metadata(self) -> dict[str, str]:
        values = {
            "callid": self.call_id,
            "operationid": self.operation_id,
            "clientcontext": self.client_context,
            "resultcode": None if self.result_code is None else str(self.result_code),
            "resultsubcode": None if self.result_subcode is None else str(self.result_subcode),
            "sizebytes": str(self.size_bytes),
            "sha256": self.sha256,
            "downloadedat": self.downloaded_at.isoformat(),
            "expiresat": format_tag_time(self.expires_at),
        }
        return {name: _ascii(value) for name, value in values.items() if value is not None}

    def tags(self) -> dict[str, str]:
        return _recording_tags(format_tag_time(self.expires_at), self.call_id, self.operation_id)


def _recording_tags(expires_at: str, call_id: str, operation_id: str) -> dict[str, str]:
    tags = {EXPIRES_AT_TAG: expires_at}
    # Ids are GUIDs in practice; an id a tag cannot hold is simply left out of the tags.
    for name, value in (("callId", call_id), ("operationId", operation_id)):
        if _TAG_VALUE.fullmatch(value):
            tags[name] = value
    return tags


def tags_from_metadata(metadata: Mapping[str, str]) -> dict[str, str] | None:
    """The index tags a recording was written with, rebuilt from its metadata (no tags read).

    None when the metadata does not carry them all (a blob this app did not write).
    """
    values = {
        name: unquote(metadata.get(name) or "") for name in ("expiresat", "callid", "operationid")
    }
    if not all(values.values()):
        return None
    return _recording_tags(values["expiresat"], values["callid"], values["operationid"])


class RecordingTooLarge(Exception):
    """The body grew past the configured cap."""


class BlockWriter:
    """Stages a streamed body as blocks, hashing and counting it; commits it all or nothing.

    Block ids carry a per-attempt prefix, so two attempts that overlap (a retry after a stall,
    another instance) never commit each other's blocks: uncommitted blocks of an abandoned attempt
    are discarded by the service.
    """

    def __init__(self, blob: BlobClient, *, max_bytes: int, block_size: int = BLOCK_SIZE) -> None:
        self._blob = blob
        self._max_bytes = max_bytes
        self._block_size = block_size
        self._attempt = uuid.uuid4().hex
        self._buffer = bytearray()
        self._block_ids: list[str] = []
        self._sha256 = hashlib.sha256()
        self._head = b""
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def head(self) -> bytes:
        """The first bytes of the body (for sniffing its type)."""
        return self._head

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise RecordingTooLarge
        if len(self._head) < 16:
            self._head = (self._head + chunk)[:16]
        self._sha256.update(chunk)
        self._buffer += chunk
        while len(self._buffer) >= self._block_size:
            # One copy of one block (a bytearray slice would make two).
            with memoryview(self._buffer) as view:
                block = bytes(view[: self._block_size])
            del self._buffer[: self._block_size]
            await self._stage(block)
            del block

    async def _stage(self, data: bytes) -> None:
        # Same length for every id of a blob, as the service requires.
        block_id = f"{self._attempt}-{len(self._block_ids):06d}"
        await self._blob.stage_block(block_id, data, length=len(data))
        self._block_ids.append(block_id)

    async def commit(self, facts: RecordingFacts) -> bool:
        """Store the body as the blob, unless one is already there.

        The write is conditional (If-None-Match: *): the first complete attempt wins and a late
        duplicate never overwrites a stored recording. A body that fits in one block (every
        recordResponse does: at most 120 s, about 3.84 MB) goes in one Put Blob; a larger one
        commits its staged blocks. Returns False when the blob already existed.

        No transactional MD5 (``validate_content``): the account takes HTTPS only, which already
        checks every byte on the wire (the SDK's own advice), the service computes the blob's MD5
        on Put Blob, and the body's SHA-256 is in the metadata and the ledger. It cost about
        11 ms of CPU per 3.84 MB recording.
        """
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type=facts.content_type)
        try:
            if not self._block_ids:
                body = bytes(self._buffer)
                self._buffer.clear()
                await self._blob.upload_blob(
                    body,
                    length=len(body),
                    overwrite=False,
                    content_settings=settings,
                    metadata=facts.metadata(),
                    tags=facts.tags(),
                )
                return True
            await self._commit_blocks(facts, settings)
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True

    async def _commit_blocks(self, facts: RecordingFacts, settings: ContentSettings) -> None:
        from azure.core import MatchConditions
        from azure.storage.blob import BlobBlock

        if self._buffer:
            await self._stage(bytes(self._buffer))
            self._buffer.clear()
        await self._blob.commit_block_list(
            [BlobBlock(block_id=block_id) for block_id in self._block_ids],
            content_settings=settings,
            metadata=facts.metadata(),
            tags=facts.tags(),
            match_condition=MatchConditions.IfMissing,
        )


@dataclass(frozen=True)
class StoredRecording:
    """A committed recording as read back from the container."""

    blob_name: str
    size_bytes: int
    sha256: str | None
    content_type: str | None
    expires_at: datetime | None


async def find_stored(container: ContainerClient, blob_name: str) -> StoredRecording | None:
    """The committed recording under ``blob_name``, or None (uncommitted blocks do not count)."""
    from azure.core.exceptions import ResourceNotFoundError

    blob = container.get_blob_client(blob_name)
    try:
        properties = await blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    metadata = properties.metadata or {}
    expires_at: datetime | None = None
    if "expiresat" in metadata:
        try:
            expires_at = datetime.strptime(metadata["expiresat"], EXPIRES_AT_FORMAT).replace(
                tzinfo=UTC
            )
        except ValueError:
            expires_at = None
    return StoredRecording(
        blob_name=blob_name,
        size_bytes=int(properties.size),
        sha256=metadata.get("sha256"),
        content_type=properties.content_settings.content_type,
        expires_at=expires_at,
    )


def stored_from_row(record: OperationRecord, blob_name: str) -> StoredRecording:
    """What a ``stored`` ledger row says of its recording (no blob read needed)."""
    size = record.get(Column.SIZE_BYTES)
    expires_at = record.get(Column.EXPIRES_AT)
    return StoredRecording(
        blob_name=record.blob_name or blob_name,
        size_bytes=int(size) if isinstance(size, int) else 0,
        sha256=record.get(Column.SHA256),
        content_type=record.get(Column.CONTENT_TYPE),
        expires_at=expires_at if isinstance(expires_at, datetime) else None,
    )
