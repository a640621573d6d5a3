"""Fetching a recording over HTTP: one shared client, guarded redirects, error classes, retries.

The recording location answers with the bytes or with an HTTP error; what an error means decides
what the worker does with the job:

- transient (timeouts, connection errors, 5xx, 408, 429, a body cut short): retry a few times
  inline, then give the message back to the queue (:class:`TransientDownloadError`);
- terminal (401/403/404/410 and other 4xx, a refused URL, a recording over the size cap): the
  recording is gone or the token expired; record the failure and settle the message
  (:class:`TerminalDownloadError`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.backoff import Backoff
from shared.download.url_guard import (
    RecordingHostUnresolvable,
    RecordingUrlRefused,
    Resolver,
    UrlPolicy,
    check_recording_url,
    resolve_host,
    same_origin,
)
from shared.queue_jobs import JobError, TerminalJobError, TransientJobError
from shared.retry_after import parse_retry_after

# httpx loads where a request is made: the webhook, which imports this, never needs it.
if TYPE_CHECKING:
    import httpx


# Explicit timeouts for the recording location: a stalled transfer is retried rather than left to
# hold the message until its visibility timeout.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
WRITE_TIMEOUT_SECONDS = 10.0
POOL_TIMEOUT_SECONDS = 5.0
MAX_REDIRECTS = 3
USER_AGENT = "teams-record-response-bot/1 (recording download)"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class DownloadError(JobError):
    """A download attempt failed; ``reason`` is safe to log and store (never a token or URL)."""


class TransientDownloadError(DownloadError, TransientJobError):
    """Worth retrying: the worker retries inline, then raises it so the host redelivers."""


class TerminalDownloadError(DownloadError, TerminalJobError):
    """Retrying cannot help: the failure is recorded and the message settled."""


@dataclass(frozen=True)
class DownloadRetry(Backoff):
    """Inline retries of one download: a few attempts, all within a small budget.

    The budget stays well under a recording's lifetime and under the queue's visibility timeout
    multiplied out by ``maxDequeueCount``, so the host's redeliveries still have time to work.
    """

    attempts: int = 3
    max_seconds: float = 4.0
    retry_after_cap_seconds: float = 5.0
    # How long a duplicate delivery waits for another instance's download before handing the
    # message back; longer than the lease's lifetime so a crashed holder's lease expires meanwhile.
    lease_wait_seconds: float = 25.0
    lease_poll_seconds: float = 0.2


def classify_status(response: httpx.Response) -> DownloadError:
    """The error for a non-success answer from the recording location."""
    status = response.status_code
    reason = f"recording location answered {status}"
    if status >= 500 or status in _TRANSIENT_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return TransientDownloadError(reason, retry_after=retry_after)
    return TerminalDownloadError(reason)


def classify_transport_error(error: Exception) -> DownloadError:
    """The error for a failure below HTTP (timeouts, resets, truncated bodies)."""
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return TransientDownloadError(f"recording transfer timed out ({type(error).__name__})")
    if isinstance(error, httpx.UnsupportedProtocol):
        return TerminalDownloadError("recording location uses an unsupported protocol")
    return TransientDownloadError(f"recording transfer failed ({type(error).__name__})")


def default_timeout() -> httpx.Timeout:
    import httpx

    return httpx.Timeout(
        connect=CONNECT_TIMEOUT_SECONDS,
        read=READ_TIMEOUT_SECONDS,
        write=WRITE_TIMEOUT_SECONDS,
        pool=POOL_TIMEOUT_SECONDS,
    )


def new_http_client(timeout: httpx.Timeout | None = None) -> httpx.AsyncClient:
    """A client for recording locations.

    Redirects are followed by :func:`open_recording`, one guarded hop at a time; proxies and
    other environment settings are ignored so a request goes exactly where the guard looked.
    """
    import httpx

    from shared.tls import client_ssl_context

    return httpx.AsyncClient(
        verify=client_ssl_context(),
        timeout=timeout or default_timeout(),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


async def guard(
    url: str | httpx.URL, policy: UrlPolicy, resolve: Resolver = resolve_host
) -> httpx.URL:
    """:func:`check_recording_url` with its outcomes mapped onto the download error classes."""
    try:
        return await check_recording_url(url, policy, resolve=resolve)
    except RecordingUrlRefused as refused:
        raise TerminalDownloadError(f"recording location refused: {refused}") from None
    except RecordingHostUnresolvable as unresolved:
        raise TransientDownloadError(str(unresolved)) from None


@asynccontextmanager
async def open_recording(
    http: httpx.AsyncClient,
    url: httpx.URL,
    token: str,
    policy: UrlPolicy,
    *,
    resolve: Resolver = resolve_host,
) -> AsyncIterator[httpx.Response]:
    """Stream the GET of an already guarded ``url``; yields a 2xx response with its body unread.

    Each redirect target is guarded like the original. The bearer token goes only to the
    original origin (same scheme, host and port), so a redirect cannot carry it elsewhere.
    """
    import httpx

    current = url
    for _ in range(MAX_REDIRECTS + 1):
        # Identity encoding: the stored bytes and Content-Length must describe the same thing.
        headers = {"Accept-Encoding": "identity"}
        if same_origin(current, url):
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with http.stream("GET", current, headers=headers) as response:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise TerminalDownloadError(
                            f"recording location answered {response.status_code} without Location"
                        )
                    current = await guard(current.join(location), policy, resolve)
                    continue
                if not response.is_success:
                    raise classify_status(response)
                yield response
                return
        except httpx.TransportError as error:
            raise classify_transport_error(error) from None
    raise TerminalDownloadError(f"recording location redirected more than {MAX_REDIRECTS} times")
