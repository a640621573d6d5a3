"""Publishing CloudEvents to an Event Grid custom topic with the app's managed identity.

``azure-eventgrid``'s async ``EventGridPublisherClient`` with a token credential (the topic has
local auth off: no access key exists to leak) posts a ``application/cloudevents-batch+json``
batch. Its own retry policy is off: a failed publish is one typed error here, and the callers
decide (the outbox hands it to the events queue, whose worker retries on a ``Backoff``). The SDK
loads where a publisher is built, never when ``function_app`` is imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shared.queue_jobs import TerminalJobError, TransientJobError
from shared.retry_after import parse_retry_after

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.eventgrid.aio import EventGridPublisherClient

# Event Grid answers within a second or two; past this the publish is given to the queue.
CONNECTION_TIMEOUT_SECONDS = 5
# Refused for what the events are: trying again sends the same refused events.
_REFUSED = frozenset({400, 413})


class TransientPublishError(TransientJobError):
    """Event Grid did not take the events this time (throttled, down, unreachable, not yet
    authorized: a new role assignment takes minutes to apply)."""


class TerminalPublishError(TerminalJobError):
    """Event Grid refused the events themselves (malformed, too large): never accepted as they are."""


class EventPublisher(Protocol):
    """Sends CloudEvents (structured JSON objects) in one batch, or raises a publish error."""

    async def publish(self, events: Sequence[Mapping[str, Any]]) -> None: ...

    async def aclose(self) -> None: ...


class EventGridPublisher:
    """An Event Grid custom topic (``https://<topic>.<region>-1.eventgrid.azure.net/api/events``)."""

    def __init__(
        self,
        endpoint: str,
        credential: AsyncTokenCredential,
        *,
        timeout_seconds: float,
        ca_file: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._credential = credential
        self._timeout = timeout_seconds
        self._ca_file = ca_file
        self._client: EventGridPublisherClient | None = None

    def _publisher(self) -> EventGridPublisherClient:
        if self._client is None:
            from azure.eventgrid.aio import EventGridPublisherClient

            # No SDK retries (the caller's Backoff retries); the transport's own timeouts.
            options: dict[str, Any] = {
                "retry_total": 0,
                "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
                "read_timeout": self._timeout,
            }
            if self._ca_file:
                options["connection_verify"] = self._ca_file  # the local simulator's CA only
            self._client = EventGridPublisherClient(self.endpoint, self._credential, **options)
        return self._client

    async def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        try:
            await asyncio.wait_for(
                self._publisher().send([dict(event) for event in events]),
                self._timeout + CONNECTION_TIMEOUT_SECONDS,
            )
        except HttpResponseError as error:
            raise publish_error(error) from None
        except TimeoutError:
            raise TransientPublishError("Event Grid did not answer in time") from None
        except AzureError as error:
            # Unreachable, connection reset, or the managed identity's token not available.
            raise TransientPublishError(
                f"Event Grid could not be reached ({type(error).__name__})"
            ) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self._credential.close()


def publish_error(error: Any) -> TransientPublishError | TerminalPublishError:
    """Event Grid's answer as a publish error: its status and error code, never its text (an
    error message may quote the events)."""
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    code = _error_code(response)
    reason = f"Event Grid answered {status}" + (f" ({code})" if code else "")
    if status in _REFUSED:
        return TerminalPublishError(reason)
    retry_after = None
    if response is not None and status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return TransientPublishError(reason, retry_after=retry_after)


def _error_code(response: Any) -> str | None:
    if response is None:
        return None
    try:
        body = response.json()
    except Exception:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code.isascii() and len(code) <= 64 else None
