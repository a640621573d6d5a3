"""Figure 4: cold start, answer latency and footprint.

- ``import function_app`` in a fresh interpreter ÷ a bare ``import azure.functions`` (the
  runtime library every Python function app imports: the floor);
- the first notification after start-up: ``import function_app`` then the first completion
  notification handled (the host indexes the functions, the webhook fetches the signing keys,
  opens its storage clients, queues the job), ÷ the cold floor: a fresh interpreter that imports
  the storage SDK, creates a queue client and enqueues once;
- answer latency: an incoming-call notification handed to the webhook → the Graph simulator
  receives the ``answer`` request, warm (in this process) and in a fresh process, ÷ the floor:
  the same token validation, then one raw POST of the same answer body;
- installed size of ``requirements.txt`` ÷ msgraph-sdk's installed size (each venv's
  site-packages minus a bare venv's; full runs only: it builds three venvs with pip).

Every import is timed inside a fresh interpreter around the import statement alone (interpreter
start-up excluded), app and floor interleaved, after one untimed run that writes the bytecode.
The answer's arrival time is the simulator's own record of the request (same machine clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Figure, Goal, pairwise_ratios
from benchmarks.rig import (
    Rig,
    app_settings_env,
    completion_payload,
    new_id,
    placeholder_token,
    run_async,
    webhook_function,
    webhook_request,
)

SCRATCH = ROOT / "benchmarks" / ".scratch"
MSGRAPH_SDK = "msgraph-sdk==1.65.0"
APP_IMPORT = "import function_app"
RUNTIME_IMPORT = "import azure.functions"
COLD_FLOOR_QUEUE = "bench-cold-floor"
PIP_TIMEOUT_SECONDS = 900
IMPORT_TIMEOUT_SECONDS = 120

_TIMED_IMPORT = (
    "import time\nstarted = time.perf_counter()\n{statement}\n"
    "print(repr(time.perf_counter() - started))\n"
)

# Runs in a fresh interpreter: times the app's import, then its first and second notification.
_FIRST_NOTIFICATION = """
import time
started = time.perf_counter()
import function_app
imported = time.perf_counter()

import asyncio, json, os
import azure.functions as func

async def main():
    first_started = time.perf_counter()
    walls.append(time.time())
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    handler = functions["notifications"].get_user_function()
    timings = []
    for bearer in (os.environ["BENCH_BEARER_1"], os.environ["BENCH_BEARER_2"]):
        call_started = time.perf_counter()
        if timings:
            walls.append(time.time())
        request = func.HttpRequest(
            method="POST",
            url="http://localhost:7071/api/calls",
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + bearer},
            params={},
            route_params={},
            body=os.environ["BENCH_BODY_" + str(len(timings) + 1)].encode(),
        )
        response = await handler(request)
        if response.status_code != 202:
            raise SystemExit(f"webhook answered {response.status_code}")
        timings.append(time.perf_counter() - (first_started if not timings else call_started))
    from shared.services import close_services
    await close_services()
    return timings

walls = []
profile = []
if os.environ.get("BENCH_PROFILE"):
    import cProfile
    from benchmarks.harness import cumulative_lines, profile_lines
    profiler = cProfile.Profile(time.perf_counter)
    first, second = profiler.runcall(asyncio.run, main())
    profile = cumulative_lines(profiler, under=("shared", "blueprints"), top=12, clock="wall time")
    profile += profile_lines(profiler, top=8, clock="wall time")
else:
    first, second = asyncio.run(main())
print(json.dumps({
    "import": imported - started, "first": first, "second": second,
    "first_wall": walls[0], "second_wall": walls[1], "profile": profile,
}))
"""

# The cold floor: a fresh interpreter imports the storage SDK, makes a client, enqueues once.
_COLD_FLOOR = """
import time
started = time.perf_counter()
import asyncio, os
from azure.storage.queue.aio import QueueClient

