"""Shared fixtures: a real Azurite per test session, app settings per test, clean storage.

Also the suite's split: every test is marked ``app``, ``devtools`` or ``infra`` by where it lives,
so ``pytest -m app`` runs the app's own tests apart from those of its tools and its Bicep.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devtools.azurite import Azurite
from devtools.graphsim import GraphSimulator
from shared.settings import load_settings_from

if TYPE_CHECKING:
    from shared.services import Services
    from shared.storage import StorageClients

BOT_APP_ID = "a5c1f5ad-0b6f-4f0c-9a5e-1b2c3d4e5f60"
# The app is indexed with function keys on (the management routes at function level, as under
# the local host), whichever test imports it first; each test's settings then decide, and the
# route tests call the management routes without a token (tests/test_management_auth.py has the
# tokens). Read when function_app is imported: set before any test runs.
os.environ.setdefault("MANAGEMENT_FUNCTION_KEYS", "true")
TENANT_ID = "00000000-0000-0000-0000-00000000cafe"  # fictitious: the simulator's default

TESTS = Path(__file__).resolve().parent
SUITES = ("app", "devtools", "infra")
# Where a test lives says which suite it belongs to. A folder of tests is named here, or its tests
# get no suite and collection fails: a new folder is classified on purpose, not by accident.
SUITE_OF_FOLDER = {
    "e2e": "app",
    "graphsim": "devtools",
    "localhost": "devtools",
    "teams_app": "devtools",
    "infra": "infra",
}
# Modules directly under tests/ test the app unless they test a tool around it.
DEVTOOLS_MODULES = frozenset(
    {
        "test_benchmarks_smoke",
        "test_demo",
        "test_docs_commands",
        "test_docs_drift",
        "test_one_line_errors",
        "test_provision",
        "test_requirements_lock",
    }
)


def suite_of(path: Path) -> str | None:
    """The suite of the test module at ``path``; None for a folder not in SUITE_OF_FOLDER."""
    parts = path.resolve().relative_to(TESTS).parts
    if len(parts) > 1:
        return SUITE_OF_FOLDER.get(parts[0])
    return "devtools" if path.stem in DEVTOOLS_MODULES else "app"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    stale = sorted(name for name in DEVTOOLS_MODULES if not (TESTS / f"{name}.py").is_file())
    if stale:
        raise pytest.UsageError(f"tests/conftest.py DEVTOOLS_MODULES names no module: {stale}")
    unsorted = []
    for item in items:
        suite = suite_of(item.path)
        if suite is not None:
            item.add_marker(suite)
        marked = {mark.name for mark in item.iter_markers() if mark.name in SUITES}
        if len(marked) != 1:
            unsorted.append(f"{item.nodeid} ({', '.join(sorted(marked)) or 'no suite'})")
    if unsorted:
        raise pytest.UsageError(
            "every test belongs to exactly one of the suites app, devtools, infra "
            "(SUITE_OF_FOLDER and DEVTOOLS_MODULES in tests/conftest.py): " + "; ".join(unsorted)
        )


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


@pytest.fixture(scope="module")
def sim(start_simulator: Callable[..., GraphSimulator]) -> GraphSimulator:
    """The module's Graph simulator with its defaults; a module that needs other options (a
    callback URL, a time scale) defines its own ``sim``."""
    return start_simulator()


# Settings from app-setting names and values alone ("" means unset, as in app settings): the
# app's own reader, which the local tools use too; the process environment is not read.
settings_from = load_settings_from


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

    Tests build their services from these with ``configure``; only a test of how the environment
    is read adds values with ``monkeypatch.setenv`` and reads settings afresh.
    """
    from shared.settings import get_settings

    values = {
        "AzureWebJobsStorage": azurite.connection_string,
        "BOT_APP_ID": BOT_APP_ID,
        "ALLOW_INSECURE_RECORDING_URLS": "true",
        "MANAGEMENT_FUNCTION_KEYS": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@pytest.fixture
def configure(app_env: dict[str, str]) -> Callable[..., Services]:
    """``configure(NAME=value, ...)``: the app's services for this test, built from ``app_env``
    and these settings, and put in place for the running loop (no environment, no cache)."""
    from shared.services import Services, use_services

    chosen: dict[str, str] = {}

    def apply(**overrides: str) -> Services:
        chosen.update(overrides)  # cumulative within the test
        built = Services(settings_from({**app_env, **chosen}))
        use_services(built)
        return built

    return apply


@pytest.fixture
async def transcribing(
    configure: Callable[..., Services], monkeypatch: pytest.MonkeyPatch, sim: GraphSimulator
) -> GraphSimulator:
    """Transcription on, against the simulator's Speech endpoint and managed identity."""
    use_simulator_identity(monkeypatch, sim)
    configure(
        TRANSCRIPTION_ENABLED="true",
        TRANSCRIPTION_ENDPOINT=sim.base_url,
        TRANSCRIPTION_LOCALES="en-US",
    )
    with sim.engine.lock:
        sim.engine.api_faults.pop("transcribe", None)
    return sim


@pytest.fixture
async def services(configure: Callable[..., Services]) -> Services:
    """The running loop's app services, as the triggers get them (built from ``app_env``).

    A test that needs other settings calls ``configure(NAME=value)``: the triggers then get the
    services built from those.
    """
    return configure()


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


@pytest.fixture
async def webhook(
    storage: StorageClients, sim: GraphSimulator, configure: Callable[..., Services]
) -> StorageClients:
    """The app configured against the simulator's keys, with empty storage.

    ``sim`` is the requesting module's simulator: its own fixture, or else the suite's default.
    """
    configure(INBOUND_OPENID_CONFIGURATION_URL=sim.openid_configuration_url)
    return storage


@pytest.fixture(autouse=True)
async def _close_app_services() -> AsyncIterator[None]:
    """Whatever the app opened on this test's event loop is closed with it."""
    yield
    from shared.services import close_services

    await close_services()
