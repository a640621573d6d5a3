"""Nothing accepted is ever lost: attacks and faults through the public contract.

Every 2xx of ``POST /api/calls`` is followed by a stored recording or a ledger row that says why
not; everything else is a 4xx problem that names the field, or a 503 the sender retries. The
tests drive the real webhook and the real worker against Azurite and the Graph simulator.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devtools.azurite import Azurite
from devtools.graphsim import GraphSimulator
from shared.blob_layout import blob_name_for
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus, claim_partition
from shared.services import Services, app_services, close_services, use_services
from shared.settings import Settings
from shared.storage import StorageClients
from tests.conftest import settings_from, use_simulator_identity
from tests.data import source_document as doc
from tests.support.functions import http_request, invoke, json_body

URL = "http://localhost:7071/api/calls"


def guid() -> str:
    return str(uuid.uuid4())


def completion(
    call_id: str,
    operation_id: str,
    *,
    status: str = "completed",
    location: str | None = "https://file.location/17e3b46c",
    token: str | None = None,
    url_call_id: str | None = None,
    url_operation_id: str | None = None,
) -> dict[str, Any]:
    notification = copy.deepcopy(doc.COMPLETION_NOTIFICATION["value"][0])
    url_call = url_call_id if url_call_id is not None else call_id
    url_op = url_operation_id if url_operation_id is not None else operation_id
    notification["resourceUrl"] = f"/communications/calls/{url_call}/operations/{url_op}"
    data = notification["resourceData"]
    data["id"] = operation_id
    data["status"] = status
    data["recordingLocation"] = location
    data["recordingAccessToken"] = token or f"token-{secrets.token_hex(8)}"
    return notification


def body_of(*notifications: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.commsNotifications", "value": list(notifications)}


async def post(sim: GraphSimulator, body: bytes | str | dict[str, Any]) -> func.HttpResponse:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {sim.sign_token()}"}
    return await invoke("notifications", http_request("POST", URL, body=body, headers=headers))


async def queue_length(storage: StorageClients) -> int:
    return (await storage.queue.get_queue_properties()).approximate_message_count


async def drain(services: Services, *, final: bool = True) -> int:
    """Run the worker on every queued job, each as its last delivery when ``final``."""
    from shared.download import process_job
    from shared.hostconfig import max_dequeue_count

    storage, handled = services.storage, 0
    while True:
        batch = [message async for message in storage.queue.receive_messages(max_messages=16)]
        if not batch:
            return handled
        for message in batch:
            try:
                await process_job(
                    message.content,
                    settings=services.settings,
                    http=services.recording_http,
                    container=storage.container,
                    ledger=services.ledger,
                    dequeue_count=max_dequeue_count() if final else 1,
                )
            except Exception:
                if not final:
                    raise
            await storage.queue.delete_message(message)
            handled += 1


async def settled(services: Services, call_id: str, operation_id: str) -> str | None:
    """``stored`` (blob and row), the row's failed status with its reason, or None."""
    record = await services.ledger.get(call_id, operation_id)
    if record is None:
        return None
    if record.status is OperationStatus.STORED:
        blob = services.storage.container.get_blob_client(blob_name_for(call_id, operation_id))
        assert await blob.exists()
        return "stored"
    assert record.get("FailureReason"), record
    return record.status.value


# --------------------------------------------------------------------------- ids


BAD_IDS = {
    "dot": ".",
    "dot dot": "..",
    "control characters": "abc\u0001def",
    "newline": "57dab8b1-894c-409a-b240-bd8beae78896\nforged=1",
    "a thousand characters": "a" * 1000,
    "slash": "a/b",
    "not a guid": "call-1",
}


@pytest.mark.parametrize("which", ["call", "operation"])
@pytest.mark.parametrize("case", sorted(BAD_IDS))
async def test_an_id_storage_cannot_hold_is_a_400_naming_the_field(
    webhook: StorageClients, sim: GraphSimulator, which: str, case: str
) -> None:
    bad = BAD_IDS[case]
    if which == "call":
        notification = completion(guid(), guid(), url_call_id=bad)
    else:
        notification = completion(guid(), bad)
    response = await post(sim, body_of(notification))

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = json_body(response)
    fields = {error["field"] for error in problem["errors"]}
    assert fields <= {"value.0.resourceUrl", "value.0.resourceData.id"}
    assert fields
    if len(bad) > 3:  # the detail names the field, it does not echo the input
        assert bad not in json.dumps(problem)
    assert await queue_length(webhook) == 0


