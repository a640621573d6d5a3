"""Entra ID access tokens for the bot's own API (the management routes), with chosen roles.

A real caller (a Function with a managed identity, a user through ``az account get-access-token``)
gets a token for ``api://<bot app id>`` from Entra; the app checks it against the tenant's
published keys. Here the simulator is that tenant: it serves an OpenID configuration and a JWKS
at Entra's paths (``/{tenant}/v2.0/.well-known/openid-configuration``) and mints tokens with the
roles, object id, tenant and audience a test or a developer chooses. The key is its own, apart
from the notification keys and the Graph token issuer.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from .keys import SigningKey

# Entra's issuers are fixed strings: the simulator's tokens carry them, its keys verify them.
V2_ISSUER = "https://login.microsoftonline.com/{tenant}/v2.0"
V1_ISSUER = "https://sts.windows.net/{tenant}/"
# A fictitious caller: the object and app id of a downstream service's managed identity.
DEFAULT_CALLER_OBJECT_ID = "00000000-0000-0000-0000-0000000ca11e"
DEFAULT_CALLER_APP_ID = "00000000-0000-0000-0000-0000000c11e7"


class EntraApiTokens:
    """The tenant's signing key, documents and tokens for the bot's API."""

    def __init__(self, tenant_id: str, bot_app_id: str, lifetime_seconds: int = 3600) -> None:
        self.tenant_id = tenant_id
        self.bot_app_id = bot_app_id
        self.lifetime_seconds = lifetime_seconds
        self.key = SigningKey.generate()

    @property
    def identifier_uri(self) -> str:
        return f"api://{self.bot_app_id}"

    def openid_configuration(self, base_url: str, tenant_id: str) -> dict[str, Any]:
        return {
            "issuer": V2_ISSUER.format(tenant=tenant_id),
            "jwks_uri": f"{base_url}/{tenant_id}/discovery/v2.0/keys",
            "token_endpoint": f"{base_url}/{tenant_id}/oauth2/v2.0/token",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "token id_token"],
            "subject_types_supported": ["pairwise"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.jwk()]}

    def claims(
        self,
        *,
        roles: list[str] | tuple[str, ...] = (),
        object_id: str = DEFAULT_CALLER_OBJECT_ID,
        app_id: str = DEFAULT_CALLER_APP_ID,
        tenant_id: str | None = None,
        audience: str | None = None,
        version: str = "2.0",
        lifetime_seconds: int | None = None,
    ) -> dict[str, Any]:
        """An app-only access token's claims, v2 (``azp``) or v1 (``appid``) as Entra shapes them."""
        tenant = tenant_id or self.tenant_id
        now = int(time.time())
        v2 = version == "2.0"
        claims: dict[str, Any] = {
            # v2 tokens carry the client id as audience; v1 the identifier URI requested.
            "aud": audience or (self.bot_app_id if v2 else self.identifier_uri),
            "iss": (V2_ISSUER if v2 else V1_ISSUER).format(tenant=tenant),
            "iat": now,
            "nbf": now,
            "exp": now + (lifetime_seconds or self.lifetime_seconds),
            "oid": object_id,
            "sub": object_id,
            "tid": tenant,
            "idtyp": "app",
            "roles": list(roles),
            "uti": secrets.token_urlsafe(12),
            "ver": version,
        }
        claims["azp" if v2 else "appid"] = app_id
        if not roles:
            del claims["roles"]  # Entra leaves the claim out when no role is assigned
        return claims

    def issue(self, claims: dict[str, Any]) -> str:
        import jwt

        return jwt.encode(
            claims,
            self.key.private_key,
            algorithm="RS256",
            headers={"kid": self.key.kid, "typ": "JWT"},
        )

    def token(self, **options: Any) -> str:
        """A signed token for the bot's API (see :meth:`claims` for the options)."""
        return self.issue(self.claims(**options))
