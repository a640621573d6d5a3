"""Validation of the bearer token on every inbound notification (``POST /api/calls``).

Graph's calling platform signs each notification with ``RS256`` keys published in the JWKS that
its OpenID configuration names. A validator is created once per event loop (the Functions worker
runs every async function on one loop, so once per worker process) and keeps the configuration
and keys in memory: refreshed every few hours, and refetched when a token names a key id we do not
know, at most once a minute so forged key ids cannot make us hammer the endpoint.

Every failure is a typed :class:`InboundAuthError` whose message says what kind of failure it is
and never contains the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.auth.errors import (
    NO_KEYS_RETRY_AFTER_SECONDS,
    BadSignature,
    DisallowedAlgorithm,
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
from shared.logevents import log_event
from shared.tls import client_ssl_context

if TYPE_CHECKING:
    import httpx
    import jwt

    from shared.settings import Settings

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
LEEWAY_SECONDS = 300
CONFIGURATION_MAX_AGE_SECONDS = 4 * 3600
UNKNOWN_KID_REFETCH_INTERVAL_SECONDS = 60.0
# With no keys at all every request would otherwise wait for a dead endpoint; after a failure we
# answer 503 at once for a few seconds. With keys cached, a failed refresh keeps them a while.
STALE_KEYS_RETRY_AFTER_SECONDS = 60.0
# The webhook answers within a few hundred milliseconds when the cache is warm; a cold cache pays
# one fetch, bounded by these (seconds).
HTTP_TIMEOUT_SECONDS = 3.0
HTTP_CONNECT_TIMEOUT_SECONDS = 2.0
MAX_TOKEN_LENGTH = 16 * 1024
MAX_DOCUMENT_BYTES = 512 * 1024


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class InboundIdentity:
    """What a validated token says about the sender."""

    tenant_id: str
    issuer: str
    claims: Mapping[str, Any]


# --------------------------------------------------------------------------- validator


class _FetchFailed(Exception):
    """Reason a configuration or JWKS fetch failed (safe to log: URLs and statuses only)."""


def _usable_keys(document: Any) -> dict[str, jwt.PyJWK]:
    import jwt  # PyJWT loads cryptography: only the webhook needs it

    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchFailed("JWKS has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError:
            log_event(
                log, "inbound auth: skipping unusable JWKS key", level=logging.WARNING, kid=kid
            )
    if not keys:
        raise _FetchFailed("JWKS has no usable RS256 signing key")
    return keys


def _endorsements(document: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Each key's ``endorsements`` (a list of channel ids), for the keys that carry one."""
    endorsed: dict[str, frozenset[str]] = {}
    for entry in document["keys"]:
        if isinstance(entry, dict) and isinstance(entry.get("endorsements"), list):
            endorsed[str(entry.get("kid"))] = frozenset(
                value for value in entry["endorsements"] if isinstance(value, str)
            )
    return endorsed


