"""The CLI: `serve` in a real subprocess, then `call` and `inspect` against it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import BOT_APP_ID, Bot, is_state

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devtools.graphsim", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def served(bot: Bot) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.graphsim",
            "serve",
            "--port",
            str(port),
            "--bot-app-id",
            BOT_APP_ID,
            "--callback-url",
            bot.url,
            "--time-scale",
            "0.01",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/_sim/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.05)
        else:
            pytest.fail("simulator did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
    out = process.stdout.read() if process.stdout else ""
    assert f"listening on {url}" in out
    assert "IDENTITY_HEADER=***" in out


def test_call_then_inspect(served: str, bot: Bot) -> None:
    placed = _cli("call", "--sim", served, "--scenario", "max-duration")
    assert placed.returncode == 0, placed.stderr
    call_id = json.loads(placed.stdout)["id"]
    bot.wait_for(is_state("incoming"))
    inspected = _cli("inspect", "--sim", served, "deliveries", "--call-id", call_id)
    assert inspected.returncode == 0, inspected.stderr
    deliveries = json.loads(inspected.stdout)
    assert deliveries[0]["status_code"] == 202
    assert deliveries[0]["body"]["value"][0]["resourceData"]["id"] == call_id
    call = json.loads(_cli("inspect", "--sim", served, "call", "--call-id", call_id).stdout)
    assert call["state"] == "incoming"
    config = json.loads(_cli("inspect", "--sim", served, "config").stdout)
    assert config["env"]["IDENTITY_HEADER"] == "***"
    assert config["env"]["GRAPH_BASE_URL"] == f"{served}/v1.0"


def test_add_recording_and_bad_scenario(served: str) -> None:
    added = _cli("add-recording", "--sim", served, "--size-bytes", "2048", "--show-secrets")
    data = json.loads(added.stdout)
    response = httpx.get(
        data["location"], headers={"Authorization": f"Bearer {data['accessToken']}"}
    )
    assert len(response.content) == 2048
    bad = _cli("call", "--sim", served, "--scenario", "nope")
    assert bad.returncode == 2


def test_unreachable_simulator_is_reported() -> None:
    result = _cli("inspect", "--sim", f"http://127.0.0.1:{_free_port()}")
    assert result.returncode == 1
    assert "cannot reach the simulator" in result.stderr
