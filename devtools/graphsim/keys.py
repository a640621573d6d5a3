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
    """Issues the Graph access tokens handed out by the managed-identity endpoint and checks them."""

    def __init__(self, tenant_id: str, client_id: str, lifetime_seconds: int = 3600) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.lifetime_seconds = lifetime_seconds
        self.issuer = f"https://sts.windows.net/{tenant_id}/"
        self._key = SigningKey.generate()

    def issue(self, resource: str = GRAPH_AUDIENCE) -> tuple[str, int]:
        now = int(time.time())
        expires_on = now + self.lifetime_seconds
        claims = {
            "aud": resource,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "appid": self.client_id,
            "oid": self.client_id,
            "sub": self.client_id,
            "tid": self.tenant_id,
            "idtyp": "app",
            "roles": list(GRAPH_TOKEN_ROLES),
            "uti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(
            claims, self._key.private_key, algorithm="RS256", headers={"kid": self._key.kid}
        )
        return token, expires_on

    def verify(self, token: str) -> str | None:
        """Return None when the token is one we issued and still valid, else the reason."""
        try:
            jwt.decode(
                token,
                self._key.private_key.public_key(),
                algorithms=["RS256"],
                audience=GRAPH_AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            return "Lifetime validation failed, the token is expired."
        except jwt.InvalidTokenError:
            return "Access token validation failure. Invalid audience or signature."
        return None