async def main():
    queue = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], QUEUE)
    async with queue:
        await queue.send_message("x" * 640)

asyncio.run(main())
print(repr(time.perf_counter() - started))
"""


# --------------------------------------------------------------------------- interpreters


def _run_python(
    python: Path | str, code: str, *, env: dict[str, str] | None = None, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(python), *flags, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{python} -c failed ({result.returncode}): {result.stderr[-1500:]}")
    return result


def timed_import(python: Path | str, statement: str, env: dict[str, str] | None = None) -> float:
    """Seconds ``statement`` takes in a fresh interpreter."""
    result = _run_python(python, _TIMED_IMPORT.format(statement=statement), env=env)
    return float(result.stdout.strip().splitlines()[-1])


def importtime_by_package(
    python: Path | str, statement: str, *, top: int = 8, env: dict[str, str] | None = None
) -> list[tuple[str, float]]:
    """Self import time per top-level package (``-X importtime``), largest first, in ms."""
    result = _run_python(python, statement, env=env, flags=("-X", "importtime"))
    totals: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".", 1)[0]
        totals[package] += int(parts[0]) / 1000
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]


def _base_python() -> str:
    return shutil.which("python3.11") or getattr(sys, "_base_executable", sys.executable)


def scratch_venv(name: str, requirements: list[str]) -> Path:
    """A venv under ``benchmarks/.scratch`` with ``requirements`` installed; kept between runs."""
    venv = SCRATCH / name
    marker = venv / ".complete"
    python = venv / "bin" / "python"
    if marker.exists() and python.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [_base_python(), "-m", "venv", str(venv)], check=True, timeout=120, capture_output=True
    )
    if requirements:
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *requirements],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip install {requirements} failed: {result.stderr[-1500:]}")
    marker.write_text(" ".join(requirements) + "\n")
    return python


def site_packages_bytes(python: Path) -> int:
    """Bytes of every file in the venv's site-packages (apparent size, symlinks not followed)."""
    venv = python.parent.parent
    total = 0
    for site in venv.glob("lib/python3*/site-packages"):
        for dirpath, _, filenames in os.walk(site):
            for filename in filenames:
                path = Path(dirpath, filename)
                if not path.is_symlink():
                    total += path.stat().st_size
    return total


# --------------------------------------------------------------------------- the figure


