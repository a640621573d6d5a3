"""Synthesized recordings: deterministic WAV content generated chunk by chunk, plus their store.

Recordings can be large (benchmarks use 100 MB), so content is never held in memory: each 64 KiB
chunk is a fixed tone block whose first 16 bytes are a hash of (recording seed, chunk index).
That keeps generation cheap while making every chunk, and every recording, distinct, so a
download that reorders, repeats or drops a chunk fails its SHA-256 comparison.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

SAMPLE_RATE = 16_000
BITS_PER_SAMPLE = 16
CHANNELS = 1
BYTES_PER_SECOND = SAMPLE_RATE * CHANNELS * BITS_PER_SAMPLE // 8
HEADER_SIZE = 44
CHUNK_SIZE = 64 * 1024
MAX_RECORD_SECONDS = 120
MARKER_SIZE = 16

KNOWN_FAULTS = ("503", "429", "reset", "short", "slow", "401", "404", "chunked", "not-wav")
# What the ``not-wav`` fault serves instead of the WAV header: as many bytes, but not RIFF/WAVE
# (an MP3 file's ID3v2 tag header, then zeros), so the body keeps its length and only its format
# cannot be read.
NOT_WAV_HEADER = b"ID3\x04\x00\x00" + bytes(HEADER_SIZE - 6)


def _tone_block(frequency_hz: int) -> bytes:
    """One CHUNK_SIZE block of a sine tone whose period divides the block exactly."""
    samples = CHUNK_SIZE // 2
    amplitude = 8000
    values = (
        round(amplitude * math.sin(2 * math.pi * frequency_hz * i / SAMPLE_RATE))
        for i in range(samples)
    )
    return struct.pack(f"<{samples}h", *values)


# 250/500/1000 Hz have periods of 64/32/16 samples: the 32768-sample block loops seamlessly.
_TONES = {f: _tone_block(f) for f in (250, 500, 1000)}


def wav_header(data_size: int) -> bytes:
    """Canonical 44-byte RIFF/WAVE header for PCM 16 kHz, 16-bit, mono."""
    byte_rate = BYTES_PER_SECOND
    block_align = CHANNELS * BITS_PER_SAMPLE // 8
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack(
            "<IHHIIHH", 16, 1, CHANNELS, SAMPLE_RATE, byte_rate, block_align, BITS_PER_SAMPLE
        )
        + b"data"
        + struct.pack("<I", data_size)
    )


def parse_fault(fault: str) -> tuple[str, float | None]:
    """'429' -> ('429', None); '429:3' -> ('429', 3.0); 'slow:0.5' -> ('slow', 0.5)."""
    name, _, arg = fault.partition(":")
    if name not in KNOWN_FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(KNOWN_FAULTS)}")
    return name, (float(arg) if arg else None)


@dataclass
class Recording:
    """One recording: its identity, access token, size and pending faults."""

    recording_id: str
    location: str
    access_token: str = field(repr=False)
    data_size: int
    seed: bytes
    content_type: str = "application/octet-stream"
    call_id: str | None = None
    operation_id: str | None = None
    faults: list[str] = field(default_factory=list)
    request_count: int = 0
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    _sha256: str | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.data_size

    @property
    def duration_seconds(self) -> float:
        return self.data_size / BYTES_PER_SECOND

    def iter_bytes(self, limit: int | None = None, *, wav: bool = True) -> Iterator[bytes]:
        """Yield the file's bytes in order, at most `limit` bytes in total; without `wav`, the
        header is :data:`NOT_WAV_HEADER` (the ``not-wav`` fault)."""
        remaining = self.size if limit is None else min(limit, self.size)
        header = (wav_header(self.data_size) if wav else NOT_WAV_HEADER)[:remaining]
        if header:
            yield header
        remaining -= len(header)
        tone = _TONES[(250, 500, 1000)[self.seed[0] % 3]]
        index = 0
        left_in_data = self.data_size
        while remaining > 0 and left_in_data > 0:
            marker = hashlib.blake2b(
                self.seed + index.to_bytes(8, "big"), digest_size=MARKER_SIZE
            ).digest()
            block = marker + tone[MARKER_SIZE:]
            piece = block[: min(CHUNK_SIZE, left_in_data, remaining)]
            yield piece
            remaining -= len(piece)
            left_in_data -= len(piece)
            index += 1

    @property
    def sha256(self) -> str:
        # Computed once, lazily: 100 MB hashes in well under a second.
        if self._sha256 is None:
            digest = hashlib.sha256()
            for piece in self.iter_bytes():
                digest.update(piece)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def info(self, *, include_token: bool = True) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.recording_id,
            "location": self.location,
            "size": self.size,
            "durationSeconds": self.duration_seconds,
            "sha256": self.sha256,
            "contentType": self.content_type,
            "callId": self.call_id,
            "operationId": self.operation_id,
            "pendingFaults": list(self.faults),
            "requestCount": self.request_count,
            "expiresAt": self.expires_at,
        }
        if include_token:
            data["accessToken"] = self.access_token
        return data


def data_size_for(size_bytes: int | None, duration_seconds: float | None) -> int:
    if size_bytes is not None and duration_seconds is not None:
        raise ValueError("give size_bytes or duration_seconds, not both")
    if size_bytes is not None:
        if size_bytes < HEADER_SIZE:
            raise ValueError(f"size_bytes must be at least {HEADER_SIZE} (the WAV header)")
        return size_bytes - HEADER_SIZE
    seconds = 1.0 if duration_seconds is None else duration_seconds
    if seconds < 0:
        raise ValueError("duration_seconds must be >= 0")
    # Whole samples only, so the data chunk stays aligned on 16-bit samples.
    return round(seconds * SAMPLE_RATE) * 2


class RecordingStore:
    """Thread-safe store: the HTTP app and the Python API share it across threads."""

    def __init__(self, base_url_getter: Callable[[], str]) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Recording] = {}
        self._base_url = base_url_getter

    def create(
        self,
        *,
        size_bytes: int | None = None,
        duration_seconds: float | None = None,
        faults: list[str] | None = None,
        content_type: str = "application/octet-stream",
        call_id: str | None = None,
        operation_id: str | None = None,
        expires_after_seconds: float | None = None,
    ) -> Recording:
        data_size = data_size_for(size_bytes, duration_seconds)
        fault_list = list(faults or [])
        for fault in fault_list:
            parse_fault(fault)
        recording_id = str(uuid.uuid4())
        recording = Recording(
            recording_id=recording_id,
            location=f"{self._base_url()}/recordings/{recording_id}",
            # Opaque and random like the platform's: the downloader must not parse it.
            access_token=secrets.token_urlsafe(48),
            data_size=data_size,
            seed=hashlib.sha256(recording_id.encode()).digest(),
            content_type=content_type,
            call_id=call_id,
            operation_id=operation_id,
            faults=fault_list,
            expires_at=None
            if expires_after_seconds is None
            else time.time() + expires_after_seconds,
        )
        with self._lock:
            self._items[recording_id] = recording
        return recording

    def get(self, recording_id: str) -> Recording | None:
        with self._lock:
            recording = self._items.get(recording_id)
            expires_at = recording.expires_at if recording is not None else None
            if expires_at is not None and time.time() >= expires_at:
                # Discarded like the platform does: the URL answers 404 from now on.
                del self._items[recording_id]
                return None
            return recording

    def all(self) -> list[Recording]:
        with self._lock:
            return list(self._items.values())

    def delete(self, recording_id: str) -> bool:
        with self._lock:
            return self._items.pop(recording_id, None) is not None

    def expire_call(self, call_id: str, after_seconds: float) -> None:
        """Schedule deletion of a call's recordings, as the platform does after the call ends."""
        deadline = time.time() + after_seconds
        with self._lock:
            for recording in self._items.values():
                if recording.call_id == call_id:
                    recording.expires_at = deadline

    def count_request(self, recording: Recording) -> None:
        with self._lock:
            recording.request_count += 1

    def pop_fault(self, recording: Recording) -> str | None:
        """Faults are consumed one per authorized GET attempt, then downloads succeed."""
        with self._lock:
            return recording.faults.pop(0) if recording.faults else None
