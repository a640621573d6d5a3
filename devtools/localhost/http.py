"""HTTP triggers: a Starlette app that turns requests into ``azure.functions.HttpRequest``.

Routes are the functions' own route templates under host.json's route prefix; ``function`` and
``admin`` auth levels need the local key in ``x-functions-key`` or ``?code=``, as on the real host.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

import azure.functions as func
from azure.functions import _abc as functions_abc
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.localhost.discovery import HttpFunction, invoke
from devtools.localhost.settings import HostConfigurationError

logger = logging.getLogger(__name__)

KEY_HEADER = "x-functions-key"
KEY_QUERY_PARAMETER = "code"
ANONYMOUS = "anonymous"

_TEMPLATE_TOKEN = re.compile(r"\{([^{}]*)\}")
_PARAMETER = re.compile(
    r"^(?P<catch_all>\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>[A-Za-z]+))?$"
)
# ASP.NET Core route constraints the Functions host accepts, as the segment each one matches.
_CONSTRAINTS = {
    "int": r"-?[0-9]+",
    "long": r"-?[0-9]+",
    "float": r"-?[0-9]+(?:\.[0-9]+)?",
    "double": r"-?[0-9]+(?:\.[0-9]+)?",
    "decimal": r"-?[0-9]+(?:\.[0-9]+)?",
    "bool": r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])",
    "alpha": r"[A-Za-z]+",
    "guid": r"\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\}?",
    "datetime": r"[^/]+",
}


def _register_constraints() -> None:
    # Starlette's convertors would turn "007" into 7; the host hands route values over as the
    # strings the client sent, so each constraint is only a pattern.
    for constraint, pattern in _CONSTRAINTS.items():

        class _Constraint(Convertor[str]):
            regex: ClassVar[str] = pattern

            def convert(self, value: str) -> str:
                return value

            def to_string(self, value: str) -> str:
                return value

        register_url_convertor(f"functions_{constraint}", _Constraint())


_register_constraints()


def route_path(route: str, route_prefix: str) -> str:
    """A Functions route template (``calls/{callId}``, ``{id:int}``, ``{*rest}``) as a Starlette path."""

    def convert(match: re.Match[str]) -> str:
        parameter = _PARAMETER.match(match.group(1))
        if parameter is None:
            raise HostConfigurationError(
                f"route {route!r}: parameter {{{match.group(1)}}} is not supported by the local "
                "host (plain, typed and catch-all parameters are)"
            )
        name = parameter["name"]
        if parameter["catch_all"]:
            return f"{{{name}:path}}"
        constraint = (parameter["constraint"] or "").lower()
        if not constraint:
            return f"{{{name}}}"
        if constraint not in _CONSTRAINTS:
            raise HostConfigurationError(
                f"route {route!r}: constraint {constraint!r} is not supported by the local host"
            )
        return f"{{{name}:functions_{constraint}}}"

    path = _TEMPLATE_TOKEN.sub(convert, route.strip("/"))
    prefix = route_prefix.strip("/")
    return "/" + "/".join(part for part in (prefix, path) if part)


def _request_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _has_valid_key(request: Request, keys: Sequence[str]) -> bool:
    candidate = request.headers.get(KEY_HEADER) or request.query_params.get(KEY_QUERY_PARAMETER)
    if not candidate:
        return False
    presented = candidate.encode()
    # Compare against every key (no early exit) so timing says nothing about which one is close.
    matches = [hmac.compare_digest(presented, key.encode()) for key in keys]
    return any(matches)


def to_starlette_response(result: Any) -> Response:
    """The function's return value as the host would write it."""
    if isinstance(result, functions_abc.HttpResponse):
        response = Response(content=result.get_body(), status_code=result.status_code)
        names = set()
        for name, value in result.headers.items():
            if name.lower() in {"content-length", "transfer-encoding"}:
                continue  # Starlette frames the body itself
            response.headers.append(name, value)
            names.add(name.lower())
        if "content-type" not in names:
            # The worker's HttpResponseConverter adds the charset to text types only.
            mimetype = result.mimetype
            content_type = (
                f"{mimetype}; charset={result.charset}"
                if mimetype.startswith("text/")
                else mimetype
            )
            response.headers.append("content-type", content_type)
        return response
    if isinstance(result, str):
        return Response(content=result, media_type="text/plain; charset=utf-8")
    if result is None:
        return Response(status_code=204)
    raise TypeError(
        f"an HTTP function must return HttpResponse or str, not {type(result).__name__}"
    )


def _endpoint(function: HttpFunction, keys: Sequence[str], timeout: timedelta) -> Any:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        # The path only: the query string may carry the key (?code=...).
        path = request.url.path
        if function.auth_level != ANONYMOUS and not _has_valid_key(request, keys):
            logger.info(
                "http function=%s method=%s path=%s status=401 outcome=unauthorized",
                function.name,
                request.method,
                path,
            )
            return Response(status_code=401)
        try:
            body = await request.body()
        except ClientDisconnect:
            # The client is gone: nobody reads an answer, and it is not the host's fault.
            logger.info(
                "http function=%s method=%s path=%s status=499 outcome=client_disconnected",
                function.name,
                request.method,
                path,
            )
            return Response(status_code=400)
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_request_headers(request),
            params=dict(request.query_params),
            route_params={name: str(value) for name, value in request.path_params.items()},
            body=body,
        )
        try:
            result = await invoke(
                function.user_function, {function.argument: http_request}, function_timeout=timeout
            )
            response = to_starlette_response(result)
        except Exception:
            logger.exception(
                "http function=%s method=%s path=%s status=500 outcome=failed",
                function.name,
                request.method,
                path,
            )
            return Response(status_code=500)
        logger.info(
            "http function=%s method=%s path=%s status=%d outcome=succeeded duration_ms=%.1f",
            function.name,
            request.method,
            path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    # The real host answers 404 for an unknown route and for a method the route does not accept.
    return Response(status_code=404)


def build_http_app(
    functions: Sequence[HttpFunction],
    *,
    keys: Sequence[str],
    route_prefix: str,
    function_timeout: timedelta,
) -> Starlette:
    if not keys and any(f.auth_level != ANONYMOUS for f in functions):
        raise HostConfigurationError("a function-level route needs at least one key")
    routes = [
        Route(
            route_path(function.route, route_prefix),
            _endpoint(function, keys, function_timeout),
            methods=list(function.methods),
            name=function.name,
        )
        for function in functions
    ]
    return Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _not_found},
    )