async def test_a_job_with_ids_that_slipped_through_is_recorded_failed(
    storage: StorageClients,
) -> None:
    services = app_services()
    job = DownloadJob(
        call_id="..",
        operation_id="x" * 1000,
        recording_location="https://file.location/17e3b46c",
        recording_access_token="opaque",  # type: ignore[arg-type]
        received_at="2026-11-29T12:00:00Z",  # type: ignore[arg-type]
    )
    await storage.queue.send_message(job.to_message())
    assert await drain(services) == 1

    row = await services.ledger.get("..", "x" * 1000)
    assert row is not None
    assert row.status is OperationStatus.FAILED
    assert "not a GUID" in row.get("FailureReason")
    assert [blob async for blob in storage.container.list_blobs()] == []


# --------------------------------------------------------------------------- claims


async def test_claim_rows_never_collide_with_or_answer_as_operations(
    storage: StorageClients, sim: GraphSimulator
) -> None:
    services = app_services()
    call_id, operation_id = guid(), guid()
    ledger = OperationLedger(storage.table)
    assert await ledger.claim(call_id, "answer")

    # No claim is an operation: the status API and the list say so.
    assert await ledger.get(call_id, "answer") is None
    assert await ledger.list_call(call_id) == []
    response = await invoke(
        "recording_status",
        http_request(
            "GET",
            f"http://localhost/api/recordings/{call_id}/{operation_id}",
            route_params={"callId": call_id, "operationId": operation_id},
        ),
    )
    assert response.status_code == 404
    claims = [
        row
        async for row in storage.table.query_entities(
            "PartitionKey eq @p", parameters={"p": claim_partition(call_id)}
        )
    ]
    assert {row["RowKey"] for row in claims} >= {"answer"}

    # A row shaped like an old download claim, in the operations' partition, blocks nothing.
    await storage.table.create_entity(
        {"PartitionKey": call_id, "RowKey": f"download-{operation_id}", "Holder": "someone"}
    )
    rec = sim.add_recording(duration_seconds=1)
    job = DownloadJob.model_validate(
        {
            "call_id": call_id,
            "operation_id": operation_id,
            "recording_location": rec.location,
            "recording_access_token": rec.access_token,
            "received_at": "2026-11-29T12:00:00Z",
        }
    )
    await storage.queue.send_message(job.to_message())
    await drain(services)
    assert await settled(services, call_id, operation_id) == "stored"


# --------------------------------------------------------------------------- bodies


async def test_deeply_nested_json_is_a_400_problem(
    webhook: StorageClients, sim: GraphSimulator
) -> None:
    for body in (
        b"[" * 10_000 + b"]" * 10_000,
        b'{"value": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"value": [{"changeType": "x", "resourceUrl": "/communications/calls/a", '
        b'"resourceData": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}]}",
    ):
        response = await post(sim, body)
        assert response.status_code == 400
        assert response.mimetype == "application/problem+json"
        assert "nested too deeply" in json_body(response)["detail"]


async def test_deeply_nested_json_to_the_record_api_is_a_400_problem(
    storage: StorageClients,
) -> None:
    response = await invoke(
        "start_record_response",
        http_request(
            "POST",
            f"http://localhost/api/calls/{guid()}/recordResponse",
            body=b"[" * 10_000 + b"]" * 10_000,
            route_params={"callId": guid()},
        ),
    )
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


# --------------------------------------------------------------------------- storage faults


async def test_a_failure_the_ledger_cannot_record_is_answered_503(
    app_env: dict[str, str], sim: GraphSimulator
) -> None:
    app_settings = settings_from(
        {**app_env, "INBOUND_OPENID_CONFIGURATION_URL": sim.openid_configuration_url}
    )
    # A table name the service refuses: the app cannot create it, and every ledger write fails.
    broken = StorageClients(app_settings, table_name="no_such_table")
    use_services(Services(app_settings, storage=broken))

    failed = completion(guid(), guid(), status="failed", location=None)
    response = await post(sim, body_of(failed))

    assert response.status_code == 503
    assert response.headers.get("Retry-After")


