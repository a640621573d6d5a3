"""The management API's callers: Entra ID tokens with app roles, function keys where enabled, and
the audit trail each action leaves. Through the registered functions (and the local host for the
function-key path), against the simulator's Entra tokens and Azurite."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from devtools.graphsim import GraphSimulator
from devtools.graphsim.keys import SigningKey
from devtools.localhost import LocalFunctionsHost
from shared.audit import ROW_KIND_AUDIT, AuditTrail
from shared.auth.management import Role
from shared.clock import utc_now
from shared.ledger import OperationStatus
from shared.services import Services
from shared.settings import SettingsError
from tests.conftest import TENANT_ID, settings_from, use_simulator_identity
from tests.support.functions import http_request, invoke, json_body

ROOT = Path(__file__).resolve().parent.parent
OTHER_TENANT = "00000000-0000-0000-0000-0000000b0b0b"
CALLER_OID = "11111111-1111-4111-8111-111111111111"
CALLER_APPID = "22222222-2222-4222-8222-222222222222"


@pytest.fixture(scope="module")
def sim(start_simulator: Callable[..., GraphSimulator]) -> GraphSimulator:
    # Notifications go to a closed loopback port: these tests drive the API, not the webhook.
    return start_simulator(time_scale=0.01, callback_url="http://127.0.0.1:9/api/calls")


@pytest.fixture
async def tokens_only(
    sim: GraphSimulator,
    storage: Any,
    configure: Callable[..., Services],
    monkeypatch: pytest.MonkeyPatch,
) -> Services:
    """The app as in Azure: function keys off, the simulator as the tenant, Graph simulated."""
    use_simulator_identity(monkeypatch, sim)
    return configure(
        **sim.management_env(),
        MANAGEMENT_FUNCTION_KEYS="false",
        GRAPH_BASE_URL=sim.graph_base_url,
        GRAPH_CREDENTIAL_MODE="managedIdentity",
    )


def token(sim: GraphSimulator, *roles: Role, **options: Any) -> str:
    options.setdefault("object_id", CALLER_OID)
    options.setdefault("app_id", CALLER_APPID)
    return sim.management_token(*(role.value for role in roles), **options)


# ---------------------------------------------------------------------------------- the routes


def request(
    function: str, call_id: str, operation_id: str, bearer: str | None, **headers: str
) -> tuple[str, Any]:
    """The HTTP request each management function takes, with ``bearer`` as the token."""
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    both = {"callId": call_id, "operationId": operation_id}
    base = "http://localhost/api"
    shapes: dict[str, Any] = {
        "recording_status": http_request(
            "GET", f"{base}/recordings/{call_id}/{operation_id}", route_params=both, headers=headers
        ),
        "recording_audit": http_request(
            "GET",
            f"{base}/recordings/{call_id}/{operation_id}/audit",
            route_params=both,
            headers=headers,
        ),
        "list_recordings": http_request(
            "GET", f"{base}/recordings", params={"callId": call_id}, headers=headers
        ),
        "erase_recording": http_request(
            "DELETE",
            f"{base}/recordings/{call_id}/{operation_id}",
            route_params=both,
            headers=headers,
        ),
        "erase_call_recordings": http_request(
            "DELETE", f"{base}/recordings", params={"callId": call_id}, headers=headers
        ),
        "start_record_response": http_request(
            "POST",
            f"{base}/calls/{call_id}/recordResponse",
            route_params={"callId": call_id},
            body={"maxRecordDurationInSeconds": 5},
            headers={"Content-Type": "application/json", **headers},
        ),
    }
    return function, shapes[function]


ROUTE_ROLES = {
    "recording_status": Role.READ,
    "list_recordings": Role.READ,
    "start_record_response": Role.RECORD,
    "erase_recording": Role.ERASE,
    "erase_call_recordings": Role.ERASE,
    "recording_audit": Role.AUDIT,
}


async def call(
    function: str, bearer: str | None, call_id: str | None = None, operation_id: str | None = None
) -> Any:
    name, req = request(
        function, call_id or str(uuid.uuid4()), operation_id or str(uuid.uuid4()), bearer
    )
    return await invoke(name, req)


def problem(response: Any) -> dict[str, Any]:
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = json_body(response)
    return body


@pytest.mark.parametrize("function", sorted(ROUTE_ROLES))
async def test_each_role_allows_exactly_its_routes(
    function: str, sim: GraphSimulator, tokens_only: Services
) -> None:
    for role in Role:
        bearer = token(sim, role)
        response = await call(function, bearer)
        if role is ROUTE_ROLES[function]:
            # Past the guard: the route's own answer (404 for an unknown call or operation).
            assert response.status_code not in (401, 403), (role, response.get_body())
        else:
            assert response.status_code == 403, (role, response.get_body())
            body = problem(response)
            assert body["role"] == ROUTE_ROLES[function].value
            assert ROUTE_ROLES[function].value in body["detail"]
            assert bearer not in response.get_body().decode()


@pytest.mark.parametrize("function", sorted(ROUTE_ROLES))
async def test_a_valid_token_without_roles_is_403_naming_the_role(
    function: str, sim: GraphSimulator, tokens_only: Services
) -> None:
    response = await call(function, token(sim))
    assert response.status_code == 403
    assert problem(response)["failure"] == "RoleMissing"
    assert problem(response)["role"] == ROUTE_ROLES[function].value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(sim: GraphSimulator, claims: dict[str, Any]) -> str:
    """The classic confusion: an HMAC "signature" keyed with the RSA public key's PEM."""
    pem = sim.entra.key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "kid": sim.entra.key.kid, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _unsigned(claims: dict[str, Any], kid: str) -> str:
    header = _b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _invalid_tokens(sim: GraphSimulator) -> dict[str, tuple[str | None, str]]:
    import jwt

    entra = sim.entra
    good = entra.claims(roles=[r.value for r in Role], object_id=CALLER_OID)
    expired = {**good, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    stranger = SigningKey.generate()
    no_oid = {k: v for k, v in good.items() if k != "oid"}
    return {
        "no token": (None, "TokenMissing"),
        "not a JWT": ("not-a-jwt", "TokenMalformed"),
        "wrong audience": (
            entra.token(roles=["Recordings.Read"], audience="api://other"),
            "WrongAudience",
        ),
        "another tenant": (
            entra.token(roles=[r.value for r in Role], tenant_id=OTHER_TENANT),
            "WrongIssuer",
        ),
        "tid of another tenant": (entra.issue({**good, "tid": OTHER_TENANT}), "TenantNotAllowed"),
        "expired": (entra.issue(expired), "TokenExpired"),
        "HS256 with the public key": (_hs256_with_public_key(sim, good), "DisallowedAlgorithm"),
        "alg none": (_unsigned(good, entra.key.kid), "DisallowedAlgorithm"),
        "unknown key": (
            jwt.encode(
                good, stranger.private_key, algorithm="RS256", headers={"kid": stranger.kid}
            ),
            "UnknownSigningKey",
        ),
        "forged with a known kid": (
            jwt.encode(
                good, stranger.private_key, algorithm="RS256", headers={"kid": entra.key.kid}
            ),
            "BadSignature",
        ),
        "no object id": (entra.issue(no_oid), "TokenMalformed"),
        "a notification token": (sim.sign_token(), "UnknownSigningKey"),
    }


async def test_invalid_tokens_are_401_naming_the_failed_check(
    sim: GraphSimulator, tokens_only: Services
) -> None:
    for case, (bearer, failure) in _invalid_tokens(sim).items():
        for function in ("recording_status", "erase_recording"):
            response = await call(function, bearer)
            assert response.status_code == 401, (case, response.get_body())
            body = problem(response)
            assert body["failure"] == failure, case
            assert "WWW-Authenticate" in response.headers, case
            if bearer:
                assert bearer not in response.get_body().decode(), case


async def test_v1_tokens_for_the_identifier_uri_are_accepted(
    sim: GraphSimulator, tokens_only: Services
) -> None:
    v1 = token(sim, Role.READ, version="1.0")
    assert (await call("recording_status", v1)).status_code == 404  # past the guard


async def test_without_a_tenant_the_token_path_is_a_500_naming_the_setting(
    sim: GraphSimulator, storage: Any, configure: Callable[..., Services]
) -> None:
    configure(MANAGEMENT_FUNCTION_KEYS="false")
    response = await call("recording_status", token(sim, Role.READ))
    assert response.status_code == 500
    assert "MANAGEMENT_TENANT_ID" in problem(response)["detail"]


async def test_no_token_is_401_when_keys_are_off_and_a_function_key_is_named(
    sim: GraphSimulator, tokens_only: Services
) -> None:
    name, req = request("recording_status", str(uuid.uuid4()), str(uuid.uuid4()), None)
    assert problem(await invoke(name, req))["failure"] == "TokenMissing"
    name, req = request(
        "recording_status", str(uuid.uuid4()), str(uuid.uuid4()), None, **{"x-functions-key": "k"}
    )
    response = await invoke(name, req)
    assert response.status_code == 401
    assert problem(response)["failure"] == "FunctionKeysDisabled"


# ---------------------------------------------------------------------------------- audit trail


async def audit_rows(services: Services) -> list[dict[str, Any]]:
    return [
        entity
        async for entity in services.storage.table.query_entities(
            "Kind eq @kind", parameters={"kind": ROW_KIND_AUDIT}
        )
    ]


def audit_events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "audit"]


