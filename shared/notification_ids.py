"""The ids a webhook request's own log line and span carry, from the notifications it brought.

Operators search a call's telemetry by ``call_id`` (docs/operations.md); the per-request line of
``POST /api/calls`` is the one a dropped or slow answer shows up in, so it carries the ids too.
Graph sends one notification per request as a rule; a batch naming several calls or operations
carries them all, space-separated, under ``call_ids`` / ``operation_ids`` instead (a KQL
``has`` finds one), so that ``call_id`` never holds anything but one id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.graph.models import CommsNotification


def recording_ids(notifications: Iterable[CommsNotification]) -> dict[str, str]:
    """``call_id``/``operation_id`` when one of each (or ``call_ids``/``operation_ids``)."""
    batch = list(notifications)
    ids: dict[str, str] = {}
    for name, found in (
        ("call_id", _distinct(n.call_id for n in batch)),
        ("operation_id", _distinct(n.operation_id for n in batch)),
    ):
        if len(found) == 1:
            ids[name] = found[0]
        elif found:
            ids[name.replace("_id", "_ids")] = " ".join(found)
    return ids


def _distinct(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(value for value in values if value))
