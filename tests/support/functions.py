"""Drive the registered functions through the azure-functions programming model itself."""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any

import azure.functions as func


@functools.cache
def registered_functions() -> dict[str, Any]:
    """Every function of ``function_app.app`` by name (the app validates them only once)."""
    from function_app import app

    return {function.get_function_name(): function for function in app.get_functions()}


def registered(name: str) -> Any:
    """The user function registered under ``name`` in ``function_app.app``."""
    functions = registered_functions()
    if name not in functions:
        raise LookupError(f"no function {name!r}; registered: {sorted(functions)}")
    return functions[name].get_user_function()


async def invoke(name: str, *args: Any, **kwargs: Any) -> Any:
    result = registered(name)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def http_request(
    method: str,
    url: str,
    *,
    body: bytes | str | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> func.HttpRequest:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return func.HttpRequest(
        method=method,
        url=url,
        headers=headers or {},
        params=params or {},
        route_params=route_params or {},
        body=body or b"",
    )


def json_body(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())
