"""Transcription end to end: the simulator's recordings and Speech stand-in, real Azurite.

stored -> transcribed -> the status API shows the text -> the cleanup deletes audio and
transcript together; throttling then success; permanent failures recorded with the audio kept.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from devtools.graphsim import GraphSimulator
from devtools.graphsim.server import RecordingHandle
from devtools.graphsim.speech import transcript_for
from shared.backoff import Backoff
from shared.blob_layout import ids_from_blob_name, transcript_blob_name
from shared.jobs import DownloadJob
from shared.ledger import TRANSCRIBED, TRANSCRIPTION_FAILED, Column, OperationLedger
from shared.retention import run_cleanup
from shared.services import Services, app_services
from shared.settings import Settings
from shared.transcription import (
    TranscriptionOutcome,
    TransientTranscriptionError,
    process_transcription,
)
from shared.transcription.job import TranscriptionJob
from tests.support.clock import Clock, Sleeps
from tests.support.functions import invoke, json_body
from tests.support.recordings import blob_names, recording_status, stored_for_transcription

TRANSCRIBE_PATH = "/speechtotext/transcriptions:transcribe"


@pytest.fixture
async def clean(transcribing: GraphSimulator, storage: Any) -> Any:
    await storage.transcription_queue.clear_messages()
    return storage


def speech_requests(sim: GraphSimulator) -> int:
    return sum(1 for request in sim.requests if request.path == TRANSCRIBE_PATH)


async def download(rec: RecordingHandle) -> DownloadJob:
    """The recording through the real download trigger (which queues its transcription)."""
    job = DownloadJob(
        call_id=str(uuid.uuid4()),
        operation_id=str(uuid.uuid4()),
        recording_location=rec.location,
        recording_access_token=rec.access_token,
        result_code=200,
        result_subcode=8515,
        received_at=datetime.now(UTC),
    )
    assert await invoke("download_recording", func.QueueMessage(body=job.to_message())) is None
    return job


async def next_transcription_message(storage: Any) -> bytes:
    messages = [m async for m in storage.transcription_queue.receive_messages(max_messages=32)]
    assert len(messages) == 1
    await storage.transcription_queue.delete_message(messages[0])
    content: bytes = messages[0].content
    return content


async def status(call_id: str, operation_id: str) -> dict[str, Any]:
    response = await recording_status(call_id, operation_id)
    assert response.status_code == 200
    body: dict[str, Any] = json_body(response)
    return body


async def transcribe(
    job: TranscriptionJob,
    storage: Any,
    *,
    settings: Settings | None = None,
    backoff: Backoff | None = None,
    dequeue_count: int = 1,
) -> TranscriptionOutcome:
    return await process_transcription(
        job.to_message(),
        settings=settings or app_services().settings,
        speech=app_services().speech,
        container=storage.container,
        ledger=OperationLedger(storage.table),
        backoff=backoff or Backoff(sleep=Sleeps()),
        dequeue_count=dequeue_count,
    )


# --- the whole way ---------------------------------------------------------------------------------


async def test_stored_transcribed_shown_then_deleted_with_its_recording(
    transcribing: GraphSimulator, clean: Any
) -> None:
    storage = clean
    rec = transcribing.add_recording(duration_seconds=2.5, content_type="audio/wav")
    audio = b"".join(rec.iter_bytes())
    job = await download(rec)

    message = await next_transcription_message(storage)
    assert json.loads(message)["blob_name"] == f"{job.call_id}/{job.operation_id}.wav"
    await invoke("transcribe_recording", func.QueueMessage(body=message))

    recording = f"{job.call_id}/{job.operation_id}.wav"
    transcript = transcript_blob_name(recording)
    assert await blob_names(storage) == {recording, transcript}
    expected = transcript_for(audio, "en-US")
    document = json.loads(await (await storage.container.download_blob(transcript)).readall())
    assert document["text"] == expected["combinedPhrases"][0]["text"]
    assert [p["offsetMilliseconds"] for p in document["phrases"]] == [0, 1250]
    assert {p["confidence"] for p in document["phrases"]} == {0.93}
    assert document["locales"] == ["en-US"]
    # Same expiry tag and metadata as the audio: retention treats them as one.
    audio_blob, text_blob = (storage.container.get_blob_client(n) for n in (recording, transcript))
    assert await text_blob.get_blob_tags() == await audio_blob.get_blob_tags()
    audio_meta = (await audio_blob.get_blob_properties()).metadata
    assert (await text_blob.get_blob_properties()).metadata == audio_meta

    row = await OperationLedger(storage.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.status.value == "stored"
    assert row.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIBED
    assert row.get(Column.TRANSCRIBED_AT) is not None
    assert all("simulated answer" not in str(value) for value in row.fields.values())

    body = await status(job.call_id, job.operation_id)
    assert body["transcript"] == document["text"]
    assert body["transcriptionStatus"] == TRANSCRIBED
    assert "recordingUrl" in body

    # The cleanup's tag query finds both; the row says expired once.
    later = Clock(datetime.now(UTC) + timedelta(minutes=61))
    summary = await run_cleanup(
        container=storage.container,
        ledger=OperationLedger(storage.table, clock=later),
        poison_queue=storage.poison_queue,
        settings=app_services().settings,
        clock=later,
    )
    assert summary.recordings_deleted == 2
    assert summary.errors == 0
    assert await blob_names(storage) == set()
    body = await status(job.call_id, job.operation_id)
    assert body["status"] == "expired"
    assert "transcript" not in body


async def test_a_duplicate_job_transcribes_once(transcribing: GraphSimulator, clean: Any) -> None:
    job = await stored_for_transcription(
        clean, b"".join(transcribing.add_recording(duration_seconds=1.0).iter_bytes())
    )
    before = speech_requests(transcribing)
    first = await transcribe(job, clean)
    second = await transcribe(job, clean)
    assert (first.outcome, second.outcome) == ("transcribed", "already_transcribed")
    assert speech_requests(transcribing) == before + 1


async def test_without_keeping_audio_only_the_transcript_remains(
    transcribing: GraphSimulator, clean: Any
) -> None:
    job = await stored_for_transcription(
        clean, b"".join(transcribing.add_recording(duration_seconds=1.0).iter_bytes())
    )
    settings = app_services().settings.model_copy(update={"transcription_keep_audio": False})
    outcome = await transcribe(job, clean, settings=settings)
    assert outcome.outcome == "transcribed"
    assert outcome.audio_deleted is True
    assert await blob_names(clean) == {transcript_blob_name(job.blob_name)}
    body = await status(job.call_id, job.operation_id)
    assert body["status"] == "stored"  # the ledger still says stored
    assert body["audioDeletedAt"]
    assert body["transcript"] == outcome.text
    assert "recordingUrl" not in body


async def test_nothing_is_queued_when_transcription_is_off(
    configure: Callable[..., Services], sim: GraphSimulator, storage: Any
) -> None:
    configure()  # the default: off
    await storage.transcription_queue.clear_messages()
    await download(sim.add_recording(duration_seconds=1.0, content_type="audio/wav"))
    assert [m async for m in storage.transcription_queue.receive_messages()] == []


# --- throttling and failures -----------------------------------------------------------------------


async def test_throttled_then_transcribed_after_retry_after(
    transcribing: GraphSimulator, clean: Any
) -> None:
    job = await stored_for_transcription(
        clean, b"".join(transcribing.add_recording(duration_seconds=1.0).iter_bytes())
    )
    transcribing.add_api_faults("transcribe", ["429:7"])
    sleeps = Sleeps()
    outcome = await transcribe(job, clean, backoff=Backoff(sleep=sleeps, jitter=lambda: 0.0))
    assert outcome.outcome == "transcribed"
    assert outcome.attempts == 2
    assert sleeps.delays == [7.0]  # Retry-After, not the exponential backoff


async def test_throttled_on_every_delivery_is_recorded_on_the_last(
    transcribing: GraphSimulator, clean: Any
) -> None:
    job = await stored_for_transcription(
        clean, b"".join(transcribing.add_recording(duration_seconds=1.0).iter_bytes())
    )
    transcribing.add_api_faults("transcribe", ["429:1"] * 3)
    with pytest.raises(TransientTranscriptionError):
        await transcribe(job, clean, dequeue_count=1)
    row = await OperationLedger(clean.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(Column.TRANSCRIPTION_STATUS) is None

    transcribing.add_api_faults("transcribe", ["503"] * 3)
    with pytest.raises(TransientTranscriptionError):
        await transcribe(job, clean, dequeue_count=5)
    row = await OperationLedger(clean.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIPTION_FAILED
    assert "gave up after 5 deliveries" in row.get(Column.TRANSCRIPTION_FAILURE_REASON)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not_wav", "not a WAV file"),
        ("empty", "is empty"),
        ("locale", "TRANSCRIPTION_LOCALES=xx-XX"),
        ("token", "refused the app's token"),
    ],
)
async def test_bad_input_is_recorded_and_the_audio_untouched(
    transcribing: GraphSimulator, clean: Any, case: str, reason: str
) -> None:
    bad = {"not_wav": b"ID3\x04" + bytes(4000), "empty": b""}
    if case in bad:
        data = bad[case]
    else:
        data = b"".join(transcribing.add_recording(duration_seconds=1.0).iter_bytes())
    job = await stored_for_transcription(clean, data)
    settings = app_services().settings
    if case == "locale":
        settings = settings.model_copy(update={"transcription_locales": ("xx-XX",)})
    if case == "token":
        transcribing.add_api_faults("transcribe", ["401"])
    before = speech_requests(transcribing)

    outcome = await transcribe(job, clean, settings=settings)

    assert outcome.outcome == "failed"
    assert reason in (outcome.failure_reason or "")
    row = await OperationLedger(clean.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.status.value == "stored"
    assert row.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIPTION_FAILED
    assert reason in row.get(Column.TRANSCRIPTION_FAILURE_REASON)
    stored = await (await clean.container.download_blob(job.blob_name)).readall()
    assert stored == data
    assert await blob_names(clean) == {job.blob_name}
    # Bad audio never leaves the app; Speech answers for locales and tokens.
    sent = speech_requests(transcribing) - before
    assert sent == (1 if case in ("locale", "token") else 0)


async def test_a_real_token_from_another_audience_is_refused(
    transcribing: GraphSimulator, clean: Any
) -> None:
    """The stand-in checks the token's audience: a Graph token is not a Speech token."""
    import httpx

    response = httpx.post(
        f"{transcribing.base_url}{TRANSCRIBE_PATH}?api-version=2025-10-15",
        headers={"Authorization": f"Bearer {transcribing.graph_token()}"},
        files={"audio": ("a.wav", b"RIFF")},
    )
    assert response.status_code == 401


