"""Readiness of the app's dependencies: settings, the three storage services, the prompts, and
the Graph permission the recordings need (``graphPermission``: ``ok``, ``permission not granted:
...``, or ``unknown (...)`` when no token can be had now, which alone does not make it unhealthy).

``prompts`` is ``ok`` when every prompt configured by URL is one Graph can play (WAV, PCM 16-bit,
mono, 16 kHz); otherwise it names each setting and what is wrong (shared/prompts.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from shared.settings import SettingsError
from shared.storage import StorageClients

if TYPE_CHECKING:
    from shared.graph.permission import GraphPermissionCheck
    from shared.prompts import PromptChecks

CHECK_TIMEOUT_SECONDS = 3.0


async def _check(probe: Callable[[], Awaitable[Any]]) -> str:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return "timeout"
    except (ResourceNotFoundError, _Missing):
        # The service answered: the resource is not there yet (the app creates it on first use).
        return "missing"
    except Exception as error:
        return f"unreachable ({type(error).__name__})"
    return "ok"


class _Missing(Exception):
    pass


async def check_storage(storage: StorageClients) -> dict[str, str]:
    """``ok``, ``missing`` or why not, for the app's queue, container and table (concurrently)."""

    async def table() -> None:
        query = "TableName eq @name"
        async for _ in storage.table_service.query_tables(
            query, parameters={"name": storage.table_name}
        ):
            return
        raise _Missing()

    queue, blob, table_status = await asyncio.gather(
        _check(storage.queue.get_queue_properties),
        _check(storage.container.get_container_properties),
        _check(table),
    )
    return {"queue": queue, "blob": blob, "table": table_status}


async def check_prompts(prompt_checks: PromptChecks) -> str:
    """``ok``, or each configured prompt Graph could not play, by setting name."""
    results = await prompt_checks.results()
    wrong = [check.report() for check in results if check.problem is not None]
    return "; ".join(wrong) or "ok"


class Checked(Protocol):
    """What the report checks: the storage clients and the prompts' format checks."""

    @property
    def storage(self) -> StorageClients: ...

    @property
    def prompt_checks(self) -> PromptChecks: ...

    @property
    def graph_permission(self) -> GraphPermissionCheck: ...


async def health_report(checked: Callable[[], Checked]) -> tuple[bool, dict[str, Any]]:
    """Whether the app can work, and each check's result (``checked`` may raise SettingsError)."""
    try:
        ready = checked()
    except SettingsError as error:
        return False, {"status": "unhealthy", "checks": {"settings": str(error)}}
    storage, prompts, permission = await asyncio.gather(
        check_storage(ready.storage),
        check_prompts(ready.prompt_checks),
        ready.graph_permission.status(),
    )
    checks = {"settings": "ok", **storage, "prompts": prompts, "graphPermission": permission}
    # A token endpoint that does not answer now is reported, not held against the instance.
    healthy = all(
        value == "ok" or (name == "graphPermission" and value.startswith("unknown"))
        for name, value in checks.items()
    )
    return healthy, {"status": "healthy" if healthy else "unhealthy", "checks": checks}