async def test_each_action_leaves_one_audit_row_and_one_log_event_with_the_caller(
    sim: GraphSimulator, tokens_only: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    services = tokens_only
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    await services.ledger.advance(call_id, operation_id, OperationStatus.REQUESTED)
    actions = [
        ("recording_status", Role.READ, 200, "status"),
        ("list_recordings", Role.READ, 200, "list"),
        ("erase_recording", Role.ERASE, 204, "erase"),
        ("erase_call_recordings", Role.ERASE, 204, "erase_call"),
    ]
    for function, role, status, action in actions:
        rows_before, events_before = len(await audit_rows(services)), len(audit_events(caplog))
        bearer = token(sim, role)
        response = await call(function, bearer, call_id, operation_id)
        assert response.status_code == status, (function, response.get_body())
        rows = await audit_rows(services)
        assert len(rows) == rows_before + 1, function
        assert len(audit_events(caplog)) == events_before + 1, function
        row = max(rows, key=lambda r: r["RecordedAt"])
        assert row["Action"] == action
        assert row["CallerObjectId"] == CALLER_OID
        assert row["CallerAppId"] == CALLER_APPID
        assert row["CallerTenantId"] == TENANT_ID
        assert row["CallerVia"] == "token"
        assert row["Outcome"] == status
        assert row["Role"] == role.value
        assert "UpdatedAt" not in row  # the ledger's horizon sweep never takes it
        event = audit_events(caplog)[-1]
        assert event.caller_oid == CALLER_OID  # type: ignore[attr-defined]
        assert event.action == action  # type: ignore[attr-defined]
        for rendered in (json.dumps(row, default=str), event.getMessage()):
            assert bearer not in rendered
    status_row = next(r for r in await audit_rows(services) if r["Action"] == "status")
    assert status_row["ReadUrlIssued"] is False  # a requested operation has no recording yet

    # GET .../audit (the auditor's role) shows the recording's actions and the call's.
    auditor = token(sim, Role.AUDIT, object_id="33333333-3333-4333-8333-333333333333")
    response = await call("recording_audit", auditor, call_id, operation_id)
    assert response.status_code == 200
    body = json_body(response)
    assert [entry["action"] for entry in body["entries"]] == [a[3] for a in actions]
    assert body["entries"][0]["caller"] == {
        "via": "token",
        "objectId": CALLER_OID,
        "appId": CALLER_APPID,
        "tenantId": TENANT_ID,
    }
    assert body["truncated"] is False
    # Reading the audit is audited too.
    last = max(await audit_rows(services), key=lambda r: r["RecordedAt"])
    assert (last["Action"], last["CallerObjectId"]) == (
        "audit",
        "33333333-3333-4333-8333-333333333333",
    )


async def test_a_started_recording_is_audited_with_its_operation(
    sim: GraphSimulator, tokens_only: Services
) -> None:
    from shared.graph.models import AnswerRequest

    call_id = sim.place_call()
    await tokens_only.graph.answer(
        call_id, AnswerRequest(callback_uri="http://127.0.0.1:9/api/calls")
    )
    await sim.async_wait_for(lambda: sim.call(call_id).state == "established", within=5)
    response = await call("start_record_response", token(sim, Role.RECORD), call_id)
    assert response.status_code == 202, response.get_body()
    operation_id = json_body(response)["id"]
    (row,) = await audit_rows(tokens_only)
    assert (row["Action"], row["OperationId"], row["Outcome"]) == ("start", operation_id, 202)
    assert row["CallerObjectId"] == CALLER_OID


async def test_a_403_is_audited_and_a_401_is_not(
    sim: GraphSimulator, tokens_only: Services
) -> None:
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    await call("erase_recording", token(sim, Role.READ), call_id, operation_id)
    await call("erase_recording", "not-a-jwt", call_id, operation_id)
    await call("erase_recording", None, call_id, operation_id)
    (row,) = await audit_rows(tokens_only)
    assert (row["Action"], row["Outcome"], row["CallerObjectId"]) == ("erase", 403, CALLER_OID)


async def test_function_key_callers_are_audited_as_function_key(
    services: Services, storage: Any
) -> None:
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    assert services.settings.management_function_keys  # the suite's default
    response = await call("recording_status", None, call_id, operation_id)
    assert response.status_code == 404
    (row,) = await audit_rows(services)
    assert row["CallerVia"] == "function key"
    assert "CallerObjectId" not in row


async def test_audit_rows_outlive_the_ledger_horizon_and_go_after_their_own(
    storage: Any, configure: Callable[..., Services]
) -> None:
    from shared.audit import Action, AuditEntry
    from shared.auth.management import Caller

    services = configure(LEDGER_RETENTION_DAYS="7", AUDIT_RETENTION_DAYS="30")
    now = utc_now()
    for age in (10, 40):
        trail = AuditTrail(services.storage.table, clock=lambda age=age: now - timedelta(days=age))
        await trail.record(
            AuditEntry(Action.LIST, str(uuid.uuid4()), None, Caller.function_key(), "r", 200)
        )
    # The ledger's horizon sweep takes rows by UpdatedAt: audit rows have none.
    assert await services.ledger.remove_stale(now - timedelta(days=7), limit=100) == {}
    # The daily timer takes those past AUDIT_RETENTION_DAYS.
    timer = type("Timer", (), {"past_due": False})()
    await invoke("sweep_audit", timer)
    (kept,) = await audit_rows(services)
    assert kept["RecordedAt"] > now - timedelta(days=11)


def test_the_audit_horizon_cannot_be_shorter_than_the_ledgers() -> None:
    values = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "BOT_APP_ID": "bot"}
    with pytest.raises(SettingsError, match="AUDIT_RETENTION_DAYS"):
        settings_from({**values, "LEDGER_RETENTION_DAYS": "7", "AUDIT_RETENTION_DAYS": "3"})
    assert settings_from(values).audit_retention_days == 90


