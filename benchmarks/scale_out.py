"""Figure 7: several instances, one queue: recordings per second, CPU, exactly once, a killed one.

As Flex Consumption scales the app out, 1, 2 and 4 instances (each its own process: the local
Functions host running the real ``function_app``, webhook and queue trigger) share one Azurite and
one recordings server. A burst of completion notifications arrives at once, spread over the
instances as a load balancer would, and 20 % of them are delivered a second time to another
instance (Graph delivers at least once). Then once more with 2 instances, one of them killed
(SIGKILL) halfway through the burst: its queue messages come back when their lease ends and
another instance takes the download lease over.

Measured per configuration: recordings per second (first notification → last ``StoredAt``),
the instances' CPU per recording, notification → stored p50/p99 (``StoredAt`` is the app's clock,
the send time this process's: the same machine), what every party used of the two cores, and
exactly-once from storage itself: one blob per recording, never written twice (creation time =
last modified), its ledger row ``stored`` with the recording's SHA-256 and size, no other row, no
poisoned or leftover message.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx

from benchmarks.fleet import (
    NEVER,
    CpuSample,
    Fleet,
    azurite_pid,
    cpu_shares,
    host_json,
    saturated,
    scratch_dir,
)
from benchmarks.harness import Figure, Goal, cumulative_lines, profile_lines
from benchmarks.rig import Recording, Rig, completion_payload, new_id

SIZE = 3_840_000
# A burst arrives faster than any one instance takes it: Graph's deliveries overlap.
DELIVERY_CONCURRENCY = 32
DELIVERY_ATTEMPTS = 6
# The kill lands once this share of the burst is stored: both instances are busy downloading.
KILL_AFTER_SHARE = 0.25


@dataclass(frozen=True)
class Plan:
    recordings: int
    processes: tuple[int, ...] = (1, 2, 4)
    kill_with: int | None = 2
    duplicate_share: float = 0.2
    size_bytes: int = SIZE
    function_timeout_seconds: int = 10
    profile: bool = True


FULL = Plan(recordings=160)
# No kill in --quick: it waits out a message lease (functionTimeout + 30 s); full runs have it.
QUICK = Plan(recordings=24, kill_with=None)
# The smoke test's: seconds, no kill (a kill waits out a message lease).
TINY = Plan(recordings=6, processes=(1, 2), kill_with=None, size_bytes=160_696, profile=False)


@dataclass
class Delivery:
    recording: Recording
    call_id: str
    operation_id: str
    sent_at: float = 0.0


@dataclass
class Outcome:
    """One configuration's burst, as storage and the CPU counters saw it."""

    processes: int
    killed: bool
    recordings: int
    duplicates_sent: int
    wall_s: float
    latencies_ms: list[float]
    cpu: dict[str, Any]
    lost: int
    duplicate_blobs: int
    rewritten_blobs: int
    wrong_rows: int
    poisoned: int
    left_on_queue: int
    downloads: int
    redeliveries_to_another_instance: int
    profile: list[str]
    # A run made for its profile only (cProfile slows it): not a configuration of the figure.
    profiled_only: bool = False

    @property
    def per_second(self) -> float:
        return self.recordings / self.wall_s

    @property
    def app_cpu_ms_per_recording(self) -> float:
        return sum(self.cpu["instances_cpu_s"]) * 1000 / self.recordings


def _env(rig: Rig) -> dict[str, str]:
    return {**rig.child_env(), "CLEANUP_SCHEDULE": NEVER, "FUNCTIONS_WORKER_RUNTIME": "python"}


async def _deliver(
    http: httpx.AsyncClient,
    fleet: Fleet,
    body: dict[str, Any],
    bearer: str,
    first: int,
) -> int:
    """POST one notification, trying the next instance as Graph retries; returns the moves."""
    for attempt in range(DELIVERY_ATTEMPTS):
        live = fleet.live
        instance = live[(first + attempt) % len(live)]
        try:
            response = await http.post(
                f"{instance.base_url}/api/calls",
                json=body,
                headers={"Authorization": f"Bearer {bearer}"},
            )
            if response.status_code == 202:
                return attempt
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError("a notification was refused by every instance")


