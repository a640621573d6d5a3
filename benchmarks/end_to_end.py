"""Figure 1: notification → recording committed, in process, 4 MB recordings.

The path: the registered ``notifications`` function receives a signed completion notification
and queues the download job; a consumer receives the message from Azurite and hands it to the
worker's ``process_job``, which streams the recording from the simulator (its own process) into
staged blocks, commits the blob and writes the ledger. Latency runs from the notification's
arrival to ``process_job`` returning.

Sequentially, each recording is paired with its floor measured just before it: one raw enqueue
+ dequeue + delete and a raw streamed copy of a recording of the same size. Then the same
recordings arrive 16 at a time, with 16 consumers (host.json ``batchSize``) polling the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import time
from typing import Any

from benchmarks import floors
from benchmarks.harness import (
    Figure,
    Goal,
    Stopwatch,
    cumulative_lines,
    pairwise_ratios,
    percentile,
    profile_lines,
)
from benchmarks.rig import (
    Recording,
    Rig,
    StorageRequestCounter,
    completion_payload,
    new_id,
    run_async,
    webhook_function,
    webhook_request,
)

SIZE = 4 * 1024 * 1024
CONCURRENCY = 16
EMPTY_QUEUE_POLL_SECONDS = 0.005
FLOOR_CONTAINER = "bench-floor"
LATENCY_GOAL = Goal("<=", 250)
PROFILED = 5


async def _clear_container(container: Any) -> None:
    names = [blob.name async for blob in container.list_blobs()]
    for start in range(0, len(names), 32):
        await asyncio.gather(*(container.delete_blob(name) for name in names[start : start + 32]))


def run(rig: Rig, *, quick: bool) -> Figure:
    figure = Figure("1", "Notification → recording committed (webhook, queue, worker, blob)")
    count = 30 if quick else 200
    figure.parameters = {
        "recordings": count,
        "size_bytes": SIZE,
        "concurrency": CONCURRENCY,
        "empty_queue_poll_ms": EMPTY_QUEUE_POLL_SECONDS * 1000,
    }
    # One recording per notification (the simulator generates the bytes as it serves them).
    sequential = [rig.recordings.add_recording(SIZE) for _ in range(count)]
    concurrent = [rig.recordings.add_recording(SIZE) for _ in range(count)]
    floor_recording = rig.recordings.add_recording(SIZE)
    profiled = rig.recordings.add_recording(SIZE)
    profile: list[str] = []

    async def measure() -> tuple[dict[str, list[float]], dict[str, float]]:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob.aio import BlobServiceClient

        from shared.download import DownloadClaims, process_job
        from shared.ledger import OperationLedger
        from shared.services import app_services

        services = app_services()
        settings, storage = services.settings, services.storage
        await storage.ensure_resources()
        await storage.queue.clear_messages()
        await _clear_container(storage.container)
        handler = webhook_function()
        ledger = OperationLedger(storage.table)
        claims = DownloadClaims(storage.table)

        async def notify(recording: Recording) -> None:
            body = completion_payload(
                new_id(),
                new_id(),
                location=recording.location,
                access_token=recording.access_token,
            )
            response = await handler(webhook_request(body, rig.bearer()))
            if response.status_code != 202:
                raise RuntimeError(f"webhook answered {response.status_code}")

        async def work(message: Any) -> None:
            outcome = await process_job(
                message.content,
                settings=settings,
                http=services.recording_http,
                container=storage.container,
                ledger=ledger,
                claims=claims,
                dequeue_count=message.dequeue_count,
            )
            if outcome.outcome != "stored":
                raise RuntimeError(f"download ended {outcome.outcome}: {outcome.failure_reason}")
            await storage.queue.delete_message(message)

        results: dict[str, list[float]] = {"sequential": [], "floor": [], "concurrent": []}
        requests_by_kind: dict[str, float] = {}
        blob_service = BlobServiceClient.from_connection_string(rig.connection_string)
        raw_queue = floors.floor_queue(rig.connection_string)
        async with blob_service, raw_queue, floors.plain_http_client() as plain_http:
            await floors.ensure_queue(raw_queue)
            floor_container = blob_service.get_container_client(FLOOR_CONTAINER)
            with contextlib.suppress(ResourceExistsError):
                await floor_container.create_container()

            async def floor_once() -> float:
                blob = floor_container.get_blob_client(f"floor-{new_id()}.wav")
                seconds = await floors.raw_enqueue_dequeue(raw_queue)
                seconds += await floors.raw_copy(plain_http, blob, floor_recording)
                await blob.delete_blob()
                return seconds

            # Warm-up: connections, signing keys, imports.
            await floor_once()
            await notify(rig.recordings.add_recording(SIZE))
            warm = await storage.queue.receive_message(visibility_timeout=60)
            if warm is not None:
                await work(warm)

            app_cpu = 0.0
            with StorageRequestCounter(rig.azurite) as counter:
                for recording in sequential:
                    with counter.paused():
                        results["floor"].append(await floor_once())
                    cpu = time.process_time()
                    started = time.perf_counter()
                    await notify(recording)
                    message = await storage.queue.receive_message(visibility_timeout=60)
                    if message is None:
                        raise RuntimeError("the job just queued was not received")
                    await work(message)
                    results["sequential"].append(time.perf_counter() - started)
                    app_cpu += time.process_time() - cpu
            results["cpu_ms_per_recording"] = [app_cpu * 1000 / count]
            results["requests_per_recording"] = [counter.total / count]
            requests_by_kind.update({k: v / count for k, v in sorted(counter.requests.items())})
            await _clear_container(storage.container)

            # What the CPU does for a few recordings (own time per function, after the timing).
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            for _ in range(PROFILED):
                await notify(profiled)
                message = await storage.queue.receive_message(visibility_timeout=60)
                if message is not None:
                    await work(message)
            profiler.disable()
            profile.extend(profile_lines(profiler, top=8))
            profile.extend(cumulative_lines(profiler, under=("shared", "blueprints")))
            await _clear_container(storage.container)

            # Closed loop: at most 16 recordings between arrival and commit at any time.
            arrived: dict[str, float] = {}
            committed: dict[str, asyncio.Event] = {}
            done: list[float] = []
            gate = asyncio.Semaphore(CONCURRENCY)
            deadline = time.perf_counter() + 60 + count * 2

            async def produce(recording: Recording) -> None:
                async with gate:
                    committed[recording.location] = asyncio.Event()
                    arrived[recording.location] = time.perf_counter()
                    await notify(recording)
                    remaining = deadline - time.perf_counter()
                    await asyncio.wait_for(committed[recording.location].wait(), remaining)

            async def consume() -> None:
                from shared.jobs import DownloadJob

                while len(done) < count and time.perf_counter() < deadline:
                    message = await storage.queue.receive_message(visibility_timeout=60)
                    if message is None:
                        await asyncio.sleep(EMPTY_QUEUE_POLL_SECONDS)
                        continue
                    location = DownloadJob.from_message(message.content).recording_location
                    await work(message)
                    done.append(time.perf_counter() - arrived[location])
                    committed[location].set()

            watch = Stopwatch()
            await asyncio.gather(
                *(produce(recording) for recording in concurrent),
                *(consume() for _ in range(CONCURRENCY)),
            )
            if len(done) < count:
                raise RuntimeError(f"only {len(done)} of {count} recordings stored in time")
            results["concurrent"] = done
            results["concurrent_wall"] = [watch.seconds]
            await _clear_container(storage.container)
        return results, requests_by_kind

    try:
        results, requests_by_kind = run_async(measure)
    finally:
        for recording in [*sequential, *concurrent, floor_recording, profiled]:
            rig.recordings.delete_recording(recording)

    sequential_ms = [s * 1000 for s in results["sequential"]]
    floor_ms = [s * 1000 for s in results["floor"]]
    concurrent_ms = [s * 1000 for s in results["concurrent"]]
    figure.metric("latency, one at a time", "ms", sequential_ms, with_p99=True, goal=LATENCY_GOAL)
    figure.metric(
        f"latency, {CONCURRENCY} concurrent", "ms", concurrent_ms, with_p99=True, goal=LATENCY_GOAL
    )
    figure.metric("floor: raw enqueue + dequeue + raw streamed copy", "ms", floor_ms, with_p99=True)
    figure.ratio(
        "latency ÷ floor (one at a time)",
        "notification → committed",
        "raw enqueue+dequeue+copy",
        pairwise_ratios(sequential_ms, floor_ms),
    )
    floor_median = percentile(floor_ms, 50)
    figure.ratio(
        f"p50 latency ÷ floor ({CONCURRENCY} concurrent)",
        f"p50 notification → committed, {CONCURRENCY} concurrent",
        "median floor (one at a time)",
        [percentile(concurrent_ms, 50) / floor_median],
    )
    figure.metric("storage requests per recording", "requests", results["requests_per_recording"])
    figure.metric("CPU time in this process per recording", "ms", results["cpu_ms_per_recording"])
    kinds = ", ".join(f"{k}: {v:g}" for k, v in requests_by_kind.items())
    figure.notes.append(f"Storage requests per recording (one at a time), by service: {kinds}.")
    figure.profile = [
        f"{PROFILED} recordings, one at a time, cProfile (process CPU time):",
        *profile,
    ]
    wall = results["concurrent_wall"][0]
    figure.notes.append(
        f"{CONCURRENCY} concurrent: {count} recordings in {wall:.1f} s "
        f"({count * SIZE / wall / 1e6:.0f} MB/s through the app)."
    )
    figure.notes.append(
        "Latency ends when process_job returns: blob committed and ledger row written "
        "(stored). The queue is polled every 5 ms when empty; the host polls with back-off up "
        "to maxPollingInterval (2 s in host.json), which adds to a real first delivery."
    )
    return figure
