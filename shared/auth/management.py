"""Who may call the management API: an Entra ID token carrying one of the bot app's roles.

The management routes (start a recording, read a recording's status and read URL, list, erase,
read the audit) each need one app role of the bot's app registration (:class:`Role`), assignable
to users, groups and managed identities. The token is checked in code with the machinery of the
notification webhook (:class:`~shared.auth.inbound.InboundTokenValidator`: RS256 only, keys from
the tenant's published JWKS, issuer, audience, tenant, lifetime), configured for Entra ID:

- issuers ``https://login.microsoftonline.com/{tenant}/v2.0`` (v2 tokens) and
  ``https://sts.windows.net/{tenant}/`` (v1 tokens), for the one configured tenant;
- audiences ``api://{BOT_APP_ID}`` (the API's identifier URI) and ``BOT_APP_ID`` (what v2
  tokens carry);
- keys from the tenant's OpenID configuration (a setting, so tests and the simulator serve them).

Checked in code rather than by App Service authentication because the same code then runs under
the local host and in tests, and because the failure must be a problem naming the failed check
(401) or the missing role (403), never the token.

Function keys are a development opt-in (``MANAGEMENT_FUNCTION_KEYS``). The Functions host checks
a key only on ``function``-level routes and cannot tell the code whether it did, so the routes'
auth level is chosen when the app is indexed (:data:`FUNCTION_KEYS_INDEXED`, read from the
environment without pydantic) and the code accepts a request without a token only when that level
is ``function`` *and* the settings say keys are on: if the two ever disagree, keys are refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.auth.errors import InboundAuthError, TokenMalformed, TokenMissing
from shared.logevents import log_event
from shared.problems import Problem

if TYPE_CHECKING:
    from shared.auth.inbound import InboundTokenValidator
    from shared.settings import Settings

log = logging.getLogger(__name__)

FUNCTION_KEYS_SETTING = "MANAGEMENT_FUNCTION_KEYS"
# What pydantic reads as true for a bool setting: the two readings must agree.
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
VIA_TOKEN = "token"  # noqa: S105 (how a caller authenticated, not a secret)
VIA_FUNCTION_KEY = "function key"
_KEY_HEADER = "x-functions-key"


class Role(StrEnum):
    """The bot app's roles (``appRoles[].value`` in infra/modules/bot-identity.bicep)."""

    READ = "Recordings.Read"  # status, the read URL, and the list of a call's recordings
    RECORD = "Recordings.Record"  # start a recordResponse
    ERASE = "Recordings.Erase"  # erase one recording or a call's
    AUDIT = "Recordings.Audit"  # read who did what to a recording


