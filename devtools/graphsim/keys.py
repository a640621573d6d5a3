"""Signing keys and tokens: the notification key ring (rotatable) and the Graph token issuer.

Two separate key sets on purpose: notifications are signed with keys published in the
OpenID/JWKS documents and tests rotate them; Graph access tokens come from a different issuer
(Entra ID) in reality, and azure-identity caches them, so rotating notification keys must not
invalidate the app's cached Graph token.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

NOTIFICATION_ISSUER = "https://api.botframework.com"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
# The audience of a managed identity's token used as a federated credential (Microsoft's
# "federatedIdentityCredential" resource: audiences should be api://AzureADTokenExchange).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
# Application Insights ingestion (Azure Monitor) with an Entra token.
MONITOR_AUDIENCE = "https://monitor.azure.com"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRAPH_TOKEN_ROLES = ("Calls.AccessMedia.All", "Calls.Initiate.All", "Calls.JoinGroupCall.All")


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair with its key id."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        # 2048 bits: what Microsoft publishes; generation takes ~50 ms.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid=secrets.token_urlsafe(16), private_key=key)

    def jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
        }


class KeyRing:
    """The notification signing keys: one current key, optionally older ones still published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = SigningKey.generate()
        self._published: list[SigningKey] = [self._current]

    @property
    def current(self) -> SigningKey:
        with self._lock:
            return self._current

    def rotate(self, *, keep_old: bool = True) -> SigningKey:
        """Make a new current key; the JWKS keeps the old one only when keep_old."""
        new = SigningKey.generate()
        with self._lock:
            self._published = [new, *self._published] if keep_old else [new]
            self._current = new
        return new

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.jwk() for k in self._published]}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        key: SigningKey | None = None,
        alg: str = "RS256",
        headers: dict[str, Any] | None = None,
        hs_secret: bytes | None = None,
    ) -> str:
        """Sign claims. Non-RS algorithms (HS256...) use hs_secret: tests craft forged tokens."""
        signer = key or self.current
        merged_headers: dict[str, Any] = {"kid": signer.kid, "typ": "JWT"}
        merged_headers.update(headers or {})
        if alg.startswith("HS"):
            return jwt.encode(
                claims,
                hs_secret or b"not-the-simulator-key-0123456789abcdef",
                algorithm=alg,
                headers=merged_headers,
            )
        if alg == "none":
            return jwt.encode(claims, "", algorithm="none", headers=merged_headers)
        return jwt.encode(claims, signer.private_key, algorithm=alg, headers=merged_headers)


def notification_claims(
    bot_app_id: str, tenant_id: str, lifetime_seconds: int = 3600
) -> dict[str, Any]:
    """Claims of a Teams calling platform notification token."""
    now = int(time.time())
    return {
        "iss": NOTIFICATION_ISSUER,
        "aud": bot_app_id,
        "tid": tenant_id,
        "iat": now,
        "nbf": now - 5,
        "exp": now + lifetime_seconds,
        "serviceurl": "https://api.aps.skype.com/",
        "jti": str(uuid.uuid4()),
    }


