"""Who called, as a recording's events tell it: the one place that decides.

The ledger keeps the caller's identity on each recording's row under ``CALLER_IDENTITY``
(shared/ledger/identity.py) and clears it with ``expired`` and ``erased``; an event shows what the
row holds when the event is built, so an expired or erased recording's event names nobody.
"""

from __future__ import annotations

from typing import Any

from shared.ledger import OperationRecord
from shared.ledger.identity import call_view


def caller_of(record: OperationRecord) -> dict[str, Any] | None:
    """The caller as an event may show it, or None (nothing known, or nothing may be shown)."""
    caller = call_view(record.fields).get("caller")
    return dict(caller) if caller else None
