"""devtools.provision creates what the app expects on a fresh Azurite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devtools.azurite import Azurite
from devtools.provision import DEVELOPMENT_STORAGE, main, storage_connection_string


def test_provision_creates_the_apps_resources_and_is_repeatable() -> None:
    with Azurite() as fresh:
        main(["--connection-string", fresh.connection_string])
        main(["--connection-string", fresh.connection_string])  # a second run changes nothing

        queues = QueueServiceClient.from_connection_string(fresh.connection_string)
        names = {queue.name for queue in queues.list_queues()}
        assert {"recording-downloads", "recording-downloads-poison"} <= names
        blobs = BlobServiceClient.from_connection_string(fresh.connection_string)
        assert "recordings" in {c.name for c in blobs.list_containers()}
        tables = TableServiceClient.from_connection_string(fresh.connection_string)
        assert "recordingoperations" in {t.name for t in tables.list_tables()}


def test_connection_string_sources_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    settings = tmp_path / "local.settings.json"
    assert storage_connection_string(None, settings) == DEVELOPMENT_STORAGE
    settings.write_text(json.dumps({"Values": {"AzureWebJobsStorage": "from-file"}}))
    assert storage_connection_string(None, settings) == "from-file"
    monkeypatch.setenv("AzureWebJobsStorage", "from-env")
    assert storage_connection_string(None, settings) == "from-env"
    assert storage_connection_string("explicit", settings) == "explicit"
