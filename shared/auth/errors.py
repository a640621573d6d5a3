"""Why an inbound notification was not authenticated: one typed failure per check.

``str(error)`` never contains the token; :meth:`InboundAuthError.to_problem` is the 401 (or 503)
the webhook answers, naming the failed check in ``failure``.
"""

from __future__ import annotations

from typing import ClassVar

from shared.problems import Problem, unavailable

# With no keys at all every request would otherwise wait for a dead endpoint; after a failure we
# answer 503 at once for a few seconds.
NO_KEYS_RETRY_AFTER_SECONDS = 5.0


class InboundAuthError(Exception):
    """A notification was not authenticated. ``str(error)`` is safe to log and to return."""

    status: ClassVar[int] = 401
    description: ClassVar[str] = "the bearer token is not valid"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.description)

    @property
    def detail(self) -> str:
        return str(self)

    @property
    def failure(self) -> str:
        return type(self).__name__

    def to_problem(self) -> Problem:
        if self.status == 401:
            challenge = 'Bearer error="invalid_token"'
            if isinstance(self, TokenMissing):
                challenge = "Bearer"
            return Problem(
                401,
                self.detail,
                "Unauthorized",
                {"failure": self.failure},
                {"WWW-Authenticate": challenge},
            )
        # The only other status is SigningKeysUnavailable's 503.
        return unavailable(
            self.detail,
            retry_after=NO_KEYS_RETRY_AFTER_SECONDS,
            extensions={"failure": self.failure},
        )


class TokenMissing(InboundAuthError):
    description = "no bearer token: the Authorization header must be 'Bearer <JWT>'"


class TokenMalformed(InboundAuthError):
    description = "the bearer token is not a well-formed JWT"


class DisallowedAlgorithm(InboundAuthError):
    description = "the bearer token is not signed with RS256"


class UnknownSigningKey(InboundAuthError):
    description = "the bearer token is signed with a key that is not in the published JWKS"


class BadSignature(InboundAuthError):
    description = "the bearer token's signature does not verify"


class TokenExpired(InboundAuthError):
    description = "the bearer token has expired"


class TokenNotYetValid(InboundAuthError):
    description = "the bearer token is not valid yet (nbf)"


class WrongAudience(InboundAuthError):
    description = "the bearer token's audience is not this bot's app id"


class WrongIssuer(InboundAuthError):
    description = "the bearer token's issuer is not allowed"


class TenantMissing(InboundAuthError):
    description = "the bearer token has no tenant claim (tid)"


class TenantNotAllowed(InboundAuthError):
    description = "the bearer token's tenant is not allowed"


class SigningKeysUnavailable(InboundAuthError):
    """The OpenID configuration or JWKS cannot be fetched: the sender should retry later."""

    status = 503
    description = "the signing keys of inbound notifications cannot be fetched; retry later"
