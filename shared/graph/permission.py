"""Whether the app's own Graph token carries ``Calls.AccessMedia.All``, for ``/api/health``.

Without that application permission (admin consent) every recordResponse fails; health says so
before the first call. The token is the app's own, fresh from Entra through its credential, so
its ``roles`` claim is read without verifying the signature (Graph verifies it). The token is
never logged. The answer is kept briefly (health is polled), and a token endpoint that does not
answer within a short budget gives ``unknown`` rather than a slow health check.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.graph.credentials import GRAPH_SCOPE

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

REQUIRED_ROLE = "Calls.AccessMedia.All"
GRANTED = "ok"
NOT_GRANTED = (
    f"permission not granted: the app's Graph token has no {REQUIRED_ROLE} role "
    "(grant the application permission with admin consent)"
)
UNKNOWN_PREFIX = "unknown"
TOKEN_TIMEOUT_SECONDS = 2.0
# A verdict is kept a minute; "unknown" only a few seconds, so a recovered endpoint shows soon.
VERDICT_TTL_SECONDS = 60.0
UNKNOWN_TTL_SECONDS = 10.0


def token_roles(token: str) -> list[str]:
    """The ``roles`` claim of a JWT, read without verifying it (an empty list if absent)."""
    try:
        payload = token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return []
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return [role for role in roles if isinstance(role, str)] if isinstance(roles, list) else []


def is_unknown(status: str) -> bool:
    return status.startswith(UNKNOWN_PREFIX)


class GraphPermissionCheck:
    """``ok``, ``permission not granted: ...`` or ``unknown (...)``, kept briefly."""

    def __init__(
        self, credential: AsyncTokenCredential, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._credential = credential
        self._clock = clock
        self._status: str | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def status(self) -> str:
        if self._status is not None and self._clock() < self._until:
            return self._status
        async with self._lock:  # concurrent health checks wait for one token request
            if self._status is None or self._clock() >= self._until:
                self._status = await self._ask()
                ttl = UNKNOWN_TTL_SECONDS if is_unknown(self._status) else VERDICT_TTL_SECONDS
                self._until = self._clock() + ttl
            return self._status

    async def _ask(self) -> str:
        try:
            token = await asyncio.wait_for(
                self._credential.get_token(GRAPH_SCOPE), TOKEN_TIMEOUT_SECONDS
            )
        except TimeoutError:
            return f"{UNKNOWN_PREFIX} (no Graph token within {TOKEN_TIMEOUT_SECONDS:g} s)"
        except Exception as error:
            return f"{UNKNOWN_PREFIX} (no Graph token: {type(error).__name__})"
        return GRANTED if REQUIRED_ROLE in token_roles(token.token) else NOT_GRANTED
