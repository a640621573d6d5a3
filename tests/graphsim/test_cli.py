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

from devtools.graphsim.cli import build_parser

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
            "--tls-port",
            "0",
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
    assert "AZURE_AUTHORITY_HOST=https://127.0.0.1:" in out


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

    # With no argument: one line per delivery, not the bodies.
    summary = _cli("inspect", "--sim", served)
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert len(lines) == 1
    assert f"call={call_id} created call incoming -> 202" in lines[0]


def test_add_recording_and_bad_scenario(served: str) -> None:
    added = _cli("add-recording", "--sim", served, "--size-bytes", "2048", "--show-secrets")
    data = json.loads(added.stdout)
    response = httpx.get(
        data["location"], headers={"Authorization": f"Bearer {data['accessToken']}"}
    )
    assert len(response.content) == 2048
    bad = _cli("call", "--sim", served, "--scenario", "nope")
    assert bad.returncode == 2


def test_serve_on_a_busy_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli("serve", "--port", str(port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"127.0.0.1:{port}" in lines[0]
    assert "already in use" in lines[0]


def test_serve_defaults_are_what_the_example_settings_expect() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    args = build_parser().parse_args(["serve"])
    base = f"http://127.0.0.1:{args.port}"
    assert args.bot_app_id == example["BOT_APP_ID"]
    assert args.identity_header == example["IDENTITY_HEADER"]
    assert f"{base}/v1.0" == example["GRAPH_BASE_URL"]
    assert f"{base}/msi/token" == example["IDENTITY_ENDPOINT"]
    assert (
        f"{base}/v1/.well-known/OpenIdConfiguration" == example["INBOUND_OPENID_CONFIGURATION_URL"]
    )
    assert args.callback_url == f"{example['CALLBACK_BASE_URL']}/api/calls"
    # The client commands' default --sim is that same simulator.
    assert build_parser().parse_args(["inspect"]).sim == base


def test_unreachable_simulator_is_reported() -> None:
    result = _cli("inspect", "--sim", f"http://127.0.0.1:{_free_port()}")
    assert result.returncode == 1
    assert "cannot reach the simulator" in result.stderr


@pytest.fixture
def recording_bot() -> Iterator[dict[str, str]]:
    """A bot that answers each incoming call, records once it is established, and hangs up if
    that recording fails."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from devtools.loopback import LoopbackServer

    where: dict[str, str] = {}

    async def callback(request: Request) -> Response:
        body = await request.json()
        async with httpx.AsyncClient(base_url=f"{where['sim']}/v1.0", timeout=5) as graph:
            token = (
                await graph.get(
                    f"{where['sim']}/msi/token",
                    params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"},
                    headers={"X-IDENTITY-HEADER": "local-graph-simulator"},
                )
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            for notification in body["value"]:
                call = notification["resourceData"]
                url = notification["resourceUrl"]
                if call.get("state") == "incoming":
                    await graph.post(
                        f"{url}/answer",
                        headers=auth,
                        json={
                            "callbackUri": where["url"],
                            "acceptedModalities": ["audio"],
                            "mediaConfig": {
                                "@odata.type": "#microsoft.graph.serviceHostedMediaConfig"
                            },
                        },
                    )
                elif call.get("state") == "established":
                    await graph.post(
                        f"{url}/recordResponse",
                        headers=auth,
                        json={"maxRecordDurationInSeconds": 2},
                    )
                elif call.get("status") == "failed":
                    await graph.delete(url.split("/operations/")[0], headers=auth)
        return Response(status_code=202)

    app = Starlette(routes=[Route("/api/calls", callback, methods=["POST"])])
    with LoopbackServer(app) as server:
        where["url"] = f"{server.base_url}/api/calls"
        yield where


def test_call_wait_prints_the_recordings_final_status(recording_bot: dict[str, str]) -> None:
    port = _free_port()
    sim = f"http://127.0.0.1:{port}"
    recording_bot["sim"] = sim
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "devtools.graphsim", "serve", "--port", str(port)),
            *("--time-scale", "0.01", "--callback-url", recording_bot["url"]),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{sim}/_sim/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        silent = _cli("call", "--sim", sim, "--scenario", "silence-then-answer", "--wait")
        done = _cli("call", "--sim", sim, "--wait", "--timeout", "20")
    finally:
        process.terminate()
        process.wait(timeout=10)
    # The bot records once: the first attempt of silence-then-answer fails with 8510.
    assert silent.returncode == 1
    assert "failed 400/8510" in silent.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "completed 200/8515 Action completed, max record duration reached." in last
    assert f"at {sim}/recordings/" in last
