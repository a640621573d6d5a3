"""The inbound token validator against the simulator's real OpenID configuration and JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devtools.azurite import free_port
from devtools.graphsim import GraphSimulator
from devtools.graphsim.keys import SigningKey, notification_claims
from devtools.loopback import LoopbackServer
from shared.auth.errors import (
    BadSignature,
    DisallowedAlgorithm,
    InboundAuthError,
    SigningKeysUnavailable,
    TenantMissing,
    TenantNotAllowed,
    TokenExpired,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    UnknownSigningKey,
    WrongAudience,
    WrongIssuer,
)
from shared.auth.inbound import (
    CONFIGURATION_MAX_AGE_SECONDS,
    LEEWAY_SECONDS,
    UNKNOWN_KID_REFETCH_INTERVAL_SECONDS,
    InboundTokenValidator,
)
from shared.settings_model import DEFAULT_ALLOWED_ISSUERS
from tests.conftest import BOT_APP_ID
from tests.support.clock import Clock

OTHER_TENANT = "11111111-2222-3333-4444-555555555555"


class CountingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, with the paths fetched written down."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self._inner.handle_async_request(request)

    async def close(self) -> None:
        await self._inner.aclose()

    def count(self, suffix: str) -> int:
        return sum(1 for path in self.paths if path.endswith(suffix))


@pytest.fixture
def clock() -> Clock:
    # The simulator signs tokens with the real time: start there.
    return Clock(datetime.now(UTC))


@pytest.fixture
async def transport() -> Any:
    counting = CountingTransport()
    yield counting
    await counting.close()


def make_validator(
    sim: GraphSimulator,
    clock: Clock,
    transport: CountingTransport | None = None,
    *,
    tenants: tuple[str, ...] = (),
    url: str | None = None,
) -> InboundTokenValidator:
    return InboundTokenValidator(
        openid_configuration_url=url or sim.openid_configuration_url,
        audience=BOT_APP_ID,
        allowed_issuers=DEFAULT_ALLOWED_ISSUERS,
        allowed_tenants=tenants,
        clock=clock.timestamp,
        transport=transport,
    )


def hs256_signed_with_public_key(sim: GraphSimulator) -> str:
    """The key-confusion attack: HMAC "signed" with the RSA public key a verifier would hold.

    Built by hand: PyJWT (rightly) refuses to HMAC with a PEM key, so ``sim.sign_token`` can't.
    """
    pem = sim.keys.current.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = {"alg": "HS256", "typ": "JWT", "kid": sim.current_kid}
    claims = notification_claims(BOT_APP_ID, sim.tenant_id)
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


def bad_tokens(sim: GraphSimulator) -> dict[str, tuple[str, type[InboundAuthError]]]:
    now = int(time.time())
    stranger = SigningKey.generate()
    return {
        "malformed": ("not.a-jwt", TokenMalformed),
        "garbage": ("abc", TokenMalformed),
        "wrong signature": (
            sim.sign_token(key=stranger, headers={"kid": sim.current_kid}),
            BadSignature,
        ),
        "alg none": (sim.sign_token(alg="none"), DisallowedAlgorithm),
        "HS256 with public key": (hs256_signed_with_public_key(sim), DisallowedAlgorithm),
        "expired": (
            sim.sign_token({"exp": now - LEEWAY_SECONDS - 60, "nbf": now - 7200}),
            TokenExpired,
        ),
        "not yet valid": (sim.sign_token({"nbf": now + LEEWAY_SECONDS + 60}), TokenNotYetValid),
        "issued in the future": (
            sim.sign_token({"iat": now + LEEWAY_SECONDS + 60}),
            TokenNotYetValid,
        ),
        "wrong audience": (sim.sign_token({"aud": "someone-else"}), WrongAudience),
        "no audience": (sim.sign_token({"aud": None}), WrongAudience),
        "wrong issuer": (sim.sign_token({"iss": "https://evil.example"}), WrongIssuer),
        "no tid": (sim.sign_token({"tid": None}), TenantMissing),
        "no exp": (sim.sign_token({"exp": None}), TokenMalformed),
        "unknown key": (sim.sign_token(key=stranger), UnknownSigningKey),
    }


BAD_TOKEN_CASES = [
    "malformed",
    "garbage",
    "wrong signature",
    "alg none",
    "HS256 with public key",
    "expired",
    "not yet valid",
    "issued in the future",
    "wrong audience",
    "no audience",
    "wrong issuer",
    "no tid",
    "no exp",
    "unknown key",
]


async def test_valid_token_gives_the_tenant(sim: GraphSimulator, clock: Clock) -> None:
    identity = await make_validator(sim, clock).validate_authorization(f"Bearer {sim.sign_token()}")
    assert identity.tenant_id == sim.tenant_id
    assert identity.issuer == "https://api.botframework.com"
    assert identity.claims["aud"] == BOT_APP_ID


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz"])
async def test_missing_bearer_token(sim: GraphSimulator, clock: Clock, header: str | None) -> None:
    with pytest.raises(TokenMissing):
        await make_validator(sim, clock).validate_authorization(header)


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
async def test_each_bad_token_has_its_own_error(
    sim: GraphSimulator, clock: Clock, case: str
) -> None:
    token, expected = bad_tokens(sim)[case]
    with pytest.raises(InboundAuthError) as caught:
        await make_validator(sim, clock).validate_authorization(f"Bearer {token}")
    assert type(caught.value) is expected
    problem = caught.value.to_problem()
    assert problem.status == 401
    assert problem.body()["failure"] == expected.__name__
    assert token not in json.dumps(problem.body())
    assert token not in str(caught.value)


async def test_skew_of_five_minutes_is_tolerated(sim: GraphSimulator, clock: Clock) -> None:
    now = int(clock.timestamp())
    validator = make_validator(sim, clock)
    almost_expired = sim.sign_token({"exp": now - LEEWAY_SECONDS + 30, "nbf": now - 3600})
    almost_valid = sim.sign_token(
        {"nbf": now + LEEWAY_SECONDS - 30, "iat": now + LEEWAY_SECONDS - 30}
    )
    assert (await validator.validate(almost_expired)).tenant_id == sim.tenant_id
    assert (await validator.validate(almost_valid)).tenant_id == sim.tenant_id


async def test_expiry_follows_the_injected_clock(sim: GraphSimulator, clock: Clock) -> None:
    validator = make_validator(sim, clock)
    token = sim.sign_token({"exp": int(clock.timestamp()) + 600})
    await validator.validate(token)
    clock.advance(600 + LEEWAY_SECONDS)
    with pytest.raises(TokenExpired):
        await validator.validate(token)


async def test_tenant_allow_list(sim: GraphSimulator, clock: Clock) -> None:
    token = sim.sign_token()
    with pytest.raises(TenantNotAllowed):
        await make_validator(sim, clock, tenants=(OTHER_TENANT,)).validate(token)
    allowed = make_validator(sim, clock, tenants=(OTHER_TENANT, sim.tenant_id.upper()))
    assert (await allowed.validate(token)).tenant_id == sim.tenant_id


async def test_rotated_key_is_accepted_without_restart(
    clock: Clock, transport: CountingTransport
) -> None:
    with GraphSimulator(BOT_APP_ID) as sim:
        validator = make_validator(sim, clock, transport)
        await validator.validate(sim.sign_token())
        sim.rotate_key(keep_old=False)
        rotated = sim.sign_token()
        identity = await validator.validate(rotated)
        assert identity.tenant_id == sim.tenant_id
        assert transport.count("/keys") == 2
        assert transport.count("/OpenIdConfiguration") == 1


async def test_unknown_kid_refetches_at_most_once_a_minute(
    sim: GraphSimulator, clock: Clock, transport: CountingTransport
) -> None:
    validator = make_validator(sim, clock, transport)
    await validator.validate(sim.sign_token())
    assert transport.count("/keys") == 1
    for _ in range(3):
        with pytest.raises(UnknownSigningKey):
            await validator.validate(sim.sign_token(key=SigningKey.generate()))
    assert transport.count("/keys") == 2
    clock.advance(UNKNOWN_KID_REFETCH_INTERVAL_SECONDS + 1)
    with pytest.raises(UnknownSigningKey):
        await validator.validate(sim.sign_token(key=SigningKey.generate()))
    assert transport.count("/keys") == 3
    # Known keys never wait for the limit.
    await validator.validate(sim.sign_token())
    assert transport.count("/keys") == 3


async def test_configuration_is_refreshed_every_few_hours(
    sim: GraphSimulator, clock: Clock, transport: CountingTransport
) -> None:
    validator = make_validator(sim, clock, transport)
    await validator.validate(sim.sign_token())
    clock.advance(CONFIGURATION_MAX_AGE_SECONDS - 60)
    await validator.validate(sim.sign_token({"exp": int(clock.timestamp()) + 3600}))
    assert transport.count("/OpenIdConfiguration") == 1
    clock.advance(120)
    await validator.validate(sim.sign_token({"exp": int(clock.timestamp()) + 3600}))
    assert transport.count("/OpenIdConfiguration") == 2
    assert transport.count("/keys") == 2


async def test_concurrent_first_requests_share_one_fetch(
    sim: GraphSimulator, clock: Clock, transport: CountingTransport
) -> None:
    validator = make_validator(sim, clock, transport)
    token = sim.sign_token()
    identities = await asyncio.gather(*(validator.validate(token) for _ in range(10)))
    assert {identity.tenant_id for identity in identities} == {sim.tenant_id}
    assert transport.count("/OpenIdConfiguration") == 1
    assert transport.count("/keys") == 1


async def test_unreachable_openid_endpoint_is_503(clock: Clock) -> None:
    validator = InboundTokenValidator(
        openid_configuration_url=f"http://127.0.0.1:{free_port()}/v1/.well-known/OpenIdConfiguration",
        audience=BOT_APP_ID,
        allowed_issuers=DEFAULT_ALLOWED_ISSUERS,
        clock=clock.timestamp,
    )
    with GraphSimulator(BOT_APP_ID) as sim:
        token = sim.sign_token()
    with pytest.raises(SigningKeysUnavailable) as caught:
        await validator.validate(token)
    problem = caught.value.to_problem()
    assert problem.status == 503
    assert "Retry-After" in problem.headers
    # Right after a failure the validator answers at once instead of waiting on the dead
    # endpoint again; a few seconds later it tries again.
    with pytest.raises(SigningKeysUnavailable):
        await validator.validate(token)


async def test_cached_keys_survive_an_outage_of_the_endpoint(
    clock: Clock, transport: CountingTransport
) -> None:
    with GraphSimulator(BOT_APP_ID) as sim:
        validator = make_validator(sim, clock, transport)
        token = sim.sign_token({"exp": int(clock.timestamp()) + 24 * 3600})
        await validator.validate(token)
    clock.advance(CONFIGURATION_MAX_AGE_SECONDS + 60)
    assert (await validator.validate(token)).tenant_id == sim.tenant_id
    assert transport.count("/OpenIdConfiguration") == 2  # it tried, failed, kept the keys


def _identity_server(documents: dict[str, Any], status: int) -> Starlette:
    """An identity endpoint serving whatever the test puts in ``documents``."""

    def reply(document: Any, code: int = 200) -> Response:
        if isinstance(document, str):
            return Response(document, status_code=code, media_type="application/json")
        return JSONResponse(document, status_code=code)

    async def openid(request: Request) -> Response:
        return reply(documents["config"], status)

    async def keys(request: Request) -> Response:
        return reply(documents["jwks"])

    return Starlette(
        routes=[
            Route("/v1/.well-known/OpenIdConfiguration", openid),
            Route("/v1/keys", keys),
        ]
    )


@pytest.mark.parametrize(
    ("config", "jwks", "status"),
    [
        ({"jwks_uri": "{base}/v1/keys"}, {"keys": []}, 200),
        ({"jwks_uri": "{base}/v1/keys"}, {"keys": [{"kty": "EC", "kid": "x"}]}, 200),
        ({"jwks_uri": "{base}/v1/keys"}, "not json", 200),
        ({"issuer": "no jwks_uri"}, {"keys": []}, 200),
        ({"jwks_uri": "file:///etc/passwd"}, {"keys": []}, 200),
        ("not json", {"keys": []}, 200),
        ({"error": "down"}, {"keys": []}, 500),
    ],
    ids=["no keys", "no RSA key", "JWKS not json", "no jwks_uri", "not http", "not json", "500"],
)
async def test_unusable_identity_documents_are_503(
    sim: GraphSimulator, clock: Clock, config: Any, jwks: Any, status: int
) -> None:
    documents: dict[str, Any] = {"jwks": jwks}
    with LoopbackServer(_identity_server(documents, status)) as server:
        if isinstance(config, dict) and "jwks_uri" in config:
            config = {"jwks_uri": config["jwks_uri"].format(base=server.base_url)}
        documents["config"] = config
        validator = make_validator(
            sim, clock, url=f"{server.base_url}/v1/.well-known/OpenIdConfiguration"
        )
        with pytest.raises(SigningKeysUnavailable):
            await validator.validate(sim.sign_token())