async def _burst(rig: Rig, fleet: Fleet, deliveries: list[Delivery], plan: Plan) -> int:
    """Every notification at once (bounded), 1 in 5 delivered again to another instance."""
    gate = asyncio.Semaphore(DELIVERY_CONCURRENCY)
    every = round(1 / plan.duplicate_share) if plan.duplicate_share else 0
    moved = 0
    limits = httpx.Limits(max_connections=DELIVERY_CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, trust_env=False) as http:

        async def one(index: int, delivery: Delivery) -> None:
            nonlocal moved
            body = completion_payload(
                delivery.call_id,
                delivery.operation_id,
                location=delivery.recording.location,
                access_token=delivery.recording.access_token,
            )
            async with gate:
                delivery.sent_at = time.time()
                copies = [index]
                if every and index % every == every - 1:
                    copies.append(index + 1)  # the same notification, at another instance
                moves = await asyncio.gather(
                    *(_deliver(http, fleet, body, rig.bearer(), first) for first in copies)
                )
                moved += sum(moves)

        await asyncio.gather(*(one(index, d) for index, d in enumerate(deliveries)))
    return moved


def _clients(rig: Rig) -> tuple[Any, Any, Any, Any]:
    from azure.data.tables import TableClient
    from azure.storage.blob import ContainerClient
    from azure.storage.queue import QueueClient

    from shared.queues import DOWNLOAD_QUEUE, POISON_QUEUE
    from shared.storage import OPERATIONS_TABLE, RECORDINGS_CONTAINER

    connection = rig.connection_string
    return (
        ContainerClient.from_connection_string(connection, RECORDINGS_CONTAINER),
        TableClient.from_connection_string(connection, OPERATIONS_TABLE),
        QueueClient.from_connection_string(connection, DOWNLOAD_QUEUE),
        QueueClient.from_connection_string(connection, POISON_QUEUE),
    )


def _stored_rows(table: Any, since: datetime) -> list[dict[str, Any]]:
    return [
        dict(entity)
        for entity in table.query_entities(
            "Status eq 'stored' and StoredAt ge @since", parameters={"since": since}
        )
    ]


def _wait_stored(
    table: Any, since: datetime, count: int, deadline_s: float
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + deadline_s
    while True:
        rows = _stored_rows(table, since)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.25)


def _clear(container: Any, queue: Any, poison: Any) -> None:
    names = [blob.name for blob in container.list_blobs()]
    for name in names:
        container.delete_blob(name)
    queue.clear_messages()
    poison.clear_messages()


def _warm_up(rig: Rig, fleet: Fleet, table: Any) -> None:
    """One recording per instance: keys fetched, connections open, polling at its fastest."""
    since = datetime.now(UTC)
    recordings = [rig.recordings.add_recording(160_696) for _ in fleet.instances]
    with httpx.Client(timeout=30.0, trust_env=False) as http:
        for instance, recording in zip(fleet.instances, recordings, strict=True):
            body = completion_payload(
                new_id(), new_id(), location=recording.location, access_token=recording.access_token
            )
            response = http.post(
                f"{instance.base_url}/api/calls",
                json=body,
                headers={"Authorization": f"Bearer {rig.bearer()}"},
            )
            if response.status_code != 202:
                raise RuntimeError(f"warm-up notification answered {response.status_code}")
    rows = _wait_stored(table, since, len(recordings), 60)
    for recording in recordings:
        rig.recordings.delete_recording(recording)
    if len(rows) < len(recordings):
        raise RuntimeError("the warm-up recordings were not stored")


def _profile(path: Any) -> list[str]:
    if path is None or not path.exists():
        return []
    return [
        *profile_lines(str(path), top=10),
        *cumulative_lines(str(path), under=("shared", "blueprints"), top=8),
    ]


