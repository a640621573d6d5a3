"""Azure AI Speech fast transcription over httpx, with the app's managed identity.

``POST {endpoint}/speechtotext/transcriptions:transcribe?api-version=2025-10-15`` takes a
``multipart/form-data`` body with two parts: ``definition`` (JSON: the candidate ``locales``;
none means the service identifies the language) and ``audio`` (the file). It answers
synchronously with ``durationMilliseconds``, ``combinedPhrases`` (the full text) and ``phrases``
(each with offset, duration, text, locale and confidence).

The audio is streamed from Blob Storage into the request body in the storage SDK's download
chunks (never the whole file at once for large recordings), and the Content-Length is exact (the
blob's size is known), so nothing is chunk-encoded. Authentication is an Entra token for Cognitive Services from the managed identity
against the resource's custom subdomain; there is no key anywhere.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.queue_jobs import JobError, TerminalJobError, TransientJobError
from shared.retry_after import parse_retry_after

# httpx loads where a request is made: the webhook, which imports this, never needs it.
if TYPE_CHECKING:
    import httpx
    from azure.core.credentials_async import AsyncTokenCredential

API_VERSION = "2025-10-15"  # the generally available speech to text REST API version
TRANSCRIBE_PATH = "/speechtotext/transcriptions:transcribe"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
# Fast transcription answers faster than real time; a two-minute answer takes seconds.
TIMEOUT_SECONDS = {"connect": 5.0, "read": 90.0, "write": 30.0, "pool": 5.0}
_MAX_DETAIL = 300


class TranscriptionError(JobError):
    """Speech did not transcribe the recording; ``reason`` is safe to log and to record."""


class TransientTranscriptionError(TranscriptionError, TransientJobError):
    """Worth trying again later: throttling, a service or network failure."""


class TerminalTranscriptionError(TranscriptionError, TerminalJobError):
    """Trying again cannot help: bad audio, an unsupported locale, a refused token."""


@dataclass(frozen=True)
class Phrase:
    offset_ms: int
    duration_ms: int
    text: str
    locale: str | None
    confidence: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "offsetMilliseconds": self.offset_ms,
            "durationMilliseconds": self.duration_ms,
            "text": self.text,
            "locale": self.locale,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class FastTranscription:
    """What fast transcription returned, reduced to what the transcript blob keeps."""

    duration_ms: int
    text: str
    phrases: tuple[Phrase, ...]

    @classmethod
    def from_response(cls, body: Any) -> FastTranscription:
        if not isinstance(body, dict):
            raise TransientTranscriptionError("Speech answered 200 without a JSON object")
        combined = body.get("combinedPhrases") or []
        text = " ".join(
            str(item.get("text", "")).strip() for item in combined if isinstance(item, dict)
        ).strip()
        phrases = []
        for item in body.get("phrases") or []:
            if not isinstance(item, dict):
                continue
            confidence = item.get("confidence")
            phrases.append(
                Phrase(
                    offset_ms=int(item.get("offsetMilliseconds") or 0),
                    duration_ms=int(item.get("durationMilliseconds") or 0),
                    text=str(item.get("text") or ""),
                    locale=str(item["locale"]) if item.get("locale") else None,
                    confidence=float(confidence) if isinstance(confidence, int | float) else None,
                )
            )
        if not text:
            text = " ".join(phrase.text for phrase in phrases).strip()
        return cls(int(body.get("durationMilliseconds") or 0), text, tuple(phrases))

    @property
    def locales(self) -> list[str]:
        return sorted({phrase.locale for phrase in self.phrases if phrase.locale})


def definition_for(locales: Sequence[str]) -> dict[str, Any]:
    """The request's ``definition``: one locale, candidates (language identification), or none."""
    return {"locales": list(locales)} if locales else {}


class MultipartAudio:
    """The request body: ``definition`` then ``audio``, the audio streamed, the length exact."""

    def __init__(
        self,
        definition: dict[str, Any],
        audio: AsyncIterator[bytes],
        audio_size: int,
        content_type: str = "audio/wav",
    ) -> None:
        self.boundary = f"recording-{uuid.uuid4().hex}"
        head = (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="definition"\r\n'
            "Content-Type: application/json\r\n\r\n"
            f"{json.dumps(definition)}\r\n"
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="audio"; filename="recording.wav"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        self._head = head.encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._audio = audio
        self.length = len(self._head) + audio_size + len(self._tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        async for chunk in self._audio:
            yield chunk
        yield self._tail


class SpeechClient:
    """Fast transcription against one Speech resource; one per event loop (see Services)."""

    def __init__(
        self,
        endpoint: str,
        credential: AsyncTokenCredential,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        import httpx

        self.url = f"{endpoint.rstrip('/')}{TRANSCRIBE_PATH}"
        self._credential = credential
        from shared.tls import client_ssl_context

        self._http = http or httpx.AsyncClient(
            verify=client_ssl_context(),
            timeout=httpx.Timeout(**TIMEOUT_SECONDS),
            follow_redirects=False,
        )

    async def transcribe(
        self, body: MultipartAudio, *, locales: Sequence[str] = ()
    ) -> FastTranscription:
        """One request; raises a :class:`TranscriptionError` saying whether to try again."""
        import httpx
        from azure.core.exceptions import ClientAuthenticationError

        try:
            token = await self._credential.get_token(COGNITIVE_SERVICES_SCOPE)
        except ClientAuthenticationError as error:
            # The identity endpoint, not Speech: usually passing (it is retried).
            raise TransientTranscriptionError(
                f"no Cognitive Services token from the managed identity ({type(error).__name__})"
            ) from None
        headers = {
            "Authorization": f"Bearer {token.token}",
            "Content-Type": body.content_type,
            "Content-Length": str(body.length),
            "Accept": "application/json",
        }
        try:
            response = await self._http.post(
                self.url, params={"api-version": API_VERSION}, headers=headers, content=body
            )
        except httpx.HTTPError as error:
            raise TransientTranscriptionError(
                f"Speech request failed ({type(error).__name__})"
            ) from None
        if response.status_code == 200:
            try:
                return FastTranscription.from_response(response.json())
            except ValueError:
                raise TransientTranscriptionError("Speech answered 200 without JSON") from None
        raise _error_for(response, locales)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._credential.close()


def _error_for(response: httpx.Response, locales: Sequence[str]) -> TranscriptionError:
    status = response.status_code
    code, message = _error_detail(response)
    detail = f"{status} {code}: {message}" if message else f"{status} {code}"
    if status == 429 or status >= 500 or status == 408:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return TransientTranscriptionError(f"Speech is busy ({detail})", retry_after=retry_after)
    if status in (401, 403):
        return TerminalTranscriptionError(
            f"Speech refused the app's token ({detail}); check the custom subdomain and the "
            "Cognitive Services Speech User role"
        )
    if status == 400 and locales and "locale" in f"{code} {message}".lower():
        return TerminalTranscriptionError(
            f"Speech refused TRANSCRIPTION_LOCALES={','.join(locales)} ({detail})"
        )
    return TerminalTranscriptionError(f"Speech refused the recording ({detail})")


def _error_detail(response: httpx.Response) -> tuple[str, str]:
    """Code and message of a Speech error body (top-level or under ``error``), shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "Error", ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return response.reason_phrase or "Error", ""
    code = str(body.get("code") or response.reason_phrase or "Error")[:80]
    message = " ".join(str(body.get("message") or "").split())[:_MAX_DETAIL]
    return code, message
