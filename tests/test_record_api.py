"""POST /api/calls/{callId}/recordResponse through the registered function, against the Graph
simulator (real managed-identity tokens) and Azurite."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from devtools.graphsim import GraphSimulator
from shared.ledger import OperationLedger, OperationStatus
from shared.services import Services
from tests.conftest import use_simulator_identity
from tests.data.source_document import REQUEST as RECORD_RESPONSE_REQUEST
from tests.support.functions import http_request, invoke, json_body

FUNCTION = "start_record_response"


@pytest.fixture
def sim(start_simulator: Callable[..., GraphSimulator]) -> Iterator[GraphSimulator]:
    # Notifications go to a closed loopback port: these tests drive the API, not the webhook.
    running = start_simulator(time_scale=0.01, callback_url="http://127.0.0.1:9/api/calls")
    yield running
    running.stop()


@pytest.fixture
async def graph_env(
    sim: GraphSimulator, configure: Callable[..., Services], monkeypatch: pytest.MonkeyPatch
) -> GraphSimulator:
    """App settings pointing Graph calls at the simulator, tokens from its identity endpoint."""
    use_simulator_identity(monkeypatch, sim)
    configure(GRAPH_BASE_URL=sim.graph_base_url, GRAPH_CREDENTIAL_MODE="managedIdentity")
    return sim


async def established_call(sim: GraphSimulator) -> str:
    """A call the bot answered with service-hosted media, now established."""
    from shared.graph.models import AnswerRequest
    from shared.services import app_services

    call_id = sim.place_call()
    answer = AnswerRequest(callback_uri="http://127.0.0.1:9/api/calls")
    await app_services().graph.answer(call_id, answer)
    await sim.async_wait_for(lambda: sim.call(call_id).state == "established", within=5)
    sim.reset_journal()
    return call_id


def post(call_id: str, body: Any) -> Any:
    return invoke(
        FUNCTION,
        http_request(
            "POST",
            f"http://localhost/api/calls/{call_id}/recordResponse",
            body=body,
            route_params={"callId": call_id},
            headers={"Content-Type": "application/json"},
        ),
    )


def record_requests(sim: GraphSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith("/recordResponse")]


async def test_forwards_the_request_and_records_the_operation(
    graph_env: GraphSimulator, storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim = graph_env
    caplog.set_level(logging.DEBUG)
    call_id = await established_call(sim)
    body = {**RECORD_RESPONSE_REQUEST, "clientContext": "operator-42"}

    response = await post(call_id, body)

    assert response.status_code == 202, response.get_body()
    operation = json_body(response)
    operation_id = operation["id"]
    assert operation["status"] == "running"
    assert operation["clientContext"] == "operator-42"
    assert operation["callId"] == call_id
    assert "recordingAccessToken" not in operation
    assert response.headers["Location"] == f"/api/recordings/{call_id}/{operation_id}"

    (sent,) = record_requests(sim)
    assert sent.method == "POST"
    assert sent.token_valid
    assert sent.path == f"/v1.0/communications/calls/{call_id}/recordResponse"
    uuid.UUID(sent.headers["client-request-id"])
    for name, value in RECORD_RESPONSE_REQUEST.items():
        if name != "clientContext":
            assert sent.body[name] == value, name
    assert sent.body["clientContext"] == "operator-42"
    assert sim.operation(operation_id).call_id == call_id

    row = await OperationLedger(storage.table).get(call_id, operation_id)
    assert row is not None
    assert row.status is OperationStatus.RUNNING
    assert row.get("ClientContext") == "operator-42"
    assert row.get("StartedBy") == "api"
    assert row.get("RequestedAt") <= row.get("RunningAt")
    assert "eyJ" not in caplog.text  # no JWT (Graph token) in any log line


async def test_a_missing_client_context_is_generated(
    graph_env: GraphSimulator, storage: Any
) -> None:
    call_id = await established_call(graph_env)

    response = await post(call_id, {"maxRecordDurationInSeconds": 3})

    assert response.status_code == 202
    context = json_body(response)["clientContext"]
    uuid.UUID(context)
    assert record_requests(graph_env)[0].body["clientContext"] == context


async def test_invalid_json_is_400_and_nothing_is_sent(
    graph_env: GraphSimulator, storage: Any
) -> None:
    call_id = str(uuid.uuid4())

    response = await post(call_id, b"{not json")

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert "JSON" in json_body(response)["detail"]
    assert graph_env.requests == []


async def test_each_invalid_field_is_listed_with_422(
    graph_env: GraphSimulator, storage: Any
) -> None:
    prompt = {"mediaInfo": {"uri": "https://cdn.example/a.wav"}}
    body = {
        "maxRecordDurationInSeconds": 121,
        "initialSilenceTimeoutInSeconds": 0,
        "stopTones": ["#", "x"],
        "prompts": [prompt, prompt],
        "clientContext": "c" * 257,
        "recordEverything": True,
    }

    response = await post(str(uuid.uuid4()), body)

    assert response.status_code == 422
    problem = json_body(response)
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {
        "maxRecordDurationInSeconds",
        "initialSilenceTimeoutInSeconds",
        "stopTones",
        "prompts",
        "clientContext",
        "recordEverything",
    }
    assert "c" * 257 not in json.dumps(problem)  # the input is not echoed
    assert graph_env.requests == []


async def test_a_call_id_that_is_not_an_id_is_refused(
    graph_env: GraphSimulator, storage: Any
) -> None:
    response = await post("..%2Fother", {})

    assert response.status_code == 400
    assert json_body(response)["errors"][0]["field"] == "callId"
    assert graph_env.requests == []


async def test_graph_429_then_200_succeeds_after_the_wait(
    graph_env: GraphSimulator, storage: Any
) -> None:
    sim = graph_env
    call_id = await established_call(sim)
    sim.add_api_faults("recordResponse", ["429:1"])

    response = await post(call_id, {"clientContext": "retry"})

    assert response.status_code == 202
    first, second = record_requests(sim)
    assert (first.status_code, second.status_code) == (429, 200)
    assert first.headers["client-request-id"] == second.headers["client-request-id"]
    assert second.headers["retry-attempt"] == "1"
    assert second.received_at - first.received_at >= 1.0  # Retry-After was honoured
    operations = [op for op in sim.operations if op.client_context == "retry"]
    assert len(operations) == 1


async def test_graph_400_reaches_the_caller_with_graphs_message(
    graph_env: GraphSimulator, storage: Any
) -> None:
    sim = graph_env
    call_id = await established_call(sim)
    sim.caller_hangup(call_id)

    response = await post(call_id, {})

    assert response.status_code == 400
    problem = json_body(response)
    assert problem["graphCode"] == "CallNotEstablished"
    assert "needs an established call" in problem["detail"]
    assert problem["graphRequestId"]
    assert problem["clientRequestId"] == record_requests(sim)[0].headers["client-request-id"]
    assert await OperationLedger(storage.table).list_call(call_id) == []


async def test_unknown_call_is_404(graph_env: GraphSimulator, storage: Any) -> None:
    response = await post(str(uuid.uuid4()), {})

    assert response.status_code == 404
    assert json_body(response)["graphCode"] == "ItemNotFound"


async def test_graph_refusing_our_identity_is_502(graph_env: GraphSimulator, storage: Any) -> None:
    call_id = await established_call(graph_env)
    graph_env.add_api_faults("recordResponse", ["401"])

    response = await post(call_id, {})

    assert response.status_code == 502
    assert "bot's identity" in json_body(response)["detail"]


async def test_graph_still_unavailable_after_retries_is_503_with_retry_after(
    graph_env: GraphSimulator, storage: Any
) -> None:
    call_id = await established_call(graph_env)
    graph_env.add_api_faults("recordResponse", ["503:0"] * 10)

    response = await post(call_id, {})

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert len(record_requests(graph_env)) == 4  # bounded attempts


async def test_graph_500_is_502_without_retry(graph_env: GraphSimulator, storage: Any) -> None:
    call_id = await established_call(graph_env)
    graph_env.add_api_faults("recordResponse", ["500"])

    response = await post(call_id, {})

    assert response.status_code == 502
    assert len(record_requests(graph_env)) == 1


# ------------------------------------------------------------ a reply that is already final


async def test_a_completed_reply_becomes_a_download_job_at_once(
    app_env: dict[str, str], storage: Any
) -> None:
    """Graph can answer recordResponse with a final status; no notification follows then.

    The simulator always answers "running", so Graph's side is a MockTransport here; the ledger
    and the queue are Azurite's.
    """
    from shared.graph.client import GraphCallsClient
    from shared.graph.models import RecordResponseRequest
    from shared.jobs import DownloadJob
    from shared.record_response import start_recording

    call_id = "57dab8b1-894c-409a-b240-bd8beae78896"
    operation_id = "0fe0623f-d628-42ed-b4bd-8ac290072cc5"
    token = "recording-token-" + uuid.uuid4().hex
    reply = {
        "@odata.type": "#microsoft.graph.recordOperation",
        "id": operation_id,
        "status": "completed",
        "resultInfo": {"code": 200, "subcode": 8515, "message": "max record duration reached"},
        "recordingLocation": "https://file.location/17e3b46c",
        "recordingAccessToken": token,
        "clientContext": "ctx",
    }

    class Token:
        async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            from azure.core.credentials import AccessToken

            return AccessToken("t", 2**31)

        async def close(self) -> None:
            pass

    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=reply))
    )
    graph = GraphCallsClient("https://graph.test/v1.0", Token(), http=http)  # type: ignore[arg-type]
    ledger = OperationLedger(storage.table)
    try:
        started = await start_recording(
            call_id,
            RecordResponseRequest(client_context="ctx"),
            graph=graph,
            ledger=ledger,
            queue=storage.queue,
            started_by="api",
        )
    finally:
        await graph.aclose()

    assert started.job_enqueued
    assert token not in json.dumps(started.to_json())
    messages = [m async for m in storage.queue.receive_messages()]
    assert len(messages) == 1
    # The app's queue client decodes base64 as the trigger does: reading it back proves the codec.
    job = DownloadJob.from_message(messages[0].content)
    assert (job.call_id, job.operation_id) == (call_id, operation_id)
    assert job.recording_access_token.get_secret_value() == token
    assert job.result_subcode == 8515
    row = await ledger.get(call_id, operation_id)
    assert row is not None
    assert row.status is OperationStatus.COMPLETED
    assert row.get("ResultSubcode") == 8515
