"""Figure 4: cold start and footprint.

- ``import function_app`` in a fresh interpreter ÷ a bare ``import azure.functions`` (the
  runtime library every Python function app imports: the floor);
- the time from the end of that import to the first notification handled (the host indexes the
  functions, the webhook fetches the signing keys, opens its storage clients, queues the job);
- the project's Graph client import ÷ msgraph-sdk's ``from msgraph import GraphServiceClient``
  (msgraph-sdk installed into a throw-away venv under ``benchmarks/.scratch/``);
- installed size of ``requirements.txt`` ÷ msgraph-sdk's installed size (each venv's
  site-packages minus a bare venv's).

Every import is timed inside a fresh interpreter around the import statement alone (interpreter
start-up excluded), app and floor interleaved, after one untimed run that writes the bytecode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from benchmarks.harness import ROOT, Figure, Goal, pairwise_ratios
from benchmarks.rig import Rig, completion_payload, new_id, placeholder_token, run_async

SCRATCH = ROOT / "benchmarks" / ".scratch"
MSGRAPH_SDK = "msgraph-sdk==1.65.0"
APP_IMPORT = "import function_app"
RUNTIME_IMPORT = "import azure.functions"
GRAPH_CLIENT_IMPORT = "import shared.graph.client"
MSGRAPH_IMPORT = "from msgraph import GraphServiceClient"
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
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    handler = functions["notifications"].get_user_function()
    timings = []
    for bearer in (os.environ["BENCH_BEARER_1"], os.environ["BENCH_BEARER_2"]):
        call_started = time.perf_counter()
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

first, second = asyncio.run(main())
print(json.dumps({"import": imported - started, "first": first, "second": second}))
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


def _first_notification(rig: Rig) -> dict[str, float]:
    async def prepare() -> None:
        from shared.services import app_services

        await app_services().storage.ensure_resources()

    run_async(prepare)
    env = rig.child_env()
    for index in (1, 2):
        body = completion_payload(
            new_id(),
            new_id(),
            location="https://127.0.0.1:9/recordings/not-fetched",
            access_token=placeholder_token(),
        )
        env[f"BENCH_BODY_{index}"] = json.dumps(body)
        env[f"BENCH_BEARER_{index}"] = rig.bearer()
    result = _run_python(sys.executable, _FIRST_NOTIFICATION, env=env)
    timings: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return timings


def run(rig: Rig, *, quick: bool) -> Figure:
    figure = Figure("4", "Cold start: imports, first notification, installed size")
    repeats = 3 if quick else 7
    figure.parameters = {"repeats": repeats, "msgraph_sdk": MSGRAPH_SDK}
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

    # Time to the first notification handled after the import.
    imports, firsts, seconds = [], [], []
    for _ in range(max(2, repeats // 2)):
        timings = _first_notification(rig)
        imports.append(timings["import"] * 1000)
        firsts.append(timings["first"] * 1000)
        seconds.append(timings["second"] * 1000)
    figure.metric(
        "first notification handled after import",
        "ms",
        firsts,
        description="index functions + JWKS fetch + storage clients + enqueue + ledger write",
    )
    figure.metric("second notification (warm)", "ms", seconds)
    figure.ratio(
        "first ÷ warm notification",
        "first notification",
        "second notification",
        pairwise_ratios(firsts, seconds),
    )

    # The project's Graph client ÷ msgraph-sdk's GraphServiceClient.
    msgraph_python = scratch_venv(f"venv-{MSGRAPH_SDK.replace('==', '-')}", [MSGRAPH_SDK])
    timed_import(app_python, GRAPH_CLIENT_IMPORT, env)
    timed_import(msgraph_python, MSGRAPH_IMPORT)
    ours, theirs = [], []
    for _ in range(repeats):
        theirs.append(timed_import(msgraph_python, MSGRAPH_IMPORT))
        ours.append(timed_import(app_python, GRAPH_CLIENT_IMPORT, env))
    figure.metric("import shared.graph.client", "ms", [s * 1000 for s in ours])
    figure.metric("from msgraph import GraphServiceClient (peer)", "ms", [s * 1000 for s in theirs])
    figure.ratio(
        "Graph client import ÷ msgraph-sdk",
        GRAPH_CLIENT_IMPORT,
        MSGRAPH_IMPORT,
        pairwise_ratios(ours, theirs),
        goal=Goal("<=", 0.6),
    )

    # Installed size: requirements.txt ÷ msgraph-sdk, each over a bare venv.
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