class InboundTokenValidator:
    """Validates notification tokens against the platform's published keys (see module doc).

    ``clock`` returns epoch seconds; it drives both the token's ``exp``/``nbf`` checks and the
    cache's refresh times, so tests move time instead of waiting. ``transport`` lets a test
    observe or replace the HTTP layer; it stays the caller's to close.
    """

    def __init__(
        self,
        *,
        openid_configuration_url: str,
        audience: str | Sequence[str],
        allowed_issuers: Sequence[str],
        allowed_tenants: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._configuration_url = openid_configuration_url
        # One audience, or several accepted alike (the management API's URI and client id).
        self._audience = audience if isinstance(audience, str) else list(audience)
        self._issuers = frozenset(allowed_issuers)
        self._tenants = frozenset(tenant.lower() for tenant in allowed_tenants)
        self._clock = clock
        self._transport = transport
        self._lock = asyncio.Lock()
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._endorsements: dict[str, frozenset[str]] = {}
        self._configuration_due_at = -math.inf
        self._jwks_refetch_allowed_at = -math.inf

    async def validate_authorization(self, header: str | None) -> InboundIdentity:
        """Validate an ``Authorization`` header value (``Bearer <JWT>``)."""
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenMissing()
        return await self.validate(token.strip())

    async def validate(self, token: str) -> InboundIdentity:
        """Validate a bare JWT; returns the sender's identity or raises InboundAuthError."""
        _, claims = await self.verified_claims(token)
        tenant = claims.get("tid")
        if not isinstance(tenant, str) or not tenant:
            raise TenantMissing()
        if self._tenants and tenant.lower() not in self._tenants:
            raise TenantNotAllowed()
        return InboundIdentity(tenant_id=tenant, issuer=str(claims["iss"]), claims=claims)

    async def verified_claims(self, token: str) -> tuple[str, dict[str, Any]]:
        """The signing key's id and the claims of a JWT whose algorithm, signature, issuer,
        audience and lifetime are verified; what else a sender must prove is the caller's."""
        import jwt

        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenMalformed("the bearer token is too long to be a notification token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenMalformed() from None
        # Decided before any key is looked up: "none" and HMAC tokens never reach a verifier
        # (an HS256 token "signed" with our public key is the classic confusion attack).
        if header.get("alg") != ALGORITHM:
            raise DisallowedAlgorithm()
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenMalformed("the bearer token's header has no key id (kid)")
        key = await self._signing_key(kid)
        claims = self._decode(token, key)
        self._check_lifetime(claims)
        return kid, claims

    def endorsements(self, kid: str) -> frozenset[str] | None:
        """The channels the published key ``kid`` is endorsed for (Bot Framework's JWKS lists
        them per key), or None when the key carries no ``endorsements``."""
        return self._endorsements.get(kid)

    # -- token checks ----------------------------------------------------------------------

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        import jwt  # PyJWT loads cryptography: only the webhook needs it

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuers,
                # exp/nbf are checked against the injected clock in _check_lifetime.
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise BadSignature() from None
        except jwt.InvalidAlgorithmError:
            raise DisallowedAlgorithm() from None
        except jwt.InvalidAudienceError:
            raise WrongAudience() from None
        except jwt.InvalidIssuerError:
            raise WrongIssuer() from None
        except jwt.MissingRequiredClaimError as error:
            if error.claim == "aud":
                raise WrongAudience("the bearer token has no audience (aud)") from None
            if error.claim == "iss":
                raise WrongIssuer("the bearer token has no issuer (iss)") from None
            raise TokenMalformed(f"the bearer token has no '{error.claim}' claim") from None
        except jwt.PyJWTError:
            raise TokenMalformed() from None
        return claims

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        try:
            expires = float(claims["exp"])
            not_before = float(claims["nbf"]) if claims.get("nbf") is not None else None
            issued = float(claims["iat"]) if claims.get("iat") is not None else None
        except (TypeError, ValueError):
            raise TokenMalformed("the bearer token's exp, nbf or iat is not a number") from None
        if expires <= now - LEEWAY_SECONDS:
            raise TokenExpired()
        if not_before is not None and not_before > now + LEEWAY_SECONDS:
            raise TokenNotYetValid()
        # A token issued in the future (beyond the skew) was not issued by a clock we trust.
        if issued is not None and issued > now + LEEWAY_SECONDS:
            raise TokenNotYetValid("the bearer token is issued in the future (iat)")

    # -- keys ------------------------------------------------------------------------------

    async def _signing_key(self, kid: str) -> jwt.PyJWK:
        if self._clock() >= self._configuration_due_at:
            async with self._lock:
                # Concurrent requests wait for one refresh instead of each fetching.
                if self._clock() >= self._configuration_due_at:
                    await self._refresh_configuration()
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and self._clock() >= self._jwks_refetch_allowed_at:
                await self._refetch_keys(kid)
                key = self._keys.get(kid)
        if key is None:
            raise UnknownSigningKey()
        return key

    async def _refresh_configuration(self) -> None:
        now = self._clock()
        try:
            async with self._client() as client:
                configuration = await self._get_json(client, self._configuration_url)
                jwks_uri = (
                    configuration.get("jwks_uri") if isinstance(configuration, dict) else None
                )
                if not isinstance(jwks_uri, str) or not jwks_uri.startswith(
                    ("https://", "http://")
                ):
                    raise _FetchFailed("OpenID configuration has no http(s) jwks_uri")
                document = await self._get_json(client, jwks_uri)
                keys = _usable_keys(document)
        except _FetchFailed as failure:
            if self._keys:
                self._configuration_due_at = now + STALE_KEYS_RETRY_AFTER_SECONDS
                log.warning(
                    "inbound auth: refresh failed, keeping %d cached key(s): %s",
                    len(self._keys),
                    failure,
                )
                return
            self._configuration_due_at = now + NO_KEYS_RETRY_AFTER_SECONDS
            log.error("inbound auth: no signing keys: %s", failure)
            raise SigningKeysUnavailable() from None
        self._jwks_uri, self._keys = jwks_uri, keys
        self._endorsements = _endorsements(document)
        # The unknown-kid limit is left alone: a rotation right after this load must still be
        # picked up by the first token that names the new key.
        self._configuration_due_at = now + CONFIGURATION_MAX_AGE_SECONDS
        log_event(
            log,
            "inbound auth: configuration loaded",
            jwks_uri=jwks_uri,
            kids=",".join(sorted(keys)),
        )

    async def _refetch_keys(self, kid: str) -> None:
        """A token names a key we do not know: the platform may have rotated its keys."""
        self._jwks_refetch_allowed_at = self._clock() + UNKNOWN_KID_REFETCH_INTERVAL_SECONDS
        if self._jwks_uri is None:
            raise SigningKeysUnavailable()
        try:
            async with self._client() as client:
                document = await self._get_json(client, self._jwks_uri)
                keys = _usable_keys(document)
        except _FetchFailed as failure:
            log_event(
                log,
                "inbound auth: JWKS refetch failed",
                level=logging.ERROR,
                kid=kid,
                failure=str(failure),
            )
            raise SigningKeysUnavailable() from None
        self._keys = keys
        self._endorsements = _endorsements(document)
        log_event(log, "inbound auth: JWKS refetched", kid=kid, kids=",".join(sorted(keys)))

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        # Fetches happen every few hours at most, so a client per refresh costs nothing (the
        # process's one TLS context is reused) and leaves no connection pool behind. An
        # injected transport belongs to the caller, who reuses it across refreshes, so it is
        # not closed here. httpx is imported here: only the webhook fetches keys.
        import httpx

        client = httpx.AsyncClient(
            timeout=httpx.Timeout(HTTP_TIMEOUT_SECONDS, connect=HTTP_CONNECT_TIMEOUT_SECONDS),
            transport=self._transport,
            follow_redirects=False,
            verify=client_ssl_context(),
        )
        try:
            yield client
        finally:
            if self._transport is None:
                await client.aclose()

    @staticmethod
    async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
        import httpx

        try:
            response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise _FetchFailed(f"GET {url}: {type(error).__name__}") from None
        if response.status_code != 200:
            raise _FetchFailed(f"GET {url}: HTTP {response.status_code}")
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise _FetchFailed(f"GET {url}: document too large")
        try:
            return response.json()
        except ValueError:
            raise _FetchFailed(f"GET {url}: not JSON") from None


def validator_from_settings(settings: Settings) -> InboundTokenValidator:
    return InboundTokenValidator(
        openid_configuration_url=settings.inbound_openid_configuration_url,
        audience=settings.bot_app_id,
        allowed_issuers=settings.inbound_allowed_issuers,
        allowed_tenants=settings.inbound_allowed_tenants,
    )
