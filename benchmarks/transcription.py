"""Figure 6: the transcription step (issue 20) ÷ one raw POST of the same body to the stand-in.

The app side is the worker's ``process_transcription`` on a transcription job, with the
collaborators the queue trigger takes from the composition root (``Services``: settings, the
Speech client with the managed identity, the recordings container, the ledger). It checks for an
earlier transcript, reads the recording (one GET: the storage SDK's first read takes up to
32 MiB, the whole of a two-minute answer) and sends it as the multipart request, reads the
recording's tags, writes the transcript blob beside it and records ``transcribed`` in the ledger.
The floor is what cannot be left out: one POST of the same multipart body (``definition`` +
``audio``, built once in memory) with a valid Cognitive Services token, over a kept-alive httpx
client. Speech is the simulator's fast transcription endpoint, served by the rig's simulator
process (it parses the body and answers from the WAV header, so both sides pay its parsing).

Recordings of 10 s and 120 s (the longest answer ``recordResponse`` takes) of 16 kHz mono PCM,
as the simulator makes them. Each repetition stores a fresh recording as the download worker
leaves one (blob with its metadata and ``expiresAt`` tag, ledger row ``stored``), then runs the
floor and the app back to back (their order alternates), then deletes the recording and its
transcript, none of which is timed or counted. Storage requests are counted at the azure SDK's
aiohttp transport during the app step only (blob and table; the token is cached by then).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks import floors
from benchmarks.harness import Figure, pairwise_ratios
from benchmarks.rig import Rig, StorageRequestCounter, app_settings_env, new_id, run_async

if TYPE_CHECKING:
    from shared.services import Services

# (label, seconds of audio); the second is the longest answer recordResponse takes.
DURATIONS = (("10 s", 10.0), ("120 s", 120.0))
REPEATS = {"10 s": 40, "120 s": 20}
QUICK_REPEATS = {"10 s": 25, "120 s": 10}
LOCALES = "en-US"
RETENTION = timedelta(hours=1)


@contextlib.contextmanager
def transcription_enabled(rig: Rig) -> Iterator[None]:
    """The app's transcription settings against the simulator process, for this figure only.

    ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` point ``ManagedIdentityCredential`` at the
    simulator's managed-identity endpoint, as App Service's variables point it at Azure's.
    """

    response = httpx.get(f"{rig.recordings.base_url}/_sim/config", timeout=10.0, trust_env=False)
    response.raise_for_status()
    simulator_env: dict[str, str] = response.json()["env"]
    values = {
        "IDENTITY_ENDPOINT": simulator_env["IDENTITY_ENDPOINT"],
        "IDENTITY_HEADER": simulator_env["IDENTITY_HEADER"],
        "TRANSCRIPTION_ENABLED": "true",
        "TRANSCRIPTION_ENDPOINT": rig.recordings.base_url,
        "TRANSCRIPTION_LOCALES": LOCALES,
        "TRANSCRIPTION_KEEP_AUDIO": "true",
    }
    with app_settings_env(values):
        yield


def recording_bytes(rig: Rig, seconds: float) -> bytes:
    """A recording of ``seconds`` as the simulator serves it (WAV header + PCM)."""
    from devtools.graphsim.recordings import HEADER_SIZE, data_size_for

    recording = rig.recordings.add_recording(HEADER_SIZE + data_size_for(None, seconds))
    try:
        response = httpx.get(
            recording.location,
            headers={"Authorization": f"Bearer {recording.access_token}"},
            timeout=60.0,
            trust_env=False,
        )
        response.raise_for_status()
        if len(response.content) != recording.size:
            raise RuntimeError(f"got {len(response.content)} of {recording.size} bytes")
        return response.content
    finally:
        rig.recordings.delete_recording(recording)


async def floor_body(audio: bytes, locales: tuple[str, ...]) -> tuple[bytes, str]:
    """The multipart body the app sends for ``audio`` (same builder), whole, and its type."""
    from shared.transcription.speech import MultipartAudio, definition_for

    async def one_chunk() -> AsyncIterator[bytes]:
        yield audio

    body = MultipartAudio(definition_for(locales), one_chunk(), len(audio))
    data = b"".join([part async for part in body])
    if len(data) != body.length:
        raise RuntimeError(f"multipart body is {len(data)} bytes, declared {body.length}")
    return data, body.content_type


async def raw_post(http: httpx.AsyncClient, url: str, token: str, body: bytes, kind: str) -> float:
    """Seconds for one POST of ``body`` to the fast transcription endpoint; it must answer 200."""
    from shared.transcription.speech import API_VERSION

    started = time.perf_counter()
    response = await http.post(
        url,
        params={"api-version": API_VERSION},
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": kind,
            "Accept": "application/json",
        },
        content=body,
    )
    response.json()
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"floor POST answered {response.status_code}")
    return elapsed


class SpeechTimer:
    """Adds up the time inside ``SpeechClient.transcribe`` (the instance's, wrapped)."""

    def __init__(self, speech: Any) -> None:
        self.seconds = 0.0
        original = speech.transcribe

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        speech.transcribe = timed


async def store_recording(services: Services, audio: bytes) -> tuple[str, str, str]:
    """A recording as the download worker leaves it: blob, metadata, tags, ledger ``stored``."""
    import hashlib

    from azure.storage.blob import ContentSettings

    from shared.blob_layout import WAV, RecordingFacts, blob_name_for

    call_id, operation_id = new_id(), new_id()
    name = blob_name_for(call_id, operation_id)
    now = datetime.now(UTC)
    facts = RecordingFacts(
        call_id=call_id,
        operation_id=operation_id,
        client_context=None,
        result_code=200,
        result_subcode=8515,
        size_bytes=len(audio),
        sha256=hashlib.sha256(audio).hexdigest(),
        content_type=WAV,
        downloaded_at=now,
        expires_at=now + RETENTION,
    )
    await services.storage.container.upload_blob(
        name,
        audio,
        content_settings=ContentSettings(content_type=WAV),
        metadata=facts.metadata(),
        tags=facts.tags(),
    )
    await services.ledger.mark_stored(
        call_id,
        operation_id,
        blob_name=name,
        size_bytes=facts.size_bytes,
        sha256=facts.sha256,
        content_type=WAV,
        expires_at=facts.expires_at,
        stored_at=now,
    )
    return call_id, operation_id, name


async def remove_recording(services: Services, name: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    from shared.blob_layout import transcript_blob_name

    for blob in (name, transcript_blob_name(name)):
        with contextlib.suppress(ResourceNotFoundError):
            await services.storage.container.delete_blob(blob)


def run(rig: Rig, *, quick: bool) -> Figure:
    figure = Figure("6", "Transcription step: 10 s and 120 s recordings, against one raw POST")
    repeats = QUICK_REPEATS if quick else REPEATS
    durations = [(label, seconds) for label, seconds in DURATIONS if label in repeats]
    figure.parameters = {
        "repeats": dict(repeats),
        "audio_seconds": [seconds for _, seconds in durations],
        "locales": LOCALES,
    }
    audio = {label: recording_bytes(rig, seconds) for label, seconds in durations}

    async def measure() -> dict[str, list[float]]:
        from azure.identity.aio import ManagedIdentityCredential

        from shared.services import Services, use_services
        from shared.settings import get_settings
        from shared.transcription import COGNITIVE_SERVICES_SCOPE
        from shared.transcription import process_transcription as transcribe_step
        from shared.transcription.job import TranscriptionJob

        services = Services(get_settings())
        use_services(services)  # closed with the loop's services by run_async
        settings = services.settings
        await services.storage.ensure_resources()
        speech = services.speech
        speech_timer = SpeechTimer(speech)
        # The floor's token: the same managed identity, asked once (the app's is cached too).
        async with ManagedIdentityCredential(
            client_id=settings.managed_identity_client_id
        ) as credential:
            token = (await credential.get_token(COGNITIVE_SERVICES_SCOPE)).token
        results: dict[str, list[float]] = {}
        async with floors.plain_http_client() as http:

            def keep(label: str, name: str, value: float) -> None:
                results.setdefault(f"{name} {label}", []).append(value)

            async def floor(label: str, body: bytes, kind: str) -> None:
                keep(label, "floor", await raw_post(http, speech.url, token, body, kind))

            async def app(label: str | None, call_id: str, operation_id: str, name: str) -> None:
                job = TranscriptionJob(
                    call_id=call_id,
                    operation_id=operation_id,
                    blob_name=name,
                    stored_at=datetime.now(UTC),
                )
                message = job.to_message()
                speech_timer.seconds = 0.0
                with StorageRequestCounter(rig.azurite) as counter:
                    started = time.perf_counter()
                    outcome = await transcribe_step(
                        message,
                        settings=settings,
                        speech=speech,
                        container=services.storage.container,
                        ledger=services.ledger,
                        dequeue_count=1,
                    )
                    elapsed = time.perf_counter() - started
                if outcome.outcome != "transcribed" or not outcome.text:
                    raise RuntimeError(
                        f"transcription ended {outcome.outcome}: {outcome.failure_reason}"
                    )
                if label is None:  # the warm-up
                    return
                by_service = counter.by_service()
                keep(label, "app", elapsed)
                keep(label, "speech", speech_timer.seconds)
                keep(label, "requests", by_service.get("blob", 0) + by_service.get("table", 0))
                keep(label, "other", by_service.get("other", 0) + by_service.get("queue", 0))
                for kind, count in counter.requests.items():
                    keep(label, f"kind {kind}", count)

            for label, _ in durations:
                body, kind = await floor_body(audio[label], settings.transcription_locales)
                # Warm-up (not kept): the first request of each kind opens its connections.
                ids = await store_recording(services, audio[label])
                await raw_post(http, speech.url, token, body, kind)
                await app(None, *ids)
                await remove_recording(services, ids[2])
                for repetition in range(repeats[label]):
                    ids = await store_recording(services, audio[label])
                    gc.collect()
                    if repetition % 2 == 0:
                        await floor(label, body, kind)
                        await app(label, *ids)
                    else:
                        await app(label, *ids)
                        await floor(label, body, kind)
                    await remove_recording(services, ids[2])
        return results

    with transcription_enabled(rig):
        results = run_async(measure)

    for label, _ in durations:
        app_ms = [seconds * 1000 for seconds in results[f"app {label}"]]
        floor_ms = [seconds * 1000 for seconds in results[f"floor {label}"]]
        figure.metric(
            f"transcription step, {label}",
            "ms",
            app_ms,
            with_p99=True,
            description="process_transcription on one job, wall time",
        )
        figure.metric(
            f"raw POST (floor), {label}",
            "ms",
            floor_ms,
            with_p99=True,
            description="one POST of the same multipart body with a valid token",
        )
        figure.metric(
            f"of which the Speech request, {label}",
            "ms",
            [seconds * 1000 for seconds in results[f"speech {label}"]],
            description="SpeechClient.transcribe: token from the cache, POST, JSON answer",
        )
        figure.metric(
            f"storage requests per transcription, {label}",
            "requests",
            results[f"requests {label}"],
            description="blob and table requests of the step, counted at the SDK transport",
        )
        figure.ratio(
            f"transcription step ÷ raw POST (median), {label}",
            f"process_transcription, {label} recording",
            "one raw POST of the same body",
            pairwise_ratios(app_ms, floor_ms),
        )
        kinds = sorted(
            key.removeprefix("kind ").removesuffix(f" {label}")
            for key in results
            if key.startswith("kind ") and key.endswith(f" {label}")
        )
        figure.notes.append(
            f"Requests by service and method, {label}: "
            + ", ".join(f"{kind} {results[f'kind {kind} {label}'][-1]:g}" for kind in kinds)
            + " (last repetition)."
        )
        if any(results[f"other {label}"]):
            figure.notes.append(
                f"{label}: other requests through the SDK transport (queue, or the managed "
                f"identity's token): {sum(results[f'other {label}']):g} in all."
            )
        steps_ms = [
            (app - speech * 1000)
            for app, speech in zip(app_ms, results[f"speech {label}"], strict=True)
        ]
        figure.profile.append(
            f"{label}: step {_median(app_ms):.1f} ms = Speech request "
            f"{_median([s * 1000 for s in results[f'speech {label}']]):.1f} ms + the rest "
            f"(transcript check, recording read, tags, transcript write, ledger) "
            f"{_median(steps_ms):.1f} ms (medians); floor {_median(floor_ms):.1f} ms"
        )
    figure.notes.append(
        "No goal: issue 20 names none for this step. The floor's body is built once in memory; "
        "the app first reads the recording from Blob Storage (one GET), so the gap is the "
        "storage work around the one Speech request, each request a round trip to Azurite."
    )
    return figure


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)
