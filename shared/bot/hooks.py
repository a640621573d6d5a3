"""The hook between the webhook and the bot flow: what the bot is told, and who is told.

The webhook routes call and prompt notifications, and record operations that reached a final
status, to a :class:`CallEventHandler`; the download worker tells it when a recording is settled
(:func:`tell_download_settled`), since the bot hangs up only once the recording is safe. With
``BOT_AUTO_ANSWER`` on and ``CALLBACK_BASE_URL`` set that is the
:class:`~shared.bot.flow.BotFlow`; otherwise a handler that only logs. The composition root
(``shared/services.py``) decides which, and builds it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from opentelemetry.trace import SpanKind

from shared.clock import as_utc, utc_now
from shared.logevents import log_event, log_failure
from shared.telemetry import continue_trace

if TYPE_CHECKING:
    from shared.download.outcome import DownloadOutcome
    from shared.graph.models import CommsNotification, RecordOperation

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

    async def on_recording_settled(
        self, call_id: str, operation_id: str, *, overdue: bool = False
    ) -> None:
        """The worker settled a recording's download, or it is overdue (still retrying)."""
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

    async def on_recording_settled(
        self, call_id: str, operation_id: str, *, overdue: bool = False
    ) -> None:
        log_event(
            log,
            "recording settled (no bot flow)",
            level=logging.DEBUG,
            call_id=call_id,
            operation_id=operation_id,
            overdue=overdue,
        )


async def tell_download_settled(
    handler: CallEventHandler,
    message: str | bytes,
    outcome: DownloadOutcome | None,
    *,
    hang_up_wait_seconds: float,
    last_delivery: bool = False,
    now: datetime | None = None,
) -> None:
    """After the worker ran a job: tell the bot flow, so it moves the call on once safe.

    ``outcome`` None means the download will be retried: the flow is told only when the wait is
    over (``BOT_HANG_UP_WAIT_SECONDS`` since the completion, or the message's last delivery).
    Never raises: the job's own outcome must not depend on the call's.
    """
    from shared.jobs import DownloadJob, InvalidJobError

    try:
        job = DownloadJob.from_message(message)
        if outcome is None:
            waited = ((now or utc_now()) - as_utc(job.received_at)).total_seconds()
            if not last_delivery and waited < hang_up_wait_seconds:
                return
        elif not (outcome.call_id and outcome.operation_id):
            return
        # The recording's trace goes on: the thank-you and the hang-up are part of its story.
        with continue_trace(
            job.traceparent,
            "bot flow after download",
            kind=SpanKind.INTERNAL,
            call_id=job.call_id,
            operation_id=job.operation_id,
        ):
            await handler.on_recording_settled(
                job.call_id, job.operation_id, overdue=outcome is None
            )
    except InvalidJobError:
        return
    except Exception as error:
        log_failure(log, "bot flow: not told of a settled download", error)
