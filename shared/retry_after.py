"""``Retry-After`` as Graph and the recording server send it (RFC 9110 §10.2.3)."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

from shared.clock import as_utc, utc_now


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait: delta-seconds or an HTTP date; ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (as_utc(when) - (now or utc_now())).total_seconds())
