"""Azure AI Speech fast transcription, simulated: the documented request and response shapes.

``POST /speechtotext/transcriptions:transcribe?api-version=2025-10-15`` with a
``multipart/form-data`` body: ``audio`` (the file) and ``definition`` (JSON, optional
``locales``). The bearer token must be the managed identity's Cognitive Services token (audience
``https://cognitiveservices.azure.com``) issued by this simulator. The answer for a WAV file is a
deterministic transcript derived from its bytes (duration from the header, a reference from its
SHA-256), so tests and the demo know the text in advance. Faults come from the same queue as the
calls API's (action ``transcribe``): ``429:S`` (Retry-After S), ``503``, ``500``, ``401``.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import struct
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

SPEECH_API_VERSIONS = frozenset({"2024-11-15", "2025-10-15"})
COGNITIVE_SERVICES_AUDIENCE = "https://cognitiveservices.azure.com"
TRANSCRIBE_ACTION = "transcribe"
# A few of the locales fast transcription supports; enough to tell a typo from a locale.
SUPPORTED_LOCALES = frozenset(
    {
        "en-US",
        "en-GB",
        "en-AU",
        "en-IN",
        "de-DE",
        "es-ES",
        "es-MX",
        "fr-FR",
        "fr-CA",
        "it-IT",
        "ja-JP",
        "ko-KR",
        "pt-BR",
        "zh-CN",
        "hi-IN",
        "nl-NL",
        "sv-SE",
    }
)
PHRASE_CONFIDENCE = 0.93


def speech_error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    """The speech to text API's error shape (``code``, ``message``, ``innerError``)."""
    return JSONResponse(
        {"code": code, "message": message, "innerError": {"code": code, "message": message}},
        status_code=status,
        headers=headers or None,
    )


def fault_response(name: str, arg: float | None) -> Response | None:
    if name in ("429", "503"):
        retry_after = str(int(arg)) if arg is not None else "1"
        code = "TooManyRequests" if name == "429" else "ServiceUnavailable"
        message = "Too many requests." if name == "429" else "The service is unavailable."
        return speech_error(int(name), code, message, **{"Retry-After": retry_after})
    if name == "500":
        return speech_error(500, "InternalServerError", "Simulated internal error.")
    if name == "401":
        return speech_error(401, "Unauthorized", "The access token was refused.")
    if name == "404":
        return speech_error(404, "NotFound", "Resource not found.")
    return None


def wav_duration_ms(audio: bytes) -> int | None:
    """The duration a canonical PCM WAV header declares, or None if ``audio`` is not one."""
    if len(audio) < 44 or audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
        return None
    channels, sample_rate, byte_rate = struct.unpack_from("<HII", audio, 22)
    if not byte_rate or not channels or not sample_rate:
        return None
    data_bytes = len(audio) - 44
    return round(data_bytes * 1000 / byte_rate)


def transcript_for(audio: bytes, locale: str = "en-US") -> dict[str, Any]:
    """The deterministic fast transcription answer for a WAV file (as Azure shapes it)."""
    duration_ms = wav_duration_ms(audio) or 0
    reference = hashlib.sha256(audio).hexdigest()[:8]
    seconds = duration_ms / 1000
    sentences = [
        f"This is a simulated answer of {seconds:.1f} seconds.",
        f"Reference {reference}.",
    ]
    half = duration_ms // 2
    phrases = [
        {
            "offsetMilliseconds": index * half,
            "durationMilliseconds": half if index == 0 else duration_ms - half,
            "text": text,
            "words": [],
            "locale": locale,
            "confidence": PHRASE_CONFIDENCE,
        }
        for index, text in enumerate(sentences)
    ]
    return {
        "durationMilliseconds": duration_ms,
        "combinedPhrases": [{"text": " ".join(sentences)}],
        "phrases": phrases,
    }


async def transcribe(request: Request, token_problem: str | None) -> Response:
    """Validate a fast transcription request as the service does, then answer it."""
    if request.query_params.get("api-version") not in SPEECH_API_VERSIONS:
        return speech_error(
            400,
            "InvalidRequest",
            f"Unsupported api-version; use one of {', '.join(sorted(SPEECH_API_VERSIONS))}.",
        )
    if token_problem is not None:
        return speech_error(401, "Unauthorized", token_problem)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return speech_error(415, "UnsupportedMediaType", "Use multipart/form-data.")
    form = _form_parts(content_type, await request.body())
    audio = form.get("audio")
    if audio is None:
        return speech_error(400, "InvalidRequest", "The 'audio' part is missing.")
    definition: Any = {}
    if "definition" in form:
        try:
            definition = json.loads(form["definition"])
        except ValueError:
            return speech_error(400, "InvalidRequest", "The 'definition' part is not JSON.")
    if not isinstance(definition, dict):
        return speech_error(400, "InvalidRequest", "The 'definition' part is not an object.")
    locales = definition.get("locales") or []
    unsupported = [str(loc) for loc in locales if loc not in SUPPORTED_LOCALES]
    if unsupported:
        return speech_error(
            400, "InvalidArgument", f"Unsupported locale(s): {', '.join(unsupported)}."
        )
    body = audio
    if not body:
        return speech_error(400, "InvalidRequest", "The audio is empty.")
    if wav_duration_ms(body) is None:
        return speech_error(400, "InvalidAudioFormat", "The audio format is not supported.")
    return JSONResponse(transcript_for(body, locales[0] if locales else "en-US"))


def _form_parts(content_type: str, body: bytes) -> dict[str, bytes]:
    """``multipart/form-data`` parts by name (the standard library's MIME parser)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts: dict[str, bytes] = {}
    if not message.is_multipart():
        return parts
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts[name] = payload
    return parts