def _first_notification(
    rig: Rig,
    bodies: list[dict[str, Any]] | None = None,
    *,
    env: dict[str, str] | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """A fresh process imports the app and hands two notifications to the webhook."""

    async def prepare() -> None:
        from shared.services import app_services

        await app_services().storage.ensure_resources()

    run_async(prepare)
    env = dict(env or rig.child_env())
    if profile:
        env["BENCH_PROFILE"] = "1"
    if bodies is None:
        bodies = [
            completion_payload(
                new_id(),
                new_id(),
                location="https://127.0.0.1:9/recordings/not-fetched",
                access_token=placeholder_token(),
            )
            for _ in (1, 2)
        ]
    for index, body in enumerate(bodies, start=1):
        env[f"BENCH_BODY_{index}"] = json.dumps(body)
        env[f"BENCH_BEARER_{index}"] = rig.bearer()
    result = _run_python(sys.executable, _FIRST_NOTIFICATION, env=env)
    timings: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return timings


def _cold_floor(rig: Rig) -> float:
    code = _COLD_FLOOR.replace("QUEUE", repr(COLD_FLOOR_QUEUE))
    return float(_run_python(sys.executable, code, env=rig.child_env()).stdout.split()[-1])


def _ensure_cold_floor_queue(rig: Rig, *, clear: bool = False) -> None:
    async def ensure() -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue.aio import QueueClient

        queue = QueueClient.from_connection_string(rig.connection_string, COLD_FLOOR_QUEUE)
        async with queue:
            with contextlib.suppress(ResourceExistsError):
                await queue.create_queue()
            if clear:
                await queue.clear_messages()

    run_async(ensure)


# --------------------------------------------------------------------------- answer latency


class _Inbox:
    """The bot's callback URL for the simulator's own deliveries; they are not measured."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        from devtools.loopback import LoopbackServer

        async def accept(_: Any) -> Response:
            return Response(status_code=202)

        self.server = LoopbackServer(
            Starlette(routes=[Route("/api/calls", accept, methods=["POST"])])
        )

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def __enter__(self) -> _Inbox:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def _bot_env(rig: Rig, callback_base_url: str) -> dict[str, str]:
    """The app answers incoming calls through the in-process simulator's calls API."""
    return {
        "GRAPH_BASE_URL": rig.signer.graph_base_url,
        "GRAPH_CREDENTIAL_MODE": "managedIdentity",
        "CALLBACK_BASE_URL": callback_base_url,
        "BOT_AUTO_ANSWER": "true",
        **rig.signer.managed_identity_env(),
    }


def _settings_with(values: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    # The simulator's managed identity only: the machine's other identity variables go.
    removed = ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID")
    return app_settings_env(values, removed=removed)


def _incoming_call(rig: Rig, callback_url: str) -> tuple[str, dict[str, Any]]:
    """A call placed on the simulator, and the incoming-call notification it sent."""
    from devtools.graphsim.calls import id_key

    call_id = rig.signer.place_call("max-duration", callback_url=callback_url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for notification in rig.signer.notifications(call_id):
            data = notification.get("resourceData") or {}
            if str(data.get("state", "")).lower() == "incoming":
                return id_key(call_id), {"value": [notification]}
        time.sleep(0.005)
    raise RuntimeError("the simulator sent no incoming-call notification")


def _answer_received_at(rig: Rig, call_key: str, *, timeout: float = 10.0) -> float:
    """When the simulator received the answer request for the call (its own clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in rig.signer.requests:
            path = record.path.replace("-", "").lower()
            if path.endswith("/answer") and call_key in path:
                return record.received_at
        time.sleep(0.002)
    raise RuntimeError("the simulator received no answer request")


def _answer_body(callback_url: str) -> dict[str, Any]:
    return {
        "callbackUri": callback_url,
        "acceptedModalities": ["audio"],
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
    }


def _answer_latency(rig: Rig, *, repeats: int) -> tuple[dict[str, list[float]], list[str]]:
    """Warm answer latency, app and floor interleaved, in this process (seconds), and a profile."""
    import cProfile

    from benchmarks.harness import cumulative_lines

    results: dict[str, list[float]] = {"app": [], "floor": []}
    profile: list[str] = []
    with _Inbox() as inbox, _settings_with(_bot_env(rig, inbox.base_url)):
        callback = f"{inbox.base_url}/api/calls"

        async def measure() -> None:
            import httpx

            from shared.services import app_services

            services = app_services()
            await services.storage.ensure_resources()
            handler = webhook_function()
            graph_token = rig.signer.graph_token()
            raw = httpx.AsyncClient(timeout=10.0, trust_env=False)

            async def app_once() -> float:
                call_key, body = await asyncio.to_thread(_incoming_call, rig, callback)
                # Signed before the clock starts, as the floor's: the platform signs it.
                request = webhook_request(body, rig.bearer())
                started = time.time()
                response = await handler(request)
                if response.status_code >= 300:
                    raise RuntimeError(f"webhook answered {response.status_code}")
                return await asyncio.to_thread(_answer_received_at, rig, call_key) - started

            async def floor_once() -> float:
                call_key, _ = await asyncio.to_thread(_incoming_call, rig, callback)
                bearer = f"Bearer {rig.bearer()}"
                started = time.time()
                await services.inbound.validate_authorization(bearer)
                response = await raw.post(
                    f"{rig.signer.graph_base_url}/communications/calls/{call_key}/answer",
                    json=_answer_body(callback),
                    headers={"Authorization": f"Bearer {graph_token}"},
                )
                response.raise_for_status()
                return await asyncio.to_thread(_answer_received_at, rig, call_key) - started

            async with raw:
                await floor_once()  # warm-up: keys, connections, the Graph token
                await app_once()
                for _ in range(repeats):
                    results["floor"].append(await floor_once())
                    results["app"].append(await app_once())
                # What the app's answer path waits on (wall time; the simulator's waits too).
                profiler = cProfile.Profile(time.perf_counter)
                for _ in range(5):
                    profiler.enable()
                    await app_once()
                    profiler.disable()
                profile.extend(
                    cumulative_lines(
                        profiler, under=("shared", "blueprints"), top=10, clock="wall time"
                    )
                )

        run_async(measure)
    return results, profile


def _answer_fresh(rig: Rig, *, repeats: int) -> tuple[list[float], list[float]]:
    """Answer latency of a fresh process's first and second notification (seconds)."""
    firsts, seconds = [], []
    with _Inbox() as inbox:
        callback = f"{inbox.base_url}/api/calls"
        env = {**rig.child_env(), **_bot_env(rig, inbox.base_url)}
        for _ in range(repeats):
            calls = [_incoming_call(rig, callback) for _ in (1, 2)]
            timings = _first_notification(rig, [body for _, body in calls], env=env)
            firsts.append(_answer_received_at(rig, calls[0][0]) - timings["first_wall"])
            seconds.append(_answer_received_at(rig, calls[1][0]) - timings["second_wall"])
    return firsts, seconds


def run(rig: Rig, *, quick: bool) -> Figure:
    figure = Figure("4", "Cold start: imports, first notification, answer latency, size")
    repeats = 3 if quick else 7
    answers = 10 if quick else 30
    figure.parameters = {"repeats": repeats, "answers": answers, "msgraph_sdk": MSGRAPH_SDK}
    app_python = sys.executable
    env = rig.child_env()

    # App import ÷ the runtime library's import.
    timed_import(app_python, APP_IMPORT, env)  # untimed: writes bytecode, warms the page cache
    timed_import(app_python, RUNTIME_IMPORT, env)
    app, runtime = [], []
    for _ in range(repeats):
        runtime.append(timed_import(app_python, RUNTIME_IMPORT, env))
        app.append(timed_import(app_python, APP_IMPORT, env))
    figure.metric("import function_app", "ms", [s * 1000 for s in app])
    figure.metric("import azure.functions (floor)", "ms", [s * 1000 for s in runtime])
    figure.ratio(
        "app import ÷ bare azure.functions",
        APP_IMPORT,
        RUNTIME_IMPORT,
        pairwise_ratios(app, runtime),
        goal=Goal("<=", 2.0),
    )
    top = importtime_by_package(app_python, APP_IMPORT, env=env)
    figure.profile.append("import function_app, self time by package (-X importtime, one run):")
    figure.profile += [f"  {package:<28} {ms:8.1f} ms" for package, ms in top]

    # The first notification after start-up ÷ the cold floor, interleaved.
    _ensure_cold_floor_queue(rig)
    _cold_floor(rig)  # untimed: bytecode and page cache, as for the imports
    imports, firsts, seconds, colds, startups = [], [], [], [], []
    for _ in range(max(2, repeats // 2 + 1)):
        colds.append(_cold_floor(rig) * 1000)
        timings = _first_notification(rig)
        imports.append(timings["import"] * 1000)
        firsts.append(timings["first"] * 1000)
        seconds.append(timings["second"] * 1000)
        startups.append((timings["import"] + timings["first"]) * 1000)
    _ensure_cold_floor_queue(rig, clear=True)
    figure.metric(
        "first notification after start-up (import + first handled)",
        "ms",
        startups,
        description="import function_app, index functions, JWKS fetch, storage clients, enqueue",
    )
    figure.metric("of which: first notification handled after import", "ms", firsts)
    figure.metric(
        "cold floor: import storage SDK + client + one enqueue",
        "ms",
        colds,
        description="a fresh interpreter, interpreter start-up excluded like the app's",
    )
    figure.metric("second notification (warm)", "ms", seconds)
    figure.ratio(
        "first notification ÷ cold floor",
        "import function_app + first notification handled",
        "import azure.storage.queue + client + one enqueue",
        pairwise_ratios(startups, colds),
        goal=Goal("<=", 1.5),
    )
    profiled = _first_notification(rig, profile=True)
    figure.profile.append(
        "first notification after import, cProfile (wall time, one fresh process):"
    )
    figure.profile += list(profiled["profile"])

    # Answer latency: incoming call → the simulator receives the answer request.
    warm, answer_profile = _answer_latency(rig, repeats=answers)
    figure.profile.append("warm answer, 5 incoming calls, cProfile (wall time):")
    figure.profile += answer_profile
    app_ms = [s * 1000 for s in warm["app"]]
    floor_ms = [s * 1000 for s in warm["floor"]]
    figure.metric("answer latency, warm", "ms", app_ms, with_p99=True)
    figure.metric("answer floor: token validation + one raw POST", "ms", floor_ms, with_p99=True)
    figure.ratio(
        "answer latency ÷ floor (warm)",
        "incoming-call notification → answer received",
        "token validation + raw POST → answer received",
        pairwise_ratios(app_ms, floor_ms),
        goal=Goal("<=", 2.0),
    )
    fresh_first, fresh_second = _answer_fresh(rig, repeats=max(2, repeats // 2))
    figure.metric(
        "answer latency, fresh process (first notification)", "ms", [s * 1000 for s in fresh_first]
    )
    figure.metric(
        "answer latency, fresh process (second notification)",
        "ms",
        [s * 1000 for s in fresh_second],
    )
    floor_median = sorted(floor_ms)[len(floor_ms) // 2]
    figure.ratio(
        "answer latency, fresh process ÷ floor (warm)",
        "first incoming call of a fresh process → answer received",
        "median warm floor",
        [s * 1000 / floor_median for s in fresh_first],
    )
    figure.notes.append(
        "Answer latency: the webhook validates the token, claims the call's answer (one table "
        "write), gets a Graph token (cached after the first) and posts call: answer; the time "
        "ends when the simulator records the request. The simulator runs in this process, so "
        "it shares the GIL with the app and the floor alike."
    )

    if quick:
        figure.notes.append("Installed size: full runs only (it builds three venvs with pip).")
        return figure
    # Installed size: requirements.txt ÷ msgraph-sdk, each over a bare venv.
    msgraph_python = scratch_venv(f"venv-{MSGRAPH_SDK.replace('==', '-')}", [MSGRAPH_SDK])
    requirements = ROOT / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    app_venv = scratch_venv(f"venv-requirements-{digest}", ["-r", str(requirements)])
    bare_venv = scratch_venv("venv-bare", [])
    bare = site_packages_bytes(bare_venv)
    app_size = site_packages_bytes(app_venv) - bare
    msgraph_size = site_packages_bytes(msgraph_python) - bare
    figure.metric("installed size of requirements.txt", "MB", [app_size / 1e6])
    figure.metric("installed size of msgraph-sdk (peer)", "MB", [msgraph_size / 1e6])
    figure.ratio(
        "installed size ÷ msgraph-sdk",
        "requirements.txt",
        MSGRAPH_SDK,
        [app_size / msgraph_size],
        goal=Goal("<=", 0.3),
    )
    figure.notes.append(
        "Sizes are site-packages bytes (apparent size, .pyc included) minus a bare venv's "
        f"({bare / 1e6:.1f} MB); msgraph-sdk pulls its own dependencies (kiota, azure-identity, "
        "httpx, aiohttp, opentelemetry...)."
    )
    figure.notes.append(
        "Imports are timed inside a fresh interpreter around the import statement only; "
        "interpreter start-up is excluded for both sides."
    )
    return figure
