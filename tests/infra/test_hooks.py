"""The azd hooks (infra/hooks), run for real with ``sh``.

The smoke check talks to an HTTP server on 127.0.0.1 (healthy, unhealthy, starting then
healthy). The provisioning hooks run with stand-in ``az``, ``azd`` and ``make`` commands on PATH
that answer as Azure would and record how they were called.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tests.infra.test_bicep import ROOT, _simple_yaml

HOOKS = ROOT / "infra" / "hooks"
SH = shutil.which("sh") or "/bin/sh"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the smoke check uses curl")


class _Health(http.server.BaseHTTPRequestHandler):
    # answers[i] is the (status, body) of request i; the last one repeats.
    answers: ClassVar[list[tuple[int, dict[str, object]]]] = []
    served: ClassVar[int] = 0

    def do_GET(self) -> None:
        cls = type(self)
        status, body = cls.answers[min(cls.served, len(cls.answers) - 1)]
        cls.served += 1
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Health", (_Health,), {"answers": [], "served": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/health", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _smoke(url: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SMOKE_CHECK_TIMEOUT_SECONDS": str(timeout),
        "SMOKE_CHECK_INTERVAL_SECONDS": "1",
    }
    return subprocess.run(
        [SH, str(HOOKS / "smoke-check.sh"), url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_smoke_check_passes_on_a_healthy_app(health_server: tuple[str, type[_Health]]) -> None:
    url, handler = health_server
    handler.answers = [(200, {"status": "ok", "storage": {"queue": "ok"}})]
    result = _smoke(url, timeout=5)
    assert result.returncode == 0, result.stderr
    assert "answered 200 (attempt 1)" in result.stdout
    assert handler.served == 1


def test_smoke_check_fails_with_the_health_reports_reason(
    health_server: tuple[str, type[_Health]],
) -> None:
    url, handler = health_server
    handler.answers = [(503, {"status": "unhealthy", "settings": "BOT_APP_ID: missing"})]
    result = _smoke(url, timeout=2)
    assert result.returncode == 1
    assert "smoke check FAILED" in result.stderr
    assert "HTTP 503" in result.stderr
    assert "BOT_APP_ID: missing" in result.stderr, "the reason the app gave"
    assert handler.served >= 2, "it waited and tried again before failing"


def test_smoke_check_waits_while_the_app_starts(health_server: tuple[str, type[_Health]]) -> None:
    url, handler = health_server
    starting = (503, {"status": "starting"})
    handler.answers = [starting, starting, (200, {"status": "ok"})]
    result = _smoke(url, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("not healthy yet") == 2
    assert "answered 200 (attempt 3)" in result.stdout


def test_smoke_check_reports_an_app_that_does_not_answer() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _smoke(f"http://127.0.0.1:{port}/api/health", timeout=1)
    assert result.returncode == 1
    assert "no answer" in result.stderr


def test_postdeploy_checks_the_deployed_apps_health_url() -> None:
    text = (HOOKS / "postdeploy.sh").read_text()
    assert '"https://$host/api/health"' in text
    assert "AZURE_FUNCTION_APP_HOST_NAME" in text


# ------------------------------------------------------------------------------------------------
# Provisioning hooks, with stand-in commands
# ------------------------------------------------------------------------------------------------


def _stub(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def _run_hook(
    name: str, tmp_path: Path, env: dict[str, str], stubs: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls.log"
    for command, script in stubs.items():
        _stub(bin_dir, command, f'echo "{command} $*" >> "{calls}"\n{script}')
    # Only the stand-ins and the basics: no real az/azd/make from this machine.
    basics = tmp_path / "basics"
    basics.mkdir(exist_ok=True)
    for tool in ("sh", "cat", "dirname", "head", "date", "mktemp", "rm", "sleep", "echo"):
        found = shutil.which(tool)
        if found and not (basics / tool).exists():
            (basics / tool).symlink_to(found)
    result = subprocess.run(
        [SH, str(HOOKS / name)],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:{basics}", "HOME": str(tmp_path), **env},
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    return result, calls.read_text() if calls.exists() else ""


GRAPH_ROLES_OF = {
    "admin": "e8611ab8-c189-46e8-94e1-60213ab1f814",  # Privileged Role Administrator
    "developer": "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",  # Application Administrator
}


@pytest.mark.parametrize(("who", "grants"), [("admin", True), ("developer", False)])
def test_preprovision_skips_the_grant_for_a_deployer_who_may_not_consent(
    tmp_path: Path, who: str, grants: bool
) -> None:
    result, calls = _run_hook(
        "preprovision.sh",
        tmp_path,
        {"AZURE_PRINCIPAL_TYPE": "User"},
        {"az": f"echo {GRAPH_ROLES_OF[who]}\n", "azd": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "transitiveMemberOf/microsoft.graph.directoryRole" in calls
    skipped = "azd env set GRANT_GRAPH_PERMISSIONS false" in calls
    assert skipped is not grants, calls
    if not grants:
        assert "administrator" in result.stdout


def test_preprovision_keeps_an_explicit_choice_and_leaves_pipelines_alone(tmp_path: Path) -> None:
    for env in ({"GRANT_GRAPH_PERMISSIONS": "true"}, {"AZURE_PRINCIPAL_TYPE": "ServicePrincipal"}):
        result, calls = _run_hook(
            "preprovision.sh", tmp_path, env, {"az": "exit 1\n", "azd": "exit 1\n"}
        )
        assert result.returncode == 0, result.stderr
        assert calls == "", "no role lookup and no change"


def test_preprovision_without_the_cli_says_what_to_set(tmp_path: Path) -> None:
    result, calls = _run_hook("preprovision.sh", tmp_path, {}, {"azd": "exit 1\n"})
    assert result.returncode == 0
    assert "azd env set GRANT_GRAPH_PERMISSIONS false" in result.stdout
    assert calls == ""


BOT = "11111111-2222-3333-4444-555555555555"
SP = "66666666-7777-8888-9999-000000000000"
ACCESS_MEDIA = "a7a681dc-756e-4909-b988-f160edc6655f"


def test_postprovision_builds_the_package_and_hands_the_consent_to_an_administrator(
    tmp_path: Path,
) -> None:
    env = {
        "BOT_APP_ID": BOT,
        "BOT_SERVICE_PRINCIPAL_ID": SP,
        "BOT_DISPLAY_NAME": "Record response bot",
        "AZURE_TENANT_ID": "tenant-1",
        "GRAPH_PERMISSIONS_GRANTED": "false",
    }
    # Graph knows the role; the bot's service principal has no assignment yet.
    az = f"""case "$*" in
  *appRoleAssignments*) echo "" ;;
  *"ad sp show"*) echo {ACCESS_MEDIA} ;;