# ---------------------------------------------------------------------------------- local host


@pytest.fixture
def host_env(app_env: dict[str, str], sim: GraphSimulator) -> dict[str, str]:
    from shared.settings import get_settings

    get_settings.cache_clear()
    return {**app_env, **sim.management_env()}


KEY = "management-test-key"


async def _through_host(env: dict[str, str], send: Callable[[httpx.AsyncClient], Any]) -> Any:
    """``send`` against the real app under the local host, its settings from ``env`` (no
    services put in place by a fixture: the app reads them as it does under ``func start``)."""
    from shared.settings import get_settings

    host = LocalFunctionsHost(
        "function_app",
        port=0,
        app_root=ROOT,
        env=env,
        keys=[KEY],
        local_settings=ROOT / "local.settings.example.json",
    )
    async with host:
        get_settings.cache_clear()
        async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as client:
            return await send(client)


async def test_a_function_key_is_refused_through_the_host_when_keys_are_off(
    sim: GraphSimulator, host_env: dict[str, str]
) -> None:
    path = f"/api/recordings/{uuid.uuid4()}/{uuid.uuid4()}"
    bearer = token(sim, Role.READ)

    async def send(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get(path, headers={"x-functions-key": KEY}),
            await client.get(path, params={"code": KEY}),
            await client.get(
                path, headers={"x-functions-key": KEY, "Authorization": f"Bearer {bearer}"}
            ),
        ]

    key_header, key_query, with_token = await _through_host(
        {**host_env, "MANAGEMENT_FUNCTION_KEYS": "false"}, send
    )
    for refused in (key_header, key_query):
        assert refused.status_code == 401
        assert refused.json()["failure"] == "FunctionKeysDisabled"
    assert with_token.status_code == 404  # the token decides: past the guard


