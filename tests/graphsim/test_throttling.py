"""The simulator throttles the calls API per app and tenant, as Graph does: 429 with Retry-After."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from devtools.azurite import free_port
from devtools.graphsim import GraphSimulator
from devtools.graphsim.throttling import CallsThrottle, ThrottleLimit
from tests.graphsim.conftest import CALLS, Bot, answer_body


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_window_admits_its_budget_then_names_the_wait_until_a_slot_frees() -> None:
    clock = FakeClock()
    throttle = CallsThrottle(ThrottleLimit(3, 10.0), clock=clock)

    assert [throttle.admit("app", "tenant") for _ in range(3)] == [None, None, None]
    clock.now += 2.5
    assert throttle.admit("app", "tenant") == 8  # the first admitted leaves at +10 s: ceil(7.5)
    clock.now += 7.5
    # All three have left the window: a new budget.
    assert [throttle.admit("app", "tenant") for _ in range(3)] == [None, None, None]
    clock.now += 9.5
    assert throttle.admit("app", "tenant") == 1  # never less than one whole second
    assert (throttle.admitted_count, throttle.throttled_count) == (6, 2)


def test_each_app_in_each_tenant_has_its_own_window_and_no_limit_admits_all() -> None:
    throttle = CallsThrottle(ThrottleLimit(1, 60.0), clock=FakeClock())

    assert throttle.admit("app", "tenant-a") is None
    assert throttle.admit("app", "tenant-b") is None
    assert throttle.admit("other-app", "tenant-a") is None
    assert throttle.admit("app", "tenant-a") is not None
    throttle.configure(None)
    assert all(throttle.admit("app", "tenant-a") is None for _ in range(100))
    with pytest.raises(ValueError, match="requests"):
        ThrottleLimit(0, 1.0)
    with pytest.raises(ValueError, match="window"):
        ThrottleLimit(1, 0.0)


def test_past_the_limit_the_calls_api_answers_429_with_retry_after_in_graphs_shape(
    sim: GraphSimulator, bot: Bot
) -> None:
    sim.calls_throttle.configure(ThrottleLimit(2, 30.0))
    call_id = sim.place_call(callback_url=bot.url)
    mine = {"Authorization": f"Bearer {sim.graph_token()}"}
    another_app = {"Authorization": f"Bearer {sim.graph_tokens.issue(app_id='another-app')[0]}"}
    with httpx.Client(base_url=sim.graph_base_url, timeout=5.0) as graph:
        statuses = [graph.get(f"{CALLS}/{call_id}", headers=mine).status_code for _ in range(2)]
        throttled = graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url), headers=mine)
        other = graph.get(f"{CALLS}/{call_id}", headers=another_app)

    assert statuses == [200, 200]
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 30
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert throttled.headers["request-id"] == throttled.json()["error"]["innerError"]["request-id"]
    assert other.status_code == 200  # another app's window is its own
    # The throttled request is in the journal, as Graph's logs would show it, and still incoming.
    assert [r.status_code for r in sim.requests if r.path.endswith("/answer")] == [429]
    assert sim.call(call_id).state == "incoming"


def test_the_control_api_sets_reads_and_clears_the_limit(sim: GraphSimulator) -> None:
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as control:
        assert control.get("/_sim/throttle").json()["requests"] is None
        body = control.post("/_sim/throttle", json={"requests": 5, "windowSeconds": 2}).json()
        assert (body["requests"], body["windowSeconds"]) == (5, 2.0)
        assert sim.calls_throttle.limit == ThrottleLimit(5, 2.0)
        assert control.post("/_sim/throttle", json={"requests": 0}).status_code == 400
        assert control.post("/_sim/throttle", json={}).json()["requests"] is None
    assert sim.calls_throttle.limit is None


def test_serve_takes_the_limit_from_its_options() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.graphsim",
            "serve",
            "--port",
            str(port),
            "--throttle-requests",
            "7",
            "--throttle-window-seconds",
            "3",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from devtools.demo.run import wait_until

        body = wait_until(
            lambda: _throttle_of(f"http://127.0.0.1:{port}"), within=20, what="the simulator"
        )
        assert (body["requests"], body["windowSeconds"]) == (7, 3.0)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _throttle_of(base_url: str) -> dict[str, object] | None:
    try:
        response = httpx.get(f"{base_url}/_sim/throttle", timeout=1.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None
