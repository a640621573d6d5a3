"""GraphCallsClient: retries, error mapping and headers (httpx.MockTransport), credentials, and a
real exchange with the simulator using a managed-identity token."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from devtools.graphsim import GraphSimulator
from shared.backoff import Backoff
from shared.graph.client import GraphCallsClient
from shared.graph.credentials import GRAPH_SCOPE, FederatedCredential, graph_credential
from shared.graph.errors import (
    GraphAuthorizationError,
    GraphClientError,
    GraphConnectionError,
    GraphError,
    GraphResponseError,
    GraphServerError,
    GraphThrottledError,
    GraphUnavailableError,
)
from shared.graph.models import AnswerRequest, RecordResponseRequest
from shared.retry_after import parse_retry_after
from tests.conftest import BOT_APP_ID, settings_from, use_simulator_identity
from tests.support.clock import Clock

BASE = "https://graph.test/v1.0"
CALL_ID = "57dab8b1-894c-409a-b240-bd8beae78896"
OP_ID = "0fe0623f-d628-42ed-b4bd-8ac290072cc5"
OPERATION = {
    "@odata.type": "#microsoft.graph.recordOperation",
    "id": OP_ID,
    "status": "running",
    "resultInfo": None,
    "recordingLocation": None,
    "clientContext": "ctx",
}


class StaticCredential:
    """A stand-in token source for the transport-level unit tests."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("unit-test-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


def graph_error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": "req-1"}}}
    return httpx.Response(status, json=body, headers=headers)


def created(operation: dict[str, Any] | None = None, *, location: bool = True) -> httpx.Response:
    headers = {"Location": f"{BASE}/communications/calls/{CALL_ID}/operations/{OP_ID}"}
    return httpx.Response(200, json=operation or OPERATION, headers=headers if location else {})


Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def fake_time() -> Clock:
    return Clock()


@pytest.fixture
async def make_client(
    fake_time: Clock,
) -> AsyncIterator[Callable[..., tuple[GraphCallsClient, list]]]:
    clients: list[GraphCallsClient] = []

    def make(
        responses: list[httpx.Response | Exception], retry: Backoff | None = None
    ) -> tuple[GraphCallsClient, list[httpx.Request]]:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            outcome = responses.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        client = GraphCallsClient(
            BASE,
            StaticCredential(),  # type: ignore[arg-type]
            http=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            retry=retry
            or Backoff(attempts=4, budget_seconds=60, sleep=fake_time.sleep, jitter=lambda: 0.5),
            monotonic=fake_time.monotonic,
        )
        clients.append(client)
        return client, seen

    yield make
    for client in clients:
        await client.aclose()


async def test_record_response_sends_the_body_and_parses_the_location(make_client: Any) -> None:
    client, seen = make_client([created()])
    request = RecordResponseRequest(client_context="ctx", max_record_duration_in_seconds=10)

    operation, operation_id = await client.record_response(CALL_ID.upper(), request)

    assert operation_id == OP_ID
    assert operation.status == "running"
    (sent,) = seen
    assert sent.method == "POST"
    assert sent.url == f"{BASE}/communications/calls/{CALL_ID.upper()}/recordResponse"
    assert sent.headers["Authorization"] == "Bearer unit-test-token"
    uuid.UUID(sent.headers["client-request-id"])
    body = json.loads(sent.content)
    assert body["maxRecordDurationInSeconds"] == 10
    assert body["clientContext"] == "ctx"
    assert "client_context" not in body


async def test_429_waits_what_retry_after_says_then_succeeds(
    make_client: Any, fake_time: Clock
) -> None:
    client, seen = make_client(
        [graph_error(429, "TooManyRequests", "slow down", **{"Retry-After": "2"}), created()]
    )

    _, operation_id = await client.record_response(CALL_ID, RecordResponseRequest())

    assert operation_id == OP_ID
    assert fake_time.sleeps == [pytest.approx(2.05)]
    assert len(seen) == 2
    first, second = seen
    assert first.headers["client-request-id"] == second.headers["client-request-id"]
    assert "Retry-Attempt" not in first.headers
    assert second.headers["Retry-Attempt"] == "1"


