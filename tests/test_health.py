"""GET /api/health against a real Azurite, and against storage that is not there."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from devtools.azurite import free_port
from devtools.graphsim import GraphSimulator
from tests.conftest import use_simulator_identity
from tests.support.functions import http_request, invoke, json_body

if TYPE_CHECKING:
    from shared.services import Services


@pytest.fixture
def simulator_identity(monkeypatch: pytest.MonkeyPatch, sim: GraphSimulator) -> GraphSimulator:
    """The app's managed identity gets its Graph tokens from the module's simulator."""
    use_simulator_identity(monkeypatch, sim)
    return sim


@pytest.mark.usefixtures("storage", "simulator_identity")
async def test_healthy_with_azurite() -> None:
    response = await invoke("health", http_request("GET", "/api/health"))
    assert response.status_code == 200
    body = json_body(response)
    assert body == {
        "status": "healthy",
        "checks": {
            "settings": "ok",
            "queue": "ok",
            "blob": "ok",
            "table": "ok",
            "prompts": "ok",
            "graphPermission": "ok",
        },
    }


@pytest.mark.usefixtures("storage")
async def test_a_graph_token_without_the_media_role_is_reported_not_granted(
    start_simulator: Callable[..., GraphSimulator],
    monkeypatch: pytest.MonkeyPatch,
    configure: Callable[..., Services],
) -> None:
    # Admin consent given for calls, but not for Calls.AccessMedia.All: recordResponse would fail.
    ungranted = start_simulator(graph_token_roles=("Calls.Initiate.All", "Calls.JoinGroupCall.All"))
    use_simulator_identity(monkeypatch, ungranted)
    configure()
    response = await invoke("health", http_request("GET", "/api/health"))
    assert response.status_code == 503
    body = json_body(response)
    assert body["status"] == "unhealthy"
    assert body["checks"]["graphPermission"].startswith("permission not granted")
    assert "Calls.AccessMedia.All" in body["checks"]["graphPermission"]
    assert {name for name, value in body["checks"].items() if value != "ok"} == {"graphPermission"}


async def test_the_permission_answer_is_kept_briefly() -> None:
    from azure.core.credentials import AccessToken

    from shared.graph.permission import VERDICT_TTL_SECONDS, GraphPermissionCheck

    asked: list[str] = []
    now = [1000.0]

    class Credential:
        async def get_token(self, *scopes: str, **_: object) -> AccessToken:
            asked.extend(scopes)
            return AccessToken(_unsigned({"roles": ["Calls.AccessMedia.All"]}), 0)

    check = GraphPermissionCheck(Credential(), clock=lambda: now[0])  # type: ignore[arg-type]
    assert [await check.status() for _ in range(5)] == ["ok"] * 5
    assert asked == ["https://graph.microsoft.com/.default"]
    now[0] += VERDICT_TTL_SECONDS
    assert await check.status() == "ok"
    assert len(asked) == 2


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.usefixtures("storage")
async def test_a_token_endpoint_that_does_not_answer_gives_unknown_within_the_budget(
    monkeypatch: pytest.MonkeyPatch, configure: Callable[..., Services]
) -> None:
    # A listener that accepts and never answers: the worst case for the health check's budget.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}/msi")
        monkeypatch.setenv("IDENTITY_HEADER", "anything")
        monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
        configure()
        started = time.monotonic()
        response = await invoke("health", http_request("GET", "/api/health"))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    body = json_body(response)
    assert body["checks"]["graphPermission"].startswith("unknown")
    assert elapsed < 3.5
    # Not knowing now is reported, not held against the instance.
    assert response.status_code == 200
    assert body["status"] == "healthy"


async def test_unhealthy_when_storage_unreachable(
    app_env: dict[str, str], configure: Callable[..., Services]
) -> None:
    dead = free_port()  # nothing listens here
    configure(
        AzureWebJobsStorage=app_env["AzureWebJobsStorage"]
        .replace(
            app_env["AzureWebJobsStorage"].split("BlobEndpoint=")[1].split(";")[0],
            f"http://127.0.0.1:{dead}/devstoreaccount1",
        )
        .replace(
            app_env["AzureWebJobsStorage"].split("QueueEndpoint=")[1].split(";")[0],
            f"http://127.0.0.1:{dead}/devstoreaccount1",
        ),
    )
    response = await invoke("health", http_request("GET", "/api/health"))
    assert response.status_code == 503
    body = json_body(response)
    assert body["status"] == "unhealthy"
    assert body["checks"]["queue"] != "ok"
    assert body["checks"]["blob"] != "ok"
    assert body["checks"]["table"] == "ok"


async def test_unhealthy_names_a_bad_setting(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its subject is reading the app settings (the environment): a missing one is named.
    monkeypatch.delenv("BOT_APP_ID")
    response = await invoke("health", http_request("GET", "/api/health"))
    assert response.status_code == 503
    assert "BOT_APP_ID" in json_body(response)["checks"]["settings"]
