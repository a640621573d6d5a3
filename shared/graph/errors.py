"""Typed errors of the Graph calls client.

Each carries what an operator needs to find the request on both sides (Graph's ``request-id``
and our ``client-request-id``) and what Graph said (``code``, ``message``). None carries a token:
messages come from Graph's error JSON or from us, never from request headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.retry_after import parse_retry_after

if TYPE_CHECKING:
    import httpx

MAX_MESSAGE_CHARS = 500


class GraphError(Exception):
    """Graph refused or failed a request; ``status`` is ``None`` when no response came back."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        client_request_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message[:MAX_MESSAGE_CHARS]
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(self._summary())

    def _summary(self) -> str:
        status = self.status if self.status is not None else "no response"
        return (
            f"Graph {status} {self.code}: {self.message} "
            f"(request-id {self.request_id or '-'}, client-request-id "
            f"{self.client_request_id or '-'}, attempts {self.attempts})"
        )

    def log_fields(self) -> dict[str, Any]:
        return {
            "graph_status": self.status,
            "graph_code": self.code,
            "graph_request_id": self.request_id,
            "client_request_id": self.client_request_id,
            "attempts": self.attempts,
        }


class GraphClientError(GraphError):
    """A 4xx other than 429: the request itself is wrong (or the call is gone); not retried."""


class GraphAuthorizationError(GraphClientError):
    """401/403: Graph refused the bot's own identity or its permissions."""


class GraphThrottledError(GraphError):
    """429 still returned when the retry budget ran out."""


class GraphUnavailableError(GraphError):
    """503/504 still returned when the retry budget ran out."""


class GraphServerError(GraphError):
    """Another 5xx (not retried: Graph may have acted on it)."""


class GraphConnectionError(GraphError):
    """No usable response: connection refused, timeout, or the connection broke mid-request."""


class GraphCredentialError(GraphError):
    """No access token could be obtained for Graph (the identity endpoint or Entra refused)."""


class GraphResponseError(GraphError):
    """Graph answered 2xx with a body or headers this client cannot use."""


def error_from_response(
    response: httpx.Response, client_request_id: str, attempts: int
) -> GraphError:
    """Graph's error JSON (``{"error": {"code", "message", "innerError": {...}}}``) as a type."""
    code, message = "UnknownError", response.reason_phrase or "no message"
    request_id = response.headers.get("request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        inner = error.get("innerError") or error.get("innererror")
        if isinstance(inner, dict) and inner.get("request-id"):
            request_id = str(inner["request-id"])
    status = response.status_code
    kind: type[GraphError]
    if status == 429:
        kind = GraphThrottledError
    elif status in (503, 504):
        kind = GraphUnavailableError
    elif status in (401, 403):
        kind = GraphAuthorizationError
    elif 400 <= status < 500:
        kind = GraphClientError
    elif status >= 500:
        kind = GraphServerError
    else:
        kind = GraphResponseError
    return kind(
        status,
        code,
        message,
        request_id=request_id,
        client_request_id=client_request_id,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        attempts=attempts,
    )