def run_configuration(
    rig: Rig, plan: Plan, processes: int, *, kill: bool, profile: bool = False
) -> Outcome:
    from shared.blob_layout import blob_name_for
    from shared.ledger import table_key

    container, table, queue, poison = _clients(rig)
    deliveries = [
        Delivery(rig.recordings.add_recording(plan.size_bytes), new_id(), new_id())
        for _ in range(plan.recordings)
    ]
    with scratch_dir(f"scale-out-{processes}{'-kill' if kill else ''}") as scratch:
        profile_path = scratch / "instance-0.prof" if profile else None
        if profile_path is not None and profile_path.exists():
            profile_path.unlink()
        fleet = Fleet(
            processes,
            _env(rig),
            host_json(plan.function_timeout_seconds, scratch / "host.json"),
            profile_first=profile_path,
        )
        _clear(container, queue, poison)
        try:
            with fleet:
                _warm_up(rig, fleet, table)
                _clear(container, queue, poison)
                since = datetime.now(UTC)
                pids = {
                    "azurite_pid": azurite_pid(rig.azurite),
                    "server_pid": rig.recordings.pid,
                }
                before = CpuSample.take(fleet, **pids)
                moved = asyncio.run(_burst(rig, fleet, deliveries, plan))
                if kill:
                    _wait_stored(table, since, round(plan.recordings * KILL_AFTER_SHARE), 60)
                    fleet.kill(0)
                # A killed instance's messages return after functionTimeout + 30 s.
                bound = 60 + plan.recordings + (plan.function_timeout_seconds + 60 if kill else 0)
                rows = _wait_stored(table, since, plan.recordings, bound)
                after = CpuSample.take(fleet, **pids)
                time.sleep(0.5)  # let the duplicates' jobs finish before the queues are read
                left_on_queue = queue.get_queue_properties().approximate_message_count
                poisoned = poison.get_queue_properties().approximate_message_count
        finally:
            container_blobs = {blob.name: blob for blob in container.list_blobs()}
    expected = {blob_name_for(d.call_id, d.operation_id): d for d in deliveries}
    by_key = {(row["PartitionKey"], row["RowKey"]): row for row in rows}
    lost = wrong = 0
    latencies: list[float] = []
    downloads = 0
    for name, delivery in expected.items():
        row = by_key.get((table_key(delivery.call_id), table_key(delivery.operation_id)))
        if row is None or name not in container_blobs:
            lost += 1
            continue
        if row.get("Sha256") != delivery.recording.sha256 or row.get("SizeBytes") != (
            delivery.recording.size
        ):
            wrong += 1
        stored_at = row["StoredAt"]
        latencies.append((stored_at.timestamp() - delivery.sent_at) * 1000)
    extra_blobs = [name for name in container_blobs if name not in expected]
    extra_rows = [
        key
        for key in by_key
        if key not in {(table_key(d.call_id), table_key(d.operation_id)) for d in deliveries}
    ]
    rewritten = sum(
        1
        for name in expected
        if name in container_blobs
        and container_blobs[name].creation_time
        and container_blobs[name].last_modified
        and container_blobs[name].last_modified > container_blobs[name].creation_time
    )
    with httpx.Client(base_url=rig.recordings.base_url, timeout=30.0, trust_env=False) as http:
        for delivery in deliveries:
            info = http.get(f"/_sim/recordings/{delivery.recording.recording_id}").json()
            downloads += int(info.get("requestCount", 0))
            rig.recordings.delete_recording(delivery.recording)
    first_sent = min(d.sent_at for d in deliveries)
    last_stored = max((row["StoredAt"].timestamp() for row in rows), default=time.time())
    for client in (container, table, queue, poison):
        client.close()
    every = round(1 / plan.duplicate_share) if plan.duplicate_share else 0
    duplicates_sent = sum(1 for i in range(plan.recordings) if every and i % every == every - 1)
    return Outcome(
        processes=processes,
        killed=kill,
        recordings=plan.recordings,
        duplicates_sent=duplicates_sent,
        wall_s=max(last_stored - first_sent, 1e-6),
        latencies_ms=latencies or [0.0],
        cpu=cpu_shares(before, after),
        lost=lost,
        duplicate_blobs=len(extra_blobs) + len(extra_rows),
        rewritten_blobs=rewritten,
        wrong_rows=wrong,
        poisoned=poisoned,
        left_on_queue=left_on_queue,
        downloads=downloads,
        redeliveries_to_another_instance=moved,
        profile=_profile(profile_path),
    )