async def test_retry_after_is_capped_and_attempts_are_bounded(
    make_client: Any, fake_time: Clock
) -> None:
    policy = Backoff(
        attempts=3,
        budget_seconds=600,
        retry_after_cap_seconds=1.0,
        sleep=fake_time.sleep,
        jitter=lambda: 0.5,
    )
    busy = [graph_error(503, "ServiceUnavailable", "busy", **{"Retry-After": "3600"})] * 5
    client, seen = make_client(list(busy), policy)

    with pytest.raises(GraphUnavailableError) as caught:
        await client.record_response(CALL_ID, RecordResponseRequest())

    assert len(seen) == 3
    assert fake_time.sleeps == [pytest.approx(1.05)] * 2
    assert caught.value.status == 503
    assert caught.value.retry_after == 3600
    assert caught.value.attempts == 3


async def test_gives_up_at_once_when_the_wait_would_pass_the_budget(
    make_client: Any, fake_time: Clock
) -> None:
    client, seen = make_client(
        [graph_error(429, "TooManyRequests", "later", **{"Retry-After": "5"})]
    )

    with pytest.raises(GraphThrottledError) as caught:
        await client.answer(CALL_ID, AnswerRequest(callback_uri="https://bot/api/calls"), within=2)

    assert len(seen) == 1
    assert fake_time.sleeps == []
    assert caught.value.retry_after == 5


async def test_backoff_without_retry_after_is_jittered_exponential(
    make_client: Any, fake_time: Clock
) -> None:
    client, _ = make_client(
        [httpx.Response(503), httpx.Response(503), httpx.Response(503), created()]
    )

    await client.record_response(CALL_ID, RecordResponseRequest())

    # base 0.5 s doubling, times the fixed jitter 0.5
    assert fake_time.sleeps == [pytest.approx(0.25), pytest.approx(0.5), pytest.approx(1.0)]


async def test_gateway_timeout_is_not_retried_for_a_post(
    make_client: Any, fake_time: Clock
) -> None:
    # Graph may have started the recording behind a 504: a second POST could record twice.
    client, seen = make_client([httpx.Response(504), created()])

    with pytest.raises(GraphError) as caught:
        await client.record_response(CALL_ID, RecordResponseRequest())

    assert caught.value.status == 504
    assert len(seen) == 1
    assert fake_time.sleeps == []


async def test_gateway_timeout_is_retried_for_a_get(make_client: Any, fake_time: Clock) -> None:
    client, seen = make_client([httpx.Response(504), httpx.Response(200, json={"id": CALL_ID})])

    call = await client.get_call(CALL_ID)

    assert call.id == CALL_ID
    assert len(seen) == 2


async def test_graph_error_json_becomes_a_typed_error_without_retry(make_client: Any) -> None:
    client, seen = make_client(
        [graph_error(400, "CallNotEstablished", "Call is 'establishing'.", **{"request-id": "h"})]
    )

    with pytest.raises(GraphClientError) as caught:
        await client.record_response(CALL_ID, RecordResponseRequest())

    error = caught.value
    assert (error.status, error.code, error.message) == (
        400,
        "CallNotEstablished",
        "Call is 'establishing'.",
    )
    assert error.request_id == "req-1"  # innerError wins over the header
    assert error.client_request_id == seen[0].headers["client-request-id"]
    assert len(seen) == 1
    assert "unit-test-token" not in str(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, GraphAuthorizationError),
        (403, GraphAuthorizationError),
        (404, GraphClientError),
        (500, GraphServerError),
    ],
)
async def test_statuses_map_to_error_types(make_client: Any, status: int, kind: type) -> None:
    client, seen = make_client([graph_error(status, "Code", "message")])

    with pytest.raises(kind):
        await client.hang_up(CALL_ID)

    assert len(seen) == 1


async def test_connect_error_is_retried_even_for_a_post(make_client: Any) -> None:
    client, seen = make_client([httpx.ConnectError("refused"), created()])

    _, operation_id = await client.record_response(CALL_ID, RecordResponseRequest())

    assert operation_id == OP_ID
    assert len(seen) == 2


async def test_read_timeout_is_not_retried_for_a_post(make_client: Any) -> None:
    # Graph may have started recording: a second POST would record twice.
    client, seen = make_client([httpx.ReadTimeout("slow"), created()])

    with pytest.raises(GraphConnectionError) as caught:
        await client.record_response(CALL_ID, RecordResponseRequest())

    assert caught.value.status is None
    assert caught.value.code == "ReadTimeout"
    assert len(seen) == 1


