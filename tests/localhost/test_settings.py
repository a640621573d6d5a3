"""local.settings.json and host.json as the local host reads them, and discovery from metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import azure.functions as func
import httpx
import pytest

from devtools.azurite import free_port
from devtools.localhost import (
    HostConfigurationError,
    HostOptions,
    LocalFunctionsHost,
    LocalSettings,
    discover_functions,
    load_function_app,
)
from devtools.localhost.settings import parse_timespan, resolve_setting_expressions
from tests.localhost.conftest import SAMPLE_MODULE

ROOT = Path(__file__).resolve().parents[2]


def write_local_settings(path: Path, values: dict[str, object], port: int | None = None) -> Path:
    document: dict[str, object] = {"IsEncrypted": False, "Values": values}
    if port is not None:
        document["Host"] = {"LocalHttpPort": port}
    path.write_text(json.dumps(document))
    return path


def test_local_settings_fill_the_environment_without_overriding_it(
    make_host: Callable[..., LocalFunctionsHost],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("SAMPLE_ALREADY_SET", "from the environment")
    monkeypatch.delenv("SAMPLE_FROM_FILE", raising=False)
    settings = write_local_settings(
        tmp_path / "local.settings.json",
        {"SAMPLE_FROM_FILE": "from the file", "SAMPLE_ALREADY_SET": "from the file"},
        port=port,
    )
    host = make_host(load_local_settings=True, local_settings=settings, port=None)
    with host:
        assert host.port == port  # Host.LocalHttpPort
        with httpx.Client(base_url=host.base_url, timeout=10) as client:
            assert client.get("/api/env/SAMPLE_FROM_FILE").text == "from the file"
            assert client.get("/api/env/SAMPLE_ALREADY_SET").text == "from the environment"
    # Stopping gives the environment back as it was.
    assert "SAMPLE_FROM_FILE" not in os.environ
    assert os.environ["SAMPLE_ALREADY_SET"] == "from the environment"


def test_explicit_env_overrides_the_environment(
    make_host: Callable[..., LocalFunctionsHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAMPLE_EXPLICIT", "ambient")
    with make_host(env={"SAMPLE_EXPLICIT": "explicit"}) as host:
        response = httpx.get(f"{host.base_url}/api/env/SAMPLE_EXPLICIT", timeout=10)
        assert response.text == "explicit"
    assert os.environ["SAMPLE_EXPLICIT"] == "ambient"


def test_local_settings_values_are_strings(tmp_path: Path) -> None:
    path = write_local_settings(
        tmp_path / "local.settings.json", {"A": 1, "B": True, "C": None, "D": "text"}
    )
    assert LocalSettings.load(path).values == {"A": "1", "B": "True", "C": "", "D": "text"}


def test_apply_does_not_override() -> None:
    environ = {"A": "kept"}
    applied = LocalSettings(values={"A": "file", "B": "file"}).apply(environ)
    assert environ == {"A": "kept", "B": "file"}
    assert applied == ["B"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"IsEncrypted": True, "Values": {}}), "IsEncrypted"),
        (json.dumps({"Values": {"A": {"nested": 1}}}), "Values.A"),
    ],
)
def test_bad_local_settings_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(content)
    with pytest.raises(HostConfigurationError, match=message):
        LocalSettings.load(path)


def test_the_repository_host_json() -> None:
    options = HostOptions.load(ROOT / "host.json")
    document = json.loads((ROOT / "host.json").read_text())
    queues = document["extensions"]["queues"]
    assert options.route_prefix == document["extensions"]["http"]["routePrefix"]
    assert options.function_timeout == parse_timespan(document["functionTimeout"], name="t")
    assert options.queues.batch_size == queues["batchSize"]
    assert options.queues.new_batch_threshold == queues["newBatchThreshold"]
    assert options.queues.max_dequeue_count == queues["maxDequeueCount"]
    assert options.queues.visibility_timeout == parse_timespan(
        queues["visibilityTimeout"], name="v"
    )
    assert options.queues.max_polling_interval == parse_timespan(
        queues["maxPollingInterval"], name="m"
    )
    assert options.queues.message_encoding == queues["messageEncoding"]


def test_host_json_defaults_are_the_functions_hosts(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    options = HostOptions.load(tmp_path / "host.json")
    assert options.route_prefix == "api"
    assert options.queues.batch_size == 16
    assert options.queues.new_batch_threshold == 8
    assert options.queues.max_dequeue_count == 5
    assert options.queues.visibility_timeout == timedelta(0)
    assert options.queues.max_polling_interval == timedelta(minutes=1)
    assert options.queues.message_encoding == "base64"
    assert HostOptions.load(tmp_path / "missing.json") == HostOptions()


@pytest.mark.parametrize(
    ("queues", "field"),
    [
        ({"batchSize": 64}, "batchSize"),
        ({"maxDequeueCount": 0}, "maxDequeueCount"),
        ({"messageEncoding": "utf16"}, "messageEncoding"),
        ({"visibilityTimeout": "ten seconds"}, "visibilityTimeout"),
        ({"maxPollingInterval": "00:00:00.01"}, "maxPollingInterval"),
    ],
)
def test_bad_queue_options_are_named(tmp_path: Path, queues: dict[str, object], field: str) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"queues": queues}}))
    with pytest.raises(HostConfigurationError, match=field):
        HostOptions.load(tmp_path / "host.json")


def test_timespans() -> None:
    assert parse_timespan("00:00:02", name="x") == timedelta(seconds=2)
    assert parse_timespan("00:00:00.5", name="x") == timedelta(milliseconds=500)
    assert parse_timespan("1.02:03:04", name="x") == timedelta(
        days=1, hours=2, minutes=3, seconds=4
    )


def test_setting_expressions() -> None:
    assert resolve_setting_expressions("%A%-%B%", {"A": "x", "B": "y"}, name="n") == "x-y"
    with pytest.raises(HostConfigurationError, match="'MISSING'"):
        resolve_setting_expressions("%MISSING%", {}, name="n")


def test_discovery_reads_the_programming_models_metadata() -> None:
    app = load_function_app(SAMPLE_MODULE)
    environ = {"SAMPLE_QUEUE": "Sample-Queue", "SAMPLE_SCHEDULE": "*/5 * * * * *"}
    found = discover_functions(app, environ)
    http = {f.name: f for f in found.http}
    assert http["describe_request"].route == "items/{itemId}/parts/{part:int}"
    assert http["describe_request"].methods == ("GET", "POST")
    assert http["describe_request"].auth_level == "anonymous"
    assert http["guarded"].auth_level == "function"  # the app's default level
    [queue] = found.queues
    assert (queue.name, queue.queue_name, queue.connection, queue.argument) == (
        "record_message",
        "sample-queue",  # queue names are lower case
        "AzureWebJobsStorage",
        "msg",
    )
    timers = {f.name: f for f in found.timers}
    assert timers["tick"].schedule == "*/5 * * * * *"
    assert timers["tick"].run_on_startup is False
    assert timers["startup_tick"].run_on_startup is True
    # The app can be indexed again (tests start hosts repeatedly in one process).
    assert discover_functions(app, environ).names == found.names


def test_discovery_leaves_the_app_indexable_by_the_worker() -> None:
    app = load_function_app(SAMPLE_MODULE)
    environ = {"SAMPLE_QUEUE": "q", "SAMPLE_SCHEDULE": "* * * * * *"}
    discover_functions(app, environ)
    # What the worker (and tests/support) do once per process still works afterwards...
    names = sorted(f.get_function_name() for f in app.get_functions())
    # ...and the host can index again after them.
    assert discover_functions(app, environ).names == names


def test_discovery_names_an_unset_setting() -> None:
    app = load_function_app(SAMPLE_MODULE)
    with pytest.raises(HostConfigurationError, match="SAMPLE_SCHEDULE"):
        discover_functions(app, {"SAMPLE_QUEUE": "q"})


def test_bindings_the_host_cannot_supply_fail_at_discovery() -> None:
    app = func.FunctionApp()

    @app.route(route="out")
    @app.queue_output(arg_name="out", queue_name="q", connection="AzureWebJobsStorage")
    def with_output(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
        return func.HttpResponse()

    with pytest.raises(HostConfigurationError, match="'out'"):
        discover_functions(app, {})


def test_a_module_without_a_function_app_is_refused() -> None:
    with pytest.raises(HostConfigurationError, match="FunctionApp"):
        load_function_app("tests.localhost.conftest")
