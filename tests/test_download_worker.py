"""The download worker end to end: the simulator's recordings, real Azurite, real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import azure.functions as func
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from devtools.graphsim import GraphSimulator
from devtools.graphsim.server import RecordingHandle
from devtools.loopback import LoopbackServer
from shared.blob_layout import blob_name_for
from shared.download import (
    DownloadOutcome,
    DownloadRetry,
    TransientDownloadError,
    new_http_client,
    process_job,
)
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus
from shared.services import app_services
from tests.support.clock import Clock, Sleeps
from tests.support.functions import invoke

NOW = datetime(2026, 11, 23, 12, 0, 0, 250_000, tzinfo=UTC)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps(pause=0.001)


@pytest.fixture
def retry(sleeps: Sleeps) -> DownloadRetry:
    return DownloadRetry(base_seconds=0.01, retry_after_cap_seconds=0.05, sleep=sleeps)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)
    async with new_http_client(timeout) as client:
        yield client


def make_job(
    rec: RecordingHandle | None = None,
    *,
    location: str | None = None,
    token: str | None = None,
    client_context: str | None = "d45324c1-fcb5-430a-902c-f20af696537c",
) -> DownloadJob:
    return DownloadJob(
        call_id=str(uuid.uuid4()),
        operation_id=str(uuid.uuid4()),
        client_context=client_context,
        recording_location=location or (rec.location if rec else "https://file.location/x"),
        recording_access_token=token or (rec.access_token if rec else "opaque-token"),
        result_code=200,
        result_subcode=8515,
        result_message="Action completed, max record duration reached.",
        received_at=NOW - timedelta(seconds=2),
    )


async def run(
    job: DownloadJob | str,
    storage: Any,
    http: httpx.AsyncClient,
    retry: DownloadRetry,
    **kwargs: Any,
) -> DownloadOutcome:
    message = job if isinstance(job, str) else job.to_message()
    return await process_job(
        message,
        settings=app_services().settings,
        http=http,
        container=storage.container,
        ledger=OperationLedger(storage.table),
        clock=lambda: NOW,
        retry=retry,
        **kwargs,
    )


async def blob_sha256(storage: Any, name: str) -> str:
    digest = hashlib.sha256()
    downloader = await storage.container.get_blob_client(name).download_blob()
    async for chunk in downloader.chunks():
        digest.update(chunk)
    return digest.hexdigest()


async def blob_names(storage: Any) -> list[str]:
    return [blob.name async for blob in storage.container.list_blobs()]


async def ledger_row(storage: Any, job: DownloadJob) -> Any:
    return await OperationLedger(storage.table).get(job.call_id, job.operation_id)


# -- success ----------------------------------------------------------------------------------


async def test_recording_stored_byte_identical_with_metadata_and_expiry_tag(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    rec = sim.add_recording(size_bytes=9 * 1024 * 1024 + 7)  # three blocks, the last one short
    job = make_job(rec, client_context="réponse n°1 ✓\nline")

    outcome = await run(job, storage, http, retry)

    assert outcome.outcome == "stored"
    name = blob_name_for(job.call_id, job.operation_id)
    assert outcome.blob_name == name == f"{job.call_id}/{job.operation_id}.wav"
    assert await blob_sha256(storage, name) == rec.sha256
    assert rec.request_count == 1
    blob = storage.container.get_blob_client(name)
    properties = await blob.get_blob_properties()
    assert properties.size == rec.size
    # Graph says application/octet-stream; the RIFF/WAVE header says what it really is.
    assert properties.content_settings.content_type == "audio/wav"
    metadata = properties.metadata
    assert metadata["callid"] == job.call_id
    assert metadata["operationid"] == job.operation_id
    assert all(value.isascii() for value in metadata.values())
    assert unquote(metadata["clientcontext"]) == "réponse n°1 ✓\nline"
    assert metadata["resultcode"] == "200"
    assert metadata["resultsubcode"] == "8515"
    assert metadata["sizebytes"] == str(rec.size)
    assert metadata["sha256"] == rec.sha256
    assert datetime.fromisoformat(unquote(metadata["downloadedat"])) == NOW
    # Default retention 60 minutes, rounded up to the whole second.
    tags = await blob.get_blob_tags()
    assert tags["expiresAt"] == "2026-11-23T13:00:01Z"
    assert tags["callId"] == job.call_id
    # The cleanup's query finds it once expired, and not before.
    query = "\"expiresAt\" < '{}'"
    found = [
        b.name async for b in storage.container.find_blobs_by_tags(query.format(tags["expiresAt"]))
    ]
    assert found == []
    later = "2026-11-23T13:00:02Z"
    found = [b.name async for b in storage.container.find_blobs_by_tags(query.format(later))]
    assert found == [name]

    row = await ledger_row(storage, job)
    assert row.status is OperationStatus.STORED
    assert row.get("BlobName") == name
    assert row.get("SizeBytes") == rec.size
    assert row.get("Sha256") == rec.sha256
    assert row.get("ContentType") == "audio/wav"
    assert row.get("StoredAt") == NOW
    assert row.get("ExpiresAt") == datetime(2026, 11, 23, 13, 0, 1, tzinfo=UTC)
    assert row.get("ResultSubcode") == 8515
    # The completion's facts come from the job (the webhook writes no row for a queued job).
    assert row.get("CompletedAt") == job.received_at
    assert row.get("ResultMeaning") == "8515: max record duration reached"
    assert row.get("ClientContext") == job.client_context
    assert outcome.latency_ms == 2000


async def test_declared_content_type_is_kept(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    rec = sim.add_recording(duration_seconds=0.5, content_type="audio/x-wav")
    outcome = await run(make_job(rec), storage, http, retry)
    assert outcome.content_type == "audio/x-wav"


async def test_same_job_twice_is_one_blob_and_one_download(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    rec = sim.add_recording(duration_seconds=2)
    job = make_job(rec)
    first = await run(job, storage, http, retry)
    second = await run(job, storage, http, retry)
    assert (first.outcome, second.outcome) == ("stored", "already_stored")
    assert second.sha256 == first.sha256 == rec.sha256
    assert rec.request_count == 1
    assert await blob_names(storage) == [first.blob_name]
    assert (await ledger_row(storage, job)).status is OperationStatus.STORED


async def test_same_job_concurrently_is_one_blob_and_one_download(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    rec = sim.add_recording(size_bytes=6 * 1024 * 1024)
    job = make_job(rec)
    outcomes = await asyncio.gather(*(run(job, storage, http, retry) for _ in range(3)))
    assert sorted(o.outcome for o in outcomes) == ["already_stored", "already_stored", "stored"]
    assert rec.request_count == 1
    name = blob_name_for(job.call_id, job.operation_id)
    assert await blob_names(storage) == [name]
    assert await blob_sha256(storage, name) == rec.sha256


# -- transient faults ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["503", "429"])
async def test_busy_then_success_is_stored_once_honouring_retry_after(
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    retry: DownloadRetry,
    sleeps: Sleeps,
    fault: str,
) -> None:
    rec = sim.add_recording(duration_seconds=1, faults=[fault, fault])
    outcome = await run(make_job(rec), storage, http, retry)
    assert outcome.outcome == "stored"
    assert outcome.attempts == rec.request_count == 3
    assert outcome.sha256 == rec.sha256
    # Retry-After: 1 is honoured, up to the policy's cap (0.05 s in tests).
    assert len(sleeps.delays) == 2
    assert all(delay >= 0.05 for delay in sleeps.delays)
    assert len(await blob_names(storage)) == 1


@pytest.mark.parametrize("fault", ["reset", "short"])
async def test_truncated_body_commits_nothing_and_is_stored_on_the_retry(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, sleeps: Sleeps, fault: str
) -> None:
    rec = sim.add_recording(size_bytes=5 * 1024 * 1024, faults=[fault])
    job = make_job(rec)
    one_attempt = DownloadRetry(attempts=1, sleep=sleeps)

    with pytest.raises(TransientDownloadError):
        await run(job, storage, http, one_attempt)
    # Blocks of the broken attempt may be staged, but nothing is readable.
    assert await blob_names(storage) == []
    assert not await storage.container.get_blob_client(
        blob_name_for(job.call_id, job.operation_id)
    ).exists()
    assert (await ledger_row(storage, job)).status is OperationStatus.DOWNLOADING

    outcome = await run(job, storage, http, one_attempt)  # the host's redelivery
    assert outcome.outcome == "stored"
    assert await blob_sha256(storage, outcome.blob_name or "") == rec.sha256
    assert rec.request_count == 2


async def test_reset_is_retried_inline(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    rec = sim.add_recording(size_bytes=300_000, faults=["reset"])
    outcome = await run(make_job(rec), storage, http, retry)
    assert (outcome.outcome, outcome.attempts, rec.request_count) == ("stored", 2, 2)
    assert outcome.sha256 == rec.sha256


async def test_slow_drip_beyond_the_read_timeout_is_retried(
    sim: GraphSimulator, storage: Any, retry: DownloadRetry
) -> None:
    rec = sim.add_recording(size_bytes=300_000, faults=["slow:1.0"])
    timeout = httpx.Timeout(connect=2.0, read=0.2, write=2.0, pool=2.0)
    async with new_http_client(timeout) as http:
        outcome = await run(make_job(rec), storage, http, retry)
    assert (outcome.outcome, rec.request_count) == ("stored", 2)
    assert outcome.sha256 == rec.sha256


async def test_always_busy_raises_after_bounded_inline_retries(
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    retry: DownloadRetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = sim.add_recording(duration_seconds=1, faults=["503"] * 20)
    job = make_job(rec)
    with pytest.raises(TransientDownloadError, match="answered 503"):
        await run(job, storage, http, retry, dequeue_count=1)
    assert rec.request_count == retry.attempts == 3
    assert await blob_names(storage) == []
    given_back = await ledger_row(storage, job)
    assert given_back.status is OperationStatus.DOWNLOADING
    assert given_back.get("DownloadHolder") == ""  # the redelivery need not wait for the lease

    # The last delivery before the poison queue leaves the reason in the ledger.
    with pytest.raises(TransientDownloadError):
        await run(job, storage, http, retry, dequeue_count=5)
    row = await ledger_row(storage, job)
    assert row.status is OperationStatus.FAILED
    assert "answered 503" in row.get("FailureReason")
    assert "gave up after 5 deliveries" in row.get("FailureReason")
    assert rec.access_token not in caplog.text


async def test_inline_retries_stay_within_their_budget(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, sleeps: Sleeps
) -> None:
    # Retry-After asks for 30 s: capped at 5 s, which does not fit a 3 s budget: stop at once.
    rec = sim.add_recording(duration_seconds=1, faults=["503:30"] * 5)
    tight = DownloadRetry(budget_seconds=3.0, sleep=sleeps)
    with pytest.raises(TransientDownloadError):
        await run(make_job(rec), storage, http, tight)
    assert rec.request_count == 1
    assert sleeps.delays == []


# -- terminal failures -----------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["401", "404"])
async def test_gone_or_unauthorized_is_a_terminal_failure(
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    retry: DownloadRetry,
    sleeps: Sleeps,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    rec = sim.add_recording(duration_seconds=1, faults=[fault])
    job = make_job(rec)
    with caplog.at_level(logging.INFO, logger="shared.download"):
        outcome = await run(job, storage, http, retry)
    assert outcome.outcome == "failed"
    assert outcome.failure_reason == f"recording location answered {fault}"
    assert rec.request_count == 1
    assert sleeps.delays == []
    assert await blob_names(storage) == []
    row = await ledger_row(storage, job)
    assert row.status is OperationStatus.FAILED
    assert row.get("FailureReason") == f"recording location answered {fault}"
    outcome_lines = [r for r in caplog.records if r.getMessage().startswith("recording download")]
    assert len(outcome_lines) == 1
    assert f"call_id={job.call_id}" in outcome_lines[0].getMessage()
    assert rec.access_token not in caplog.text


async def test_oversize_recording_is_refused(
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    retry: DownloadRetry,
    configure: Callable[..., Any],
) -> None:
    configure(RECORDING_MAX_BYTES="100000")
    rec = sim.add_recording(size_bytes=100_001)
    outcome = await run(make_job(rec), storage, http, retry)
    assert outcome.outcome == "failed"
    assert "too large" in (outcome.failure_reason or "")
    assert await blob_names(storage) == []


async def test_oversize_body_without_content_length_is_cut_off(
    storage: Any, http: httpx.AsyncClient, retry: DownloadRetry, configure: Callable[..., Any]
) -> None:
    configure(RECORDING_MAX_BYTES="100000")

    async def endless(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(100):  # 6.4 MB, no Content-Length
                yield b"\0" * 65536

        return StreamingResponse(body(), media_type="application/octet-stream")

    with LoopbackServer(Starlette(routes=[Route("/rec", endless)])) as server:
        outcome = await run(make_job(location=f"{server.base_url}/rec"), storage, http, retry)
    assert outcome.outcome == "failed"
    assert "too large" in (outcome.failure_reason or "")
    assert await blob_names(storage) == []


# -- the URL guard, in production mode -------------------------------------------------------


@pytest.fixture
async def production(configure: Callable[..., Any]) -> None:
    configure(ALLOW_INSECURE_RECORDING_URLS="false")


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/metadata/identity/oauth2/token",
        "https://169.254.169.254/metadata/instance",
        "https://127.0.0.1/recording",
        "https://10.0.0.1/recording",
        "file:///etc/passwd",
        "ftp://files.example.com/recording.wav",
        "https://localhost/recording",
    ],
)
async def test_refused_locations_send_no_request(
    production: None, storage: Any, retry: DownloadRetry, location: str
) -> None:
    requests: list[httpx.Request] = []

    def must_not_be_called(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500)

    job = make_job(location=location)
    async with httpx.AsyncClient(transport=httpx.MockTransport(must_not_be_called)) as http:
        outcome = await run(job, storage, http, retry)
    assert requests == []
    assert outcome.outcome == "failed"
    assert (outcome.failure_reason or "").startswith("recording location refused")
    row = await ledger_row(storage, job)
    assert row.status is OperationStatus.FAILED


async def test_simulator_on_loopback_is_refused_in_production(
    production: None,
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    retry: DownloadRetry,
) -> None:
    rec = sim.add_recording(duration_seconds=1)
    for location in (
        rec.location,
        rec.location.replace("http://", "https://"),
        rec.location.replace("127.0.0.1", "localhost").replace("http://", "https://"),
    ):
        outcome = await run(make_job(rec, location=location), storage, http, retry)
        assert outcome.outcome == "failed"
    assert rec.request_count == 0


async def test_redirect_keeps_the_token_on_the_original_host(
    storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    auth_seen: dict[str, str | None] = {}
    body = b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(256)) * 40

    async def moved(request: Request) -> Response:
        auth_seen["origin"] = request.headers.get("authorization")
        return RedirectResponse(f"{holder[0]}/file", status_code=302)

    async def file(request: Request) -> Response:
        auth_seen["target"] = request.headers.get("authorization")
        return Response(body, media_type="application/octet-stream")

    holder: list[str] = []
    with (
        LoopbackServer(Starlette(routes=[Route("/file", file)])) as target,
        LoopbackServer(Starlette(routes=[Route("/rec", moved)])) as origin,
    ):
        holder.append(target.base_url)
        job = make_job(location=f"{origin.base_url}/rec", token="the-recording-token")
        outcome = await run(job, storage, http, retry)
    assert outcome.outcome == "stored"
    assert outcome.sha256 == hashlib.sha256(body).hexdigest()
    assert auth_seen == {"origin": "Bearer the-recording-token", "target": None}


# -- invalid messages ------------------------------------------------------------------------


async def test_a_message_that_is_not_json_is_settled_as_invalid(
    storage: Any, http: httpx.AsyncClient, retry: DownloadRetry, caplog: pytest.LogCaptureFixture
) -> None:
    outcome = await run("this is not a job", storage, http, retry)
    assert outcome.outcome == "invalid"
    assert outcome.call_id is None
    assert [r for r in caplog.records if "outcome=invalid" in r.getMessage()]


async def test_an_invalid_job_with_readable_ids_is_failed_in_the_ledger(
    storage: Any, http: httpx.AsyncClient, retry: DownloadRetry, caplog: pytest.LogCaptureFixture
) -> None:
    message = json.dumps(
        {
            "version": 1,
            "call_id": "c-1",
            "operation_id": "o-1",
            "recording_location": "https://file.location/x",
            "recording_access_token": "secret-token-value",
            # received_at missing
        }
    )
    outcome = await run(message, storage, http, retry)
    assert outcome.outcome == "invalid"
    assert "received_at" in (outcome.failure_reason or "")
    row = await OperationLedger(storage.table).get("c-1", "o-1")
    assert row is not None
    assert row.status is OperationStatus.FAILED
    assert "received_at" in row.get("FailureReason")
    assert "secret-token-value" not in caplog.text


# -- memory ----------------------------------------------------------------------------------


async def test_a_50_mb_recording_streams_in_flat_memory(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    rec = sim.add_recording(size_bytes=50 * 1024 * 1024)
    rec.sha256  # noqa: B018 - computed before measuring, so the simulator's hash is not counted
    job = make_job(rec)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        outcome = await run(job, storage, http, retry)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.outcome == "stored"
    assert outcome.size_bytes == rec.size
    assert outcome.sha256 == rec.sha256
    growth = peak - baseline
    print(f"peak memory growth while storing {rec.size} bytes: {growth / 2**20:.1f} MiB")
    assert growth < 16 * 1024 * 1024


# -- through the registered function ---------------------------------------------------------


@pytest.fixture
async def shared_http_client() -> None:
    # The registered function uses the loop's services; the autouse fixture closes them.
    return


async def test_registered_function_stores_settles_and_raises(
    sim: GraphSimulator, storage: Any, shared_http_client: None
) -> None:
    good = sim.add_recording(duration_seconds=1)
    job = make_job(good)
    assert await invoke("download_recording", func.QueueMessage(body=job.to_message())) is None
    assert (await ledger_row(storage, job)).status is OperationStatus.STORED
    assert good.request_count == 1

    gone = make_job(sim.add_recording(duration_seconds=1, faults=["404"]))
    assert await invoke("download_recording", func.QueueMessage(body=gone.to_message())) is None
    assert (await ledger_row(storage, gone)).status is OperationStatus.FAILED

    busy_rec = sim.add_recording(duration_seconds=1, faults=["503:0"] * 10)
    busy = make_job(busy_rec)
    with pytest.raises(TransientDownloadError):
        await invoke("download_recording", func.QueueMessage(body=busy.to_message().encode()))
    assert busy_rec.request_count == 3

    assert await invoke("download_recording", func.QueueMessage(body=b"\xff\xfe")) is None


# -- the lease and the conditional commit, one class at a time -------------------------------


async def test_a_crashed_holders_lease_expires_and_is_taken_over_once(storage: Any) -> None:
    from shared.ledger import LEASE_TIME_TO_LIVE, DownloadLease, LeaseLost

    clock = Clock(NOW)
    ledger = OperationLedger(storage.table, clock=clock)
    job, name = make_job(), "c/o.wav"
    crashed, duplicate, third = (DownloadLease(ledger, clock=clock) for _ in range(3))

    async def take(lease: DownloadLease) -> bool:
        return (await lease.take(job, blob_name=name, create_first=True)).held

    assert await take(crashed)
    clock.now += LEASE_TIME_TO_LIVE / 2
    assert not await take(duplicate)
    clock.now += LEASE_TIME_TO_LIVE  # the holder never renewed: its lease ran out
    taken_over = await duplicate.take(job, blob_name=name, create_first=False)
    assert taken_over.held
    assert taken_over.tried_before
    assert not await take(third)
    with pytest.raises(LeaseLost):
        await crashed.keep_alive()
    await crashed.release()  # must not release the new holder's lease
    assert not await take(third)
    await duplicate.release()
    assert await take(third)
    row = await ledger.get(job.call_id, job.operation_id)
    assert row is not None
    assert row.status is OperationStatus.DOWNLOADING
    assert "downloadHolder" not in row.to_json()  # storage internals stay out of the API
    await third.release()


async def test_the_lease_is_renewed_on_the_rows_latest_etag(storage: Any) -> None:
    """An erasure written mid-download does not cost the holder its lease, nor undo the erasure."""
    from shared.ledger import LEASE_RENEW_AFTER, DownloadLease

    clock = Clock(NOW)
    ledger = OperationLedger(storage.table, clock=clock)
    job = make_job()
    holder, other = DownloadLease(ledger, clock=clock), DownloadLease(ledger, clock=clock)
    assert (await holder.take(job, blob_name="c/o.wav", create_first=False)).held
    await ledger.mark_erased(job.call_id, job.operation_id)
    clock.now += LEASE_RENEW_AFTER
    await holder.keep_alive()  # the ETag changed under it: read again, still ours
    assert holder.held
    lease = await other.take(job, blob_name="c/o.wav", create_first=True)
    assert not lease.held
    assert lease.row.record.status is OperationStatus.ERASED
    await holder.release()
    row = await ledger.get(job.call_id, job.operation_id)
    assert row is not None
    assert row.status is OperationStatus.ERASED


async def test_a_late_commit_never_overwrites_a_stored_recording(storage: Any) -> None:
    from shared.blob_layout import RecordingFacts
    from shared.download.store import BlockWriter

    blob = storage.container.get_blob_client("c/o.wav")
    first, late = (BlockWriter(blob, max_bytes=100, block_size=4) for _ in range(2))
    await first.write(b"RIFF....WAVE")
    await late.write(b"something else")
    facts = RecordingFacts("c", "o", None, None, None, 12, first.sha256, "audio/wav", NOW, NOW)
    assert await first.commit(facts) is True
    assert await late.commit(facts) is False
    assert await (await blob.download_blob()).readall() == b"RIFF....WAVE"


# -- what one recording costs in storage requests ---------------------------------------------


async def test_one_recording_reads_nothing_before_writing(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    """No blob read before the download, no ledger read before "stored" (the ETag is carried)."""
    from azure.data.tables.aio import TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient

    from tests.support.counting import CountingTransport

    connection = storage.settings.storage_connection_string
    blobs, tables = CountingTransport(), CountingTransport()
    async with (
        BlobServiceClient.from_connection_string(connection, transport=blobs) as blob_service,
        TableServiceClient.from_connection_string(connection, transport=tables) as table_service,
    ):
        table = table_service.get_table_client(storage.table_name)
        rec = sim.add_recording(duration_seconds=1)
        outcome = await process_job(
            make_job(rec, client_context=None).to_message(),
            settings=app_services().settings,
            http=http,
            container=blob_service.get_container_client(storage.container_name),
            ledger=OperationLedger(table),
            clock=lambda: NOW,
            retry=retry,
        )
    assert outcome.outcome == "stored"
    # One conditional Put Blob (a recordResponse fits in one block): nothing else touches it.
    assert [method for method, _, _ in blobs.sent] == ["PUT"]
    # A completion without a clientContext was not started by this app and has no row:
    # "downloading" with the download lease is one blind create (in one transaction with the
    # call's erasure guard), and "stored" one merge on its ETag that gives the lease back.
    # The recordings list's index row (PUT, issue 27), then the same two writes as before.
    assert [method for method, _, _ in tables.sent] == ["PUT", "POST", "PATCH"]
    assert tables.sent[1][1].endswith("/$batch")


@pytest.mark.parametrize("started_by", ["bot", "api"])
async def test_a_recording_this_app_started_reads_its_row_once(
    sim: GraphSimulator,
    storage: Any,
    http: httpx.AsyncClient,
    retry: DownloadRetry,
    started_by: str,
) -> None:
    """The bot's and the record API's recordings have a row from the start: one read, then
    writes on its ETag."""
    from azure.data.tables.aio import TableServiceClient

    from shared.bot.steps import attempt_context
    from tests.support.counting import CountingTransport

    rec = sim.add_recording(duration_seconds=1)
    context = attempt_context(1) if started_by == "bot" else "the caller's own context"
    job = make_job(rec, client_context=context)
    await OperationLedger(storage.table).mark_started(
        job.call_id,
        job.operation_id,
        OperationStatus.RUNNING,
        requested_at=NOW,
        client_context=job.client_context,
        started_by=started_by,
        max_record_duration_seconds=10,
    )
    tables = CountingTransport()
    connection = storage.settings.storage_connection_string
    async with TableServiceClient.from_connection_string(
        connection, transport=tables
    ) as table_service:
        outcome = await process_job(
            job.to_message(),
            settings=app_services().settings,
            http=http,
            container=storage.container,
            ledger=OperationLedger(table_service.get_table_client(storage.table_name)),
            clock=lambda: NOW,
            retry=retry,
        )
    assert outcome.outcome == "stored"
    # The row and the call's erasure guard (one query), "downloading" with the lease on its ETag
    # (one transaction with the guard), "stored" on the next one.
    # The recordings list's index row (PUT, issue 27), then the same read and writes as before.
    assert [method for method, _, _ in tables.sent] == ["PUT", "GET", "POST", "PATCH"]
    assert tables.sent[2][1].endswith("/$batch")
    row = await ledger_row(storage, job)
    assert row.status is OperationStatus.STORED
    assert row.get("StartedBy") == started_by
    assert row.get("DownloadHolder") == ""


async def test_a_holder_that_stopped_after_its_commit_is_not_downloaded_again(
    sim: GraphSimulator, storage: Any, http: httpx.AsyncClient, retry: DownloadRetry
) -> None:
    """The blob was committed, then the instance died before "stored": the taker finds it."""
    from shared.blob_layout import RecordingFacts
    from shared.download.store import BlockWriter
    from shared.ledger import LEASE_TIME_TO_LIVE, DownloadLease

    rec = sim.add_recording(duration_seconds=1)
    job = make_job(rec)
    name = blob_name_for(job.call_id, job.operation_id)
    ledger = OperationLedger(storage.table)
    before = NOW - LEASE_TIME_TO_LIVE * 2
    crashed = DownloadLease(ledger, clock=lambda: before)
    assert (await crashed.take(job, blob_name=name, create_first=True)).held
    writer = BlockWriter(storage.container.get_blob_client(name), max_bytes=1024)
    await writer.write(b"RIFF....WAVEfmt ")
    facts = RecordingFacts(
        job.call_id, job.operation_id, None, 200, 8515, 16, writer.sha256, "audio/wav", NOW, NOW
    )
    assert await writer.commit(facts)

    outcome = await run(job, storage, http, retry)
    assert outcome.outcome == "already_stored"
    assert outcome.sha256 == writer.sha256
    assert rec.request_count == 0  # its lease had run out: taken over, and nothing downloaded
    row = await ledger_row(storage, job)
    assert row.status is OperationStatus.STORED
    assert row.get("DownloadHolder") == ""
