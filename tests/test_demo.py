"""``make demo`` as a user runs it: one simulated call end to end, then where the app's log is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_passes_and_ends_by_saying_where_the_app_log_is(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    result = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--host", "local", "--log-file", str(log)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert "steps passed" in lines[-2]
    assert lines[-1] == f"The app's log: {log}"
    # The report says how long the recording lasts and who called, one line each.
    (duration,) = [line for line in lines if line.startswith("  duration ")]
    assert re.fullmatch(r"  duration +\d+\.\d\d s", duration), duration
    (caller,) = [line for line in lines if line.startswith("  who called ")]
    assert re.fullmatch(r"  who called +user \S+ “.+” \(CALLER_IDENTITY=full\)", caller), caller
    assert "function=" in log.read_text()  # the app's own outcome lines went there