esac
"""
    result, calls = _run_hook("postprovision.sh", tmp_path, env, {"make": "", "az": az})
    assert result.returncode == 0, result.stderr
    assert f"make --no-print-directory teams-app BOT_APP_ID={BOT}" in calls
    assert "Teams app package: dist/teams-app.zip" in result.stdout
    out = result.stdout
    assert "Calls.AccessMedia.All" in out
    assert f"az ad app permission admin-consent --id {BOT}" in out
    assert SP in out
    assert "tenant-1" in out
    assert out.index("admin-consent") < out.index("Upload"), "consent first, then upload"


def test_postprovision_says_nothing_of_consent_once_granted(tmp_path: Path) -> None:
    env = {"BOT_APP_ID": BOT, "BOT_SERVICE_PRINCIPAL_ID": SP, "GRAPH_PERMISSIONS_GRANTED": "false"}
    az = f"""case "$*" in
  *appRoleAssignments*) echo {ACCESS_MEDIA} ;;
  *"ad sp show"*) echo {ACCESS_MEDIA} ;;
esac
"""
    result, _ = _run_hook("postprovision.sh", tmp_path, env, {"make": "", "az": az})
    assert result.returncode == 0
    assert "admin-consent" not in result.stdout
    assert "Upload" in result.stdout


def test_postprovision_never_fails_provisioning(tmp_path: Path) -> None:
    """A package that cannot be built here is a printed command, not a failed `azd up`."""
    env = {"BOT_APP_ID": BOT, "GRAPH_PERMISSIONS_GRANTED": "true"}
    result, _ = _run_hook("postprovision.sh", tmp_path, env, {"make": "exit 2\n"})
    assert result.returncode == 0
    assert f"make teams-app BOT_APP_ID={BOT}" in result.stderr
    assert "admin-consent" not in result.stdout


def test_postprovision_points_a_dev_environment_at_its_tunnel(tmp_path: Path) -> None:
    env = {
        "BOT_APP_ID": BOT,
        "GRAPH_PERMISSIONS_GRANTED": "true",
        "BOT_ENDPOINT_BASE_URL": "https://abc-7071.euw.devtunnels.ms",
    }
    result, _ = _run_hook("postprovision.sh", tmp_path, env, {"make": ""})
    assert "https://abc-7071.euw.devtunnels.ms/api/calls" in result.stdout
    assert "devtunnel host -p 7071 --allow-anonymous" in result.stdout


def test_azure_yaml_runs_the_hooks() -> None:
    hooks = _simple_yaml((ROOT / "azure.yaml").read_text())["hooks"]
    expected = {
        "preprovision": "preprovision.sh",
        "postprovision": "postprovision.sh",
        "postdeploy": "postdeploy.sh",
    }
    for event, script in expected.items():
        assert hooks[event]["shell"] == "sh", event
        assert hooks[event]["run"] == f"./infra/hooks/{script}", event
        assert (HOOKS / script).is_file(), script
        assert os.access(HOOKS / script, os.X_OK), f"{script} is not executable"