def function_keys_at_indexing(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the management routes are indexed at ``function`` level (keys on)."""
    return environ.get(FUNCTION_KEYS_SETTING, "").strip().lower() in _TRUE


# Read once, when the host indexes the app: the management routes' auth level follows it.
FUNCTION_KEYS_INDEXED = function_keys_at_indexing()


@dataclass(frozen=True)
class Caller:
    """Who called: the token's object and app ids, or the function key (no identity)."""

    via: str
    object_id: str | None = None
    app_id: str | None = None
    tenant_id: str | None = None

    @classmethod
    def function_key(cls) -> Caller:
        return cls(via=VIA_FUNCTION_KEY)

    def log_fields(self) -> dict[str, Any]:
        """Who called, as log lines and audit events name it (never the token)."""
        names = {"via": "via", "oid": "object_id", "appid": "app_id", "tid": "tenant_id"}
        return {f"caller_{key}": getattr(self, name) for key, name in names.items()}


class Refused(Exception):
    """A management request was refused: the problem to answer, and who, when known (403)."""

    def __init__(self, problem: Problem, failure: str, caller: Caller | None = None) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.failure = failure
        self.caller = caller


def _role_missing(role: Role, caller: Caller) -> Refused:
    problem = Problem(
        403,
        f"the caller does not have the app role {role.value} this route requires",
        "Forbidden",
        {"failure": "RoleMissing", "role": role.value},
    )
    return Refused(problem, "RoleMissing", caller)


def _unauthenticated(error: InboundAuthError) -> Refused:
    return Refused(error.to_problem(), error.failure)


class ManagementAuth:
    """Decides who a management request comes from and whether it holds the route's role."""

    def __init__(
        self,
        *,
        validator: InboundTokenValidator | None,
        function_keys: bool,
        keys_indexed: bool = FUNCTION_KEYS_INDEXED,
    ) -> None:
        self._validator = validator
        # Both must say so: the host checked a key only if the route was indexed with keys on.
        self._function_keys = function_keys and keys_indexed
        if function_keys and not keys_indexed:
            log_event(
                log,
                "management auth: function keys refused: the routes were indexed anonymous",
                level=logging.WARNING,
                setting=FUNCTION_KEYS_SETTING,
            )

    @property
    def function_keys(self) -> bool:
        return self._function_keys

    async def authorize(
        self, headers: Mapping[str, str], params: Mapping[str, str], role: Role
    ) -> Caller:
        """The caller, if it may take ``role``'s action; raises :class:`Refused` otherwise."""
        authorization = headers.get("authorization") or headers.get("Authorization")
        if not authorization:
            if self._function_keys:
                return Caller.function_key()
            raise self._no_token(headers, params)
        if self._validator is None:
            problem = Problem(
                500,
                "the management API has no tenant configured: set MANAGEMENT_TENANT_ID",
                "Management API not configured",
                {"failure": "TenantNotConfigured"},
            )
            raise Refused(problem, "TenantNotConfigured")
        try:
            identity = await self._validator.validate_authorization(authorization)
        except InboundAuthError as error:
            raise _unauthenticated(error) from None
        claims = identity.claims
        object_id = claims.get("oid")
        if not isinstance(object_id, str) or not object_id:
            raise _unauthenticated(TokenMalformed("the bearer token has no object id (oid)"))
        app_id = claims.get("azp") or claims.get("appid")
        caller = Caller(
            via=VIA_TOKEN,
            object_id=object_id,
            app_id=app_id if isinstance(app_id, str) else None,
            tenant_id=identity.tenant_id,
        )
        roles = claims.get("roles")
        if not isinstance(roles, list) or role.value not in roles:
            raise _role_missing(role, caller)
        return caller

    def _no_token(self, headers: Mapping[str, str], params: Mapping[str, str]) -> Refused:
        if headers.get(_KEY_HEADER) or params.get("code"):
            problem = Problem(
                401,
                "function keys are not accepted here (MANAGEMENT_FUNCTION_KEYS is off): send "
                "'Authorization: Bearer <Entra ID token>' for the bot's API",
                "Unauthorized",
                {"failure": "FunctionKeysDisabled"},
                {"WWW-Authenticate": "Bearer"},
            )
            return Refused(problem, "FunctionKeysDisabled")
        return _unauthenticated(TokenMissing())


def entra_issuers(tenant_id: str) -> tuple[str, str]:
    """The issuers of the tenant's v2 and v1 access tokens."""
    return (
        f"https://login.microsoftonline.com/{tenant_id}/v2.0",
        f"https://sts.windows.net/{tenant_id}/",
    )


def api_audiences(bot_app_id: str) -> tuple[str, str]:
    """The API's identifier URI (v1 tokens) and its client id (v2 tokens)."""
    return (f"api://{bot_app_id}", bot_app_id)


def management_auth_from_settings(settings: Settings) -> ManagementAuth:
    from shared.auth.inbound import InboundTokenValidator

    tenant = settings.management_tenant
    keys_url = settings.management_keys_url
    validator = None
    if tenant and keys_url:
        validator = InboundTokenValidator(
            openid_configuration_url=keys_url,
            audience=api_audiences(settings.bot_app_id),
            allowed_issuers=entra_issuers(tenant),
            allowed_tenants=(tenant,),
        )
    return ManagementAuth(validator=validator, function_keys=settings.management_function_keys)