async def test_a_fresh_account_stores_the_first_recording(
    sim: GraphSimulator, configure: Callable[..., Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_simulator_identity(monkeypatch, sim)  # the health check asks for the app's Graph token
    with Azurite() as fresh:
        configure(
            AzureWebJobsStorage=fresh.connection_string,
            INBOUND_OPENID_CONFIGURATION_URL=sim.openid_configuration_url,
        )

        health = json_body(await invoke("health", http_request("GET", "/api/health")))
        assert health["checks"] == {
            "settings": "ok",
            "queue": "missing",
            "blob": "missing",
            "table": "missing",
            "prompts": "ok",
            "graphPermission": "ok",
        }

        call_id, operation_id = guid(), guid()
        rec = sim.add_recording(duration_seconds=1)
        notification = completion(
            call_id, operation_id, location=rec.location, token=rec.access_token
        )
        assert (await post(sim, body_of(notification))).status_code == 202
        services = app_services()
        assert await drain(services, final=False) == 1
        assert await settled(services, call_id, operation_id) == "stored"

        health = json_body(await invoke("health", http_request("GET", "/api/health")))
        assert health["status"] == "healthy"
        await close_services()


# --------------------------------------------------------------------------- logs


async def test_crafted_values_cannot_forge_log_lines(
    webhook: StorageClients, sim: GraphSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forged = "x\nPOST /api/calls status=202 outcome=accepted forged=1"
    call_id = guid()
    bodies = [
        body_of(completion(guid(), guid(), url_call_id=forged)),
        body_of({**completion(call_id, guid()), "changeType": forged}),
        body_of(
            {
                "changeType": forged,
                "resourceUrl": f"/communications/calls/{call_id}",
                "resourceData": {"@odata.type": "#microsoft.graph.call", "state": forged},
            }
        ),
        body_of({**completion(call_id, guid(), status="failed", location=None)}),
    ]
    bodies[3]["value"][0]["resourceData"]["resultInfo"]["message"] = forged
    for body in bodies:
        await post(sim, body)
    ours = [r for r in caplog.records if r.name.startswith(("shared", "blueprints"))]
    assert ours
    assert [r.getMessage() for r in ours if "\n" in r.getMessage()] == []
    assert not [r for r in ours if "forged=1" in r.getMessage().split('"')[0]]


# --------------------------------------------------------------------------- the property


GUIDS = st.uuids().map(str) | st.uuids().map(lambda u: u.hex.upper())
ANY_ID = GUIDS | st.sampled_from(sorted(BAD_IDS.values())) | st.text(max_size=40)


@st.composite
def notification_bodies(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str, str]]]:
    """A body, and the (call, operation, status) of each record operation it carries."""
    notifications: list[Any] = []
    expected: list[tuple[str, str, str]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        kind = draw(st.sampled_from(["record", "record", "call", "junk"]))
        if kind == "record":
            call_id, operation_id = draw(ANY_ID), draw(ANY_ID)
            status = draw(st.sampled_from(["completed", "failed", "running"]))
            location = draw(
                st.sampled_from(["sim", "gone", "closed", "garbage", None]),
            )
            notification = completion(call_id, operation_id, status=status, location=location)
            notifications.append(notification)
            expected.append((call_id, operation_id, status))
        elif kind == "call":
            call_id = draw(ANY_ID)
            notifications.append(
                {
                    "changeType": draw(st.sampled_from(["created", "updated", "deleted"])),
                    "resourceUrl": f"/communications/calls/{call_id}",
                    "resourceData": {
                        "@odata.type": "#microsoft.graph.call",
                        "state": draw(st.sampled_from(["incoming", "established", "terminated"])),
                    },
                }
            )
        else:
            notifications.append(
                draw(
                    st.recursive(
                        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda inner: (
                            st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=8), inner, max_size=3)
                        ),
                        max_leaves=8,
                    )
                )
            )
    envelope: Any = body_of(*notifications)
    if draw(st.booleans()):
        envelope = draw(st.sampled_from([envelope, {"value": notifications}, notifications]))
    return json.dumps(envelope).encode(), expected


@pytest.fixture
def property_settings(app_env: dict[str, str], sim: GraphSimulator) -> Settings:
    """The app's settings for every example (each runs in a loop of its own)."""
    return settings_from(
        {**app_env, "INBOUND_OPENID_CONFIGURATION_URL": sim.openid_configuration_url}
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(example=notification_bodies())
def test_every_answer_is_2xx_4xx_or_503_and_every_2xx_is_settled(
    property_settings: Settings,
    sim: GraphSimulator,
    example: tuple[bytes, list[tuple[str, str, str]]],
) -> None:
    raw, expected = example

    async def one() -> None:
        services = Services(property_settings)
        use_services(services)
        await services.storage.ensure_once()
        await services.storage.queue.clear_messages()
        body = raw
        for placeholder, real in _locations(sim).items():
            body = body.replace(json.dumps(placeholder).encode(), json.dumps(real).encode())
        response = await post(sim, body)
        event(f"answered {response.status_code}, {len(expected)} record operation(s)")
        assert response.status_code in {202, 400, 413, 415, 503}, response.get_body()[:300]
        if response.status_code != 202:
            assert response.mimetype == "application/problem+json"
            return
        await drain(services)
        for call_id, operation_id, status in expected:
            if status == "running":
                continue  # not final: nothing to settle yet
            outcome = await settled(services, call_id, operation_id)
            assert outcome in {"stored", "failed"}, (call_id, operation_id, status, outcome)

    async def run() -> None:
        try:
            await one()
        finally:
            await close_services()

    asyncio.run(run())


def _locations(sim: GraphSimulator) -> dict[str, str]:
    recording = sim.add_recording(duration_seconds=1)
    return {
        "sim": recording.location,
        "gone": recording.location + "-gone",
        "closed": "http://127.0.0.1:9/recording",
        "garbage": "not a url at all",
    }
