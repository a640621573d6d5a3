"""Prompts Graph would play: fetched from their URL and checked to be WAV, PCM 16-bit, mono, 16 kHz.

Graph fetches every mediaPrompt's ``mediaInfo.uri`` itself, so a prompt the bot cannot serve, or
serves in another format, fails the operation there (8536, 8535), not in the bot. The simulator
does the same for prompts on this machine (http(s) to 127.0.0.1, localhost or ::1). Any other URL
is taken as playable without a request: the simulator never contacts other hosts.
"""

from __future__ import annotations

import struct
from urllib.parse import urlsplit

import httpx

from .models import RESULT_PROMPT_DOWNLOAD_FAILED, RESULT_PROMPT_INVALID_FORMAT

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Enough to hold the RIFF header and any chunks before "fmt " in a sane file.
HEADER_LIMIT = 64 * 1024
PCM = 1
REQUIRED = {"channels": 1, "sample_rate": 16_000, "bits_per_sample": 16}


def is_fetchable(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme.lower() in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS


def wav_problem(head: bytes) -> str | None:
    """None when ``head`` starts a RIFF/WAVE file in PCM 16-bit mono 16 kHz, else what is wrong."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return "not a RIFF/WAVE file"
    offset = 12
    while offset + 8 <= len(head):
        chunk_id = head[offset : offset + 4]
        (size,) = struct.unpack("<I", head[offset + 4 : offset + 8])
        if chunk_id == b"fmt ":
            body = head[offset + 8 : offset + 8 + 16]
            if len(body) < 16:
                return "truncated fmt chunk"
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body)
            found = {"channels": channels, "sample_rate": rate, "bits_per_sample": bits}
            if fmt != PCM or found != REQUIRED:
                return (
                    f"format {fmt}, {channels} channel(s), {rate} Hz, {bits}-bit; "
                    "Graph plays PCM (1), 1 channel, 16000 Hz, 16-bit"
                )
            return None
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    return "no fmt chunk"


async def check_prompt(
    client: httpx.AsyncClient, uri: str
) -> tuple[tuple[int, int, str], str] | None:
    """None if the prompt can be played; else (resultInfo values, reason for the journal)."""
    if not is_fetchable(uri):
        return None
    head = b""
    try:
        async with client.stream("GET", uri) as response:
            if response.status_code != 200:
                return RESULT_PROMPT_DOWNLOAD_FAILED, f"GET {uri} answered {response.status_code}"
            async for piece in response.aiter_bytes():
                head += piece
                if len(head) >= HEADER_LIMIT:
                    break
    except httpx.HTTPError as exc:
        return RESULT_PROMPT_DOWNLOAD_FAILED, f"GET {uri} failed: {type(exc).__name__}"
    problem = wav_problem(head)
    if problem is not None:
        return RESULT_PROMPT_INVALID_FORMAT, f"{uri}: {problem}"
    return None
