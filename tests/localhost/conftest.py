"""Fixtures: the sample app under the local host, with a small host.json and its own queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.azurite import Azurite
from devtools.localhost import LocalFunctionsHost
from tests.localhost import sample_app

SAMPLE_MODULE = "tests.localhost.sample_app"
SAMPLE_KEY = "sample-key-for-tests"
# Small values so retries and poisoning happen within a test's patience.
SAMPLE_QUEUES = {
    "batchSize": 4,
    "newBatchThreshold": 2,
    "visibilityTimeout": "00:00:01",
    "maxDequeueCount": 3,
    "maxPollingInterval": "00:00:00.4",
    "messageEncoding": "base64",
}
NEVER = "0 0 0 1 1 *"  # once a year: a timer that stays quiet during a test


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def write_host_json(directory: Path, queues: dict[str, Any] | None = None) -> Path:
    path = directory / "host.json"
    path.write_text(
        json.dumps(
            {
                "version": "2.0",
                "functionTimeout": "00:00:30",
                "extensions": {
                    "http": {"routePrefix": "api"},
                    "queues": queues or SAMPLE_QUEUES,
                },
            }
        )
    )
    return path


@pytest.fixture
def queue_name() -> str:
    return f"sample-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def make_host(
    azurite: Azurite, tmp_path: Path, queue_name: str
) -> Iterator[Callable[..., LocalFunctionsHost]]:
    """Builds (not starts) a host for the sample app; every host built is stopped afterwards."""
    sample_app.reset()
    hosts: list[LocalFunctionsHost] = []

    def make(
        *,
        schedule: str = NEVER,
        env: dict[str, str] | None = None,
        queues: dict[str, Any] | None = None,
        **options: Any,
    ) -> LocalFunctionsHost:
        settings = {
            "AzureWebJobsStorage": azurite.connection_string,
            "SAMPLE_QUEUE": queue_name,
            "SAMPLE_SCHEDULE": schedule,
            **(env or {}),
        }
        options.setdefault("keys", [SAMPLE_KEY])
        options.setdefault("port", 0)
        options.setdefault("load_local_settings", False)
        options.setdefault("drain_timeout", timedelta(seconds=10))
        host = LocalFunctionsHost(
            SAMPLE_MODULE,
            env=settings,
            host_json=write_host_json(tmp_path, queues),
            **options,
        )
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()


@pytest.fixture
def host(make_host: Callable[..., LocalFunctionsHost]) -> Iterator[LocalFunctionsHost]:
    with make_host() as running:
        yield running