def test_the_cleanup_reads_ids_from_a_transcript_name() -> None:
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    name = transcript_blob_name(f"{call_id}/{operation_id}.wav")
    assert name == f"{call_id}/{operation_id}.wav.transcript.json"
    assert ids_from_blob_name(name) == (call_id, operation_id)


async def test_a_job_left_on_the_queue_after_turning_it_off_is_settled(
    configure: Callable[..., Services], sim: GraphSimulator, storage: Any
) -> None:
    configure()  # the default: off
    before = speech_requests(sim)
    job = TranscriptionJob(
        call_id=str(uuid.uuid4()),
        operation_id=str(uuid.uuid4()),
        blob_name="a/b.wav",
        stored_at=datetime.now(UTC),
    )
    message = func.QueueMessage(body=job.to_message())
    assert await invoke("transcribe_recording", message) is None
    assert speech_requests(sim) == before


async def test_no_text_once_the_transcript_blob_is_gone(
    transcribing: GraphSimulator, clean: Any
) -> None:
    job = await stored_for_transcription(
        clean, b"".join(transcribing.add_recording(duration_seconds=2.0).iter_bytes())
    )
    outcome = await transcribe(job, clean)
    assert (await status(job.call_id, job.operation_id))["transcript"] == outcome.text
    await clean.container.delete_blob(transcript_blob_name(job.blob_name))
    body = await status(job.call_id, job.operation_id)
    assert body["transcriptionStatus"] == TRANSCRIBED
    assert "transcript" not in body
    assert "recordingUrl" in body


