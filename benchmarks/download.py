"""Figure 2: download throughput at the sizes this app sees ÷ a raw loopback copy, and RSS.

The sizes: 160 696 bytes (the source document's example recording), 1 MB, and 3.84 MB (the
longest answer, 120 s of 16 kHz mono PCM); 100 MB stays as the flat-memory check.

Each size runs in a fresh child process (``python -m benchmarks.download``) so its peak RSS is
its own: the child warms up with one 1 MB transfer of the same kind, takes its RSS, samples RSS
every 2 ms while the first measured transfer runs, then repeats the transfer (small recordings
take milliseconds: one sample would be mostly noise) and reports the median time. The app side is the worker's
``process_job`` on a download job (guard, lease, stream, SHA-256, one conditional Put Blob with
metadata and tags up to 4 MiB, staged blocks beyond, ledger rows); the floor is a plain
httpx stream from the same simulator into the same upload (one Put Blob, or staged blocks). The simulator serves from its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks.harness import ROOT, Figure, Goal, pairwise_ratios
from benchmarks.rig import Recording, Rig, new_id, run_async

MB = 1_000_000
# (label, bytes, goal for throughput ÷ raw copy)
SIZES: tuple[tuple[str, int, Goal | None], ...] = (
    ("160 KB", 160_696, Goal(">=", 0.65)),
    ("1 MB", 1_000_000, Goal(">=", 0.8)),
    ("3.84 MB", 3_840_000, Goal(">=", 0.9)),
    ("100 MB", 100_000_000, None),
)
# Transfers per child: the first is the RSS sample, the median of all is the time.
TRANSFERS = {"quick": 5, "full": 9, "large": 1}
FLOOR_CONTAINER = "bench-floor"
CHILD_TIMEOUT_SECONDS = 300
# Flat memory: a 100 MB download may not hold more than this beyond a 3.84 MB one.
FLAT_RSS_GOAL = Goal("<=", 8)


# --------------------------------------------------------------------------- child process


class _PeakRss:
    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int:
        value: int = self._process.memory_info().rss
        return value

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(0.002)

    def __enter__(self) -> _PeakRss:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.rss())


async def _transfer(mode: str, recording: dict[str, Any], connection_string: str) -> float:
    from shared.download import process_job
    from shared.jobs import DownloadJob
    from shared.ledger import OperationLedger
    from shared.services import app_services

    if mode == "raw":
        from azure.storage.blob.aio import BlobServiceClient

        from benchmarks import floors
        from benchmarks.rig import Recording as Rec

        async with (
            BlobServiceClient.from_connection_string(connection_string) as service,
            floors.plain_http_client() as http,
        ):
            blob = service.get_blob_client(FLOOR_CONTAINER, f"floor-{new_id()}.wav")
            return await floors.raw_copy(http, blob, Rec(**recording))

    services = app_services()
    settings, storage = services.settings, services.storage
    job = DownloadJob(
        call_id=new_id(),
        operation_id=new_id(),
        recording_location=recording["location"],
        recording_access_token=recording["access_token"],
        received_at=datetime.now(UTC),
    )
    started = time.perf_counter()
    outcome = await process_job(
        job.to_message(),
        settings=settings,
        http=services.recording_http,
        container=storage.container,
        ledger=OperationLedger(storage.table),
        dequeue_count=1,
    )
    elapsed = time.perf_counter() - started
    if outcome.outcome != "stored" or outcome.sha256 != recording["sha256"]:
        raise RuntimeError(f"download ended {outcome.outcome}: {outcome.failure_reason}")
    return elapsed


def child(spec: dict[str, Any]) -> dict[str, float]:
    """One measured transfer in this (fresh) process; returns seconds and RSS figures."""
    from benchmarks.rig import run_async as run_in_loop

    mode, connection = spec["mode"], spec["connection_string"]

    async def measure() -> dict[str, float]:
        await _transfer(mode, spec["warmup"], connection)
        gc.collect()
        with _PeakRss() as memory:
            baseline = memory.rss()
            times = [await _transfer(mode, spec["recording"], connection)]
        for _ in range(int(spec.get("transfers", 1)) - 1):
            times.append(await _transfer(mode, spec["recording"], connection))
        return {"seconds": statistics.median(times), "baseline": baseline, "peak": memory.peak}

    return run_in_loop(measure)


# --------------------------------------------------------------------------- parent


def _as_dict(recording: Recording) -> dict[str, Any]:
    return {
        "location": recording.location,
        "access_token": recording.access_token,
        "size": recording.size,
        "sha256": recording.sha256,
        "recording_id": recording.recording_id,
    }


def _run_child(rig: Rig, spec: dict[str, Any]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.download"],
        cwd=ROOT,
        env=rig.child_env(),
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"download child failed: {result.stderr[-1500:]}")
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def _prepare_storage(rig: Rig) -> None:
    async def prepare() -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob.aio import BlobServiceClient

        from shared.services import app_services

        await app_services().storage.ensure_resources()
        async with BlobServiceClient.from_connection_string(rig.connection_string) as service:
            with contextlib.suppress(ResourceExistsError):
                await service.create_container(FLOOR_CONTAINER)

    run_async(prepare)


def _clear_blobs(rig: Rig) -> None:
    async def clear() -> None:
        from azure.storage.blob.aio import BlobServiceClient

        from shared.storage import RECORDINGS_CONTAINER

        async with BlobServiceClient.from_connection_string(rig.connection_string) as service:
            for name in (RECORDINGS_CONTAINER, FLOOR_CONTAINER):
                container = service.get_container_client(name)
                names = [blob.name async for blob in container.list_blobs()]
                await asyncio.gather(*(container.delete_blob(n) for n in names))

    run_async(clear)


def run(rig: Rig, *, quick: bool) -> Figure:
    figure = Figure("2", "Download throughput and memory, 160 KB / 1 MB / 3.84 MB (and 100 MB)")
    repeats = 1 if quick else 3
    transfers = TRANSFERS["quick" if quick else "full"]
    figure.parameters = {
        "repeats": repeats,
        "transfers_per_child": transfers,
        "sizes_bytes": [size for _, size, _ in SIZES],
    }
    _prepare_storage(rig)
    warmup = rig.recordings.add_recording(1 * MB)
    growth: dict[tuple[str, str], list[float]] = {}
    try:
        for label, size, goal in SIZES:
            recording = rig.recordings.add_recording(size)
            app_rates: list[float] = []
            raw_rates: list[float] = []
            for _ in range(repeats):
                for mode, rates in (("raw", raw_rates), ("app", app_rates)):
                    spec = {
                        "mode": mode,
                        "connection_string": rig.connection_string,
                        "warmup": _as_dict(warmup),
                        "recording": _as_dict(recording),
                        "transfers": TRANSFERS["large"] if size >= 10 * MB else transfers,
                    }
                    measured = _run_child(rig, spec)
                    rates.append(recording.size / measured["seconds"] / MB)
                    growth.setdefault((mode, label), []).append(
                        (measured["peak"] - measured["baseline"]) / MB
                    )
                    _clear_blobs(rig)
            rig.recordings.delete_recording(recording)
            figure.metric(f"app download, {label}", "MB/s", app_rates)
            figure.metric(f"raw copy (floor), {label}", "MB/s", raw_rates)
            figure.ratio(
                f"throughput ÷ raw copy, {label}",
                "app MB/s",
                "raw copy MB/s",
                pairwise_ratios(app_rates, raw_rates),
                goal=goal,
            )
    finally:
        rig.recordings.delete_recording(warmup)

    for (mode, label), samples in growth.items():
        who = "app" if mode == "app" else "raw copy"
        figure.metric(f"peak RSS growth, {who}, {label}", "MB", samples)
    flat = [
        big - small
        for big, small in zip(growth[("app", "100 MB")], growth[("app", "3.84 MB")], strict=True)
    ]
    figure.metric(
        "app peak RSS growth, 100 MB minus 3.84 MB",
        "MB",
        flat,
        goal=FLAT_RSS_GOAL,
        description="flat memory: a 26× larger recording needs no more memory",
    )
    figure.notes.append(
        "RSS is sampled every 2 ms in a fresh child per size and kind, after a 1 MB warm-up "
        "transfer of the same kind; growth = peak during the first measured transfer − RSS just "
        f"before it. Below 10 MB each child times {transfers} transfers and reports the median."
    )
    figure.notes.append(
        "The app does more per recording than the floor by design: SHA-256 of the body, the "
        "ledger's downloading write (the download lease) and stored write, a conditional write "
        "with metadata and the expiresAt tag. At 160 KB these two fixed table requests are most "
        "of the difference."
    )
    return figure


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.stdin.read()))))
