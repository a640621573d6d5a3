"""POST /api/messages: the Bot Connector's activities, their Bot Framework tokens, the reply.

The simulator plays the Bot Connector: it signs activities with its own published keys
(endorsed for msteams), serves as the activities' serviceUrl, and keeps every reply with whether
its bearer token was the bot's valid one. Forged tokens are refused with a 401 naming the check,
and nothing is sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization

from blueprints.messages import USAGE
from devtools.graphsim import GraphSimulator, SigningKey
from devtools.localhost import LocalFunctionsHost
from tests.support.functions import http_request, invoke, json_body

ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from shared.services import Services


@pytest.fixture(scope="module")
def sim(start_simulator: Callable[..., GraphSimulator]) -> GraphSimulator:
    # Like Azure: the bot's tokens come from its app registration (the federated path).
    return start_simulator(require_bot_app_token=True)


@pytest.fixture
async def chat(
    sim: GraphSimulator, configure: Callable[..., Services], monkeypatch: pytest.MonkeyPatch
) -> GraphSimulator:
    """The app configured against the simulator's Bot Connector and its federated credential."""
    federated = sim.federated_env()
    for name, value in federated.items():
        monkeypatch.setenv(name, value)
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    assert sim.tls_ca_file is not None
    configure(
        **{name: value for name, value in federated.items() if not name.startswith("IDENTITY_")},
        GRAPH_AUTHORITY_CA_FILE=sim.tls_ca_file,
        BOT_FRAMEWORK_OPENID_CONFIGURATION_URL=sim.bot_connector.openid_configuration_url,
    )
    return sim


async def post(
    sim: GraphSimulator, activity: dict[str, Any], token: str | None
) -> tuple[int, dict[str, Any] | None]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = await invoke(
        "messages", http_request("POST", "/api/messages", body=activity, headers=headers)
    )
    body = json_body(response) if response.get_body() else None
    return response.status_code, body


