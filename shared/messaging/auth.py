"""The bearer token of an activity the Bot Connector posts to ``/api/messages``.

The checks are the webhook's (:class:`~shared.auth.inbound.InboundTokenValidator`: RS256 only,
cached JWKS, signature, issuer, audience, lifetime), with Bot Framework's own keys and issuer,
plus the two that Microsoft's Bot Framework SDKs add for a channel's token
(``JwtTokenValidation`` / ``ChannelValidation``):

- the token's ``serviceurl`` claim must equal the activity's ``serviceUrl``: the bot's reply, which
  carries the bot's own token, goes only where Bot Framework itself said;
- when the signing key is published with ``endorsements``, the activity's ``channelId`` must be
  one of them (a key endorsed for one channel does not sign another's activities).

A Bot Framework token names no tenant, so none is required.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.auth.errors import InboundAuthError, TokenMissing

if TYPE_CHECKING:
    import httpx

    from shared.auth.inbound import InboundTokenValidator
    from shared.settings import Settings

BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
SERVICE_URL_CLAIM = "serviceurl"


class ServiceUrlMismatch(InboundAuthError):
    description = "the bearer token's serviceurl claim is not the activity's serviceUrl"


class ChannelNotEndorsed(InboundAuthError):
    description = "the bearer token's signing key is not endorsed for the activity's channelId"


@dataclass(frozen=True)
class ChannelIdentity:
    """What a validated Bot Framework token says: where replies go, and its claims."""

    service_url: str
    claims: Mapping[str, Any]


class BotFrameworkTokenValidator:
    """Validates the Bot Connector's tokens (see module doc); one per event loop."""

    def __init__(
        self,
        *,
        openid_configuration_url: str,
        audience: str,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        from shared.auth.inbound import InboundTokenValidator

        self._tokens: InboundTokenValidator = InboundTokenValidator(
            openid_configuration_url=openid_configuration_url,
            audience=audience,
            allowed_issuers=(BOT_FRAMEWORK_ISSUER,),
            clock=clock,
            transport=transport,
        )

    async def validate_authorization(
        self, header: str | None, *, service_url: str, channel_id: str
    ) -> ChannelIdentity:
        """Validate ``Authorization: Bearer <JWT>`` for an activity from ``service_url``."""
        scheme, _, token = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenMissing()
        kid, claims = await self._tokens.verified_claims(token.strip())
        endorsed = self._tokens.endorsements(kid)
        if endorsed is not None and channel_id and channel_id not in endorsed:
            raise ChannelNotEndorsed()
        if claims.get(SERVICE_URL_CLAIM) != service_url:
            raise ServiceUrlMismatch()
        return ChannelIdentity(service_url=service_url, claims=claims)


def channel_validator_from_settings(settings: Settings) -> BotFrameworkTokenValidator:
    return BotFrameworkTokenValidator(
        openid_configuration_url=settings.bot_framework_openid_configuration_url,
        audience=settings.bot_app_id,
    )
