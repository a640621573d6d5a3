"""A malformed setting under ``make start`` and ``make demo`` is the app's own one line.

The real commands' entry points run in a subprocess with a bad setting in their environment:
each must print ``Invalid app settings: NAME: reason`` (what the app itself says), exit non-zero,
show no traceback and blame nothing else (Azurite, ports).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = "Invalid app settings: BOT_RECORD_ATTEMPTS: Input should be less than or equal to 5"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BOT_RECORD_ATTEMPTS": "9"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_start_prints_the_apps_one_line() -> None:
    result = _run("devtools.demo.start", "--port", "0", "--simulator-port", "0", "--host", "local")
    assert result.returncode != 0
    assert result.stderr.strip() == EXPECTED
    assert "Traceback" not in result.stdout + result.stderr


def test_make_demo_prints_the_apps_one_line_and_does_not_blame_azurite() -> None:
    result = _run("devtools.demo", "--host", "local")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"Demo FAILED at step “App”: {EXPECTED}" in output
    assert "✓ Azurite (in memory)" in output


def test_make_start_passes_args() -> None:
    make = shutil.which("make") or "make"
    result = subprocess.run(
        [make, "-n", "-o", "install", "start", "ARGS=--port 0 --simulator-port 0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-m devtools.demo.start --port 0 --simulator-port 0" in result.stdout
