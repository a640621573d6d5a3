"""The HTTP edge: what every route checks before the core sees a request.

Ids in routes and queries, JSON bodies, and the mapping of Graph's refusals to problems live here
so that each route rejects bad input the same way: a ``400``/``422``
``application/problem+json`` that names the field, never a crash.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from shared.graph.errors import (
    GraphAuthorizationError,
    GraphClientError,
    GraphCredentialError,
    GraphError,
    GraphThrottledError,
    GraphUnavailableError,
)
from shared.graph.ids import GRAPH_ID_RULE, is_graph_id
from shared.logevents import log_failure
from shared.problems import Problem, unavailable, validation_problem

if TYPE_CHECKING:
    from shared.graph.models import RecordResponseRequest


DEFAULT_RETRY_AFTER_SECONDS = 5
STORAGE_RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)


def check_id(name: str, value: str | None, *, where: str = "route") -> str:
    """``value`` if it is a usable Graph id, else a 400 problem naming ``name``."""
    if not value or not value.strip():
        reason = f"{name} is required"
    elif not is_graph_id(value):
        reason = f"{name} must be a Graph id ({GRAPH_ID_RULE})"
    else:
        return value
    detail = f"query parameter {reason}" if where == "query" else reason
    raise Problem(
        400,
        detail,
        "Invalid id",
        {"field": name, "errors": [{"field": name, "message": reason}]},
    )


def parse_record_request(body: bytes) -> RecordResponseRequest:
    """The request body as Graph's recordResponse parameters: 400 if not JSON, 422 if invalid."""
    from pydantic import ValidationError

    from shared.graph.models import RecordResponseRequest

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(
            400,
            "body: not valid JSON; send the recordResponse parameters as a JSON object",
            "Invalid JSON",
        ) from None
    try:
        return RecordResponseRequest.model_validate(data)
    except RecursionError:
        raise Problem(400, "body: nested too deeply", "Invalid request body") from None
    except ValidationError as error:
        raise validation_problem(error.errors()) from None  # type: ignore[arg-type]


def problem_for_graph_error(error: GraphError) -> Problem:
    """What the API caller gets when Graph refuses or fails (Graph's own words, no internals)."""
    extensions: dict[str, Any] = {
        "graphStatus": error.status,
        "graphCode": error.code,
        "graphRequestId": error.request_id,
        "clientRequestId": error.client_request_id,
    }
    said = f"{error.code}: {error.message}"
    if isinstance(error, GraphAuthorizationError | GraphCredentialError):
        # Our credential, not the caller's: nothing the caller can fix by changing the request.
        return Problem(
            502,
            f"the bot's identity was refused by Graph ({said})",
            "Graph refused the bot's identity",
            extensions,
        )
    if isinstance(error, GraphThrottledError | GraphUnavailableError):
        retry_after = math.ceil(error.retry_after or DEFAULT_RETRY_AFTER_SECONDS)
        return unavailable(
            f"Graph is throttling or unavailable after {error.attempts} attempt(s) ({said}); "
            f"retry after {retry_after} s",
            retry_after=retry_after,
            title="Graph unavailable",
            extensions=extensions,
        )
    if isinstance(error, GraphClientError) and error.status is not None:
        return Problem(
            error.status,
            f"Graph refused the recordResponse ({said})",
            "Graph refused the request",
            extensions,
        )
    return Problem(502, f"Graph did not answer usably ({said})", "Graph failed", extensions)


def is_storage_failure(error: BaseException) -> bool:
    """Whether ``error`` is an Azure SDK failure (storage did not answer as it should).

    The SDK's exception module loads azure.core's whole pipeline; by the time a storage call has
    failed it is loaded anyway, so the edge asks here instead of importing it at start-up.
    """
    from azure.core.exceptions import AzureError

    return isinstance(error, AzureError)


def storage_failure(error: Exception, event: str, **ids: str | None) -> Problem:
    """The 503 for a storage failure, logged as ``event`` with ``ids``; anything else re-raised.

    Call it from an ``except Exception`` block of a route: the type decides, not the caller.
    """
    if not is_storage_failure(error):
        raise error
    log_failure(log, event, error, **ids)
    return unavailable(
        "storage is unavailable; retry shortly", retry_after=STORAGE_RETRY_AFTER_SECONDS
    )
