"""Shared fixtures: a real Azurite per test session, app settings per test, clean storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from devtools.azurite import Azurite
from devtools.graphsim import GraphSimulator

if TYPE_CHECKING:
    from shared.services import Services
    from shared.storage import StorageClients

BOT_APP_ID = "a5c1f5ad-0b6f-4f0c-9a5e-1b2c3d4e5f60"
TENANT_ID = "00000000-0000-0000-0000-00000000cafe"  # fictitious: the simulator's default


@pytest.fixture(scope="module")
def start_simulator() -> Iterator[Callable[..., GraphSimulator]]:
    """Starts Graph simulators for the app's bot, stopped when the module's tests are done.

    ``start_simulator(time_scale=0.01, callback_url=...)`` takes the simulator's options; the bot
    id is always this suite's. A per-test fixture may stop its own simulator early (stopping is
    idempotent); whatever is still running stops with the module.
    """
    running: list[GraphSimulator] = []

    def start(**options: Any) -> GraphSimulator:
        simulator = GraphSimulator(BOT_APP_ID, **options)
        simulator.start()
        running.append(simulator)
        return simulator

    yield start
    for simulator in reversed(running):
        simulator.stop()


def use_simulator_identity(monkeypatch: pytest.MonkeyPatch, sim: GraphSimulator) -> None:
    """azure-identity's managed-identity credential gets its tokens from the simulator."""
    for name, value in sim.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)


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
async def services(app_env: dict[str, str]) -> Services:
    """The running loop's app services, as the triggers get them (built from ``app_env``).

    A test that changes the environment and clears the settings cache gets fresh services on the
    next call: the composition root's one staleness rule.
    """
    from shared.services import app_services

    return app_services()


@pytest.fixture
async def storage(services: Services) -> StorageClients:
    """The app's storage clients, with its queues, container and table present and empty."""
    clients = services.storage
    await clients.ensure_resources()
    await clients.queue.clear_messages()
    await clients.poison_queue.clear_messages()
    async for blob in clients.container.list_blobs():
        await clients.container.delete_blob(blob.name, delete_snapshots="include")
    table = clients.table
    async for entity in table.list_entities():
        await table.delete_entity(entity["PartitionKey"], entity["RowKey"])
    return clients


@pytest.fixture(autouse=True)
async def _close_app_services() -> AsyncIterator[None]:
    """Whatever the app opened on this test's event loop is closed with it."""
    yield
    from shared.services import close_services

    await close_services()
