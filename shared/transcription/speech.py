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
import math
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
# What is read of an error answer (its code and message are all the app keeps of it).
_MAX_ERROR_BYTES = 64 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # TRANSCRIPTION_MAX_RESPONSE_BYTES' default


class TranscriptionError(JobError):
    """Speech did not transcribe the recording; ``reason`` is safe to log and to record."""


class TransientTranscriptionError(TranscriptionError, TransientJobError):
    """Worth trying again later: throttling, a service or network failure."""


class TerminalTranscriptionError(TranscriptionError, TerminalJobError):
    """Trying again cannot help: bad audio, an unsupported locale, a refused token."""


_PHRASE_WIRE_NAMES = {
    "offset_ms": "offsetMilliseconds",
    "duration_ms": "durationMilliseconds",
    "text": "text",
    "locale": "locale",
    "confidence": "confidence",
}


@dataclass(frozen=True)
class Phrase:
    offset_ms: int
    duration_ms: int
    text: str
    locale: str | None
    confidence: float | None

    def to_json(self) -> dict[str, Any]:
        """The phrase as the transcript blob keeps it (Speech's own names)."""
        return {wire: getattr(self, name) for name, wire in _PHRASE_WIRE_NAMES.items()}


@dataclass(frozen=True)
class FastTranscription:
    """What fast transcription returned, reduced to what the transcript blob keeps."""

    duration_ms: int
    text: str
    phrases: tuple[Phrase, ...]

    @classmethod
    def from_response(cls, body: Any) -> FastTranscription:
        """The answer's fields, each checked for type and range; :class:`UnusableAnswer` names
        the first that is not what the API documents."""
        answer = _Fields(body, "the answer")
        if "combinedPhrases" not in body and "phrases" not in body:
            raise UnusableAnswer("it has neither combinedPhrases nor phrases")
        combined = answer.objects("combinedPhrases")
        items = answer.objects("phrases")
        if len(items) > MAX_PHRASES:
            raise UnusableAnswer(f"phrases holds {len(items)} items, more than {MAX_PHRASES}")
        phrases = tuple(_phrase(item) for item in items)
        text = " ".join(item.text("text").strip() for item in combined).strip()
        if not text:
            text = " ".join(phrase.text for phrase in phrases).strip()
        return cls(answer.milliseconds("durationMilliseconds"), text, phrases)

    @property
    def locales(self) -> list[str]:
        return sorted({phrase.locale for phrase in self.phrases if phrase.locale})


class UnusableAnswer(ValueError):
    """A 200 from Speech whose body is not a usable transcription (the message says where)."""


# Bounds on what a transcription may hold. A recordResponse lasts at most minutes; a day of
# audio, or ten thousand phrases, is no answer to it.
MAX_DURATION_MS = 24 * 60 * 60 * 1000
MAX_PHRASES = 10_000
_MAX_LOCALE = 64


