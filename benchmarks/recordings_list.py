"""Figure 11: the recordings list across calls (issue 27): a page costs what it holds.

``GET /api/recordings`` lists recordings newest first from index rows (shared/ledger/index.py): one
time index row per recording (``~time~YYYYMMDDHH``) and one caller index row per call of a caller
(``~caller~<digest>``). Two tables are seeded, one of 1 000 and one of 20 000 recordings (``--quick``:
500 and 10 000, the same ratio), and the registered ``list_recordings`` function is driven in this
process on each, as the Functions host calls it: an Entra token with ``Recordings.Read``, the
app's services pinned to that table, the audit row every call writes included. Four pages, the two
tables interleaved repetition by repetition: the first page of 50, a middle page (the token of the
recording half way down), a page of one caller, a page of ``status=stored``. Storage requests are
counted at the SDK's transport and classified by the ledger rows they touch; the goal is a ratio
20 000 ÷ 1 000 of at most 1.2 for the requests and for the wall time of each page.

Then what the metadata and the index rows add to a recording on the real path: the bot flow's
capture of who called (``mark_call_metadata``, once per call), and a completion through the
registered webhook, the queue and the worker's ``process_job`` (figure 1's path), per recording.

Seeding is not measured. The recordings spread over three days of hour buckets, by calls of one to
three recordings, from callers of every kind (numbers, Teams users, withheld numbers; one number
with 135 recordings over 90 calls, in both tables); they are ``stored``, ``failed`` or ``erased``
and, past a 48-hour retention, ``expired``, their calls having forgotten who called. A few calls
per table go through the ledger's own verbs on a clock set to the seeded times, so that every kind
of row is written by the app's code; every other call is written with one transaction per
partition, its entities built by the ledger's row functions. The figure fails unless every built
row has the columns and types of a verb-written row of its kind, and every page lists exactly the
seeded recordings expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from benchmarks.harness import Figure, Goal, pairwise_ratios
from benchmarks.rig import (
    TENANT_ID,
    Rig,
    StorageRequestCounter,
    app_settings_env,
    completion_payload,
    download_stored,
    ledger_rows,
    new_id,
    run_async,
    webhook_function,
    webhook_request,
)

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

    from shared.jobs import DownloadJob
    from shared.ledger import OperationLedger
    from shared.ledger.identity import Privacy
    from shared.services import Services

SIZES = (1_000, 20_000)
QUICK_SIZES = (500, 10_000)
TINY_SIZES = (200, 400)
PAGE = 50
REPEATS = 15
QUICK_REPEATS = 5
PATH_CALLS = 10
QUICK_PATH_CALLS = 4
RECORDINGS_PER_CALL = 2

SPAN = timedelta(hours=72)
# The recordings' retention in the seeded tables (RECORDING_RETENTION_MINUTES=2880): older ones
# are expired and their calls have forgotten who called, as the cleanup leaves them.
RETENTION = timedelta(hours=48)
HEAVY_CALLER = "+14255550123"
HEAVY_CALLS = 90  # 1 and 2 recordings in turn: 135 recordings
FAILED_SHARE = 0.06
ERASED_SHARE = 0.04
SEED_CONCURRENCY = 16
BATCH = 100  # entities per transaction (the service's limit)

SHA256 = "0" * 64
SIZE_BYTES = 3_840_044
FAILURE_REASON = "download failed: the recording location answered 404"
PAGES = ("first page", "middle page", "one caller", "status=stored")

STORED, FAILED, EXPIRED, ERASED = "stored", "failed", "expired", "erased"


# --------------------------------------------------------------------------- what is seeded


@dataclass(frozen=True)
class SeededRecording:
    """One recording: its ids, when its completion came, how it ended."""

    call_id: str
    operation_id: str
    at: datetime
    status: str

    @property
    def downloading_at(self) -> datetime:
        return self.at + timedelta(milliseconds=200)

    @property
    def stored_at(self) -> datetime:
        return self.at + timedelta(seconds=3)

    @property
    def failed_at(self) -> datetime:
        return self.at + timedelta(seconds=30)

    @property
    def ended_at(self) -> datetime:
        """When it was expired (its retention) or erased (an operator, ten minutes later)."""
        if self.status == EXPIRED:
            return self.stored_at + RETENTION
        if self.status == ERASED:
            return self.stored_at + timedelta(minutes=10)
        return self.failed_at if self.status == FAILED else self.stored_at

    @property
    def index_key(self) -> str:
        from shared.ledger.index import index_key

        return index_key(self.at, self.call_id, self.operation_id)

    def job(self) -> DownloadJob:
        """The download job its completion queued (the webhook's, with Graph's resultInfo)."""
        from shared.jobs import DownloadJob

        return DownloadJob(
            call_id=self.call_id,
            operation_id=self.operation_id,
            client_context=str(uuid.UUID(self.operation_id).int % 10**12),
            tenant_id=TENANT_ID,
            recording_location=f"https://file.location/{self.operation_id}",
            recording_access_token="seeded",  # noqa: S106 (never used: nothing is downloaded)
            result_code=200,
            result_subcode=8515,
            result_message="Action completed, max record duration reached.",
            received_at=self.at,
        )


@dataclass(frozen=True)
class SeededCall:
    """One call: who called, when it was answered, its recordings."""

    call_id: str
    source: Mapping[str, Any]  # the caller's identitySet, as Graph sends it
    answered_at: datetime
    recordings: tuple[SeededRecording, ...]
    forgotten: bool  # past the retention: the call no longer names its caller

    @property
    def caller_kind(self) -> str:
        if "phone" in self.source:
            return "phone" if self.source["phone"].get("id") else "anonymous"
        return "user"

    @property
    def last_write(self) -> datetime:
        return max(recording.ended_at for recording in self.recordings)

    def metadata(self, privacy: Privacy, *, answered_at: datetime | None = None) -> dict[str, Any]:
        """The columns the bot flow captures when it answers (shared/bot/steps.py)."""
        from shared.ledger.identity import call_metadata_columns

        return call_metadata_columns(
            graph_call(self.source, self.call_id),
            privacy=privacy,
            source="notification",
            answered_at=answered_at or self.answered_at,
        )


def graph_call(source: Mapping[str, Any], call_id: str) -> dict[str, Any]:
    """An incoming call as Graph describes it (``source``, ``targets``, ``callChainId``...)."""
    return {
        "source": {"identity": dict(source)},
        "targets": [
            {"identity": {"applicationInstance": {"id": "ra-1"}, "phone": {"id": "+14255550100"}}}
        ],
        "direction": "incoming",
        "callChainId": str(uuid.uuid5(uuid.NAMESPACE_URL, call_id)),
        "tenantId": TENANT_ID,
    }


def plan(count: int, end: datetime, *, seed: int) -> list[SeededCall]:
    """``count`` recordings over :data:`SPAN` before ``end``: the heavy caller's calls first."""
    rng = random.Random(seed)

    def guid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def call(source: Mapping[str, Any], answered: datetime, size: int) -> SeededCall:
        call_id = guid()
        recordings = []
        for index in range(size):
            at = answered + timedelta(
                seconds=30 + 150 * index, microseconds=rng.randrange(1_000_000)
            )
            draw = rng.random()
            status = FAILED if draw < FAILED_SHARE else STORED
            if FAILED_SHARE <= draw < FAILED_SHARE + ERASED_SHARE:
                status = ERASED
            if status == STORED and at + timedelta(seconds=3) + RETENTION <= end:
                status = EXPIRED
            recordings.append(SeededRecording(call_id, guid(), at, status))
        forgotten = answered + RETENTION + timedelta(hours=1) < end
        return SeededCall(call_id, source, answered, tuple(recordings), forgotten)

    heavy = {"phone": {"id": HEAVY_CALLER}}
    calls = []
    recent = RETENTION - timedelta(hours=3)
    for index in range(HEAVY_CALLS):
        answered = end - RETENTION + timedelta(hours=2) + recent * rng.random()
        calls.append(call(heavy, answered, 1 + index % 2))
    seeded = sum(len(c.recordings) for c in calls)
    if seeded >= count:
        raise ValueError(f"{count} recordings leave none beside the heavy caller's {seeded}")
    numbers = [f"+1425{5550200 + n:07d}" for n in range(max(10, count // 10))]
    users = [guid() for _ in range(max(10, count // 20))]
    while seeded < count:
        draw = rng.random()
        if draw < 0.55:
            source: dict[str, Any] = {"phone": {"id": rng.choice(numbers)}}
        elif draw < 0.85:
            user = rng.choice(users)
            source = {
                "user": {"id": user, "displayName": f"User {user[:4]}", "tenantId": TENANT_ID}
            }
        else:
            source = {"phone": {}}  # a withheld number: nobody to index by
        size = min(count - seeded, 1 if draw < 0.7 else 2 if draw < 0.9 else 3)
        answered = end - SPAN + (SPAN - timedelta(minutes=30)) * rng.random()
        calls.append(call(source, answered, size))
        seeded += size
    return calls


def newest_first(calls: Iterable[SeededCall]) -> list[SeededRecording]:
    """The recordings in the list's order (shared/ledger/index.py ``order_key``)."""
    from shared.ledger.index import order_key

    recordings = [recording for call in calls for recording in call.recordings]
    return sorted(recordings, key=lambda recording: order_key(recording.index_key))


# --------------------------------------------------------------------------- seeding


_NOW: contextvars.ContextVar[datetime] = contextvars.ContextVar("seeded_now")


def seeded_clock() -> datetime:
    """The ledger's clock while a call is seeded through its verbs (each task sets its own)."""
    return _NOW.get()


def _audio() -> Any:
    from shared.blob_layout import WavFacts

    # Two minutes of 16 kHz mono 16-bit PCM: what figure 1's recordings hold.
    return WavFacts(16000, 1, 16, 1, SIZE_BYTES - 44, 120.0)


async def seed_with_verbs(ledger: OperationLedger, call: SeededCall, privacy: Privacy) -> None:
    """The call as the app writes it: the bot flow's capture, then for each recording the
    worker's lease (its time index row first) and its ``stored`` or ``failed``, an operator's
    erasure, the cleanup's expiry and, past the retention, the call forgetting its caller."""
    from shared.blob_layout import blob_name_for
    from shared.ledger import DownloadLease

    _NOW.set(call.answered_at)
    await ledger.mark_call_metadata(call.call_id, call.metadata(privacy))
    for recording in call.recordings:
        ids = (recording.call_id, recording.operation_id)
        _NOW.set(recording.downloading_at)
        lease = DownloadLease(ledger, clock=seeded_clock)
        attempt = await lease.take(
            recording.job(), blob_name=blob_name_for(*ids), create_first=False
        )
        if not attempt.held:
            raise RuntimeError("a seeded recording's lease was not taken")
        if recording.status == FAILED:
            _NOW.set(recording.failed_at)
            await ledger.mark_failed(*ids, FAILURE_REASON, after=lease.held_row)
            continue
        _NOW.set(recording.stored_at)
        await ledger.mark_stored(
            *ids,
            blob_name=blob_name_for(*ids),
            size_bytes=SIZE_BYTES,
            sha256=SHA256,
            content_type="audio/wav",
            expires_at=recording.stored_at + RETENTION,
            stored_at=recording.stored_at,
            after=lease.held_row,
            audio=_audio(),
            audio_read=True,
        )
        _NOW.set(recording.ended_at)
        if recording.status == EXPIRED:
            await ledger.mark_expired(*ids)
        elif recording.status == ERASED:
            await ledger.mark_erased(*ids)
    if call.forgotten:
        _NOW.set(call.last_write)
        await ledger.forget_call_identity(call.call_id)


def built_rows(call: SeededCall, privacy: Privacy) -> list[dict[str, Any]]:
    """The rows :func:`seed_with_verbs` leaves, built by the ledger's row functions."""
    from shared.blob_layout import blob_name_for
    from shared.graph.ids import normalize_id
    from shared.ledger import LEASE_TIME_TO_LIVE, OperationStatus, job_result, table_key
    from shared.ledger.identity import (
        CALL_COLUMNS,
        IdentityColumn,
        caller_partition,
        cleared_identity,
    )
    from shared.ledger.index import time_partition
    from shared.ledger.rows import (
        ROW_KIND_CALLER_INDEX,
        ROW_KIND_TIME_INDEX,
        STAMP,
        Column,
        call_guard_row,
        new_operation_row,
        result_columns,
    )
    from shared.ledger.transitions import _audio_columns

    def moved(status: OperationStatus, at: datetime, **columns: Any) -> dict[str, Any]:
        # What a forward move merges (LedgerTable.advance).
        return {"Status": status.value, "UpdatedAt": at, STAMP[status]: at, **columns}

    columns = call.metadata(privacy)
    rows: list[dict[str, Any]] = []
    key = columns.get(IdentityColumn.CALLER_KEY)
    if key and not call.forgotten:
        rows.append(
            {
                "PartitionKey": caller_partition(str(key)),
                "RowKey": table_key(call.call_id),
                "Kind": ROW_KIND_CALLER_INDEX,
                "CallId": normalize_id(call.call_id),
                "UpdatedAt": call.answered_at,
            }
        )
    guard = call_guard_row(call.call_id, call.answered_at, CreatedAt=call.answered_at, **columns)
    call_fields = {name: columns[name] for name in CALL_COLUMNS if name in columns}
    for recording in call.recordings:
        ids = (recording.call_id, recording.operation_id)
        job = recording.job()
        index_key = recording.index_key
        bucket, index_row = index_key.split("/", 1)
        rows.append(
            {
                "PartitionKey": time_partition(bucket),
                "RowKey": index_row,
                "Kind": ROW_KIND_TIME_INDEX,
                "CallId": normalize_id(recording.call_id),
                "OperationId": normalize_id(recording.operation_id),
                "UpdatedAt": recording.downloading_at,
            }
        )
        facts = {
            Column.INDEX_KEY: index_key,
            Column.BLOB_NAME: blob_name_for(*ids),
            Column.COMPLETED_AT: job.received_at,
            Column.CLIENT_CONTEXT: job.client_context,
            Column.TENANT_ID: job.tenant_id,
            **result_columns(job_result(job)),
        }
        at = recording.downloading_at
        # The lease's first write (DownloadLease.take): the completion's facts and the lease, on
        # the call's metadata as its row held it.
        written: dict[str, Any] = {
            name: value for name, value in facts.items() if value is not None
        }
        written[Column.DOWNLOAD_HOLDER] = uuid.uuid4().hex
        written[Column.DOWNLOAD_LEASE_UNTIL] = at + LEASE_TIME_TO_LIVE
        row = {
            **call_fields,
            **new_operation_row(*ids, OperationStatus.DOWNLOADING, at, **written),
        }
        guard["UpdatedAt"] = at  # the lease's write touches the call's row
        if recording.status == FAILED:
            row |= moved(
                OperationStatus.FAILED,
                recording.failed_at,
                **{Column.FAILURE_REASON: FAILURE_REASON, Column.DOWNLOAD_HOLDER: ""},
            )
        else:
            row |= moved(
                OperationStatus.STORED,
                recording.stored_at,
                **_audio_columns(_audio(), read=True),
                **{
                    Column.BLOB_NAME: blob_name_for(*ids),
                    Column.SIZE_BYTES: SIZE_BYTES,
                    Column.SHA256: SHA256,
                    Column.CONTENT_TYPE: "audio/wav",
                    Column.STORED_AT: recording.stored_at,
                    Column.EXPIRES_AT: recording.stored_at + RETENTION,
                    Column.DOWNLOAD_HOLDER: "",
                },
            )
        if recording.status in (EXPIRED, ERASED):
            status = OperationStatus(recording.status)
            row |= moved(status, recording.ended_at, **cleared_identity(row))
        rows.append(row)
    if call.forgotten:
        guard |= {**cleared_identity(guard), "UpdatedAt": call.last_write}
    rows.append(guard)
    return rows


def verb_sample(calls: list[SeededCall]) -> list[SeededCall]:
    """Calls that between them write every kind of row the table holds (by caller kind, status
    and whether the call forgot its caller): these go through the ledger's verbs."""
    covered: set[tuple[Any, ...]] = set()
    chosen = []
    for call in calls:
        kinds = {("call", call.caller_kind, call.forgotten)} | {
            ("operation", call.caller_kind, recording.status) for recording in call.recordings
        }
        if kinds - covered:
            covered |= kinds
            chosen.append(call)
    return chosen


async def seed(table: TableClient, calls: list[SeededCall], privacy: Privacy) -> set[str]:
    """Write ``calls`` into ``table``; returns the ids of the calls written through the verbs."""
    from azure.core.exceptions import ResourceExistsError

    from shared.ledger import OperationLedger

    with contextlib.suppress(ResourceExistsError):
        await table.create_table()
    gate = asyncio.Semaphore(SEED_CONCURRENCY)
    through_verbs = verb_sample(calls)
    ledger = OperationLedger(table, clock=seeded_clock)

    async def verbs(call: SeededCall) -> None:
        async with gate:
            await seed_with_verbs(ledger, call, privacy)

    await asyncio.gather(*(verbs(call) for call in through_verbs))
    chosen = {call.call_id for call in through_verbs}
    partitions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        if call.call_id not in chosen:
            for row in built_rows(call, privacy):
                partitions[row["PartitionKey"]].append(row)

    async def write(rows: list[dict[str, Any]]) -> None:
        async with gate:
            await table.submit_transaction([("create", row) for row in rows])

    await asyncio.gather(
        *(
            write(rows[start : start + BATCH])
            for rows in partitions.values()
            for start in range(0, len(rows), BATCH)
        )
    )
    return {call.call_id for call in through_verbs}


def _signature(entity: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row's kind, status and caller kind, and its columns with their types (and which of its
    text columns are empty: a cleared identity)."""
    columns = tuple(
        sorted(
            (name, type(value).__name__, value == "")
            for name, value in entity.items()
            if name not in ("PartitionKey", "RowKey")
        )
    )
    return (entity.get("Kind"), entity.get("Status"), entity.get("CallerKind"), columns)


async def check_rows(table: TableClient, through_verbs: set[str]) -> int:
    """Every built row looks like a verb-written row of its kind; returns the rows read."""
    from shared.audit import ROW_KIND_AUDIT

    written: set[tuple[Any, ...]] = set()
    built: set[tuple[Any, ...]] = set()
    rows = 0
    async for entity in table.list_entities(results_per_page=1000):
        if entity.get("Kind") == ROW_KIND_AUDIT:
            continue
        rows += 1
        (written if entity.get("CallId") in through_verbs else built).add(_signature(entity))
    unmatched = built - written
    if unmatched:
        first = sorted(unmatched, key=repr)[0]
        raise RuntimeError(
            f"{len(unmatched)} kinds of built rows differ from the ledger's own, e.g. {first}"
        )
    return rows


# --------------------------------------------------------------------------- the pages


@dataclass(frozen=True)
class Page:
    """One page request and the recordings it must list."""

    name: str
    params: dict[str, str]
    expected: list[str]  # operation ids, in order


def pages(calls: list[SeededCall], *, start: datetime, end: datetime) -> list[Page]:
    from shared.ledger.index import encode_token

    ordered = newest_first(calls)
    window = {"from": start.isoformat(), "to": end.isoformat(), "top": str(PAGE)}
    middle = len(ordered) // 2
    heavy = {
        recording.operation_id for call in calls[:HEAVY_CALLS] for recording in call.recordings
    }
    return [
        Page("first page", window, [r.operation_id for r in ordered[:PAGE]]),
        Page(
            "middle page",
            {**window, "continuationToken": encode_token(ordered[middle - 1].index_key)},
            [r.operation_id for r in ordered[middle : middle + PAGE]],
        ),
        Page(
            "one caller",
            {**window, "caller": HEAVY_CALLER},
            [r.operation_id for r in ordered if r.operation_id in heavy][:PAGE],
        ),
        Page(
            "status=stored",
            {**window, "status": STORED},
            [r.operation_id for r in ordered if r.status == STORED][:PAGE],
        ),
    ]


@dataclass
class Seeded:
    """One seeded table: its services (the app's, on that table) and its pages."""

    size: int
    services: Services
    pages: list[Page]
    through_verbs: int
    rows: int
    seconds: float
    floor_partition: str  # one call's partition: the floor's query


FLOOR = "floor"
FLOOR_QUERY = "PartitionKey eq @pk"


async def floor_query(seeded: Seeded) -> float:
    """The floor: one raw query of one call's partition (the kind of request the caller page
    sends once per call), with the same SDK client on the same table."""
    table = seeded.services.storage.table
    started = time.perf_counter()
    async for _ in table.query_entities(FLOOR_QUERY, parameters={"pk": seeded.floor_partition}):
        pass
    return time.perf_counter() - started


async def seed_table(size: int, *, end: datetime, privacy: Privacy) -> Seeded:
    from shared.ledger import table_key
    from shared.services import Services
    from shared.settings import get_settings
    from shared.storage import StorageClients

    settings = get_settings()
    services = Services(settings, storage=StorageClients(settings, table_name=f"recordings{size}"))
    calls = plan(size, end, seed=size)
    started = time.perf_counter()
    through_verbs = await seed(services.storage.table, calls, privacy)
    seconds = time.perf_counter() - started
    rows = await check_rows(services.storage.table, through_verbs)
    window = pages(calls, start=end - SPAN - timedelta(hours=1), end=end + timedelta(minutes=1))
    floor_partition = table_key(calls[0].call_id)
    return Seeded(size, services, window, len(through_verbs), rows, seconds, floor_partition)


async def list_page(seeded: Seeded, page: Page, bearer: str) -> tuple[float, dict[str, Any]]:
    """The registered ``list_recordings`` on ``seeded``'s table: (seconds, JSON body)."""
    from shared.services import use_services
    from tests.support.functions import http_request, json_body, registered

    use_services(seeded.services)
    request = http_request(
        "GET",
        "http://localhost/api/recordings",
        params=page.params,
        headers={"Authorization": f"Bearer {bearer}"},
    )
    handler = registered("list_recordings")
    started = time.perf_counter()
    response = await handler(request)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{page.name}: the list answered {response.status_code}")
    body: dict[str, Any] = json_body(response)
    return seconds, body


def check_page(seeded: Seeded, page: Page, body: Mapping[str, Any]) -> None:
    listed = [item["operationId"] for item in body["recordings"]]
    if listed != page.expected:
        raise RuntimeError(
            f"{page.name} of {seeded.size}: {len(listed)} recordings listed, not the "
            f"{len(page.expected)} seeded ones expected"
        )
    if "continuationToken" not in body:
        raise RuntimeError(f"{page.name} of {seeded.size}: a full page without a next page")


def measure_pages(rig: Rig, sizes: tuple[int, int], repeats: int) -> dict[str, Any]:
    from shared.auth.management import Role

    async def measure() -> dict[str, Any]:
        end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
        privacy: Privacy = "full"
        tables = [await seed_table(size, end=end, privacy=privacy) for size in sizes]
        bearer = rig.signer.management_token(Role.READ.value)
        requests: dict[tuple[str, int], Counter[str]] = {}
        for seeded in tables:
            for page in seeded.pages:
                _, body = await list_page(seeded, page, bearer)  # warm-up: keys, connections
                check_page(seeded, page, body)
                with StorageRequestCounter(rig.azurite, classify=ledger_rows) as counter:
                    _, body = await list_page(seeded, page, bearer)
                check_page(seeded, page, body)
                requests[(page.name, seeded.size)] = Counter(counter.requests)
        seconds: dict[tuple[str, int], list[float]] = defaultdict(list)
        for seeded in tables:
            await floor_query(seeded)  # warm-up
        for _ in range(repeats):
            for index in range(len(PAGES)):
                for seeded in tables:
                    page = seeded.pages[index]
                    elapsed, _ = await list_page(seeded, page, bearer)
                    seconds[(page.name, seeded.size)].append(elapsed)
            for seeded in tables:
                seconds[(FLOOR, seeded.size)].append(await floor_query(seeded))
        return {
            "requests": requests,
            "seconds": seconds,
            "seeding": {
                seeded.size: (seeded.seconds, seeded.through_verbs, seeded.rows)
                for seeded in tables
            },
        }

    with app_settings_env(rig.signer.management_env()):
        return run_async(measure)


# --------------------------------------------------------------------------- one recording's path


def measure_path(rig: Rig, calls: int) -> dict[str, list[Counter[str]]]:
    """Per call, the bot flow's capture of who called; per recording, a completion through the
    webhook, the queue and the worker. Each call has :data:`RECORDINGS_PER_CALL` recordings;
    ``bare`` is figure 1's path (a call whose metadata was never captured)."""
    from benchmarks.end_to_end import SIZE, _clear_container
    from benchmarks.rig import Recording

    recordings = [
        rig.recordings.add_recording(SIZE) for _ in range(calls * (RECORDINGS_PER_CALL + 1) + 1)
    ]

    async def run() -> dict[str, list[Counter[str]]]:
        from shared.ledger import OperationLedger
        from shared.services import app_services

        services = app_services()
        settings, storage = services.settings, services.storage
        await storage.ensure_resources()
        await storage.queue.clear_messages()
        handler = webhook_function()
        ledger = OperationLedger(storage.table)

        async def capture(call_id: str) -> None:
            call = SeededCall(
                call_id, {"phone": {"id": HEAVY_CALLER}}, datetime.now(UTC), (), False
            )
            await services.ledger.mark_call_metadata(
                call_id, call.metadata(settings.caller_identity)
            )

        async def store(call_id: str, recording: Recording) -> None:
            body = completion_payload(
                call_id, new_id(), location=recording.location, access_token=recording.access_token
            )
            response = await handler(webhook_request(body, rig.bearer()))
            if response.status_code != 202:
                raise RuntimeError(f"webhook answered {response.status_code}")
            message = await storage.queue.receive_message(visibility_timeout=60)
            if message is None:
                raise RuntimeError("the job just queued was not received")
            await download_stored(services, message, ledger)
            await storage.queue.delete_message(message)

        def counter() -> StorageRequestCounter:
            return StorageRequestCounter(rig.azurite, classify=ledger_rows)

        pending = iter(recordings)
        warm = new_id()
        await capture(warm)
        await store(warm, next(pending))  # warm-up: keys, connections
        results: dict[str, list[Counter[str]]] = defaultdict(list)
        for _ in range(calls):
            call_id = new_id()
            with counter() as per_call:
                await capture(call_id)
            results["call"].append(Counter(per_call.requests))
            for _ in range(RECORDINGS_PER_CALL):
                with counter() as per_recording:
                    await store(call_id, next(pending))
                results["recording"].append(Counter(per_recording.requests))
            with counter() as bare:
                await store(new_id(), next(pending))
            results["bare"].append(Counter(bare.requests))
        await _clear_container(storage.container)
        return results

    try:
        return run_async(run)
    finally:
        for recording in recordings:
            rig.recordings.delete_recording(recording)


# --------------------------------------------------------------------------- the figure


def _rows_touched(requests: Mapping[str, float], rows: str) -> float:
    """Requests whose ledger rows include ``rows`` (keys "table GET time index")."""
    return sum(
        count
        for key, count in requests.items()
        if key.startswith("table ") and rows in key.split(" ", 2)[2].split("+")
    )


def _kinds(requests: Mapping[str, float]) -> str:
    return ", ".join(f"{key}: {value:g}" for key, value in sorted(requests.items()))


def _mean(counters: list[Counter[str]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return {key: value / len(counters) for key, value in total.items()}


def figure_of(
    pages_result: dict[str, Any],
    path: dict[str, list[Counter[str]]],
    *,
    sizes: tuple[int, int],
    repeats: int,
    quick: bool,
) -> Figure:
    small, large = sizes
    figure = Figure("11", "Recordings list across calls: a page's cost as the table grows")
    figure.parameters = {
        "recordings": f"{small} and {large}",
        "page": PAGE,
        "repeats": repeats,
        "span_hours": SPAN.total_seconds() / 3600,
        "retention_hours": RETENTION.total_seconds() / 3600,
        "heavy_caller": f"{HEAVY_CALLS} calls, {HEAVY_CALLS * 3 // 2} recordings",
        "path_calls": len(path["call"]),
        "recordings_per_call": RECORDINGS_PER_CALL,
    }
    requests: dict[tuple[str, int], Counter[str]] = pages_result["requests"]
    seconds: dict[tuple[str, int], list[float]] = pages_result["seconds"]
    for name in PAGES:
        for size in sizes:
            figure.metric(
                f"{name}, {size} recordings",
                "ms",
                [s * 1000 for s in seconds[(name, size)]],
                description="the registered list_recordings function, token check and audit row "
                "included",
            )
        for size in sizes:
            figure.metric(
                f"{name}, {size} recordings: storage requests",
                "requests",
                [sum(requests[(name, size)].values())],
            )
    for name in PAGES:
        counted = [sum(requests[(name, size)].values()) for size in sizes]
        figure.ratio(
            f"{name}: storage requests, {large} ÷ {small}",
            f"requests for the page among {large}",
            f"requests for the page among {small}",
            [counted[1] / counted[0]],
            goal=Goal("<=", 1.2),
        )
        figure.ratio(
            f"{name}: time, {large} ÷ {small}",
            f"wall time among {large}",
            f"wall time among {small}, just before",
            pairwise_ratios(seconds[(name, large)], seconds[(name, small)]),
            goal=Goal("<=", 1.2),
        )
    for size in sizes:
        figure.metric(
            f"floor: one call's partition query, {size} recordings",
            "ms",
            [s * 1000 for s in seconds[(FLOOR, size)]],
            description=f"a raw query_entities('{FLOOR_QUERY}') on the same table, same client",
        )
    figure.ratio(
        f"floor: one partition query, time, {large} ÷ {small}",
        f"raw partition query among {large}",
        f"raw partition query among {small}, just before",
        pairwise_ratios(seconds[(FLOOR, large)], seconds[(FLOOR, small)]),
        description="what a partition query costs Azurite as its table grows (no app code)",
    )

    per_call = _mean(path["call"])
    per_recording = _mean(path["recording"])
    bare = _mean(path["bare"])
    index_per_recording = sum(
        _rows_touched(per_recording, rows) for rows in ("time index", "caller index")
    )
    metadata_per_call = sum(per_call.values())
    figure.metric(
        "storage requests per recording (webhook + worker), caller captured",
        "requests",
        [sum(counter.values()) for counter in path["recording"]],
    )
    figure.metric(
        "storage requests per recording, no caller captured (figure 1's path)",
        "requests",
        [sum(counter.values()) for counter in path["bare"]],
    )
    figure.metric(
        "index rows' requests per recording",
        "requests",
        [
            _rows_touched(counter, "time index") + _rows_touched(counter, "caller index")
            for counter in path["recording"]
        ],
        description="requests of the recording's path that touch a time or caller index row",
    )
    figure.metric(
        "capture of who called, per call",
        "requests",
        [sum(counter.values()) for counter in path["call"]],
        description="mark_call_metadata as the bot flow calls it once it answered: the caller "
        "index row and the call's row (guard and metadata)",
    )
    figure.metric(
        "extra storage requests per stored recording (issue 27), one recording per call",
        "requests",
        [index_per_recording + metadata_per_call],
        goal=Goal("<=", 2),
        description="what the index and metadata rows add to a call with one recording: its "
        "recording's index-row requests plus the call's capture (before issue 27: neither)",
    )
    figure.metric(
        f"extra storage requests per stored recording, {RECORDINGS_PER_CALL} recordings per call",
        "requests",
        [index_per_recording + metadata_per_call / RECORDINGS_PER_CALL],
    )

    caller_queries = [
        sum(count for key, count in requests[("one caller", size)].items() if " GET " in key)
        for size in sizes
    ]
    floor_ms = [statistics.median(seconds[(FLOOR, size)]) * 1000 for size in sizes]
    caller_ms = [statistics.median(seconds[("one caller", size)]) * 1000 for size in sizes]
    figure.notes.append(
        f"The caller page sends {caller_queries[1]} queries, 16 at a time, at both sizes, "
        "and Azurite answers them one at a time, each by filtering every entity of the table: "
        "the floor, one call's "
        f"partition query, takes {floor_ms[0]:.1f} ms among {small} and {floor_ms[1]:.1f} ms "
        f"among {large}, so {caller_queries[1]} such queries take "
        f"{caller_queries[1] * (floor_ms[1] - floor_ms[0]):.0f} ms more among {large}; the page "
        f"took {caller_ms[1] - caller_ms[0]:.0f} ms more (medians). Azure Table Storage serves a "
        "query that names its partition from that partition."
    )
    for size in sizes:
        spent, through_verbs, rows = pages_result["seeding"][size]
        figure.notes.append(
            f"{size} recordings seeded in {spent:.0f} s ({rows} ledger rows; {through_verbs} "
            "calls through the ledger's verbs, every other in one transaction per partition of "
            "rows built by the ledger's row functions, checked to have the same columns and "
            "types); every page listed exactly the seeded recordings expected."
        )
    for name in PAGES:
        for size in sizes:
            figure.notes.append(
                f"{name}, {size} recordings: storage requests by ledger rows: "
                f"{_kinds(requests[(name, size)])}."
            )
    figure.notes.append(
        "Pages: the first 50 newest first over the 73 hour buckets seeded; the 50 after the "
        "recording half way down (its continuationToken); the heavy caller's 50 newest (the "
        f"caller index: one query for its {HEAVY_CALLS} calls, then one per call, in both "
        "tables: the work grows with that caller's calls, not with the table); the 50 newest "
        "stored. Every page is a call of the registered function with an Entra token: the token "
        "check (keys cached) and the audit row it writes are in its time and requests."
    )
    figure.notes.append(
        f"One recording's path, by ledger rows: per call, the capture: {_kinds(per_call)}; per "
        f"recording (webhook, queue, worker): {_kinds(per_recording)}; the same without a "
        f"capture (figure 1's path): {_kinds(bare)}."
    )
    figure.notes.append(
        "Before issue 27 a recording cost 7 requests (figure 1, commit 42dfac1) and no call "
        "metadata was captured; the operation row's first write already went in one transaction "
        "with the call's row (the erasure guard). Issue 27 adds the time index row's write to "
        "each recording, and to each call the capture: the caller index row's write, and the "
        "call's row, created blind (the recording's transaction then updates it instead)."
    )
    if quick:
        figure.notes.append(
            f"--quick: {small} and {large} recordings (the same ratio, 20) and {repeats} "
            "repetitions; the full run seeds 1 000 and 20 000."
        )
    return figure


def _run(rig: Rig, sizes: tuple[int, int], repeats: int, calls: int, *, quick: bool) -> Figure:
    pages_result = measure_pages(rig, sizes, repeats)
    path = measure_path(rig, calls)
    return figure_of(pages_result, path, sizes=sizes, repeats=repeats, quick=quick)


def run(rig: Rig, *, quick: bool) -> Figure:
    if quick:
        return _run(rig, QUICK_SIZES, QUICK_REPEATS, QUICK_PATH_CALLS, quick=True)
    return _run(rig, SIZES, REPEATS, PATH_CALLS, quick=False)


def tiny(rig: Rig) -> Figure:
    return _run(rig, TINY_SIZES, 1, 1, quick=True)
