"""Where and how a recording lives in the ``recordings`` container: its layout, in one place.

The download worker writes by it, and erasure, retention, transcription and the status API read
by it: blob names (``<call>/<operation>.wav`` and its ``.transcript.json``), the metadata and
index tags written with each blob, the ``expiresAt`` tag's format that the cleanup's tag query
compares as text, and how a body is recognised as WAV. Plain Python: no Azure SDK, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from shared.graph.ids import normalize_id

# A WAV file's RIFF/WAVE header with a PCM fmt chunk; a body no longer than it carries no sound.
WAV_HEADER_BYTES = 44
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


def looks_like_wav(first_bytes: bytes) -> bool:
    """Whether a body begins as a RIFF/WAVE file (12 bytes are enough to tell)."""
    return len(first_bytes) >= 12 and first_bytes[:4] == b"RIFF" and first_bytes[8:12] == b"WAVE"


# Enough of a body's first bytes to find its ``fmt `` and ``data`` chunks: encoders put a few
# small chunks (LIST, fact, bext...) before the audio, rarely more than a few hundred bytes.
WAV_HEAD_BYTES = 4096
_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class WavFacts:
    """What a stored WAV file's own header says of its audio (never what Graph declared).

    ``duration_seconds`` comes from the ``data`` chunk's length, bounded by the bytes actually
    stored (a streamed file may declare an unknown or too large length).
    """

    sample_rate: int
    channels: int
    bits_per_sample: int
    format_tag: int
    data_bytes: int
    duration_seconds: float


def wav_facts(head: bytes, total_size: int) -> WavFacts | None:
    """Parse the RIFF chunks in ``head`` (the body's first bytes; ``total_size``: the whole body).

    Walks the chunk list (each chunk: 4-byte id, little-endian 32-bit size, data padded to even
    length) until it has ``fmt `` and the start of ``data``. None when the body is not RIFF/WAVE,
    the chunks are malformed, or the format is not one whose duration follows from its byte rate
    (PCM or WAVE_FORMAT_EXTENSIBLE with a sane block alignment).
    """
    import struct

    if not looks_like_wav(head):
        return None
    offset = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while offset + 8 <= len(head):
        chunk_id = head[offset : offset + 4]
        (size,) = struct.unpack_from("<I", head, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(head):
                return None
            tag, channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", head, body)
            fmt = (tag, channels, rate, align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                return None  # data before fmt: not a file we can read the audio of
            tag, channels, rate, align, bits = fmt
            if tag not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_EXTENSIBLE) or not (
                channels and rate and align
            ):
                return None
            # Streaming encoders write 0 or 0xFFFFFFFF when the length was not known yet.
            stored = max(total_size - body, 0)
            data_bytes = stored if size in (0, 0xFFFFFFFF) else min(size, stored)
            data_bytes -= data_bytes % align
            return WavFacts(
                sample_rate=rate,
                channels=channels,
                bits_per_sample=bits,
                format_tag=tag,
                data_bytes=data_bytes,
                duration_seconds=round(data_bytes / (rate * align), 3),
            )
        offset = body + size + (size & 1)
    return None


def parse_tag_time(value: str) -> datetime | None:
    """An ``expiresAt`` value (tag or metadata) back as a UTC time; None when it is not one."""
    try:
        return datetime.strptime(value, EXPIRES_AT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def content_type_for(declared: str | None, first_bytes: bytes) -> str:
    """The declared content type, or one sniffed from the bytes when Graph says octet-stream."""
    media_type = (declared or "").split(";", 1)[0].strip().lower()
    if media_type and media_type != OCTET_STREAM:
        return declared.strip() if declared else media_type
    if looks_like_wav(first_bytes):
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
