"""GET /api/health against a real Azurite, and against storage that is not there."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from devtools.azurite import free_port
from tests.support.functions import http_request, invoke, json_body

if TYPE_CHECKING:
    from shared.services import Services


@pytest.mark.usefixtures("storage")
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
        },
    }


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