def measure(rig: Rig, plan: Plan) -> list[Outcome]:
    from devtools.demo.stack import provision_storage

    provision_storage(rig.connection_string)
    outcomes = [run_configuration(rig, plan, count, kill=False) for count in plan.processes]
    if plan.kill_with:
        outcomes.append(run_configuration(rig, plan, plan.kill_with, kill=True))
    if plan.profile:
        # Apart from the timed runs: cProfile slows the instance it watches.
        smaller = Plan(recordings=max(4, plan.recordings // 2), size_bytes=plan.size_bytes)
        profiled = run_configuration(rig, smaller, 1, kill=False, profile=True)
        outcomes.append(replace(profiled, profiled_only=True))
    return outcomes


def _label(outcome: Outcome) -> str:
    kind = "process" if outcome.processes == 1 else "processes"
    return f"{outcome.processes} {kind}" + (", one killed mid-burst" if outcome.killed else "")


def figure_of(outcomes: list[Outcome], plan: Plan) -> Figure:
    import os

    figure = Figure("7", "Several instances, one queue: throughput, CPU, exactly once")
    figure.parameters = {
        "recordings_per_configuration": plan.recordings,
        "size_bytes": plan.size_bytes,
        "duplicate_share": plan.duplicate_share,
        "processes": list(plan.processes),
        "killed_configuration": plan.kill_with,
        "function_timeout_s": plan.function_timeout_seconds,
        "delivery_concurrency": DELIVERY_CONCURRENCY,
    }
    cores = os.cpu_count() or 1
    profiled = next((o for o in outcomes if o.profiled_only), None)
    outcomes = [o for o in outcomes if not o.profiled_only]
    by_count = {o.processes: o for o in outcomes if not o.killed}
    for outcome in outcomes:
        label = _label(outcome)
        figure.metric(f"recordings per second, {label}", "per s", [outcome.per_second])
        figure.metric(
            f"app CPU per recording (all instances), {label}",
            "ms",
            [outcome.app_cpu_ms_per_recording],
        )
        figure.metric(f"notification → stored, {label}", "ms", outcome.latencies_ms, with_p99=True)
        figure.metric(f"lost recordings, {label}", "recordings", [outcome.lost], goal=Goal("<=", 0))
        figure.metric(
            f"duplicates (extra blob or row, blob written twice), {label}",
            "recordings",
            [outcome.duplicate_blobs + outcome.rewritten_blobs],
            goal=Goal("<=", 0),
        )
        shares = outcome.cpu
        per_process = ", ".join(
            f"{seconds * 1000 / outcome.recordings:.0f}" for seconds in shares["instances_cpu_s"]
        )
        figure.notes.append(
            f"{label}: {outcome.recordings} recordings ({outcome.duplicates_sent} delivered twice) "
            f"stored in {outcome.wall_s:.1f} s; CPU per recording by process (ms): {per_process}; "
            f"cores used: app {shares['app_cores']:.2f}, Azurite {shares['azurite_cores']:.2f}, "
            f"recordings server {shares['recordings_server_cores']:.2f}, driver "
            f"{shares['driver_cores']:.2f}, others {shares['others_cores']:.2f} (machine "
            f"{shares['machine_cores']:.2f} of {cores}); most: {saturated(shares, cores)}; "
            f"downloads {outcome.downloads} for {outcome.recordings} recordings; wrong rows "
            f"{outcome.wrong_rows}, poisoned {outcome.poisoned}, left on the queue "
            f"{outcome.left_on_queue}; deliveries moved to another instance "
            f"{outcome.redeliveries_to_another_instance}."
        )
    if 1 in by_count:
        for count, outcome in sorted(by_count.items()):
            if count == 1:
                continue
            figure.ratio(
                f"recordings per second, {count} processes ÷ 1",
                f"recordings/s with {count} instances",
                "recordings/s with 1 instance",
                [outcome.per_second / by_count[1].per_second],
                goal=Goal(">=", 1.6) if count == 2 else None,
            )
    figure.notes.append(
        "Each instance is the local Functions host in its own process (batchSize 16, "
        "newBatchThreshold 8: up to 24 downloads at once per instance, maxPollingInterval 2 s), "
        "as Flex Consumption runs one per instance; all of them, Azurite, the recordings server "
        f"and this driver share the machine's {cores} cores, and the machine was shared with "
        "other engineers' test runs. Cores used = CPU seconds ÷ wall seconds over the burst."
    )
    figure.notes.append(
        "Exactly once is read from storage: each recording has one blob (never rewritten: "
        "creation time = last modified) and one ledger row 'stored' with its SHA-256 and size; "
        "no other blob or row; nothing poisoned or left on the queue. Downloads counts the "
        "recordings server's GETs: more than one per recording is a duplicate delivery whose "
        "job started before the first was stored, or a takeover after the kill."
    )
    if profiled is not None and profiled.profile:
        figure.profile = [
            f"one instance alone, {profiled.recordings} recordings in a separate untimed burst, "
            "cProfile (process CPU time):",
            *profiled.profile,
        ]
    return figure


def run(rig: Rig, *, quick: bool) -> Figure:
    plan = QUICK if quick else FULL
    return figure_of(measure(rig, plan), plan)


def tiny(rig: Rig) -> Figure:
    return figure_of(measure(rig, TINY), TINY)