async def test_read_timeout_is_retried_for_a_get(make_client: Any) -> None:
    call = {"@odata.type": "#microsoft.graph.call", "id": CALL_ID, "state": "established"}
    client, seen = make_client([httpx.ReadTimeout("slow"), httpx.Response(200, json=call)])

    result = await client.get_call(CALL_ID)

    assert result.state == "established"
    assert len(seen) == 2


async def test_operation_id_falls_back_to_the_body_then_fails(make_client: Any) -> None:
    client, _ = make_client(
        [created(location=False), created({**OPERATION, "id": None}, location=False)]
    )

    _, operation_id = await client.record_response(CALL_ID, RecordResponseRequest())
    assert operation_id == OP_ID

    with pytest.raises(GraphResponseError):
        await client.record_response(CALL_ID, RecordResponseRequest())


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --------------------------------------------------------------------------- credentials


def settings_with(**values: str) -> Any:
    # Each case names its own credential settings; nothing comes from the environment.
    return settings_from(
        {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BOT_APP_ID": BOT_APP_ID, **values}
    )


async def test_credential_factory_follows_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential

    cases = [
        ({"GRAPH_CREDENTIAL_MODE": "managedIdentity"}, ManagedIdentityCredential),
        (
            {
                "GRAPH_CREDENTIAL_MODE": "localAppRegistration",
                "GRAPH_APP_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
                "GRAPH_TENANT_ID": "00000000-0000-0000-0000-00000000cafe",
                "GRAPH_CLIENT_SECRET": "a-local-secret",
            },
            ClientSecretCredential,
        ),
        (
            {
                "GRAPH_CREDENTIAL_MODE": "federated",
                "GRAPH_APP_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
                "GRAPH_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            },
            FederatedCredential,
        ),
    ]
    for values, kind in cases:
        credential = graph_credential(settings_with(**values))
        try:
            assert isinstance(credential, kind)
        finally:
            await credential.close()


async def test_federated_assertion_comes_from_the_managed_identity_without_io() -> None:
    class ExchangeToken(StaticCredential):
        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            self.scopes.append(scopes)
            return AccessToken(f"mi-assertion-{len(self.scopes)}", int(time.time()) + 3600)

    managed_identity = ExchangeToken()
    credential = FederatedCredential(
        tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
        client_id="11111111-2222-3333-4444-555555555555",
        managed_identity=managed_identity,  # type: ignore[arg-type]
    )
    try:
        with pytest.raises(RuntimeError):
            credential._current_assertion()  # nothing fetched yet: never a blocking fetch
        await credential.refresh_assertion()
        assert credential._current_assertion() == "mi-assertion-1"
        assert managed_identity.scopes == [("api://AzureADTokenExchange/.default",)]
    finally:
        await credential.close()


# --------------------------------------------------------------------------- simulator


@pytest.fixture
def sim(
    start_simulator: Callable[..., GraphSimulator], monkeypatch: pytest.MonkeyPatch
) -> Iterator[GraphSimulator]:
    running = start_simulator(time_scale=0.01, callback_url="http://127.0.0.1:9/")
    use_simulator_identity(monkeypatch, running)
    yield running
    running.stop()


@pytest.fixture
async def sim_client(sim: GraphSimulator) -> AsyncIterator[GraphCallsClient]:
    from azure.identity.aio import ManagedIdentityCredential

    client = GraphCallsClient(sim.graph_base_url, ManagedIdentityCredential())
    yield client
    await client.aclose()


async def test_real_managed_identity_token_is_accepted_and_cached(
    sim: GraphSimulator, sim_client: GraphCallsClient
) -> None:
    call_id = sim.place_call()

    call = await sim_client.get_call(call_id)
    with pytest.raises(GraphClientError) as caught:
        await sim_client.get_call(str(uuid.uuid4()))

    assert call.id == call_id
    assert call.state == "incoming"
    assert caught.value.status == 404
    assert caught.value.code == "ItemNotFound"
    assert caught.value.request_id
    requests = sim.requests
    assert [r.token_valid for r in requests] == [True, True]
    assert requests[0].headers["client-request-id"] != requests[1].headers["client-request-id"]


async def test_scope_is_graph_default() -> None:
    credential = StaticCredential()
    responses = [httpx.Response(204)]
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: responses.pop(0)))
    client = GraphCallsClient(BASE, credential, http=http)  # type: ignore[arg-type]

    await client.hang_up(CALL_ID)
    await client.aclose()

    assert credential.scopes == [(GRAPH_SCOPE,)]
