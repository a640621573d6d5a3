"""Figure 9: what one recording costs, measured, then priced per 1 000 recordings.

The cost table in docs/capacity.md is regenerated from this figure, never kept by hand. Measured
in this process against Azurite and the recordings server, one recording at a time (the webhook
function, the queue, the worker's ``process_job``) and then 16 in flight (figure 1's closed
loop), and finally the cleanup run that expires them:

- storage requests per recording by service and method (webhook, worker, cleanup);
- execution time per recording: the webhook's and the worker's invocations one at a time (what
  an instance that serves one recording at a time bills), and the instance's busy time per
  recording with 16 in flight (what a busy instance bills: Flex bills an instance's memory while
  it runs at least one execution, so concurrent executions share it);
- stored bytes per recording (the blob) and executions per recording (webhook + worker);
- this process's RSS growth with 16 downloads in flight, per download.

The prices (``benchmarks/prices.py``) name their source and the date they were read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import prices
from benchmarks.harness import Figure
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

SIZE = 3_840_000
RECORDING_SECONDS = 120
CONCURRENT = 16


def _rss_sampler() -> tuple[threading.Event, list[int]]:
    import psutil

    stop = threading.Event()
    samples: list[int] = []
    process = psutil.Process()

    def sample() -> None:
        while not stop.is_set():
            samples.append(process.memory_info().rss)
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    return stop, samples


def measure(rig: Rig, count: int) -> dict[str, Any]:
    sequential = [rig.recordings.add_recording(SIZE) for _ in range(count)]
    concurrent = [rig.recordings.add_recording(SIZE) for _ in range(max(count, CONCURRENT))]

    async def run() -> dict[str, Any]:
        from benchmarks.end_to_end import _clear_container, closed_loop
        from shared.jobs import DownloadJob
        from shared.ledger import OperationLedger
        from shared.retention.run import run_cleanup
        from shared.services import app_services

        services = app_services()
        settings, storage = services.settings, services.storage
        await storage.ensure_resources()
        await storage.queue.clear_messages()
        await _clear_container(storage.container)
        handler = webhook_function()
        ledger = OperationLedger(storage.table)
        webhook_s: list[float] = []
        worker_s: list[float] = []

        async def notify(recording: Recording) -> None:
            body = completion_payload(
                new_id(), new_id(), location=recording.location, access_token=recording.access_token
            )
            started = time.perf_counter()
            response = await handler(webhook_request(body, rig.bearer()))
            webhook_s.append(time.perf_counter() - started)
            if response.status_code != 202:
                raise RuntimeError(f"webhook answered {response.status_code}")

        async def work(message: Any) -> None:
            started = time.perf_counter()
            await download_stored(services, message, ledger)
            await storage.queue.delete_message(message)
            worker_s.append(time.perf_counter() - started)

        await notify(rig.recordings.add_recording(SIZE))  # warm-up: keys, connections
        message = await storage.queue.receive_message(visibility_timeout=60)
        await work(message)
        webhook_s.clear()
        worker_s.clear()

        with StorageRequestCounter(rig.azurite) as counter:
            for recording in sequential:
                await notify(recording)
                message = await storage.queue.receive_message(visibility_timeout=60)
                if message is None:
                    raise RuntimeError("the job just queued was not received")
                await work(message)
            per_recording = Counter({k: v / count for k, v in counter.requests.items()})

        by_location = {recording.location: recording for recording in concurrent}

        async def take() -> Any:
            message = await storage.queue.receive_message(visibility_timeout=60)
            if message is None:
                return None
            location = DownloadJob.from_message(message.content).recording_location
            return by_location[location], lambda: work(message)

        stop, rss = _rss_sampler()
        await asyncio.sleep(0.05)
        baseline = max(rss)
        _, wall = await closed_loop(concurrent, arrive=notify, take=take, deadline_seconds=120)
        stop.set()
        rss_growth = max(rss) - baseline

        # The cleanup once every recording is past its expiry: what it costs per recording.
        later = datetime.now(UTC) + timedelta(minutes=settings.recording_retention_minutes + 5)
        stored = count + len(concurrent) + 1
        with StorageRequestCounter(rig.azurite) as counter:
            deleted = 0
            for _ in range(10):
                summary = await run_cleanup(
                    container=storage.container,
                    ledger=ledger,
                    poison_queue=storage.poison_queue,
                    settings=settings,
                    clock=lambda: later,
                )
                deleted += summary.recordings_deleted
                if deleted >= stored or not summary.recordings_deleted:
                    break
            cleanup = Counter({k: v / max(deleted, 1) for k, v in counter.requests.items()})
        return {
            "requests": per_recording,
            "cleanup_requests": cleanup,
            "cleanup_deleted": deleted,
            "webhook_ms": [s * 1000 for s in webhook_s[:count]],
            "worker_ms": [s * 1000 for s in worker_s[:count]],
            "busy_ms_concurrent": wall * 1000 / len(concurrent),
            "rss_mb_per_download": rss_growth / CONCURRENT / 1e6,
        }

    try:
        return run_async(run)
    finally:
        for recording in [*sequential, *concurrent]:
            rig.recordings.delete_recording(recording)


def figure_of(result: dict[str, Any], count: int) -> Figure:
    figure = Figure("9", "Cost per recording: the measured quantities, priced per 1 000")
    figure.parameters = {
        "recordings": count,
        "size_bytes": SIZE,
        "recording_seconds": RECORDING_SECONDS,
        "concurrent": CONCURRENT,
        "instance_memory_mb": prices.INSTANCE_MEMORY_MB,
        "retention_hours": prices.RETENTION_HOURS,
    }
    requests: Counter[str] = result["requests"]
    cleanup: Counter[str] = result["cleanup_requests"]
    by_service: Counter[str] = Counter()
    for key, value in (requests + cleanup).items():
        by_service[key.split(" ", 1)[0]] += value
    webhook = sorted(result["webhook_ms"])[len(result["webhook_ms"]) // 2]
    worker = sorted(result["worker_ms"])[len(result["worker_ms"]) // 2]
    figure.metric("webhook execution per recording", "ms", result["webhook_ms"], with_p99=True)
    figure.metric("worker execution per recording", "ms", result["worker_ms"], with_p99=True)
    figure.metric(
        f"instance busy time per recording, {CONCURRENT} in flight",
        "ms",
        [result["busy_ms_concurrent"]],
    )
    figure.metric(
        "storage requests per recording (webhook + worker)", "requests", [sum(requests.values())]
    )
    figure.metric("storage requests per recording (cleanup)", "requests", [sum(cleanup.values())])
    figure.metric("stored bytes per recording", "MB", [SIZE / 1e6])
    figure.metric(
        f"RSS growth per download, {CONCURRENT} in flight", "MB", [result["rss_mb_per_download"]]
    )
    quantities = prices.Quantities(
        executions=2,
        alone_seconds=(webhook + worker) / 1000,
        busy_seconds=result["busy_ms_concurrent"] / 1000,
        blob_writes=requests.get("blob PUT", 0.0),
        blob_other=by_service["blob"] - requests.get("blob PUT", 0.0),
        queue_requests=by_service["queue"],
        table_requests=by_service["table"],
        stored_bytes=SIZE,
        audio_seconds=RECORDING_SECONDS,
    )
    table = prices.per_thousand(quantities)
    for line in table:
        figure.metric(f"cost per 1 000 recordings: {line.item}", "USD", [line.usd])
    kinds = ", ".join(f"{k}: {v:g}" for k, v in sorted((requests + cleanup).items()))
    figure.notes.append(f"Storage requests per recording (webhook, worker, cleanup): {kinds}.")
    figure.notes.append(
        f"The cleanup expired {result['cleanup_deleted']} recordings; its fixed requests per run "
        "(poison purge, abandoned operations, horizon) are spread over them."
    )
    figure.notes.append(
        "Execution is billed as instance memory × time while the instance runs at least one "
        f"execution ({prices.INSTANCE_MEMORY_MB} MB instances): 'one at a time' is the webhook's "
        "and the worker's median invocations added up (an instance that serves one recording at a "
        f"time), 'busy' is the wall time of {CONCURRENT} in flight divided by the recordings (a "
        "busy instance). Measured on a shared two-core machine against Azurite: Azure's storage "
        "latency and CPU differ, so the time-based lines are an estimate, the counts are exact."
    )
    for line in table:
        figure.notes.append(f"{line.item}: {line.formula}; price: {line.price_source}.")
    figure.notes.append(prices.always_ready_note())
    return figure


def run(rig: Rig, *, quick: bool) -> Figure:
    count = 10 if quick else 40
    return figure_of(measure(rig, count), count)


def tiny(rig: Rig) -> Figure:
    return figure_of(measure(rig, 3), 3)
