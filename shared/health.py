"""Readiness of the app's dependencies: settings and the three storage services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shared.settings import SettingsError, get_settings
from shared.storage import StorageClients, get_storage

CHECK_TIMEOUT_SECONDS = 3.0


async def _check(probe: Callable[[], Awaitable[Any]]) -> str:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return "timeout"
    except Exception as error:
        return f"unreachable ({type(error).__name__})"
    return "ok"


async def check_storage(storage: StorageClients) -> dict[str, str]:
    """``ok`` or a short reason for each service; runs the probes concurrently."""

    async def table() -> None:
        async for _ in storage.table_service.list_tables(results_per_page=1):
            break

    queue, blob, table_status = await asyncio.gather(
        _check(storage.queue.get_queue_properties),
        _check(storage.blob_service.get_service_properties),
        _check(table),
    )
    return {"queue": queue, "blob": blob, "table": table_status}


async def health_report() -> tuple[bool, dict[str, Any]]:
    try:
        settings = get_settings()
    except SettingsError as error:
        return False, {"status": "unhealthy", "checks": {"settings": str(error)}}
    checks = {"settings": "ok", **await check_storage(get_storage(settings))}
    healthy = all(value == "ok" for value in checks.values())
    return healthy, {"status": "healthy" if healthy else "unhealthy", "checks": checks}