async def test_a_function_key_opens_the_routes_through_the_host_when_keys_are_on(
    host_env: dict[str, str],
) -> None:
    path = f"/api/recordings/{uuid.uuid4()}/{uuid.uuid4()}"

    async def send(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get(path, headers={"x-functions-key": KEY}),
            await client.get(path, headers={"x-functions-key": "wrong"}),
            await client.get(path),
        ]

    right, wrong, none = await _through_host({**host_env, "MANAGEMENT_FUNCTION_KEYS": "true"}, send)
    assert right.status_code == 404
    assert (wrong.status_code, none.status_code) == (401, 401)  # the host's own key check


def test_routes_are_indexed_at_the_level_the_setting_names() -> None:
    from shared.auth.management import function_keys_at_indexing

    assert function_keys_at_indexing({"MANAGEMENT_FUNCTION_KEYS": "true"})
    assert function_keys_at_indexing({"MANAGEMENT_FUNCTION_KEYS": " True "})
    assert not function_keys_at_indexing({"MANAGEMENT_FUNCTION_KEYS": "false"})
    assert not function_keys_at_indexing({})


def test_the_simulator_cli_prints_a_token_with_the_chosen_roles(
    sim: GraphSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    import jwt

    from devtools.graphsim.cli import main

    assert (
        main(
            [
                "token",
                "--sim",
                sim.base_url,
                "--role",
                "Recordings.Read",
                "--role",
                "Recordings.Erase",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.strip()
    claims = jwt.decode(printed, options={"verify_signature": False})
    assert claims["roles"] == ["Recordings.Read", "Recordings.Erase"]
    assert claims["aud"] == sim.bot_app_id
    assert claims["iss"] == f"https://login.microsoftonline.com/{sim.tenant_id}/v2.0"


def test_the_example_settings_take_the_simulators_tokens_and_keys() -> None:
    from devtools.graphsim.cli import build_parser

    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    args = build_parser().parse_args(["serve"])
    assert example["MANAGEMENT_TENANT_ID"] == args.tenant_id
    assert example["MANAGEMENT_OPENID_CONFIGURATION_URL"] == (
        f"http://127.0.0.1:{args.port}/{args.tenant_id}/v2.0/.well-known/openid-configuration"
    )
    # Local development opts in to keys, explicitly; the code's default (and Azure's) is off.
    assert example["MANAGEMENT_FUNCTION_KEYS"] == "true"
    assert (
        settings_from({"AzureWebJobsStorage": "x", "BOT_APP_ID": "b"}).management_function_keys
        is False
    )
