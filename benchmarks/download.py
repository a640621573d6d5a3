"""Figure 2: download throughput for 1, 10 and 100 MB recordings ÷ a raw loopback copy, and RSS.

Each download runs in a fresh child process (``python -m benchmarks.download``) so its peak RSS
is its own: the child warms up with one 1 MB transfer of the same kind, takes its RSS, then
samples RSS every 2 ms while the measured transfer runs. The app side is the worker's
``process_job`` on a download job (guard, claim, stream, staged blocks with MD5, SHA-256,
commit with metadata and tags, ledger rows); the floor is a plain httpx stream from the same
simulator into the same staged-block upload. The simulator serves from its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks.harness import ROOT, Figure, Goal, pairwise_ratios
from benchmarks.rig import Recording, Rig, new_id, run_async

MB = 1_000_000
SIZES_MB = (1, 10, 100)
FLOOR_CONTAINER = "bench-floor"
CHILD_TIMEOUT_SECONDS = 300
# Flat memory: a 100 MB download may not hold more than this beyond a 10 MB one.
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
    from shared.download import DownloadClaims, process_job
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
        claims=DownloadClaims(storage.table),
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
            seconds = await _transfer(mode, spec["recording"], connection)
        return {"seconds": seconds, "baseline": baseline, "peak": memory.peak}

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
    figure = Figure("2", "Download throughput and memory, 1 / 10 / 100 MB")
    repeats = 1 if quick else 3
    figure.parameters = {"repeats": repeats, "sizes_mb": list(SIZES_MB)}
    _prepare_storage(rig)
    warmup = rig.recordings.add_recording(1 * MB)
    growth: dict[tuple[str, int], list[float]] = {}
    try:
        for size_mb in SIZES_MB:
            recording = rig.recordings.add_recording(size_mb * MB)
            app_rates, raw_rates = [], []
            for _ in range(repeats):
                for mode, rates in (("raw", raw_rates), ("app", app_rates)):
                    spec = {
                        "mode": mode,
                        "connection_string": rig.connection_string,
                        "warmup": _as_dict(warmup),
                        "recording": _as_dict(recording),
                    }
                    measured = _run_child(rig, spec)
                    rates.append(recording.size / measured["seconds"] / MB)
                    growth.setdefault((mode, size_mb), []).append(
                        (measured["peak"] - measured["baseline"]) / MB
                    )
                    _clear_blobs(rig)
            rig.recordings.delete_recording(recording)
            figure.metric(f"app download, {size_mb} MB", "MB/s", app_rates)
            figure.metric(f"raw copy (floor), {size_mb} MB", "MB/s", raw_rates)
            figure.ratio(
                f"throughput ÷ raw copy, {size_mb} MB",
                "app MB/s",
                "raw copy MB/s",
                pairwise_ratios(app_rates, raw_rates),
                goal=Goal(">=", 0.9),
            )
    finally:
        rig.recordings.delete_recording(warmup)

    for (mode, size_mb), samples in sorted(
        growth.items(), key=lambda item: (item[0][0], item[0][1])
    ):
        label = "app" if mode == "app" else "raw copy"
        figure.metric(f"peak RSS growth, {label}, {size_mb} MB", "MB", samples)
    flat = [
        big - small for big, small in zip(growth[("app", 100)], growth[("app", 10)], strict=True)
    ]
    figure.metric(
        "app peak RSS growth, 100 MB minus 10 MB",
        "MB",
        flat,
        goal=FLAT_RSS_GOAL,
        description="flat memory: a 10× larger recording needs no more memory",
    )
    figure.notes.append(
        "RSS is sampled every 2 ms in a fresh child per transfer, after a 1 MB warm-up transfer "
        "of the same kind; growth = peak during the transfer − RSS just before it."
    )
    figure.notes.append(
        "The app does more per byte than the floor by design: SHA-256 of the body, MD5 per "
        "staged block (validate_content), claim renewals, ledger rows, a conditional commit."
    )
    return figure


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.stdin.read()))))