async def test_the_queue_is_created_on_first_use(transcribing: GraphSimulator, clean: Any) -> None:
    await clean.transcription_queue.delete_queue()
    job = await download(transcribing.add_recording(duration_seconds=1.0, content_type="audio/wav"))
    message = json.loads(await next_transcription_message(clean))
    assert (message["call_id"], message["operation_id"]) == (job.call_id, job.operation_id)


async def test_one_transcription_reads_the_recording_once_and_its_row_once(
    transcribing: GraphSimulator, clean: Any
) -> None:
    """The tags come from the recording's metadata; the row is read once, before the work, and
    the outcome merged on its ETag (an erasure meanwhile is seen, not overwritten)."""
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient

    from tests.support.counting import CountingTransport

    storage = clean
    rec = transcribing.add_recording(duration_seconds=2.5, content_type="audio/wav")
    job = await download(rec)
    message = await next_transcription_message(storage)
    connection = storage.settings.storage_connection_string
    blobs, tables = CountingTransport(), CountingTransport()
    async with (
        BlobServiceClient.from_connection_string(connection, transport=blobs) as blob_service,
        TableServiceClient.from_connection_string(connection, transport=tables) as table_service,
    ):
        outcome = await process_transcription(
            message,
            settings=app_services().settings,
            speech=app_services().speech,
            container=blob_service.get_container_client(storage.container_name),
            ledger=OperationLedger(table_service.get_table_client(storage.table_name)),
            backoff=Backoff(sleep=Sleeps()),
            dequeue_count=1,
        )
    assert outcome.outcome == "transcribed"
    # Is there a transcript already; the recording (with its metadata); the transcript.
    assert [method for method, _, _ in blobs.sent] == ["HEAD", "GET", "PUT"]
    assert [method for method, _, _ in tables.sent] == ["GET", "PATCH"]
    recording = f"{job.call_id}/{job.operation_id}.wav"
    audio_blob, text_blob = (
        storage.container.get_blob_client(name)
        for name in (recording, transcript_blob_name(recording))
    )
    assert await text_blob.get_blob_tags() == await audio_blob.get_blob_tags()
    row = await OperationLedger(storage.table).get(job.call_id, job.operation_id)
    assert row is not None
    assert row.get(Column.TRANSCRIPTION_STATUS) == TRANSCRIBED
