"""Find an app's functions from the programming model's own metadata, and invoke them.

Everything comes from ``FunctionApp.get_functions()``: the same index the Python worker builds
for the real host. Nothing about the app is written down twice.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import azure.functions as func
from azure.functions.decorators.core import Trigger
from azure.functions.decorators.http import HttpTrigger
from azure.functions.decorators.queue import QueueTrigger
from azure.functions.decorators.timer import TimerTrigger

from devtools.localhost.settings import HostConfigurationError, resolve_setting_expressions

logger = logging.getLogger(__name__)

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# The HTTP output binding is the function's return value.
RETURN_BINDING = "$return"


@dataclass(frozen=True)
class HttpFunction:
    name: str
    user_function: Callable[..., Any]
    argument: str
    route: str
    methods: tuple[str, ...]
    auth_level: str


@dataclass(frozen=True)
class QueueFunction:
    name: str
    user_function: Callable[..., Any]
    argument: str
    queue_name: str
    connection: str


@dataclass(frozen=True)
class TimerFunction:
    name: str
    user_function: Callable[..., Any]
    argument: str
    schedule: str
    run_on_startup: bool


@dataclass(frozen=True)
class DiscoveredFunctions:
    http: tuple[HttpFunction, ...]
    queues: tuple[QueueFunction, ...]
    timers: tuple[TimerFunction, ...]

    @property
    def names(self) -> list[str]:
        functions: list[HttpFunction | QueueFunction | TimerFunction] = [
            *self.http,
            *self.queues,
            *self.timers,
        ]
        return sorted(function.name for function in functions)


def load_function_app(module_name: str, attribute: str = "app") -> func.FunctionApp:
    """Import ``module_name`` and return its ``FunctionApp`` (``function_app:app`` by default)."""
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, func.FunctionApp):
        raise HostConfigurationError(
            f"{module_name}.{attribute}: expected an azure.functions.FunctionApp, "
            f"found {type(app).__name__}"
        )
    return app


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def _check_parameters(name: str, user_function: Callable[..., Any], trigger: Trigger) -> None:
    """Fail at start, naming the parameter, rather than at the first invocation."""
    for parameter in inspect.signature(user_function).parameters.values():
        if parameter.name != trigger.name and parameter.default is inspect.Parameter.empty:
            raise HostConfigurationError(
                f"function {name!r}: parameter {parameter.name!r} is not the trigger argument "
                f"({trigger.name!r}); the local host binds only the trigger (use func start "
                "for other bindings)"
            )


def _check_bindings(name: str, function: Any, trigger: Trigger) -> None:
    for binding in function.get_bindings():
        if binding is trigger:
            continue
        if isinstance(trigger, HttpTrigger) and binding.name == RETURN_BINDING:
            continue
        raise HostConfigurationError(
            f"function {name!r}: binding {binding.name!r} ({binding.type}) is not supported by "
            "the local host; it binds triggers and the HTTP return value only"
        )


def discover_functions(
    app: func.FunctionApp, environ: Mapping[str, str] | None = None
) -> DiscoveredFunctions:
    """Every function of ``app`` by trigger kind, with ``%SETTING%`` expressions resolved."""
    env = os.environ if environ is None else environ
    # get_functions() remembers the names it indexed and refuses to index the same app again
    # (the worker indexes once per process). A test process indexes one app many times (each
    # host start, tests/support), so the record is cleared for this call and then put back.
    previous_index = app.functions_bindings
    app.functions_bindings = None
    try:
        return _discover(app, env)
    finally:
        app.functions_bindings = previous_index


def _discover(app: func.FunctionApp, env: Mapping[str, str]) -> DiscoveredFunctions:
    http: list[HttpFunction] = []
    queues: list[QueueFunction] = []
    timers: list[TimerFunction] = []
    for function in app.get_functions():
        name = function.get_function_name()
        trigger = function.get_trigger()
        user_function = function.get_user_function()
        if name is None or trigger is None:
            raise HostConfigurationError(f"{user_function!r}: a function needs a name and trigger")
        _check_bindings(name, function, trigger)
        _check_parameters(name, user_function, trigger)
        if isinstance(trigger, HttpTrigger):
            methods = tuple(_enum_value(m).upper() for m in trigger.methods or ()) or ALL_METHODS
            http.append(
                HttpFunction(
                    name=name,
                    user_function=user_function,
                    argument=trigger.name,
                    route=str(trigger.route or name).strip("/"),
                    methods=methods,
                    auth_level=_enum_value(trigger.auth_level or func.AuthLevel.FUNCTION).lower(),
                )
            )
        elif isinstance(trigger, QueueTrigger):
            queues.append(
                QueueFunction(
                    name=name,
                    user_function=user_function,
                    argument=trigger.name,
                    queue_name=resolve_setting_expressions(
                        trigger.queue_name, env, name=f"function {name!r} queue_name"
                    ).lower(),
                    connection=trigger.connection,
                )
            )
        elif isinstance(trigger, TimerTrigger):
            timers.append(
                TimerFunction(
                    name=name,
                    user_function=user_function,
                    argument=trigger.name,
                    schedule=resolve_setting_expressions(
                        trigger.schedule, env, name=f"function {name!r} schedule"
                    ),
                    run_on_startup=bool(trigger.run_on_startup),
                )
            )
        else:
            raise HostConfigurationError(
                f"function {name!r}: trigger type {trigger.type!r} is not supported by the local "
                "host (HTTP, queue and timer triggers are); use func start"
            )
    return DiscoveredFunctions(http=tuple(http), queues=tuple(queues), timers=tuple(timers))


class FunctionTimeoutError(TimeoutError):
    """An invocation ran longer than host.json ``functionTimeout``."""


async def invoke(
    user_function: Callable[..., Any], arguments: Mapping[str, Any], *, function_timeout: timedelta
) -> Any:
    """Run one invocation as the Python worker does: coroutines on this loop, others in a thread."""
    deadline = asyncio.timeout(function_timeout.total_seconds())
    try:
        async with deadline:
            if inspect.iscoroutinefunction(user_function):
                return await user_function(**arguments)
            result = await asyncio.to_thread(user_function, **arguments)
            if inspect.isawaitable(result):
                return await result
            return result
    except TimeoutError as error:
        if not deadline.expired():
            raise  # the function's own timeout (an SDK call, say), not functionTimeout
        raise FunctionTimeoutError(
            f"exceeded functionTimeout ({function_timeout.total_seconds():g} s)"
        ) from error
