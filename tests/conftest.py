"""Shared fixtures: a real Azurite per test session, app settings per test, clean storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from devtools.azurite import Azurite

BOT_APP_ID = "a5c1f5ad-0b6f-4f0c-9a5e-1b2c3d4e5f60"
TENANT_ID = "00000000-0000-0000-0000-00000000cafe"  # fictitious: the simulator's default


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as running:
        yield running


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, azurite: Azurite) -> dict[str, str]:
    """The app's settings for a test, pointing at this session's Azurite.

    Tests add or override values with ``monkeypatch.setenv`` and then read settings afresh.
    """
    from shared.settings import get_settings

    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "BOT_APP_ID": BOT_APP_ID,
        "ALLOW_INSECURE_RECORDING_URLS": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@pytest.fixture
async def storage(app_env: dict[str, str]) -> AsyncIterator[object]:
    """The app's storage clients, with its queues, container and table present and empty."""
    from shared.settings import get_settings
    from shared.storage import get_storage

    clients = get_storage(get_settings())
    await clients.ensure_resources()
    await clients.queue.clear_messages()
    await clients.poison_queue.clear_messages()
    async for blob in clients.container.list_blobs():
        await clients.container.delete_blob(blob.name, delete_snapshots="include")
    table = clients.table
    async for entity in table.list_entities():
        await table.delete_entity(entity["PartitionKey"], entity["RowKey"])
    yield clients
    await clients.close()


@pytest.fixture(autouse=True)
async def _close_storage_clients() -> AsyncIterator[None]:
    """Whatever the app opened on this test's event loop is closed with it."""
    yield
    from shared.storage import close_storage

    await close_storage()
