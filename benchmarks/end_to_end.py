"""Figure 1: notification → recording committed, in process, 3.84 MB recordings (120 s of audio).

The path: the registered ``notifications`` function receives a signed completion notification
and queues the download job; a consumer receives the message from Azurite and hands it to the
worker's ``process_job``, which streams the recording from the simulator (its own process), writes
the blob (one conditional Put Blob) and the ledger. Latency runs from the notification's
arrival to ``process_job`` returning.

Three things run over the same recordings server and the same Azurite, interleaved repetition
by repetition when one at a time:

- the floor: one raw enqueue + dequeue + delete and a raw streamed copy (one Put Blob);
- the peer, the approach of Microsoft's C# sample: the webhook validates the token, downloads the
  recording inline and uploads it once (no queue, no ledger, no lease);
- the app: the registered webhook, the queue, the worker's ``process_job``.

Then the app and the floor each run with 16 recordings in flight (a closed loop: a new one
arrives when one is committed) and 16 consumers (host.json ``batchSize``) polling their queue.
The goals compare p99 with p99. Storage requests are counted at the SDK's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import floors, peers
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
    download_stored,
    new_id,
    run_async,
    webhook_function,
    webhook_request,
)

# The longest answer recordResponse takes (120 s) as 16 kHz mono 16-bit PCM.
SIZE = 3_840_000
CONCURRENCY = 16
EMPTY_QUEUE_POLL_SECONDS = 0.005
FLOOR_CONTAINER = "bench-floor"
PEER_CONTAINER = "bench-peer"
PROFILED = 5


async def _clear_container(container: Any) -> None:
    names = [blob.name async for blob in container.list_blobs()]
    for start in range(0, len(names), 32):
        await asyncio.gather(*(container.delete_blob(name) for name in names[start : start + 32]))


async def closed_loop(
    items: list[Recording],
    *,
    arrive: Callable[[Recording], Awaitable[None]],
    take: Callable[[], Awaitable[tuple[Recording, Callable[[], Awaitable[None]]] | None]],
    deadline_seconds: float,
) -> tuple[list[float], float]:
    """``items`` through a queue with at most ``CONCURRENCY`` in flight and as many consumers.

    ``arrive`` puts one item on its way (webhook or raw enqueue); ``take`` receives one message
    (None when the queue is empty) and returns its item and the work that settles it. Returns
    each item's latency (arrival → settled) and the wall time.
    """
    arrived: dict[str, float] = {}
    settled: dict[str, asyncio.Event] = {}
    done: list[float] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    deadline = time.perf_counter() + deadline_seconds

    async def produce(item: Recording) -> None:
        async with gate:
            settled[item.location] = asyncio.Event()
            arrived[item.location] = time.perf_counter()
            await arrive(item)
            remaining = deadline - time.perf_counter()
            await asyncio.wait_for(settled[item.location].wait(), remaining)

    async def consume() -> None:
        while len(done) < len(items) and time.perf_counter() < deadline:
            taken = await take()
            if taken is None:
                await asyncio.sleep(EMPTY_QUEUE_POLL_SECONDS)
                continue
            item, work = taken
            await work()
            done.append(time.perf_counter() - arrived[item.location])
            settled[item.location].set()

    watch = Stopwatch()
    await asyncio.gather(
        *(produce(item) for item in items), *(consume() for _ in range(CONCURRENCY))
    )
    if len(done) < len(items):
        raise RuntimeError(f"only {len(done)} of {len(items)} recordings settled in time")
    return done, watch.seconds


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
    floor_concurrent = [rig.recordings.add_recording(SIZE) for _ in range(count)]
    floor_recording = rig.recordings.add_recording(SIZE)
    profiled = rig.recordings.add_recording(SIZE)
    profile: list[str] = []

    async def measure() -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob.aio import BlobServiceClient

        from shared.jobs import DownloadJob
        from shared.ledger import OperationLedger
        from shared.services import app_services

        services = app_services()
        storage = services.storage
        await storage.ensure_resources()
        await storage.queue.clear_messages()
        await _clear_container(storage.container)
        handler = webhook_function()
        ledger = OperationLedger(storage.table)

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
            await download_stored(services, message, ledger)
            await storage.queue.delete_message(message)

        results: dict[str, list[float]] = {"sequential": [], "floor": [], "peer": []}
        requests_by_kind: dict[str, dict[str, float]] = {}
        blob_service = BlobServiceClient.from_connection_string(rig.connection_string)
        raw_queue = floors.floor_queue(rig.connection_string)
        async with blob_service, raw_queue, floors.plain_http_client() as plain_http:
            await floors.ensure_queue(raw_queue)
            floor_container = blob_service.get_container_client(FLOOR_CONTAINER)
            peer_container = blob_service.get_container_client(PEER_CONTAINER)
            for container in (floor_container, peer_container):
                with contextlib.suppress(ResourceExistsError):
                    await container.create_container()
            peer = peers.InlinePeer(services.inbound, plain_http, peer_container)

            async def floor_once(recording: Recording) -> float:
                blob = floor_container.get_blob_client(f"floor-{new_id()}.wav")
                seconds = await floors.raw_enqueue_dequeue(raw_queue)
                seconds += await floors.raw_copy(plain_http, blob, recording, verify=False)
                return seconds

            async def peer_once(recording: Recording) -> float:
                body = completion_payload(
                    new_id(),
                    new_id(),
                    location=recording.location,
                    access_token=recording.access_token,
                )
                return await peer.handle(body, f"Bearer {rig.bearer()}", recording.size)

            async def app_once(recording: Recording) -> float:
                started = time.perf_counter()
                await notify(recording)
                message = await storage.queue.receive_message(visibility_timeout=60)
                if message is None:
                    raise RuntimeError("the job just queued was not received")
                await work(message)
                return time.perf_counter() - started

            # Warm-up: connections, signing keys, imports.
            await floor_once(floor_recording)
            await peer_once(floor_recording)
            await app_once(rig.recordings.add_recording(SIZE))

            # One at a time, interleaved: floor, peer, app on the same moment's noise.
            app_cpu = 0.0
            with StorageRequestCounter(rig.azurite) as counter:
                for recording in sequential:
                    with counter.paused():
                        results["floor"].append(await floor_once(floor_recording))
                        results["peer"].append(await peer_once(floor_recording))
                    cpu = time.process_time()
                    results["sequential"].append(await app_once(recording))
                    app_cpu += time.process_time() - cpu
            results["cpu_ms_per_recording"] = [app_cpu * 1000 / count]
            results["requests_per_recording"] = [counter.total / count]
            requests_by_kind["app"] = {k: v / count for k, v in sorted(counter.requests.items())}
            for name, once in (("floor", floor_once), ("peer", peer_once)):
                with StorageRequestCounter(rig.azurite) as counter:
                    await once(floor_recording)
                requests_by_kind[name] = dict(sorted(counter.requests.items()))
            await _clear_container(storage.container)
            await _clear_container(floor_container)
            await _clear_container(peer_container)

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

            # 16 in flight: the app (webhook, queue, worker) ...
            by_location = {recording.location: recording for recording in concurrent}

            async def app_take() -> tuple[Recording, Callable[[], Awaitable[None]]] | None:
                message = await storage.queue.receive_message(visibility_timeout=60)
                if message is None:
                    return None
                location = DownloadJob.from_message(message.content).recording_location
                return by_location[location], functools.partial(work, message)

            deadline = 60 + count * 2
            results["concurrent"], wall = await closed_loop(
                concurrent, arrive=notify, take=app_take, deadline_seconds=deadline
            )
            results["concurrent_wall"] = [wall]
            await _clear_container(storage.container)

            # ... and the floor (raw enqueue, dequeue, streamed copy, delete), on the same rig.
            floor_by_location = {recording.location: recording for recording in floor_concurrent}

            async def floor_arrive(recording: Recording) -> None:
                await raw_queue.send_message(floors.job_sized(recording.location))

            async def floor_take() -> tuple[Recording, Callable[[], Awaitable[None]]] | None:
                message = await raw_queue.receive_message(visibility_timeout=60)
                if message is None:
                    return None
                recording = floor_by_location[floors.location_of(message.content)]

                async def copy() -> None:
                    blob = floor_container.get_blob_client(f"floor-{new_id()}.wav")
                    await floors.raw_copy(plain_http, blob, recording, verify=False)
                    await raw_queue.delete_message(message)

                return recording, copy

            results["floor_concurrent"], floor_wall = await closed_loop(
                floor_concurrent, arrive=floor_arrive, take=floor_take, deadline_seconds=deadline
            )
            results["floor_concurrent_wall"] = [floor_wall]
            await _clear_container(floor_container)
        return results, requests_by_kind

    try:
        results, requests_by_kind = run_async(measure)
    finally:
        for recording in [
            *sequential,
            *concurrent,
            *floor_concurrent,
            floor_recording,
            profiled,
        ]:
            rig.recordings.delete_recording(recording)

    def ms(key: str) -> list[float]:
        return [s * 1000 for s in results[key]]

    sequential_ms, floor_ms, peer_ms = ms("sequential"), ms("floor"), ms("peer")
    concurrent_ms, floor_concurrent_ms = ms("concurrent"), ms("floor_concurrent")
    figure.metric("latency, one at a time", "ms", sequential_ms, with_p99=True)
    figure.metric("floor: raw enqueue + dequeue + raw streamed copy", "ms", floor_ms, with_p99=True)
    figure.metric("inline peer: validate, download, upload once", "ms", peer_ms, with_p99=True)
    figure.metric(f"latency, {CONCURRENCY} concurrent", "ms", concurrent_ms, with_p99=True)
    figure.metric(f"floor, {CONCURRENCY} concurrent", "ms", floor_concurrent_ms, with_p99=True)
    p99 = {
        name: percentile(samples, 99)
        for name, samples in (
            ("app", sequential_ms),
            ("floor", floor_ms),
            ("peer", peer_ms),
            ("app16", concurrent_ms),
            ("floor16", floor_concurrent_ms),
        )
    }
    figure.ratio(
        "p99 latency ÷ floor p99 (one at a time)",
        "p99 notification → committed",
        "p99 raw enqueue+dequeue+copy",
        [p99["app"] / p99["floor"]],
        goal=Goal("<=", 1.5),
    )
    figure.ratio(
        f"p99 latency ÷ floor p99 ({CONCURRENCY} concurrent)",
        f"p99 notification → committed, {CONCURRENCY} in flight",
        f"p99 raw enqueue → dequeue → copy → delete, {CONCURRENCY} in flight",
        [p99["app16"] / p99["floor16"]],
        goal=Goal("<=", 2.0),
    )
    figure.ratio(
        "p99 latency ÷ inline peer p99 (one at a time)",
        "p99 notification → committed",
        "p99 inline download + one upload (C# sample's approach)",
        [p99["app"] / p99["peer"]],
        goal=Goal("<=", 1.3),
    )
    figure.ratio(
        "latency ÷ floor, paired (one at a time)",
        "notification → committed",
        "raw enqueue+dequeue+copy just before it",
        pairwise_ratios(sequential_ms, floor_ms),
    )
    figure.metric(
        "storage requests per recording",
        "requests",
        results["requests_per_recording"],
        goal=Goal("<=", 6),
    )
    figure.metric("CPU time in this process per recording", "ms", results["cpu_ms_per_recording"])
    for name, label in (
        ("app", "the app (one at a time)"),
        ("floor", "the floor (its blob check excluded)"),
        ("peer", "the inline peer"),
    ):
        kinds = ", ".join(f"{k}: {v:g}" for k, v in requests_by_kind[name].items())
        figure.notes.append(f"Storage requests per recording, {label}: {kinds}.")
    figure.profile = [
        f"{PROFILED} recordings, one at a time, cProfile (process CPU time):",
        *profile,
    ]
    wall, floor_wall = results["concurrent_wall"][0], results["floor_concurrent_wall"][0]
    figure.notes.append(
        f"{CONCURRENCY} in flight: the app stored {count} recordings in {wall:.1f} s "
        f"({count * SIZE / wall / 1e6:.0f} MB/s), the floor copied as many in {floor_wall:.1f} s "
        f"({count * SIZE / floor_wall / 1e6:.0f} MB/s)."
    )
    figure.notes.append(
        "Latency ends when process_job returns: blob committed and ledger row written "
        "(stored). The queue is polled every 5 ms when empty; the host polls with back-off up "
        "to maxPollingInterval (2 s in host.json), which adds to a real first delivery."
    )
    figure.notes.append(
        "The peer holds the whole recording in memory and answers the webhook only after the "
        "upload: Graph's notification waits on the download, and a failure loses the recording "
        "(no retry once the webhook answered). p99 over p99: each ratio is one number per run."
    )
    return figure