class GraphTokenIssuer:
    """Issues the Graph access tokens (managed identity or token endpoint) and checks them.

    ``client_id`` is the managed identity's: its own Graph tokens carry it as ``appid``. A token
    from the Entra-style token endpoint (federated path) carries the bot's app id instead.
    """

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        lifetime_seconds: int = 3600,
        *,
        principal_id: str | None = None,
        roles: tuple[str, ...] = GRAPH_TOKEN_ROLES,
    ) -> None:
        self.tenant_id = tenant_id
        # The app roles its tokens carry: a test leaves one out to see "permission not granted".
        self.roles = roles
        self.client_id = client_id
        # The managed identity's object (principal) id: a federated credential's subject.
        self.principal_id = principal_id or str(uuid.uuid5(uuid.NAMESPACE_URL, client_id))
        self.lifetime_seconds = lifetime_seconds
        self.issuer = f"https://sts.windows.net/{tenant_id}/"
        # What a federated identity credential names as issuer for a managed identity.
        self.exchange_issuer = f"https://login.microsoftonline.com/{tenant_id}/v2.0"
        self._key = SigningKey.generate()
        # The managed identity's exchange tokens are signed apart from Graph tokens: the token
        # endpoint must not take a Graph token as an assertion, nor Graph an assertion.
        self._exchange_key = SigningKey.generate()

    def issue(
        self, resource: str = GRAPH_AUDIENCE, *, app_id: str | None = None
    ) -> tuple[str, int]:
        """A Graph access token (v1 shape: ``appid``); by default the managed identity's own."""
        now = int(time.time())
        expires_on = now + self.lifetime_seconds
        app = app_id or self.client_id
        principal = (
            self.principal_id if app == self.client_id else str(uuid.uuid5(uuid.NAMESPACE_URL, app))
        )
        claims = {
            "aud": resource,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "appid": app,
            "appidacr": "2",
            "oid": principal,
            "sub": principal,
            "tid": self.tenant_id,
            "idtyp": "app",
            "roles": list(self.roles),
            "uti": secrets.token_urlsafe(12),
            "ver": "1.0",
        }
        token = jwt.encode(
            claims, self._key.private_key, algorithm="RS256", headers={"kid": self._key.kid}
        )
        return token, expires_on

    def issue_exchange_token(self) -> tuple[str, int]:
        """The managed identity's token for api://AzureADTokenExchange (a client assertion)."""
        now = int(time.time())
        expires_on = now + self.lifetime_seconds
        claims = {
            "aud": TOKEN_EXCHANGE_AUDIENCE,
            "iss": self.exchange_issuer,
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "sub": self.principal_id,
            "oid": self.principal_id,
            "azp": self.client_id,
            "tid": self.tenant_id,
            "idtyp": "app",
            "uti": secrets.token_urlsafe(12),
            "ver": "2.0",
        }
        token = jwt.encode(
            claims,
            self._exchange_key.private_key,
            algorithm="RS256",
            headers={"kid": self._exchange_key.kid, "typ": "JWT"},
        )
        return token, expires_on

    def verify_assertion(self, assertion: str) -> tuple[int, str] | None:
        """None if ``assertion`` is the managed identity's valid exchange token, else the
        AADSTS code and description Entra would give (the federated credential trusts issuer
        ``exchange_issuer``, subject ``principal_id`` and audience api://AzureADTokenExchange)."""
        public = self._exchange_key.private_key.public_key()
        try:
            claims = jwt.decode(
                assertion,
                public,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_iss": False, "require": ["exp", "nbf"]},
            )
        except jwt.ExpiredSignatureError:
            return 700024, "Client assertion is not within its valid time range."
        except jwt.InvalidTokenError:
            return 50027, "JWT token is invalid or malformed."
        if claims.get("iss") != self.exchange_issuer:
            return (
                700211,
                "No matching federated identity record found for presented assertion issuer.",
            )
        if claims.get("aud") != TOKEN_EXCHANGE_AUDIENCE:
            return (
                700212,
                "No matching federated identity record found for presented assertion audience.",
            )
        if claims.get("sub") != self.principal_id:
            return (
                700213,
                "No matching federated identity record found for presented assertion subject.",
            )
        return None

    def claims_of(
        self, token: str, *, audience: str = GRAPH_AUDIENCE
    ) -> tuple[str | None, dict[str, Any]]:
        """(None, claims) when the token is one we issued for ``audience`` (Graph by default)
        and still valid, else the reason and no claims."""
        try:
            claims = jwt.decode(
                token,
                self._key.private_key.public_key(),
                algorithms=["RS256"],
                audience=audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            return "Lifetime validation failed, the token is expired.", {}
        except jwt.InvalidTokenError:
            return "Access token validation failure. Invalid audience or signature.", {}
        return None, dict(claims)

    def audience_problem(self, token: str, audience: str) -> str | None:
        """None when ``token`` is one we issued for ``audience`` and still valid, else why."""
        try:
            jwt.decode(
                token,
                self._key.private_key.public_key(),
                algorithms=["RS256"],
                audience=audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            return "Lifetime validation failed, the token is expired."
        except jwt.InvalidTokenError:
            return "Access token validation failure. Invalid audience or signature."
        return None

    def verify(self, token: str) -> str | None:
        """Return None when the token is one we issued and still valid, else the reason."""
        return self.claims_of(token)[0]
