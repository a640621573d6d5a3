"""Who called, as a recording's events tell it: the one place that decides.

The ledger keeps no caller identity yet (the call-metadata work adds its columns and the privacy
setting that says how much of it leaves the app). Every event's ``data.caller`` comes from
:func:`caller_of`, so wiring it is one function, and the schemas already allow the object.
"""

from __future__ import annotations

from typing import Any

from shared.ledger import OperationRecord


def caller_of(record: OperationRecord) -> dict[str, Any] | None:
    """The caller as an event may show it, or None (nothing known, or nothing may be shown)."""
    return None
