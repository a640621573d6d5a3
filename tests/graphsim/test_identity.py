"""Identity: OpenID configuration, JWKS, signed notifications and the managed-identity endpoint."""

from __future__ import annotations

import httpx
import jwt
import pytest
from azure.identity import ManagedIdentityCredential

from devtools.graphsim import NOTIFICATION_ISSUER, GraphSimulator

from .conftest import BOT_APP_ID, Bot


def _jwks_client(sim: GraphSimulator) -> jwt.PyJWKClient:
    config = httpx.get(sim.openid_configuration_url, timeout=5).json()
    assert config["issuer"] == NOTIFICATION_ISSUER
    assert config["jwks_uri"] == sim.jwks_url
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    return jwt.PyJWKClient(config["jwks_uri"], cache_keys=False)


def _decode(sim: GraphSimulator, token: str) -> dict[str, object]:
    key = _jwks_client(sim).get_signing_key_from_jwt(token)
    return jwt.decode(
        token, key.key, algorithms=["RS256"], audience=BOT_APP_ID, issuer=NOTIFICATION_ISSUER
    )


def test_notification_jwt_verifies_against_served_jwks(sim: GraphSimulator, bot: Bot) -> None:
    sim.place_call("max-duration", callback_url=bot.url)
    bot.wait_for(lambda n: n["changeType"] == "created")
    received = bot.received[0]
    assert received.headers["user-agent"] == "Microsoft-Skype/3.0,(Calling/1.0)"
    assert received.headers["content-type"] == "application/json"
    scheme, token = received.headers["authorization"].split(" ", 1)
    assert scheme == "Bearer"
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == sim.current_kid
    claims = _decode(sim, token)
    assert claims["tid"] == sim.tenant_id
    assert int(claims["nbf"]) <= int(claims["iat"]) < int(claims["exp"])  # type: ignore[call-overload]


def test_rotated_key_is_served_and_used(sim: GraphSimulator, bot: Bot) -> None:
    old_kid = sim.current_kid
    new_kid = sim.rotate_key(keep_old=True)
    kids = [k["kid"] for k in httpx.get(sim.jwks_url).json()["keys"]]
    assert kids == [new_kid, old_kid]
    sim.place_call("max-duration", callback_url=bot.url)
    bot.wait_for(lambda n: n["changeType"] == "created")
    token = bot.received[0].headers["authorization"].split(" ", 1)[1]
    assert jwt.get_unverified_header(token)["kid"] == new_kid
    assert _decode(sim, token)["aud"] == BOT_APP_ID

    sim.rotate_key(keep_old=False)
    assert [k["kid"] for k in httpx.get(sim.jwks_url).json()["keys"]] == [sim.current_kid]
    with pytest.raises(jwt.PyJWKClientError):
        _jwks_client(sim).get_signing_key_from_jwt(token)


def test_sign_token_crafts_bad_tokens(sim: GraphSimulator) -> None:
    expired = sim.sign_token({"exp": 1_000_000, "iat": 999_000, "nbf": 999_000})
    with pytest.raises(jwt.ExpiredSignatureError):
        _decode(sim, expired)
    wrong_aud = sim.sign_token({"aud": "someone-else"})
    with pytest.raises(jwt.InvalidAudienceError):
        _decode(sim, wrong_aud)
    no_tid = sim.sign_token({"tid": None})
    assert "tid" not in _decode(sim, no_tid)
    hs256 = sim.sign_token(alg="HS256", hs_secret=b"g" * 32)
    assert jwt.get_unverified_header(hs256)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidTokenError):
        _decode(sim, hs256)


def test_managed_identity_credential_gets_a_graph_token(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sim.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    credential = ManagedIdentityCredential()
    token = credential.get_token("https://graph.microsoft.com/.default")
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["tid"] == sim.tenant_id
    assert "Calls.AccessMedia.All" in claims["roles"]
    assert jwt.get_unverified_header(token.token)["alg"] == "RS256"
    # The calls API accepts the token it issued.
    response = httpx.get(
        f"{sim.graph_base_url}/communications/calls/00000000-0000-0000-0000-000000000000",
        headers={"Authorization": f"Bearer {token.token}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ItemNotFound"


def test_managed_identity_endpoint_checks_its_secret_and_resource(sim: GraphSimulator) -> None:
    params = {"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"}
    wrong = httpx.get(sim.identity_endpoint, params=params, headers={"X-IDENTITY-HEADER": "nope"})
    assert wrong.status_code == 401
    other = httpx.get(
        sim.identity_endpoint,
        params={**params, "resource": "https://vault.azure.net"},
        headers={"X-IDENTITY-HEADER": sim.identity_header},
    )
    assert other.status_code == 400
    ok = httpx.get(
        sim.identity_endpoint, params=params, headers={"X-IDENTITY-HEADER": sim.identity_header}
    )
    assert ok.status_code == 200
    body = ok.json()
    assert body["token_type"] == "Bearer"
    assert body["resource"] == "https://graph.microsoft.com"
    assert int(body["expires_on"]) > 0
