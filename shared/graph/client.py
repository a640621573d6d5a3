"""A small async client for the Graph calls API: answer, recordResponse, playPrompt, hang up.

One ``httpx.AsyncClient`` and one credential per event loop (in Azure: per worker process), so
connections and the cached access token are reused by every invocation. Every request carries a
fresh ``client-request-id`` (kept across its retries) and ends in exactly one log line with it.

Retries follow Graph's throttling guidance: 429 and 503 are retried, and 504 for idempotent
methods only, waiting what ``Retry-After`` says (capped) or a jittered exponential backoff;
connection failures are retried only when the request cannot have reached Graph (or the method is
idempotent). Attempts and the
total time are bounded; each operation takes ``within`` (seconds for the whole of it, retries
included), so the webhook's bot flow can use a short budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError

from shared.backoff import Backoff
from shared.graph.credentials import GRAPH_SCOPE
from shared.graph.errors import (
    GraphConnectionError,
    GraphCredentialError,
    GraphError,
    GraphResponseError,
    GraphThrottledError,
    error_from_response,
)
from shared.graph.ids import normalize_id, parse_resource_url
from shared.graph.models import (
    AnswerRequest,
    Call,
    PlayPromptOperation,
    PlayPromptRequest,
    RecordOperation,
    RecordResponseRequest,
    SubscribeToToneOperation,
    SubscribeToToneRequest,
)
from shared.graph.throttle_gate import ThrottleGate
from shared.logevents import log_event
from shared.telemetry import set_span_attributes, span
from shared.tls import client_ssl_context

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503, 504})
# A 504 says the gateway gave up waiting, not that Graph did nothing: retrying a POST could start
# a second recordResponse (two recordings of one answer). 429 and 503 mean "not processed".
AMBIGUOUS_STATUSES = frozenset({504})
IDEMPOTENT_METHODS = frozenset({"GET", "DELETE"})
# Per attempt: connecting should be quick (Graph is always near); Graph answers the calls API in
# well under a second, so a read beyond 10 s means something is wrong.
ATTEMPT_TIMEOUT = httpx.Timeout(10.0, connect=3.0, pool=3.0)
HTTP_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)
M = TypeVar("M", bound=BaseModel)


# Graph's calls API answers in well under a second: a few retries within 30 s, Retry-After
# honoured up to 10 s.
GRAPH_RETRY = Backoff(
    attempts=4, budget_seconds=30.0, max_seconds=8.0, retry_after_cap_seconds=10.0
)


def _can_retry_transport_error(error: httpx.TransportError, method: str) -> bool:
    # Connect errors and pool timeouts mean the request never left: safe even for a POST.
    # Anything later might have reached Graph, and a second recordResponse would record twice.
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return method in IDEMPOTENT_METHODS


class GraphCallsClient:
    """The Graph calls operations this app uses. Collaborators are injected (tests, per loop)."""

    def __init__(
        self,
        base_url: str,
        credential: AsyncTokenCredential,
        *,
        http: httpx.AsyncClient | None = None,
        retry: Backoff = GRAPH_RETRY,
        attempt_timeout: httpx.Timeout = ATTEMPT_TIMEOUT,
        monotonic: Callable[[], float] = time.monotonic,
        gate: ThrottleGate | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credential = credential
        self._http = http or httpx.AsyncClient(
            timeout=attempt_timeout, limits=HTTP_LIMITS, verify=client_ssl_context()
        )
        self.retry = retry
        self._attempt_timeout = attempt_timeout
        self._monotonic = monotonic
        # Graph's Retry-After, shared by every request of this client (one app, one tenant).
        self.gate = gate or ThrottleGate(monotonic=monotonic)

    def throttled_for(self) -> float:
        """Seconds Graph still asked this app to wait (its last 429's Retry-After); 0 if none."""
        return self.gate.throttled_for()

    # ----------------------------------------------------------------- operations

    async def answer(
        self, call_id: str, request: AnswerRequest, *, within: float | None = None
    ) -> None:
        """``POST /communications/calls/{id}/answer`` (Graph replies 202 with no body)."""
        await self._request(
            "POST", call_id, "/answer", "answer", body=request.to_wire(), within=within
        )

    async def record_response(
        self, call_id: str, request: RecordResponseRequest, *, within: float | None = None
    ) -> tuple[RecordOperation, str]:
        """Start a recordResponse; returns the operation and its id (from ``Location``)."""
        response = await self._request(
            "POST",
            call_id,
            "/recordResponse",
            "recordResponse",
            body=request.to_wire(),
            within=within,
        )
        operation = self._parse(response, RecordOperation, "recordResponse")
        return operation, self._operation_id(response, operation.id, "recordResponse")

    async def play_prompt(
        self, call_id: str, request: PlayPromptRequest, *, within: float | None = None
    ) -> tuple[PlayPromptOperation, str]:
        response = await self._request(
            "POST", call_id, "/playPrompt", "playPrompt", body=request.to_wire(), within=within
        )
        operation = self._parse(response, PlayPromptOperation, "playPrompt")
        return operation, self._operation_id(response, operation.id, "playPrompt")

    async def subscribe_to_tone(
        self, call_id: str, request: SubscribeToToneRequest, *, within: float | None = None
    ) -> SubscribeToToneOperation:
        """``POST .../subscribeToTone``: from now on each key pressed is a call notification."""
        response = await self._request(
            "POST",
            call_id,
            "/subscribeToTone",
            "subscribeToTone",
            body=request.to_wire(),
            within=within,
        )
        return self._parse(response, SubscribeToToneOperation, "subscribeToTone")

    async def hang_up(self, call_id: str, *, within: float | None = None) -> None:
        """``DELETE /communications/calls/{id}``: the bot leaves and the call ends."""
        await self._request("DELETE", call_id, "", "hangUp", within=within)

    async def get_call(self, call_id: str, *, within: float | None = None) -> Call:
        response = await self._request("GET", call_id, "", "getCall", within=within)
        return self._parse(response, Call, "getCall")

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._credential.close()

    # ----------------------------------------------------------------- plumbing

    def _url(self, call_id: str, suffix: str) -> str:
        return f"{self.base_url}/communications/calls/{quote(call_id, safe='')}{suffix}"

    async def _token(self, remaining: float, client_request_id: str) -> str:
        from azure.core.exceptions import AzureError

        try:
            async with asyncio.timeout(remaining):
                token = await self._credential.get_token(GRAPH_SCOPE)
        except TimeoutError:
            raise GraphCredentialError(
                None,
                "TokenTimeout",
                f"no Graph access token within {remaining:.1f} s",
                client_request_id=client_request_id,
            ) from None
        except AzureError as error:
            # azure-identity's messages describe the failed source, never a token.
            reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            raise GraphCredentialError(
                None,
                "CredentialUnavailable",
                f"{type(error).__name__}: {reason}",
                client_request_id=client_request_id,
            ) from None
        return token.token

    async def _request(
        self,
        method: str,
        call_id: str,
        suffix: str,
        action: str,
        *,
        body: dict[str, Any] | None = None,
        within: float | None = None,
    ) -> httpx.Response:
        client_request_id = str(uuid.uuid4())
        # One client span per Graph operation (retries included), a child of the webhook's or
        # the API's span; Graph's ids are its attributes, so a trace leads to Graph's logs.
        with span(
            f"graph {action}",
            kind=SpanKind.CLIENT,
            call_id=call_id,
            graph_action=action,
            client_request_id=client_request_id,
        ):
            return await self._send(
                method, call_id, suffix, action, client_request_id, body=body, within=within
            )

    async def _send(
        self,
        method: str,
        call_id: str,
        suffix: str,
        action: str,
        client_request_id: str,
        *,
        body: dict[str, Any] | None,
        within: float | None,
    ) -> httpx.Response:
        budget = within if within is not None else self.retry.budget_seconds
        started = self._monotonic()
        deadline = started + budget
        url = self._url(call_id, suffix)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._monotonic()
            try:
                if remaining <= 0:
                    raise GraphConnectionError(
                        None,
                        "Timeout",
                        f"no answer from Graph within {budget:g} s",
                        client_request_id=client_request_id,
                        attempts=attempt - 1,
                    )
                await self._through_gate(action, deadline, client_request_id, attempt)
                remaining = deadline - self._monotonic()
                token = await self._token(remaining, client_request_id)
                headers = {
                    "Authorization": f"Bearer {token}",
                    "client-request-id": client_request_id,
                    "Accept": "application/json",
                }
                if attempt > 1:
                    headers["Retry-Attempt"] = str(attempt - 1)
                outcome = await self._attempt(
                    method, url, body, headers, remaining, client_request_id, attempt
                )
            except GraphError as failure:
                self._log_outcome(action, call_id, failure, attempt, started)
                raise
            if isinstance(outcome, httpx.Response):
                self._log_outcome(action, call_id, outcome, attempt, started)
                return outcome
            error, wait, retryable = outcome
            if isinstance(error, GraphThrottledError):
                self.gate.close(error.retry_after if error.retry_after is not None else wait)
            out_of_budget = self._monotonic() + wait >= deadline
            if not retryable or attempt >= self.retry.attempts or out_of_budget:
                self._log_outcome(action, call_id, error, attempt, started)
                raise error
            log_event(
                log,
                f"graph {action} retrying",
                call_id=call_id,
                wait_s=round(wait, 2),
                **{**error.log_fields(), "attempts": attempt},
            )
            await self.retry.sleep(wait)

    async def _through_gate(
        self, action: str, deadline: float, client_request_id: str, attempt: int
    ) -> None:
        """Wait while Graph asked this app to; give up unsent if that lasts past ``deadline``.

        Waking, the gate is checked again: another request may have been refused meanwhile.
        """
        waited = 0
        while (wait := self.gate.wait_before_sending(deadline)) is None or wait > 0:
            if wait is None or waited >= self.retry.attempts:
                raise GraphThrottledError(
                    429,
                    "TooManyRequests",
                    f"not sent: Graph asked this app to wait {self.gate.throttled_for():.1f} s "
                    f"more (Retry-After of an earlier {action or 'request'}), past this "
                    "request's budget",
                    client_request_id=client_request_id,
                    retry_after=self.gate.throttled_for(),
                    attempts=attempt - 1,
                )
            waited += 1
            await self.retry.sleep(wait)

    async def _attempt(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        remaining: float,
        client_request_id: str,
        attempt: int,
    ) -> httpx.Response | tuple[GraphError, float, bool]:
        """One HTTP exchange: the response on success, else (error, wait, retryable)."""
        limits = self._attempt_timeout
        timeout = httpx.Timeout(
            min(limits.read or remaining, remaining),
            connect=min(limits.connect or remaining, remaining),
            write=min(limits.write or remaining, remaining),
            pool=min(limits.pool or remaining, remaining),
        )
        try:
            response = await self._http.request(
                method, url, json=body, headers=headers, timeout=timeout
            )
        except httpx.TransportError as failure:
            error = GraphConnectionError(
                None,
                type(failure).__name__,
                f"{type(failure).__name__} talking to Graph",
                client_request_id=client_request_id,
                attempts=attempt,
            )
            wait = self.retry.delay(attempt + 1)
            return error, wait, _can_retry_transport_error(failure, method)
        if response.is_success:
            return response
        await response.aread()
        graph_error = error_from_response(response, client_request_id, attempt)
        wait = self.retry.delay(attempt + 1, graph_error.retry_after)
        status = response.status_code
        retryable = status in RETRY_STATUSES and (
            status not in AMBIGUOUS_STATUSES or method in IDEMPOTENT_METHODS
        )
        return graph_error, wait, retryable

    def _log_outcome(
        self,
        action: str,
        call_id: str,
        outcome: httpx.Response | GraphError,
        attempts: int,
        started: float,
    ) -> None:
        elapsed_ms = int((self._monotonic() - started) * 1000)
        if isinstance(outcome, httpx.Response):
            set_span_attributes(
                {
                    "graph_status": outcome.status_code,
                    "graph_request_id": outcome.headers.get("request-id"),
                    "attempts": attempts,
                    "elapsed_ms": elapsed_ms,
                }
            )
            log_event(
                log,
                f"graph {action}",
                call_id=call_id,
                graph_action=action,
                graph_status=outcome.status_code,
                attempts=attempts,
                elapsed_ms=elapsed_ms,
                client_request_id=outcome.request.headers.get("client-request-id"),
                graph_request_id=outcome.headers.get("request-id"),
            )
            return
        set_span_attributes({"elapsed_ms": elapsed_ms, **outcome.log_fields()})
        log_event(
            log,
            f"graph {action} failed",
            level=logging.WARNING,
            call_id=call_id,
            graph_action=action,
            elapsed_ms=elapsed_ms,
            message=outcome.message,
            **outcome.log_fields(),
        )

    def _parse(self, response: httpx.Response, model: type[M], action: str) -> M:
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError):
            raise _invalid_response(
                response, f"Graph's {action} reply is not a valid {model.__name__}"
            ) from None

    def _operation_id(self, response: httpx.Response, body_id: str | None, action: str) -> str:
        location = response.headers.get("Location")
        ids = parse_resource_url(location) if location else None
        operation_id = (ids.operation_id if ids else None) or body_id
        if not operation_id:
            raise _invalid_response(
                response, f"Graph's {action} reply names no operation (no Location header, no id)"
            )
        return normalize_id(operation_id)


def _invalid_response(response: httpx.Response, message: str) -> GraphResponseError:
    """A successful status whose body or headers are not what the call promises."""
    return GraphResponseError(
        response.status_code,
        "InvalidResponse",
        message,
        request_id=response.headers.get("request-id"),
        client_request_id=response.request.headers.get("client-request-id"),
    )
