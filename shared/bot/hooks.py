"""The hook between the webhook and the bot flow: what the bot is told, and who is told.

The webhook routes call and prompt notifications, and record operations that reached a final
status, to a :class:`CallEventHandler`. With ``BOT_AUTO_ANSWER`` on and ``CALLBACK_BASE_URL``
set that is the :class:`~shared.bot.flow.BotFlow`; otherwise a handler that only logs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from shared.graph.models import CommsNotification, RecordOperation
from shared.logevents import log_event

if TYPE_CHECKING:
    from shared.services import Services

log = logging.getLogger(__name__)


class CallEventHandler(Protocol):
    """What the bot flow does with the notifications it cares about, in payload order."""

    async def on_call_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None: ...

    async def on_prompt_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None: ...

    async def on_record_completed(self, call_id: str, operation: RecordOperation) -> None:
        """A record operation reached ``completed`` or ``failed`` (its job is already queued)."""
        ...


class LoggingCallEventHandler:
    """The handler when the bot flow is off: logs what it would have handled."""

    async def on_call_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        log_event(
            log,
            "call notification not handled (no bot flow)",
            call_id=notification.call_id,
            change_type=notification.change_type,
            state=getattr(notification.resource_data, "state", None),
        )

    async def on_prompt_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        log_event(
            log,
            "playPrompt notification not handled (no bot flow)",
            call_id=notification.call_id,
            operation_id=notification.operation_id,
            status=getattr(notification.resource_data, "status", None),
        )

    async def on_record_completed(self, call_id: str, operation: RecordOperation) -> None:
        log_event(
            log,
            "record operation finished (no bot flow)",
            call_id=call_id,
            operation_id=operation.id,
            status=operation.status,
        )


def call_event_handler(services: Services) -> CallEventHandler:
    """The one place that decides whether the bot flow handles call events."""
    settings = services.settings
    if settings.auto_answer and settings.callback_base_url:
        from shared.bot.flow import BotFlow

        return BotFlow(services.graph, services.ledger, settings, queue=services.storage.queue)
    return LoggingCallEventHandler()
