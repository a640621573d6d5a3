"""End-to-end fixtures: the real app under the local Functions host, real Azurite, the simulator.

One Graph simulator per session; one app host per module (each module picks its settings, e.g.
a short retention). The host puts its settings into ``os.environ`` while it runs, so only one
runs at a time, and modules never share one. Tests talk to the app through real HTTP on
127.0.0.1 and read storage with the synchronous SDK clients, independently of the app's code.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from azure.data.tables import TableClient
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite, free_port
from devtools.demo.run import wait_until as _wait_until
from devtools.demo.stack import app_settings, close_app_clients, provision_storage
from devtools.graphsim import GraphSimulator
from devtools.localhost import LocalFunctionsHost
from shared.graph.ids import normalize_id
from shared.ledger import CALL_GUARD_ROW, ROW_KIND_OPERATION, table_key
from shared.ledger.identity import IDENTITY_COLUMNS
from shared.ledger.rows import ROW_KIND_CALLER_INDEX
from shared.queues import DOWNLOAD_QUEUE, POISON_QUEUE
from shared.storage import OPERATIONS_TABLE, RECORDINGS_CONTAINER
from tests.conftest import BOT_APP_ID

T = TypeVar("T")
FUNCTION_KEY = "e2e-function-key"
ROOT = Path(__file__).resolve().parents[2]
# Small queue settings so a failing job is retried and poisoned within seconds.
E2E_QUEUES = {
    "batchSize": 16,
    "newBatchThreshold": 8,
    "visibilityTimeout": "00:00:01",
    "maxDequeueCount": 2,
    "maxPollingInterval": "00:00:00.5",
    "messageEncoding": "base64",
}
NEVER = "0 0 0 1 1 *"  # once a year: the cleanup stays out of the way


def wait_until(condition: Callable[[], T | None], *, within: float, what: str) -> T:
    """Poll until ``condition`` is truthy (bounded); fails the test naming what was awaited."""
    try:
        return _wait_until(condition, within=within, what=what)
    except Exception as error:  # NotYet: turn it into an assertion failure
        raise AssertionError(str(error)) from None


def id_key(value: str) -> str:
    return value.replace("-", "").lower()


@dataclass
class RunningApp:
    """The app and everything around it, as a test sees them."""

    host: LocalFunctionsHost
    simulator: GraphSimulator
    http: httpx.Client
    table: TableClient
    container: ContainerClient
    queue: QueueClient
    poison_queue: QueueClient
    placed: list[str] = field(default_factory=list)

    @property
    def calls_url(self) -> str:
        return f"{self.host.base_url}/api/calls"

    def place_call(self, scenario: str = "max-duration", **options: Any) -> str:
        call_id = self.simulator.place_call(scenario, callback_url=self.calls_url, **options)
        self.placed.append(call_id)
        return call_id

    def record_operation_id(self, call_id: str, *, within: float = 20) -> str:
        operation = wait_until(
            lambda: next(
                (
                    op
                    for op in self.simulator.operations
                    if id_key(op.call_id) == id_key(call_id) and op.kind == "record"
                ),
                None,
            ),
            within=within,
            what=f"recordResponse on call {call_id}",
        )
        return operation.id

    # -- the ledger, read straight from the table ---------------------------------------------

    def ledger_row(self, call_id: str, operation_id: str) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self.table.get_entity(table_key(call_id), table_key(operation_id)))
        except ResourceNotFoundError:
            return None

    def ledger_rows(self, call_id: str) -> list[dict[str, Any]]:
        """Every operation row of one call (claims excluded)."""
        return [
            dict(entity)
            for entity in self.table.query_entities(
                "PartitionKey eq @pk and Kind eq @kind",
                parameters={"pk": table_key(call_id), "kind": ROW_KIND_OPERATION},
            )
        ]

    def call_row(self, call_id: str) -> dict[str, Any]:
        """The call's own row (``~call``: its metadata and erasure guard); {} when there is none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return dict(self.table.get_entity(table_key(call_id), CALL_GUARD_ROW))
        except ResourceNotFoundError:
            return {}

    def caller_index_rows(self, call_id: str) -> list[dict[str, Any]]:
        """The caller index rows that lead to one call (one at most: its caller's)."""
        return [
            dict(entity)
            for entity in self.table.query_entities(
                "Kind eq @kind and CallId eq @call",
                parameters={"kind": ROW_KIND_CALLER_INDEX, "call": normalize_id(call_id)},
            )
        ]

    def status(self, call_id: str, operation_id: str) -> dict[str, Any]:
        """``GET /api/recordings/{callId}/{operationId}`` (the function key), which must be 200."""
        response = self.http.get(f"/api/recordings/{call_id}/{operation_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for_status(
        self, call_id: str, operation_id: str, *statuses: str, within: float = 30
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            row = self.ledger_row(call_id, operation_id)
            return row if row is not None and row["Status"] in statuses else None

        try:
            return wait_until(reached, within=within, what=f"ledger status {'/'.join(statuses)}")
        except AssertionError:
            row = self.ledger_row(call_id, operation_id) or {}
            raise AssertionError(
                f"operation {operation_id} stayed {row.get('Status')!r} "
                f"({row.get('FailureReason')}), expected {'/'.join(statuses)} within {within} s"
            ) from None

    # -- blobs and queues --------------------------------------------------------------------

    def blob_names(self, call_id: str) -> list[str]:
        return [blob.name for blob in self.container.list_blobs(name_starts_with=f"{call_id}/")]

    def jobs_for(self, queue: QueueClient, call_id: str) -> list[dict[str, Any]]:
        """The download jobs of one call visible on a queue (peeked, not taken)."""
        jobs = []
        for message in queue.peek_messages(max_messages=32):
            try:
                job = json.loads(base64.b64decode(message.content))
            except ValueError:
                continue
            if id_key(str(job.get("call_id", ""))) == id_key(call_id):
                jobs.append(job)
        return jobs

    def graph_requests(self, call_id: str) -> list[Any]:
        """The calls-API requests the simulator received about one call."""
        return [r for r in self.simulator.requests if id_key(call_id) in id_key(r.path)]


@pytest.fixture(scope="session")
def simulator() -> Iterator[GraphSimulator]:
    # 1 simulated second = 10 ms: a 10-second recording is ready after 100 ms.
    # Only the bot app's own tokens reach the calls API: the app runs the federated path.
    with GraphSimulator(
        BOT_APP_ID, time_scale=0.01, recording_retention_seconds=300, require_bot_app_token=True
    ) as sim:
        yield sim


@pytest.fixture(scope="module")
def running_app_factory(
    azurite: Azurite, simulator: GraphSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[Mapping[str, str]], RunningApp]]:
    """Starts the app (once per module) with the given extra settings; stops it afterwards."""
    from shared.settings import get_settings

    started: list[RunningApp] = []

    def start(settings: Mapping[str, str]) -> RunningApp:
        if started:
            raise RuntimeError("one app per module: the host owns os.environ while it runs")
        connection = azurite.connection_string
        provision_storage(connection)
        queue = QueueClient.from_connection_string(connection, DOWNLOAD_QUEUE)
        poison_queue = QueueClient.from_connection_string(connection, POISON_QUEUE)
        # Leftovers of other test modules would only slow this one's worker down.
        queue.clear_messages()
        poison_queue.clear_messages()
        host_json = tmp_path_factory.mktemp("e2e-host") / "host.json"
        host_json.write_text(
            json.dumps(
                {
                    "version": "2.0",
                    "functionTimeout": "00:01:00",
                    "extensions": {"http": {"routePrefix": "api"}, "queues": E2E_QUEUES},
                }
            )
        )
        port = free_port()
        env = app_settings(
            storage_connection_string=connection,
            simulator=simulator,
            app_url=f"http://127.0.0.1:{port}",
            overrides=settings,
        )
        host = LocalFunctionsHost(
            port=port,
            env=env,
            keys=[FUNCTION_KEY],
            app_root=ROOT,
            host_json=host_json,
            load_local_settings=False,
            drain_timeout=timedelta(seconds=10),
        )
        get_settings.cache_clear()
        host.start()
        app = RunningApp(
            host=host,
            simulator=simulator,
            http=httpx.Client(
                base_url=host.base_url,
                headers={"x-functions-key": FUNCTION_KEY},
                timeout=httpx.Timeout(10.0),
            ),
            table=TableClient.from_connection_string(connection, OPERATIONS_TABLE),
            container=ContainerClient.from_connection_string(connection, RECORDINGS_CONTAINER),
            queue=queue,
            poison_queue=poison_queue,
        )
        started.append(app)
        return app

    yield start
    for app in started:
        close_app_clients(app.host)
        app.host.stop()
        app.http.close()
        for client in (app.table, app.container, app.queue, app.poison_queue):
            client.close()
    get_settings.cache_clear()


def new_call_id() -> str:
    return str(uuid.uuid4())


def new_caller_number() -> str:
    """An E.164 number no other test calls from: the caller index outlives a module's rows."""
    return f"+3361{uuid.uuid4().int % 10**7:07d}"


def identity_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """The identity columns (shared/ledger/identity.py) a ledger row holds a value in."""
    return {name: row[name] for name in IDENTITY_COLUMNS if row.get(name) not in (None, "")}