class _Fields:
    """One JSON object of the answer, read field by field with the path in every complaint."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise UnusableAnswer(f"{path} is {_kind(value)}, not an object")
        self.value = value
        self.path = path

    def where(self, name: str) -> str:
        return name if self.path == "the answer" else f"{self.path}.{name}"

    def objects(self, name: str) -> list[_Fields]:
        items = self.value.get(name)
        if items is None:
            return []
        if not isinstance(items, list):
            raise UnusableAnswer(f"{self.where(name)} is {_kind(items)}, not a list")
        return [_Fields(item, f"{self.where(name)}[{i}]") for i, item in enumerate(items)]

    def text(self, name: str) -> str:
        value = self.value.get(name)
        if not isinstance(value, str):
            raise UnusableAnswer(f"{self.where(name)} is {_kind(value)}, not text")
        return value

    def milliseconds(self, name: str) -> int:
        value = self.value.get(name, 0)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UnusableAnswer(f"{self.where(name)} is {_kind(value)}, not a number")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise UnusableAnswer(f"{self.where(name)} is {_shown(value)}, not a whole number")
        if not 0 <= value <= MAX_DURATION_MS:
            raise UnusableAnswer(
                f"{self.where(name)} is {_shown(value)}, not between 0 and {MAX_DURATION_MS}"
            )
        return int(value)

    def confidence(self, name: str) -> float | None:
        value = self.value.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UnusableAnswer(f"{self.where(name)} is {_kind(value)}, not a number")
        # Integers are compared as they are: a 400-digit one does not fit a float.
        if not (0 <= value <= 1) or (isinstance(value, float) and not math.isfinite(value)):
            raise UnusableAnswer(f"{self.where(name)} is {_shown(value)}, not between 0 and 1")
        return float(value)

    def locale(self, name: str) -> str | None:
        value = self.value.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise UnusableAnswer(f"{self.where(name)} is {_kind(value)}, not text")
        if len(value) > _MAX_LOCALE or not value.isprintable():
            raise UnusableAnswer(f"{self.where(name)} is not a locale")
        return value


def _phrase(item: _Fields) -> Phrase:
    return Phrase(
        offset_ms=item.milliseconds("offsetMilliseconds"),
        duration_ms=item.milliseconds("durationMilliseconds"),
        text=item.text("text"),
        locale=item.locale("locale"),
        confidence=item.confidence("confidence"),
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text"}
    return names.get(type(value), "a list" if isinstance(value, list) else "an object")


def _shown(value: float) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:20]}..."


def parse_answer(raw: bytes, content_type: str | None) -> FastTranscription:
    """A 200's body as a transcription, or :class:`UnusableAnswer` saying why not."""
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnusableAnswer(f"it is {media_type[:60]}, not JSON")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnusableAnswer("it is not UTF-8") from None
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise UnusableAnswer("its JSON is nested too deeply") from None
    except ValueError as error:
        # JSONDecodeError (truncated, not JSON), NaN/Infinity, integers too long to convert.
        raise UnusableAnswer(f"it is not valid JSON ({_json_problem(error)})") from None
    return FastTranscription.from_response(body)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_problem(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at byte {error.pos}"
    return str(error).split(";")[0][:80]


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
        self,
        body: MultipartAudio,
        *,
        locales: Sequence[str] = (),
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> FastTranscription:
        """One request; raises a :class:`TranscriptionError` saying whether to try again.

        At most ``max_bytes`` of the answer are read (decoded): a longer one is a terminal
        failure, whatever it holds.
        """
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
            # The answer is small JSON; a compressed one is decoded here, bounded (read_capped).
            "Accept-Encoding": "identity",
        }
        try:
            request = self._http.build_request(
                "POST",
                self.url,
                params={"api-version": API_VERSION},
                headers=headers,
                content=body,
            )
            response = await self._http.send(request, stream=True)
            unusable: UnusableAnswer | None = None
            try:
                limit = max_bytes if response.status_code == 200 else _MAX_ERROR_BYTES
                raw = await read_capped(response, limit)
            except UnusableAnswer as error:
                raw, unusable = b"", error
            finally:
                await response.aclose()
        except httpx.HTTPError as error:
            # Including a body cut short (fewer bytes than its Content-Length): the network's
            # fault, worth another try.
            raise TransientTranscriptionError(
                f"Speech request failed ({type(error).__name__})"
            ) from None
        if response.status_code == 200:
            if unusable is not None:
                raise TerminalTranscriptionError(f"Speech's answer is unusable: {unusable}")
            if raw is None:
                raise TerminalTranscriptionError(
                    f"Speech's answer is larger than TRANSCRIPTION_MAX_RESPONSE_BYTES={max_bytes}"
                )
            try:
                return parse_answer(raw, response.headers.get("content-type"))
            except UnusableAnswer as unusable:
                # Speech answered, and the same audio gets the same answer: not worth retrying.
                raise TerminalTranscriptionError(
                    f"Speech's answer is unusable: {unusable}"
                ) from None
        raise _error_for(response, raw or b"", locales)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._credential.close()


def _error_for(response: httpx.Response, raw: bytes, locales: Sequence[str]) -> TranscriptionError:
    status = response.status_code
    code, message = _error_detail(response, raw)
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


def _error_detail(response: httpx.Response, raw: bytes) -> tuple[str, str]:
    """Code and message of a Speech error body (top-level or under ``error``), shortened."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return response.reason_phrase or "Error", ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return response.reason_phrase or "Error", ""
    code = " ".join(str(body.get("code") or response.reason_phrase or "Error").split())[:80]
    message = " ".join(str(body.get("message") or "").split())[:_MAX_DETAIL]
    return code, message


async def read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The body, decoded, or None once it passes ``limit`` bytes (the rest is never read).

    The raw stream is read and decoded here, not by httpx, so that a small compressed body that
    inflates enormously (a gzip bomb) is stopped at ``limit`` too: the decoder never produces more
    than ``limit + 1`` bytes.
    """
    import zlib

    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        decoder: Any = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding in ("", "identity"):
        decoder = None
    else:
        raise UnusableAnswer(f"it is encoded {encoding[:40]!r}, which the app did not ask for")
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            if decoder is None:
                body += chunk
            else:
                data = chunk
                while data and len(body) <= limit:
                    body += decoder.decompress(data, limit + 1 - len(body))
                    data = decoder.unconsumed_tail
            if len(body) > limit:
                return None
    except zlib.error:
        raise UnusableAnswer(f"it is not valid {encoding} data") from None
    return bytes(body)
