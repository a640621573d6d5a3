"""Graph's notifications to ``POST /api/calls``: read the payload, then route each notification.

- :mod:`.reading`: the body at the HTTP edge (media type, size, JSON, the wire model, ids);
- :mod:`.routing`: one table by resource kind says what each notification becomes: a download
  job (:mod:`shared.enqueue`), a ledger row, or a call event for the bot flow
  (:mod:`shared.bot.hooks`).

The webhook replies 2xx only once every job of the payload is on the queue; otherwise
:class:`QueueUnavailable` makes it answer 503 so the sender retries the whole payload (the worker
and the ledger make a repeated job harmless).
"""

from shared.bot.hooks import CallEventHandler, LoggingCallEventHandler
from shared.enqueue import NotStored, QueueUnavailable
from shared.notifications.reading import JSON_MEDIA_TYPE, MAX_BODY_BYTES, read_notifications
from shared.notifications.routing import (
    HANDLER_TIMEOUT_SECONDS,
    Outcome,
    RoutingReport,
    route_notifications,
)

__all__ = [
    "HANDLER_TIMEOUT_SECONDS",
    "JSON_MEDIA_TYPE",
    "MAX_BODY_BYTES",
    "CallEventHandler",
    "LoggingCallEventHandler",
    "NotStored",
    "Outcome",
    "QueueUnavailable",
    "RoutingReport",
    "read_notifications",
    "route_notifications",
]
