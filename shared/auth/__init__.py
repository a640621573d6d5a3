"""Authentication of inbound requests (the platform's signed notifications)."""

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
from shared.auth.inbound import InboundIdentity, InboundTokenValidator, validator_from_settings

__all__ = [
    "BadSignature",
    "DisallowedAlgorithm",
    "InboundAuthError",
    "InboundIdentity",
    "InboundTokenValidator",
    "SigningKeysUnavailable",
    "TenantMissing",
    "TenantNotAllowed",
    "TokenExpired",
    "TokenMalformed",
    "TokenMissing",
    "TokenNotYetValid",
    "UnknownSigningKey",
    "WrongAudience",
    "WrongIssuer",
    "validator_from_settings",
]
