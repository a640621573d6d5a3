"""The federated credential path: the managed identity's exchange token as a client assertion,
traded at an Entra-style token endpoint for a Graph token whose appid is the bot's.

azure-identity is used as the app uses it, unpatched: ManagedIdentityCredential for
api://AzureADTokenExchange, then ClientAssertionCredential against the simulator's https
authority (azure-identity refuses any other scheme).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential, ManagedIdentityCredential

from devtools.graphsim import GraphSimulator

from .conftest import BOT_APP_ID

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mi_env(sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sim.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)


def _claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _assertion() -> str:
    return ManagedIdentityCredential().get_token(EXCHANGE_SCOPE).token


@pytest.mark.usefixtures("mi_env")
def test_the_managed_identity_issues_an_exchange_token(sim: GraphSimulator) -> None:
    claims = _claims(_assertion())
    assert claims["aud"] == "api://AzureADTokenExchange"
    assert claims["iss"] == f"https://login.microsoftonline.com/{sim.tenant_id}/v2.0"
    assert claims["sub"] == sim.graph_tokens.principal_id
    # The calls API does not take it as a Graph token.
    response = httpx.get(
        f"{sim.graph_base_url}/communications/calls/x",
        headers={"Authorization": f"Bearer {_assertion()}"},
    )
    assert response.status_code == 401


@pytest.mark.usefixtures("mi_env")
def test_client_assertion_credential_gets_a_graph_token_for_the_bot(sim: GraphSimulator) -> None:
    assert sim.authority_host is not None
    credential = ClientAssertionCredential(
        sim.tenant_id,
        BOT_APP_ID,
        _assertion,
        authority=sim.authority_host,
        connection_verify=sim.tls_ca_file,
    )
    token = credential.get_token(GRAPH_SCOPE).token
    claims = _claims(token)
    assert claims["appid"] == BOT_APP_ID
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["tid"] == sim.tenant_id
    assert "Calls.AccessMedia.All" in claims["roles"]  # type: ignore[operator]
    response = httpx.get(
        f"{sim.graph_base_url}/communications/calls/00000000-0000-0000-0000-000000000000",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 404
    assert sim.requests[-1].token_app_id == BOT_APP_ID


@pytest.mark.usefixtures("mi_env")
async def test_the_async_credentials_work_with_azure_authority_host(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the app's federated mode builds: async MI credential, async ClientAssertionCredential
    # with no authority argument (AZURE_AUTHORITY_HOST is honoured).
    from azure.identity.aio import ClientAssertionCredential as AsyncAssertion
    from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentity

    env = sim.federated_env()
    for name in ("AZURE_AUTHORITY_HOST", "GRAPH_TENANT_ID", "GRAPH_APP_CLIENT_ID"):
        monkeypatch.setenv(name, env[name])
    async with AsyncManagedIdentity() as managed_identity:
        assertion = (await managed_identity.get_token(EXCHANGE_SCOPE)).token
    async with AsyncAssertion(
        env["GRAPH_TENANT_ID"],
        env["GRAPH_APP_CLIENT_ID"],
        lambda: assertion,
        connection_verify=sim.tls_ca_file,
    ) as credential:
        token = (await credential.get_token(GRAPH_SCOPE)).token
    assert _claims(token)["appid"] == BOT_APP_ID


def test_ssl_cert_file_alone_makes_the_app_trust_the_authority(sim: GraphSimulator) -> None:
    # A fresh process configured only by environment (as func start configures the worker):
    # federated_env() plus SSL_CERT_FILE, no code change in how the credential is built.
    assert sim.tls_ca_file is not None
    script = textwrap.dedent(
        """
        import asyncio, json, os
        from azure.identity.aio import ClientAssertionCredential, ManagedIdentityCredential

        async def main():
            async with ManagedIdentityCredential() as mi:
                assertion = (await mi.get_token("api://AzureADTokenExchange/.default")).token
            async with ClientAssertionCredential(
                os.environ["GRAPH_TENANT_ID"], os.environ["GRAPH_APP_CLIENT_ID"], lambda: assertion
            ) as credential:
                token = await credential.get_token("https://graph.microsoft.com/.default")
            print(json.dumps({"token": token.token}))

        asyncio.run(main())
        """
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IDENTITY_", "AZURE_", "MSI_", "SSL_CERT"))
    }
    env.update(sim.federated_env())
    env["SSL_CERT_FILE"] = sim.tls_ca_file
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _claims(json.loads(result.stdout)["token"])["appid"] == BOT_APP_ID


def _token_request(sim: GraphSimulator, **form: str) -> httpx.Response:
    body = {
        "client_id": BOT_APP_ID,
        "scope": GRAPH_SCOPE,
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        **form,
    }
    tenant = body.pop("tenant", sim.tenant_id)
    assert sim.tls_ca_file is not None
    verify = ssl.create_default_context(cafile=sim.tls_ca_file)
    return httpx.post(f"{sim.authority_host}/{tenant}/oauth2/v2.0/token", data=body, verify=verify)


@pytest.mark.usefixtures("mi_env")
def test_the_token_endpoint_refuses_what_entra_refuses(sim: GraphSimulator) -> None:
    assertion = _assertion()
    ok = _token_request(sim, client_assertion=assertion)
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "Bearer"
    assert 0 < ok.json()["expires_in"] <= 3600

    cases = [
        ({"client_assertion": sim.graph_token()}, 401, "invalid_client", 50027),
        ({"client_assertion": sim.sign_token()}, 401, "invalid_client", 50027),
        ({"client_assertion": assertion, "client_id": "someone"}, 400, "unauthorized_client", 700016),
        ({"client_assertion": assertion, "scope": "https://vault.azure.net/.default"}, 400, "invalid_scope", 70011),
        ({"client_assertion": assertion, "grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({"client_assertion": assertion, "tenant": "other"}, 400, "invalid_request", 90002),
        ({"client_assertion": ""}, 400, "invalid_request", 50027),
    ]  # fmt: skip
    for form, status, error, code in cases:
        response = _token_request(sim, **form)
        assert response.status_code == status, (form, response.text)
        body = response.json()
        assert body["error"] == error
        assert body["error_codes"] == [code]
        assert body["error_description"].startswith(f"AADSTS{code}: ")
        assert all(body[name] for name in ("trace_id", "correlation_id", "timestamp"))


def test_an_assertion_from_another_subject_is_refused() -> None:
    # Two simulators: the second's managed identity is not the federated credential's subject.
    with (
        GraphSimulator(BOT_APP_ID, time_scale=0.01) as trusted,
        GraphSimulator(
            BOT_APP_ID,
            time_scale=0.01,
            tls_port=None,
            managed_identity_principal_id="11111111-1111-1111-1111-111111111111",
        ) as other,
    ):
        foreign = other.graph_tokens.issue_exchange_token()[0]
        with pytest.raises(ClientAuthenticationError, match="AADSTS50027"):
            ClientAssertionCredential(
                trusted.tenant_id,
                BOT_APP_ID,
                lambda: foreign,
                authority=trusted.authority_host,
                connection_verify=trusted.tls_ca_file,
            ).get_token(GRAPH_SCOPE)
        # Same signing key, wrong subject: Entra's "no matching federated identity record".
        trusted_subject = trusted.graph_tokens.principal_id
        trusted.graph_tokens.principal_id = "22222222-2222-2222-2222-222222222222"
        other_subject = trusted.graph_tokens.issue_exchange_token()[0]
        trusted.graph_tokens.principal_id = trusted_subject
        with pytest.raises(ClientAuthenticationError, match="AADSTS700213"):
            ClientAssertionCredential(
                trusted.tenant_id,
                BOT_APP_ID,
                lambda: other_subject,
                authority=trusted.authority_host,
                connection_verify=trusted.tls_ca_file,
            ).get_token(GRAPH_SCOPE)


@pytest.mark.usefixtures("mi_env")
def test_require_bot_app_token_takes_only_the_federated_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with GraphSimulator(BOT_APP_ID, time_scale=0.01, require_bot_app_token=True) as strict:
        for name, value in strict.managed_identity_env().items():
            monkeypatch.setenv(name, value)
        url = f"{strict.graph_base_url}/communications/calls/x"
        own = httpx.get(url, headers={"Authorization": f"Bearer {strict.graph_token()}"})
        assert own.status_code == 403
        assert own.json()["error"]["code"] == "Forbidden"
        federated = ClientAssertionCredential(
            strict.tenant_id,
            BOT_APP_ID,
            lambda: ManagedIdentityCredential().get_token(EXCHANGE_SCOPE).token,
            authority=strict.authority_host,
            connection_verify=strict.tls_ca_file,
        ).get_token(GRAPH_SCOPE)
        response = httpx.get(url, headers={"Authorization": f"Bearer {federated.token}"})
        assert response.status_code == 404
