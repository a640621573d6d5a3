"""Figure 8: Graph throttling under load: calls at twice the rate Graph's limit allows.

Graph throttles the calls API per application per tenant (429 with ``Retry-After``); the
simulator does the same at a configurable rate (``devtools/graphsim/throttling.py``). The app
(one instance: the local Functions host in its own process, the bot flow answering every call)
gets incoming calls from the simulator (its own process) at twice the rate the limit can serve:
each call needs ``k`` calls-API requests at least (answer, recordResponse, the thank-you
playPrompt, the hang-up; ``k`` is counted on unthrottled warm-up calls), so a limit of ``L``
requests per second serves ``L / k`` calls per second, and the calls arrive at ``2 L / k``.

Measured: the share of the calls the limit allows (``L × T / k`` over the arrival period ``T``)
that were answered within Graph's 15 s (the simulator ends a call not answered by then, as
Teams does), the recordings stored, the calls-API requests sent (429s included) against the
calls' minimum (``calls × k``: no retry storm), and what became of every call: served, not
answered in time (ended by Graph), answered but ended without a recording, or left open.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from benchmarks.fleet import (
    CpuSample,
    Fleet,
    azurite_pid,
    cpu_shares,
    host_json,
    saturated,
    scratch_dir,
)
from benchmarks.harness import Figure, Goal
from benchmarks.rig import Rig, SimulatorProcess
from devtools.azurite import free_port

# Graph ends a call the bot has not answered within 15 s (wall clock in the simulator too).
ANSWER_DEADLINE_S = 15.0
TIME_SCALE = 0.05
RECORD_SECONDS = 5
WARM_UP_CALLS = 2
THROTTLE_WINDOW_S = 1.0
# The cleanup's open-call sweep finishes what Graph refused (a hang-up, a recordResponse): it
# runs every 5 min and waits BOT_HANG_UP_WAIT_SECONDS (60) in Azure; scaled down here as the
# recordings are, so it acts within the run's drain.
SWEEP_EVERY_S = 5
SWEEP_WAIT_S = 5
# Only the app's own identity token reaches the calls API here (managed identity).
APP_SETTINGS = {
    "GRAPH_CREDENTIAL_MODE": "managedIdentity",
    "BOT_AUTO_ANSWER": "true",
    "BOT_RECORD_MAX_DURATION_SECONDS": str(RECORD_SECONDS),
    "BOT_HANG_UP_WAIT_SECONDS": str(SWEEP_WAIT_S),
    "CLEANUP_SCHEDULE": f"*/{SWEEP_EVERY_S} * * * * *",
    "FUNCTIONS_WORKER_RUNTIME": "python",
}


@dataclass(frozen=True)
class Plan:
    requests_per_second: int
    arrival_seconds: float
    # After the answer deadline: a call the app left open never ends, so this bounds the wait.
    drain_seconds: float = 30.0


FULL = Plan(requests_per_second=8, arrival_seconds=30.0, drain_seconds=30.0)
QUICK = Plan(requests_per_second=8, arrival_seconds=6.0, drain_seconds=10.0)
TINY = Plan(requests_per_second=4, arrival_seconds=3.0, drain_seconds=10.0)


def _key(identifier: str) -> str:
    return identifier.replace("-", "").lower()


class Simulator(SimulatorProcess):
    """``python -m devtools.graphsim serve`` for this figure: its own process (its own time
    scale and answer deadline), throttle off."""

    def __init__(self) -> None:
        super().__init__(
            options=(
                "--time-scale",
                str(TIME_SCALE),
                "--retention-seconds",
                "3600",
                "--answer-timeout-seconds",
                str(ANSWER_DEADLINE_S),
            ),
            http_timeout=30.0,
        )

    def env(self) -> dict[str, str]:
        env: dict[str, str] = self.http.get("/_sim/config").json()["env"]
        return env

    def calls(self) -> dict[str, dict[str, Any]]:
        return {_key(c["id"]): c for c in self.http.get("/_sim/calls").json()}

    def requests(self) -> list[dict[str, Any]]:
        requests: list[dict[str, Any]] = self.http.get("/_sim/requests").json()
        return requests

    def throttle(self, requests_per_second: int | None) -> None:
        body = (
            {}
            if requests_per_second is None
            else {"requests": requests_per_second, "windowSeconds": THROTTLE_WINDOW_S}
        )
        self.http.post("/_sim/throttle", json=body).raise_for_status()


def _requests_by_call(requests: list[dict[str, Any]], calls: set[str]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {call: [] for call in calls}
    for request in requests:
        parts = request["path"].split("/communications/calls/", 1)
        if len(parts) == 2:
            call = _key(parts[1].split("/", 1)[0])
            if call in grouped:
                grouped[call].append(request)
    return grouped


def _wait_ended(sim: Simulator, ids: list[str], within: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        calls = sim.calls()
        mine = {key: calls[key] for key in map(_key, ids) if key in calls}
        if all(c["state"] == "terminated" for c in mine.values()) or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


async def _place(sim: Simulator, callback: str, rate: float, seconds: float) -> list[str]:
    """Incoming calls at ``rate`` per second for ``seconds`` (an open loop, as callers are)."""
    count = max(1, round(rate * seconds))
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=30.0, trust_env=False) as http:
        started = time.perf_counter()

        async def one(index: int) -> None:
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            response = await http.post(
                "/_sim/calls", json={"scenario": "max-duration", "callbackUrl": callback}
            )
            response.raise_for_status()
            ids.append(response.json()["id"])

        await asyncio.gather(*(one(index) for index in range(count)))
    return ids


def _stored_calls(rig: Rig, since: datetime) -> set[str]:
    from azure.data.tables import TableClient

    from shared.storage import OPERATIONS_TABLE

    with TableClient.from_connection_string(rig.connection_string, OPERATIONS_TABLE) as table:
        rows = table.query_entities(
            "Status eq 'stored' and StoredAt ge @since", parameters={"since": since}
        )
        return {_key(str(row["PartitionKey"])) for row in rows}


def measure(rig: Rig, plan: Plan) -> dict[str, Any]:
    from devtools.demo.stack import provision_storage

    provision_storage(rig.connection_string)
    port = free_port()
    callback = f"http://127.0.0.1:{port}/api/calls"
    with Simulator() as sim, scratch_dir("throttling") as scratch:
        env = {
            **{k: v for k, v in os.environ.items() if k not in rig.app_env()},
            "AzureWebJobsStorage": rig.connection_string,
            **sim.env(),
            **APP_SETTINGS,
            "CALLBACK_BASE_URL": f"http://127.0.0.1:{port}",
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        fleet = Fleet(1, env, host_json(60, scratch / "host.json"), ports=[port])
        with fleet:
            # Unthrottled: how many calls-API requests one call needs when nothing is refused.
            warm_since = datetime.now(UTC)
            warm = asyncio.run(_place(sim, callback, 2.0, WARM_UP_CALLS / 2.0))
            _wait_ended(sim, warm, 30)
            warm_requests = _requests_by_call(sim.requests(), {_key(c) for c in warm})
            warm_stored = _stored_calls(rig, warm_since)
            served = [len(r) for c, r in warm_requests.items() if c in warm_stored]
            if not served:
                raise RuntimeError("no warm-up call was served: the bot flow does not run")
            minimum = min(served)

            sim.throttle(plan.requests_per_second)
            rate = 2 * plan.requests_per_second / minimum
            pids = {"azurite_pid": azurite_pid(rig.azurite), "server_pid": None}
            before = CpuSample.take(fleet, **pids)
            since = datetime.now(UTC)
            placed = asyncio.run(_place(sim, callback, rate, plan.arrival_seconds))
            calls = _wait_ended(sim, placed, ANSWER_DEADLINE_S + plan.drain_seconds)
            after = CpuSample.take(fleet, **pids)
            requests = _requests_by_call(sim.requests(), {_key(c) for c in placed})
            stored = _stored_calls(rig, since)
            throttle = sim.http.get("/_sim/throttle").json()
            sim.throttle(None)
    outcomes: dict[str, int] = {
        "served": 0,
        "not answered in time (ended by Graph)": 0,
        "answered, ended without a recording": 0,
        "left open": 0,
    }
    answer_latencies: list[float] = []
    left_open: list[str] = []
    answered_in_time = 0
    for key in map(_key, placed):
        call = calls.get(key, {})
        mine = requests.get(key, [])
        answers = [r for r in mine if r["path"].endswith("/answer") and r["status_code"] == 202]
        answered = bool(answers)
        if answered:
            latency = answers[0]["received_at"] - call.get("createdAt", answers[0]["received_at"])
            answer_latencies.append(latency * 1000)
            answered_in_time += latency <= ANSWER_DEADLINE_S
        if call.get("state") != "terminated":
            outcomes["left open"] += 1
            left_open.append(_trail(mine))
        elif key in stored:
            outcomes["served"] += 1
        elif answered:
            outcomes["answered, ended without a recording"] += 1
        else:
            outcomes["not answered in time (ended by Graph)"] += 1
    sent = sum(len(r) for r in requests.values())
    throttled = sum(1 for r in requests.values() for x in r if x["status_code"] == 429)
    allowed = min(len(placed), int(plan.requests_per_second * plan.arrival_seconds / minimum))
    return {
        "minimum": minimum,
        "rate": rate,
        "placed": len(placed),
        "allowed": allowed,
        "answered_in_time": answered_in_time,
        "answer_latencies_ms": answer_latencies or [0.0],
        "stored": len(stored & {_key(c) for c in placed}),
        "sent": sent,
        "throttled": throttled,
        "outcomes": outcomes,
        "throttle": throttle,
        "cpu": cpu_shares(before, after),
        "by_action": _by_action(requests),
        "left_open": left_open,
    }


def _action(request: dict[str, Any]) -> str:
    tail = str(request["path"]).rsplit("/", 1)[-1]
    return {"DELETE": "hangUp", "GET": "get"}.get(str(request["method"]), tail)


def _trail(requests: list[dict[str, Any]]) -> str:
    """What the app sent for one call, in order: ``answer 202, recordResponse 429, ...``."""
    ordered = sorted(requests, key=lambda r: float(r["received_at"]))
    return ", ".join(f"{_action(r)} {r['status_code']}" for r in ordered) or "nothing"


def _by_action(requests: dict[str, list[Any]]) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for each in requests.values():
        for request in each:
            action = _action(request)
            sent, refused = counts.get(action, (0, 0))
            counts[action] = (sent + 1, refused + (request["status_code"] == 429))
    return counts


def figure_of(result: dict[str, Any], plan: Plan) -> Figure:
    figure = Figure("8", "Graph throttling: calls at twice the rate the limit allows")
    limit = plan.requests_per_second
    figure.parameters = {
        "limit_requests_per_s": limit,
        "window_s": THROTTLE_WINDOW_S,
        "arrival_s": plan.arrival_seconds,
        "calls_per_s": round(result["rate"], 2),
        "minimum_requests_per_call": result["minimum"],
        "record_seconds": RECORD_SECONDS,
        "time_scale": TIME_SCALE,
        "sweep_every_s": SWEEP_EVERY_S,
        "sweep_wait_s": SWEEP_WAIT_S,
    }
    placed, allowed = result["placed"], result["allowed"]
    figure.metric(
        "calls the limit allows, answered within 15 s (share)",
        "share",
        [result["answered_in_time"] / allowed if allowed else 0.0],
        goal=Goal(">=", 0.99),
    )
    figure.metric(
        "calls-API requests sent ÷ the calls' minimum",
        "ratio",
        [result["sent"] / (placed * result["minimum"])],
        goal=Goal("<=", 1.5),
    )
    figure.metric("calls placed", "calls", [placed])
    figure.metric("calls the limit allows", "calls", [allowed])
    figure.metric("answered within 15 s", "calls", [result["answered_in_time"]])
    figure.metric("recordings stored", "recordings", [result["stored"]])
    figure.metric(
        "answer latency (answered calls)", "ms", result["answer_latencies_ms"], with_p99=True
    )
    figure.metric("calls-API requests sent", "requests", [result["sent"]])
    figure.metric("of which refused (429)", "requests", [result["throttled"]])
    figure.metric("calls left open", "calls", [result["outcomes"]["left open"]], goal=Goal("<=", 0))
    outcomes = ", ".join(f"{name}: {count}" for name, count in result["outcomes"].items())
    figure.notes.append(f"What became of the {placed} calls: {outcomes}.")
    actions = ", ".join(
        f"{action} {sent} ({refused} refused)"
        for action, (sent, refused) in sorted(result["by_action"].items())
    )
    figure.notes.append(f"Calls-API requests by action: {actions}.")
    if result.get("left_open"):
        trails = "; ".join(f"[{trail}]" for trail in result["left_open"][:5])
        figure.notes.append(f"What the app sent for the calls left open: {trails}.")
    shares = result["cpu"]
    cores = os.cpu_count() or 1
    figure.notes.append(
        f"The limit: {limit} requests per {THROTTLE_WINDOW_S:g} s per app per tenant (Graph's "
        "own for calls is 50,000 per 15 s, per app per tenant; scaled to a rate one instance "
        f"reaches on this machine); one call needs {result['minimum']} (counted on "
        f"{WARM_UP_CALLS} unthrottled calls), so the limit serves {limit / result['minimum']:.1f} "
        f"calls/s and they arrived at {result['rate']:.1f} calls/s for "
        f"{plan.arrival_seconds:g} s. The simulator admitted {result['throttle']['admitted']} "
        f"and refused {result['throttle']['throttled']} requests in all."
    )
    figure.notes.append(
        f"Cores used during the run: app {shares['app_cores']:.2f}, Azurite "
        f"{shares['azurite_cores']:.2f}, driver {shares['driver_cores']:.2f}, others "
        f"{shares['others_cores']:.2f}; most: {saturated(shares, cores)}. The machine was shared "
        "with other engineers' test runs."
    )
    return figure


def run(rig: Rig, *, quick: bool) -> Figure:
    plan = QUICK if quick else FULL
    return figure_of(measure(rig, plan), plan)


def tiny(rig: Rig) -> Figure:
    return figure_of(measure(rig, TINY), TINY)