def _public_pem(key: SigningKey) -> bytes:
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """Signed by hand: PyJWT itself refuses an asymmetric key as an HMAC secret."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


FORGERIES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # name: (claim overrides, sign options, the failure named)
    "wrong issuer": ({"iss": "https://sts.windows.net/evil/"}, {}, "WrongIssuer"),
    "wrong audience": ({"aud": "11111111-2222-3333-4444-555555555555"}, {}, "WrongAudience"),
    "expired": (
        {
            "iat": int(time.time()) - 7200,
            "nbf": int(time.time()) - 7200,
            "exp": int(time.time()) - 3600,
        },
        {},
        "TokenExpired",
    ),
    "no serviceurl": ({"serviceurl": None}, {}, "ServiceUrlMismatch"),
    "another serviceurl": ({"serviceurl": "https://smba.evil.example/"}, {}, "ServiceUrlMismatch"),
}


@pytest.mark.usefixtures("storage")
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_a_forged_token_is_refused_naming_the_check(
    chat: GraphSimulator, forgery: str
) -> None:
    overrides, options, failure = FORGERIES[forgery]
    before = len(chat.bot_connector.replies)
    activity = chat.bot_connector.activity()
    status, body = await post(chat, activity, chat.bot_connector.sign(overrides, **options))
    assert status == 401
    assert body is not None
    assert body["failure"] == failure
    assert len(chat.bot_connector.replies) == before  # nothing sent


@pytest.mark.usefixtures("storage")
async def test_a_key_that_is_not_published_is_refused(chat: GraphSimulator) -> None:
    token = chat.bot_connector.sign(key=SigningKey.generate())
    status, body = await post(chat, chat.bot_connector.activity(), token)
    assert (status, body and body["failure"]) == (401, "UnknownSigningKey")


@pytest.mark.usefixtures("storage")
async def test_the_calling_platforms_keys_do_not_sign_chat_activities(chat: GraphSimulator) -> None:
    # Same issuer and audience, but a key of the Graph calling JWKS, not Bot Framework's.
    token = chat.bot_connector.sign(key=chat.keys.current)
    status, body = await post(chat, chat.bot_connector.activity(), token)
    assert (status, body and body["failure"]) == (401, "UnknownSigningKey")


@pytest.mark.usefixtures("storage")
async def test_alg_confusion_with_the_public_key_as_hmac_secret_is_refused(
    chat: GraphSimulator,
) -> None:
    # HS256 "signed" with the published RSA public key: the classic confusion attack.
    key = chat.bot_connector.keys.current
    token = _hs256(chat.bot_connector.claims(), _public_pem(key), kid=key.kid)
    status, body = await post(chat, chat.bot_connector.activity(), token)
    assert (status, body and body["failure"]) == (401, "DisallowedAlgorithm")


@pytest.mark.usefixtures("storage")
async def test_a_key_not_endorsed_for_the_channel_is_refused(chat: GraphSimulator) -> None:
    activity = chat.bot_connector.activity(channel_id="slack")
    status, body = await post(chat, activity, chat.bot_connector.sign())
    assert (status, body and body["failure"]) == (401, "ChannelNotEndorsed")


@pytest.mark.usefixtures("storage")
async def test_no_token_is_refused_before_the_body_is_read(chat: GraphSimulator) -> None:
    response = await invoke(
        "messages", http_request("POST", "/api/messages", body=b"not json at all")
    )
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert json_body(response)["failure"] == "TokenMissing"


@pytest.mark.usefixtures("storage")
async def test_a_message_is_answered_with_how_to_use_the_bot(chat: GraphSimulator) -> None:
    activity = chat.bot_connector.activity(text="hi")
    status, _ = await post(chat, activity, chat.bot_connector.sign())
    assert status == 200
    reply = next(r for r in chat.bot_connector.replies if r.activity_id == activity["id"])
    assert reply.token_problem is None
    assert reply.token_app_id == chat.bot_app_id  # the bot's own app registration
    assert reply.conversation_id == activity["conversation"]["id"]
    assert reply.body["text"] == USAGE
    assert reply.body["replyToId"] == activity["id"]
    assert reply.body["recipient"] == activity["from"]


@pytest.mark.usefixtures("storage")
@pytest.mark.parametrize("kind", ["conversationUpdate", "typing", "installationUpdate"])
async def test_other_activities_are_acknowledged_and_nothing_is_sent(
    chat: GraphSimulator, kind: str
) -> None:
    before = len(chat.bot_connector.replies)
    status, body = await post(chat, chat.bot_connector.activity(kind), chat.bot_connector.sign())
    assert (status, body) == (200, None)
    assert len(chat.bot_connector.replies) == before


@pytest.mark.usefixtures("storage")
async def test_a_loopback_service_url_is_refused_without_the_dev_setting(
    chat: GraphSimulator, configure: Callable[..., Services]
) -> None:
    configure(ALLOW_INSECURE_RECORDING_URLS="false")
    before = len(chat.bot_connector.replies)
    status, body = await post(chat, chat.bot_connector.activity(), chat.bot_connector.sign())
    assert status == 400
    assert body is not None
    assert "serviceUrl" in body["detail"]
    assert len(chat.bot_connector.replies) == before


@pytest.mark.usefixtures("storage")
async def test_the_simulator_posts_a_message_and_gets_the_reply_over_http(
    chat: GraphSimulator, app_env: dict[str, str]
) -> None:
    """End to end: the Bot Connector's POST over HTTP to the real function app, its reply back."""
    host = LocalFunctionsHost(
        "function_app",
        port=0,
        app_root=ROOT,
        # The timer must not fire during the test: once a year.
        env={**app_env, "CLEANUP_SCHEDULE": "0 0 0 1 1 *"},
        load_local_settings=False,
    )
    async with host:
        activity = chat.bot_connector.activity(text="what do I do?")
        response = await asyncio.to_thread(
            chat.bot_connector.post_activity, f"{host.base_url}/api/messages", activity
        )
        assert response.status_code == 200
        forged = await asyncio.to_thread(
            chat.bot_connector.post_activity,
            f"{host.base_url}/api/messages",
            chat.bot_connector.activity(),
            token=chat.bot_connector.sign({"aud": "someone-else"}),
        )
    assert forged.status_code == 401
    assert forged.headers["content-type"].startswith("application/problem+json")
    replies = [r for r in chat.bot_connector.replies if r.activity_id == activity["id"]]
    assert len(replies) == 1
    assert replies[0].token_problem is None
    assert replies[0].body["text"] == USAGE
