"""Figure 3: webhook throughput on one process ÷ raw Azurite enqueues per second.

Each round sends the same number of signed completion notifications to the registered
``notifications`` function, one after another (each with its own freshly signed token, as the
platform sends them), and the same number of raw ``send_message`` calls; the round's ratio is
notifications/s ÷ raw enqueues/s. The handler's latency distribution gives its p99; the time
spent inside the token validator (wrapped, not changed) gives JWT validation's share.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import floors
from benchmarks.harness import Figure, Goal, pairwise_ratios, percentile
from benchmarks.rig import (
    Rig,
    StorageRequestCounter,
    completion_payload,
    new_id,
    placeholder_token,
    run_async,
    webhook_function,
    webhook_request,
)


class ValidationTimer:
    """Wraps the inbound token validator's entry point to add up the time spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._original: Callable[..., Awaitable[Any]] | None = None

    def __enter__(self) -> ValidationTimer:
        from shared.auth.inbound import InboundTokenValidator

        original = InboundTokenValidator.validate_authorization
        self._original = original
        timer = self

        @functools.wraps(original)
        async def timed(self: Any, header: str | None) -> Any:
            started = time.perf_counter()
            try:
                return await original(self, header)
            finally:
                timer.seconds += time.perf_counter() - started

        InboundTokenValidator.validate_authorization = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from shared.auth.inbound import InboundTokenValidator

        InboundTokenValidator.validate_authorization = self._original  # type: ignore[method-assign]


def run(rig: Rig, *, quick: bool) -> Figure:
    figure = Figure("3", "Webhook throughput: signed notifications per second on one process")
    rounds = 2 if quick else 3
    per_round = 100 if quick else 400
    figure.parameters = {"rounds": rounds, "notifications_per_round": per_round}

    requests = [
        [
            webhook_request(
                completion_payload(
                    new_id(),
                    new_id(),
                    location=f"{rig.recordings.base_url}/recordings/not-fetched",
                    access_token=placeholder_token(),
                ),
                rig.bearer(),
            )
            for _ in range(per_round)
        ]
        for _ in range(rounds + 1)
    ]

    async def measure() -> dict[str, list[float]]:
        from shared.services import app_services

        storage = app_services().storage
        await storage.ensure_resources()
        handler = webhook_function()
        raw_queue = floors.floor_queue(rig.connection_string)
        results: dict[str, list[float]] = {
            "app_rate": [],
            "raw_rate": [],
            "latency_ms": [],
            "jwt_share": [],
            "requests": [],
        }
        async with raw_queue:
            await floors.ensure_queue(raw_queue)
            # Warm-up round (keys fetched, clients connected): not counted.
            for request in requests[0][:20]:
                await handler(request)
            for batch in requests[1:]:
                await storage.queue.clear_messages()
                await raw_queue.clear_messages()
                raw_seconds = await floors.raw_enqueues(raw_queue, per_round)
                latencies = []
                with ValidationTimer() as validation, StorageRequestCounter(rig.azurite) as count:
                    started = time.perf_counter()
                    for request in batch:
                        call_started = time.perf_counter()
                        response = await handler(request)
                        latencies.append(time.perf_counter() - call_started)
                        if response.status_code != 202:
                            raise RuntimeError(f"webhook answered {response.status_code}")
                    app_seconds = time.perf_counter() - started
                results["app_rate"].append(per_round / app_seconds)
                results["raw_rate"].append(per_round / raw_seconds)
                results["latency_ms"] += [s * 1000 for s in latencies]
                results["jwt_share"].append(validation.seconds / app_seconds)
                results["requests"].append(count.total / per_round)
                requests_by_kind = {k: v / per_round for k, v in sorted(count.requests.items())}
            await storage.queue.clear_messages()
        results["requests_by_kind"] = [requests_by_kind]  # type: ignore[list-item]
        return results

    results = run_async(measure)
    figure.metric("notifications handled", "per s", results["app_rate"])
    figure.metric("raw enqueues (floor)", "per s", results["raw_rate"])
    figure.metric(
        "handler latency",
        "ms",
        results["latency_ms"],
        with_p99=True,
        description="one signed notification: validate JWT, parse, enqueue",
    )
    figure.metric(
        "share of handler time in JWT validation",
        "%",
        [share * 100 for share in results["jwt_share"]],
    )
    figure.ratio(
        "webhook ÷ raw enqueue",
        "notifications/s",
        "raw enqueues/s",
        pairwise_ratios(results["app_rate"], results["raw_rate"]),
        goal=Goal(">=", 0.8),
    )
    figure.metric("storage requests per notification", "requests", results["requests"])
    kinds = ", ".join(f"{k}: {v:g}" for k, v in results["requests_by_kind"][0].items())  # type: ignore[attr-defined]
    figure.notes.append(f"Storage requests per notification, by service and method: {kinds}.")
    p50 = percentile(results["latency_ms"], 50)
    raw_ms = 1000 / (sum(results["raw_rate"]) / len(results["raw_rate"]))
    # The note is derived from the figures above so that it cannot contradict them.
    per_notification = percentile(results["requests"], 50)
    jwt_share = percentile(results["jwt_share"], 50) * 100
    if per_notification == 1:
        cost = (
            "each notification makes one storage request, the enqueue of its download job, so "
            f"the other {p50 - raw_ms:.1f} ms are in-process work: JWT validation "
            f"({jwt_share:.1f} % of handler time), parsing and validating the payload, "
            "building and encoding the job"
        )
    else:
        cost = f"each notification makes {per_notification:g} storage requests, one after the other"
    figure.notes.append(
        f"Handler p50 {p50:.1f} ms against {raw_ms:.1f} ms per raw enqueue: {cost}."
    )
    return figure
