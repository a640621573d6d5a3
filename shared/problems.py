"""HTTP errors as RFC 9457 ``application/problem+json``: a title, and a detail users can act on.

A detail names the field or the failed check; it never carries a token, a stack trace or other
internals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import azure.functions as func

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Problem(Exception):
    status: int
    detail: str
    title: str | None = None
    extensions: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "type": "about:blank",
            "title": self.title or HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }

    def to_response(self) -> func.HttpResponse:
        import azure.functions as func

        return func.HttpResponse(
            json.dumps(self.body()),
            status_code=self.status,
            mimetype=PROBLEM_CONTENT_TYPE,
            headers=self.headers or None,
        )


def unavailable(
    detail: str,
    *,
    retry_after: float | None,
    title: str | None = None,
    extensions: dict[str, Any] | None = None,
) -> Problem:
    """A 503: send the request again, after ``retry_after`` seconds when there is a promise."""
    headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
    return Problem(503, detail, title, extensions or {}, headers)


def not_found(detail: str, title: str) -> Problem:
    """A 404 whose title names what is missing and whose detail names the ids asked for."""
    return Problem(404, detail, title)


def validation_problem(
    errors: list[dict[str, Any]], *, status: int = 422, title: str = "Invalid request body"
) -> Problem:
    """A problem listing each invalid field (from pydantic's ``errors()``), without the input."""
    invalid = [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "message": error["msg"],
        }
        for error in errors
    ]
    names = ", ".join(item["field"] for item in invalid)
    return Problem(status, f"invalid field(s): {names}", title, {"errors": invalid})


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    import azure.functions as func

    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/json", headers=headers
    )
