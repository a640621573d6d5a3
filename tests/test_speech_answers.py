"""Every Speech answer ends recorded: hostile 200s, whatever their types, numbers, size, encoding.

Speech is a real HTTP server on 127.0.0.1 that answers each case's bytes exactly as given (status
line, headers, body), so the app's client reads them through its own HTTP stack. Storage is the
real Azurite. Each case ends ``transcribed`` (the answer is usable) or ``transcription_failed``
with a reason that names what was wrong, the audio untouched and no transcript left behind.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from shared.backoff import Backoff
from shared.blob_layout import transcript_blob_name
from shared.ledger import TRANSCRIBED, TRANSCRIPTION_FAILED, Column, OperationLedger
from shared.recording_access import transcript_text
from shared.services import Services
from shared.transcription import SpeechClient, TransientTranscriptionError, process_transcription
from shared.transcription.job import TranscriptionJob
from tests.support.clock import Sleeps
from tests.support.recordings import blob_names, stored_for_transcription

WAV = b"RIFF\x24\x10\x00\x00WAVEfmt " + bytes(4000)
MiB = 1024 * 1024


@dataclass
class Answer:
    """One raw HTTP answer: status, headers, body (``length`` overrides Content-Length)."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    length: int | None = None

    def head(self) -> bytes:
        headers = {**self.headers, "Content-Length": str(self.length or len(self.body))}
        lines = [f"HTTP/1.1 {self.status} X", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode()


class RawSpeech:
    """An HTTP server on 127.0.0.1 that reads one request and writes ``answer`` verbatim."""

    def __init__(self) -> None:
        self.answer = Answer(b"{}")
        self.requests = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            answer = self.answer
            writer.write(answer.head())
            body = memoryview(answer.body)
            for start in range(0, len(body), 1 * MiB):
                writer.write(body[start : start + MiB])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client stopped reading (it had enough): expected for the large bodies
        finally:
            writer.close()


class StaticToken:
    """A credential that always has a token: Speech's side here checks none."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


@pytest.fixture
async def speech() -> AsyncIterator[RawSpeech]:
    raw = RawSpeech()
    raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    async with raw.server:
        yield raw


async def transcribe(
    services: Services,
    storage: Any,
    speech: RawSpeech,
    job: TranscriptionJob,
    *,
    max_bytes: int | None = None,
    dequeue_count: int = 1,
) -> Any:
    settings = services.settings.model_copy(
        update={
            "transcription_enabled": True,
            "transcription_max_response_bytes": max_bytes
            or services.settings.transcription_max_response_bytes,
        }
    )
    client = SpeechClient(speech.url, StaticToken())  # type: ignore[arg-type]
    try:
        return await process_transcription(
            job.to_message(),
            settings=settings,
            speech=client,
            container=storage.container,
            ledger=OperationLedger(storage.table),
            backoff=Backoff(sleep=Sleeps(), jitter=lambda: 0.0),
            dequeue_count=dequeue_count,
        )
    finally:
        await client.aclose()


def good(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "durationMilliseconds": 2000,
        "combinedPhrases": [{"channel": 0, "text": "hello there"}],
        "phrases": [
            {
                "offsetMilliseconds": 0,
                "durationMilliseconds": 1000,
                "text": "hello",
                "words": [],
                "locale": "en-US",
                "confidence": 0.9,
            },
            {
                "offsetMilliseconds": 1000,
                "durationMilliseconds": 1000,
                "text": "there",
                "locale": "en-US",
                "confidence": 1,
            },
        ],
    }
    body.update(overrides)
    return body


def phrase(**overrides: Any) -> dict[str, Any]:
    one = {"offsetMilliseconds": 0, "durationMilliseconds": 10, "text": "x", "confidence": 0.5}
    one.update(overrides)
    return good(phrases=[one])


def raw_json(text: str) -> Answer:
    return Answer(text.encode())


def as_json(value: Any) -> Answer:
    return Answer(json.dumps(value).encode())


def gzip_bomb(size: int) -> bytes:
    # Streamed, so that the test does not hold ``size`` bytes to build the bomb.
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(MiB)
    out = [compressor.compress(b'{"durationMilliseconds": 1, "phrases": [], "x": "')]
    for _ in range(size // MiB):
        out.append(compressor.compress(zeros))
    out.append(compressor.compress(b'"}'))
    out.append(compressor.flush())
    return b"".join(out)


USABLE: dict[str, Answer] = {
    "documented": as_json(good()),
    "extra fields at every level": as_json(
        good(extra={"a": [1, None]}, phrases=[{**good()["phrases"][0], "more": {"x": 1}}])
    ),
    "no durationMilliseconds": as_json(
        {k: v for k, v in good().items() if k != "durationMilliseconds"}
    ),
    "silence: empty lists": as_json(good(combinedPhrases=[], phrases=[])),
    "only phrases": as_json({"phrases": good()["phrases"]}),
    "null confidence and locale": as_json(phrase(confidence=None, locale=None)),
    "whole float durations": as_json(phrase(durationMilliseconds=10.0)),
    "charset in the content type": Answer(
        json.dumps(good()).encode(), headers={"Content-Type": "application/json; charset=utf-8"}
    ),
    "no content type": Answer(json.dumps(good()).encode(), headers={}),
    "non-ASCII text": as_json(phrase(text="ça marche, 日本語 ✓")),
    "gzip it was not asked for": Answer(
        gzip.compress(json.dumps(good()).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ),
}

UNUSABLE: dict[str, tuple[Answer | Callable[[], Answer], str]] = {
    # wrong JSON types at each level
    "a list": (as_json([good()]), "the answer is a list, not an object"),
    "a string": (as_json("hello"), "the answer is text, not an object"),
    "null": (raw_json("null"), "the answer is null, not an object"),
    "a number": (raw_json("42"), "the answer is a number"),
    "an error object": (as_json({"error": {"code": "x"}}), "neither combinedPhrases nor phrases"),
    "empty object": (as_json({}), "neither combinedPhrases nor phrases"),
    "phrases an object": (as_json(good(phrases={"0": {}})), "phrases is an object, not a list"),
    "phrases a string": (as_json(good(phrases="hello")), "phrases is text, not a list"),
    "a phrase a string": (as_json(good(phrases=["hello"])), "phrases[0] is text, not an object"),
    "combined a number": (as_json(good(combinedPhrases=3)), "combinedPhrases is a number"),
    "combined text null": (
        as_json(good(combinedPhrases=[{"text": None}])),
        "combinedPhrases[0].text is null, not text",
    ),
    "phrase text a number": (as_json(phrase(text=5)), "phrases[0].text is a number, not text"),
    "phrase text missing": (
        as_json(good(phrases=[{"offsetMilliseconds": 0}])),
        "phrases[0].text is null",
    ),
    "locale a number": (as_json(phrase(locale=7)), "phrases[0].locale is a number"),
    "locale a novel": (as_json(phrase(locale="x" * 500)), "phrases[0].locale is not a locale"),
    "duration a string": (
        as_json(good(durationMilliseconds="2000")),
        "durationMilliseconds is text, not a number",
    ),
    "duration a boolean": (
        as_json(good(durationMilliseconds=True)),
        "durationMilliseconds is a boolean",
    ),
    "duration an object": (as_json(good(durationMilliseconds={})), "durationMilliseconds is an"),
    # numbers
    "negative duration": (as_json(good(durationMilliseconds=-1)), "durationMilliseconds is -1"),
    "negative offset": (as_json(phrase(offsetMilliseconds=-5)), "offsetMilliseconds is -5"),
    "fractional duration": (as_json(phrase(durationMilliseconds=1.5)), "not a whole number"),
    "huge duration": (as_json(good(durationMilliseconds=10**15)), "not between 0 and"),
    "huge float duration": (raw_json('{"durationMilliseconds": 1e300, "phrases": []}'), "1e+300"),
    "overflowing float": (raw_json('{"durationMilliseconds": 1e400, "phrases": []}'), "inf"),
    "400-digit integer": (
        raw_json('{"phrases": [], "durationMilliseconds": ' + "9" * 400 + "}"),
        "not between 0 and",
    ),
    "5000-digit integer": (
        raw_json('{"phrases": [], "durationMilliseconds": ' + "9" * 5000 + "}"),
        "not valid JSON",
    ),
    "NaN": (raw_json('{"durationMilliseconds": NaN, "phrases": []}'), "NaN is not a JSON number"),
    "Infinity": (raw_json('{"phrases": [], "durationMilliseconds": Infinity}'), "Infinity is"),
    "-Infinity confidence": (
        raw_json('{"phrases": [{"text": "x", "confidence": -Infinity}]}'),
        "-Infinity is not a JSON number",
    ),
    "confidence above 1": (as_json(phrase(confidence=1.5)), "confidence is 1.5, not between 0"),
    "negative confidence": (as_json(phrase(confidence=-0.1)), "confidence is -0.1"),
    "confidence 1e400": (raw_json('{"phrases": [{"text": "x", "confidence": 1e400}]}'), "inf"),
    "huge integer confidence": (
        raw_json('{"phrases": [{"text": "x", "confidence": ' + "9" * 400 + "}]}"),
        "not between 0 and 1",
    ),
    "confidence a string": (as_json(phrase(confidence="0.9")), "confidence is text"),
    "too many phrases": (
        as_json(good(phrases=[{"text": ""}] * 10_001)),
        "phrases holds 10001 items, more than 10000",
    ),
    # encodings and shapes of the body
    "not UTF-8": (Answer(b'{"phrases": [{"text": "caf\xe9"}]}'), "it is not UTF-8"),
    "UTF-16": (Answer(json.dumps(good()).encode("utf-16")), "it is not UTF-8"),
    "truncated JSON": (Answer(json.dumps(good()).encode()[:-7]), "not valid JSON"),
    "empty body": (Answer(b""), "not valid JSON"),
    "text/html 200": (
        Answer(b"<html><body>Sign in</body></html>", headers={"Content-Type": "text/html"}),
        "it is text/html, not JSON",
    ),
    "deeply nested": (raw_json("[" * 200_000 + "]" * 200_000), "nested too deeply"),
    # Built when their test runs, not when the module is collected.
    "50 MB body": (
        lambda: Answer(b'{"phrases": [], "x": "' + b"a" * (50 * MiB) + b'"}'),
        "larger than TRANSCRIPTION_MAX_RESPONSE_BYTES=4194304",
    ),
    "gzip bomb": (
        lambda: Answer(
            gzip_bomb(256 * MiB),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ),
        "larger than TRANSCRIPTION_MAX_RESPONSE_BYTES",
    ),
    "not gzip at all": (
        Answer(b"plain", headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        "not valid gzip data",
    ),
    "brotli": (
        Answer(b"\x1b", headers={"Content-Type": "application/json", "Content-Encoding": "br"}),
        "encoded 'br'",
    ),
}


async def assert_audio_untouched(storage: Any, job: TranscriptionJob) -> None:
    assert await (await storage.container.download_blob(job.blob_name)).readall() == WAV


@pytest.mark.parametrize("case", sorted(USABLE))
async def test_a_usable_answer_is_transcribed(
    services: Services, storage: Any, speech: RawSpeech, case: str
) -> None:
    speech.answer = USABLE[case]
    job = await stored_for_transcription(storage, WAV)

    outcome = await transcribe(services, storage, speech, job)

    assert outcome.outcome == "transcribed", outcome.failure_reason
    row = await OperationLedger(storage.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIBED
    await assert_audio_untouched(storage, job)
    document = json.loads(
        await (await storage.container.download_blob(transcript_blob_name(job.blob_name))).readall()
    )
    assert isinstance(document["text"], str)
    assert all(0 <= (p["confidence"] or 0) <= 1 for p in document["phrases"])


@pytest.mark.parametrize("case", sorted(UNUSABLE))
async def test_an_unusable_answer_is_recorded_failed_naming_what_is_wrong(
    services: Services, storage: Any, speech: RawSpeech, case: str
) -> None:
    answer, reason = UNUSABLE[case]
    speech.answer = answer() if callable(answer) else answer
    job = await stored_for_transcription(storage, WAV)

    outcome = await transcribe(services, storage, speech, job)

    assert outcome.outcome == "failed"
    assert speech.requests == 1  # a 200 that cannot be used is not asked for again
    row = await OperationLedger(storage.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.status.value == "stored"
    assert row.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIPTION_FAILED
    recorded = row.get(Column.TRANSCRIPTION_FAILURE_REASON)
    assert recorded.startswith("Speech's answer is"), recorded
    assert reason in recorded, recorded
    assert len(recorded) <= 1024
    await assert_audio_untouched(storage, job)
    assert await blob_names(storage) == {job.blob_name}


async def test_a_body_cut_short_is_retried_then_recorded_on_the_last_delivery(
    services: Services, storage: Any, speech: RawSpeech
) -> None:
    """Fewer bytes than the Content-Length: the network's fault, so worth another delivery."""
    body = json.dumps(good()).encode()
    speech.answer = Answer(body[:20], length=len(body))
    job = await stored_for_transcription(storage, WAV)
    with pytest.raises(TransientTranscriptionError):
        await transcribe(services, storage, speech, job, dequeue_count=1)
    row = await OperationLedger(storage.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(Column.TRANSCRIPTION_STATUS) is None

    with pytest.raises(TransientTranscriptionError):
        await transcribe(services, storage, speech, job, dequeue_count=5)
    row = await OperationLedger(storage.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIPTION_FAILED
    assert "gave up after 5 deliveries" in row.get(Column.TRANSCRIPTION_FAILURE_REASON)
    await assert_audio_untouched(storage, job)


async def test_a_transcript_larger_than_the_limit_is_not_stored(
    services: Services, storage: Any, speech: RawSpeech
) -> None:
    """The answer fits, the transcript built from it does not (the text is each phrase's,
    joined, beside the phrases): the limit holds for what is stored too."""
    phrases = [{"text": "w" * 1000} for _ in range(40)]
    speech.answer = as_json({"phrases": phrases})
    job = await stored_for_transcription(storage, WAV)

    outcome = await transcribe(services, storage, speech, job, max_bytes=64 * 1024)

    assert outcome.outcome == "failed"
    assert "TRANSCRIPTION_MAX_RESPONSE_BYTES=65536" in (outcome.failure_reason or "")
    assert await blob_names(storage) == {job.blob_name}


async def test_an_error_answer_of_any_size_is_read_only_in_part(
    services: Services, storage: Any, speech: RawSpeech
) -> None:
    speech.answer = Answer(b'{"code": "' + b"x" * (8 * MiB) + b'"}', status=400)
    job = await stored_for_transcription(storage, WAV)
    outcome = await transcribe(services, storage, speech, job)
    assert outcome.outcome == "failed"
    assert len(outcome.failure_reason or "") < 512
    await assert_audio_untouched(storage, job)


async def test_the_status_api_reads_a_bounded_part_of_the_transcript(storage: Any) -> None:
    recording = f"{uuid.uuid4()}/{uuid.uuid4()}.wav"
    blob_service, container = storage.blob_service, storage.container_name
    small = json.dumps({"text": "short"}).encode()
    await storage.container.upload_blob(transcript_blob_name(recording), small, overwrite=True)
    assert await transcript_text(blob_service, container, recording, max_bytes=len(small)) == (
        "short"
    )
    # One byte over the limit: not shown, and never read whole.
    assert await transcript_text(blob_service, container, recording, max_bytes=len(small) - 1) is (
        None
    )


async def test_poisoned_transcription_jobs_are_recorded_and_purged(storage: Any) -> None:
    """The host poisons a job the worker never recorded (it crashed): the cleanup records it,
    keeps a reason the worker already recorded, leaves a transcript's row and an erased row
    alone, and deletes an unreadable message."""
    from shared.ledger import TRANSCRIPTION_POISONED_REASON, OperationStatus
    from shared.retention import run_cleanup
    from shared.settings import get_settings
    from tests.support.clock import Clock

    ledger = OperationLedger(storage.table)
    queue = storage.transcription_poison_queue
    await storage.ensure_resources()
    await queue.clear_messages()
    jobs = {
        name: await stored_for_transcription(storage, WAV)
        for name in ("crashed", "gave up", "done", "gone")
    }
    await ledger.mark_transcription_failed(
        jobs["gave up"].call_id, jobs["gave up"].operation_id, "Speech is busy (gave up after 5)"
    )
    await ledger.mark_transcribed(
        jobs["done"].call_id, jobs["done"].operation_id, transcribed_at=datetime.now(UTC)
    )
    await ledger.mark_erased(jobs["gone"].call_id, jobs["gone"].operation_id)
    for job in jobs.values():
        await queue.send_message(job.to_message())
    await queue.send_message("not a transcription job")
    max_age = timedelta(minutes=get_settings().poison_message_max_age_minutes)
    clock = Clock(datetime.now(UTC) + max_age + timedelta(minutes=1))

    summary = await run_cleanup(
        container=storage.container,
        ledger=OperationLedger(storage.table, clock=clock),
        poison_queue=storage.poison_queue,
        transcription_poison_queue=queue,
        settings=get_settings(),
        clock=clock,
    )

    assert summary.errors == 0
    assert summary.poison_messages_purged == 5
    assert summary.poison_messages_unreadable == 1
    assert summary.poison_failures_recorded == 1
    assert (await queue.get_queue_properties()).approximate_message_count == 0
    rows = {n: await ledger.get(j.call_id, j.operation_id) for n, j in jobs.items()}
    reasons = {n: r.get(Column.TRANSCRIPTION_FAILURE_REASON) for n, r in rows.items() if r}
    assert reasons["crashed"] == TRANSCRIPTION_POISONED_REASON
    assert rows["crashed"].get(Column.TRANSCRIPTION_STATUS) == TRANSCRIPTION_FAILED  # type: ignore[union-attr]
    assert reasons["gave up"] == "Speech is busy (gave up after 5)"
    assert rows["done"].get(Column.TRANSCRIPTION_STATUS) == TRANSCRIBED  # type: ignore[union-attr]
    assert rows["gone"].status is OperationStatus.ERASED  # type: ignore[union-attr]
    assert rows["gone"].get(Column.TRANSCRIPTION_STATUS) is None  # type: ignore[union-attr]


async def test_no_transcription_poison_queue_is_nothing_to_purge(storage: Any) -> None:
    from shared.retention import run_cleanup
    from shared.settings import get_settings

    missing = storage._queue(f"absent-{uuid.uuid4().hex[:8]}")
    try:
        summary = await run_cleanup(
            container=storage.container,
            ledger=OperationLedger(storage.table),
            poison_queue=storage.poison_queue,
            transcription_poison_queue=missing,
            settings=get_settings(),
            clock=lambda: datetime.now(UTC),
        )
    finally:
        await missing.close()
    assert summary.errors == 0
