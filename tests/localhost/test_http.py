"""HTTP triggers through real HTTP on 127.0.0.1: routing, requests, responses, auth levels."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import httpx
import pytest

from devtools.localhost import HostConfigurationError, LocalFunctionsHost
from devtools.localhost.http import route_path
from tests.localhost.conftest import SAMPLE_KEY, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_route_params_query_headers_and_body_reach_the_function(host: LocalFunctionsHost) -> None:
    response = httpx.post(
        f"{host.base_url}/api/items/abc-42/parts/007?colour=blue",
        content=b"payload",
        headers={"X-Trace": "t-1"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    seen = response.json()
    assert seen["method"] == "POST"
    # Route values arrive as the strings the client sent (not "7").
    assert seen["route_params"] == {"itemId": "abc-42", "part": "007"}
    assert seen["params"] == {"colour": "blue"}
    assert seen["headers"]["x-trace"] == "t-1"
    assert seen["body"] == "payload"
    assert seen["url"] == f"{host.base_url}/api/items/abc-42/parts/007?colour=blue"


def test_route_constraint_and_unknown_routes_answer_404(host: LocalFunctionsHost) -> None:
    with httpx.Client(base_url=host.base_url, timeout=10) as client:
        assert client.get("/api/items/abc/parts/not-a-number").status_code == 404
        assert client.get("/api/nothing-here").status_code == 404
        assert client.get("/items/abc/parts/1").status_code == 404  # outside the route prefix
        # A method the function does not accept: the real host answers 404 too.
        assert client.delete("/api/items/abc/parts/1").status_code == 404


def test_function_level_route_needs_the_key(host: LocalFunctionsHost) -> None:
    with httpx.Client(base_url=host.base_url, timeout=10) as client:
        assert client.get("/api/secret/ada").status_code == 401
        assert (
            client.get("/api/secret/ada", headers={"x-functions-key": "wrong"}).status_code == 401
        )
        assert client.get("/api/secret/ada", params={"code": "wrong"}).status_code == 401
        by_header = client.get("/api/secret/ada", headers={"x-functions-key": SAMPLE_KEY})
        by_code = client.get("/api/secret/ada", params={"code": SAMPLE_KEY})
    for response in (by_header, by_code):
        assert response.status_code == 201
        assert response.text == "hello ada"
        assert response.headers["x-sample"] == "yes"
        # As the worker's converter writes it: text types get the charset.
        assert response.headers["content-type"] == "text/html; charset=latin-1"


def test_anonymous_routes_are_open(host: LocalFunctionsHost) -> None:
    response = httpx.get(f"{host.base_url}/api/items/x/parts/1", timeout=10)
    assert response.status_code == 200


def test_a_failing_function_answers_500_without_internals(
    host: LocalFunctionsHost, caplog: pytest.LogCaptureFixture
) -> None:
    response = httpx.get(f"{host.base_url}/api/broken", timeout=10)
    assert response.status_code == 500
    assert response.content == b""
    assert "function=broken" in caplog.text


def test_sync_functions_run_too(host: LocalFunctionsHost) -> None:
    response = httpx.get(f"{host.base_url}/api/env/SAMPLE_SCHEDULE", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "0 0 0 1 1 *"


def test_generated_key_is_printed_once_and_never_logged(
    make_host, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with make_host(keys=None, env={"LOCAL_FUNCTION_KEY": ""}) as running:
        key = running.function_key
        with httpx.Client(base_url=running.base_url, timeout=10) as client:
            assert client.get("/api/secret/x", params={"code": key}).status_code == 201
            assert client.get("/api/secret/x", headers={"x-functions-key": key}).status_code == 201
            assert client.get("/api/secret/x", params={"code": "nope"}).status_code == 401
    printed = capfd.readouterr()
    assert (printed.out + printed.err).count(key) == 1
    assert len(key) >= 32
    # The test's own HTTP client logs the URLs it calls; the host and its server never do.
    host_lines = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("devtools", "uvicorn", "starlette"))
    ]
    assert any("function=guarded" in line for line in host_lines)
    assert not any(key in line for line in host_lines)


def test_key_from_local_function_key_setting(make_host) -> None:
    with make_host(keys=None, env={"LOCAL_FUNCTION_KEY": "from-the-environment"}) as running:
        assert running.function_key == "from-the-environment"
        response = httpx.get(
            f"{running.base_url}/api/secret/x",
            headers={"x-functions-key": "from-the-environment"},
            timeout=10,
        )
        assert response.status_code == 201


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("health", "/api/health"),
        ("calls/{callId}/recordResponse", "/api/calls/{callId}/recordResponse"),
        ("items/{id:int}", "/api/items/{id:functions_int}"),
        ("files/{*rest}", "/api/files/{rest:path}"),
        ("/slashes/", "/api/slashes"),
    ],
)
def test_route_templates_become_starlette_paths(template: str, path: str) -> None:
    assert route_path(template, "api") == path


def test_empty_route_prefix() -> None:
    assert route_path("health", "") == "/health"


@pytest.mark.parametrize("template", ["items/{id?}", "items/{id:regex(^a$)}", "items/{id:unknown}"])
def test_unsupported_route_templates_fail_at_start(template: str) -> None:
    with pytest.raises(HostConfigurationError, match="route"):
        route_path(template, "api")


@pytest.mark.usefixtures("storage")
async def test_real_function_app_health_through_http(app_env: dict[str, str]) -> None:
    """The real app, its host.json and the example settings, served on the caller's loop."""
    host = LocalFunctionsHost(
        "function_app",
        port=0,
        app_root=ROOT,
        local_settings=ROOT / "local.settings.example.json",
        keys=["real-app-key"],
    )
    async with host:
        assert "health" in host.functions.names
        async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as client:
            response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_a_client_that_disconnects_mid_body_is_one_log_line_not_a_traceback(
    host: LocalFunctionsHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    address = httpx.URL(host.base_url)
    with socket.create_connection((address.host, address.port), timeout=5) as client:
        client.sendall(
            b"POST /api/items/abc/parts/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
            + b"x"
            * 1000
        )
    wait_until(
        lambda: any("client_disconnected" in r.getMessage() for r in caplog.records),
        what="the disconnect's log line",
    )
    time.sleep(0.2)  # anything logged after the line would show up now
    host_records = [
        r for r in caplog.records if r.name.startswith(("devtools", "uvicorn", "starlette"))
    ]
    [line] = [r for r in host_records if "client_disconnected" in r.getMessage()]
    assert "function=" in line.getMessage()
    assert line.levelno == logging.INFO
    assert [r.getMessage() for r in host_records if r.exc_info or r.levelno >= logging.ERROR] == []
    # The host still answers.
    assert httpx.get(f"{host.base_url}/api/items/x/parts/1", timeout=10).status_code == 200
