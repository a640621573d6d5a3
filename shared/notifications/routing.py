"""Routing an authenticated payload: one table by resource kind says what each notification is.

- ``recordOperation`` final and completed with a location: a download job (the job carries the
  completion's facts; the worker's first ledger write records them, so this hot path costs one
  storage request per recording); failed, or completed without a location: a ``failed`` row;
  either way the bot flow hears of it afterwards (thank-you prompt, hang-up);
- ``call`` and ``playPromptOperation``: the bot flow;
- anything else: logged at debug and acknowledged.

A new notification kind is one :class:`Route` in :data:`ROUTES`: how to plan it, and what the bot
flow is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.bot.hooks import CallEventHandler
from shared.enqueue import ENQUEUE_DEADLINE_SECONDS, NotStored, describe_error, enqueue_jobs
from shared.ledger import OperationLedger
from shared.logevents import log_event
from shared.telemetry import count_outcome

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.graph.models import CommsNotification, CommsNotifications
    from shared.jobs import DownloadJob

log = logging.getLogger(__name__)

# Graph waits for our answer; the bot flow gets a few seconds in total, then the webhook replies.
HANDLER_TIMEOUT_SECONDS = 5.0
_FINAL = ("completed", "failed")


class Outcome(StrEnum):
    QUEUED = "queued"
    REFUSED = "refused"  # the job could not be queued: the request answers 503
    FAILED = "failed"
    DUPLICATE = "duplicate"
    HANDLED = "handled"
    HANDLER_FAILED = "handler_failed"
    HANDLER_TIMEOUT = "handler_timeout"
    IGNORED = "ignored"


@dataclass
class RoutingReport:
    """What happened to each notification of one payload (for the request's log line)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    jobs: list[DownloadJob] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] += 1


@dataclass(frozen=True)
class Failure:
    notification: CommsNotification
    reason: str


@dataclass
class Plan:
    """What one payload asks for, decided before any I/O."""

    tenant_id: str | None
    received_at: datetime
    report: RoutingReport
    jobs: list[tuple[CommsNotification, DownloadJob]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    bot_flow: list[CommsNotification] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)


def _log_outcome(
    outcome: Outcome,
    notification: CommsNotification,
    *,
    level: int = logging.INFO,
    **details: Any,
) -> None:
    log_event(
        log,
        "notification",
        level=level,
        outcome=outcome.value,
        notification_kind=notification.resource_kind,
        call_id=notification.call_id,
        operation_id=notification.operation_id,
        change_type=notification.change_type,
        **details,
    )


# --------------------------------------------------------------------------- the table


def _plan_for_bot_flow(plan: Plan, notification: CommsNotification) -> None:
    plan.bot_flow.append(notification)


def _plan_record_operation(plan: Plan, notification: CommsNotification) -> None:
    from shared.graph.models import RecordOperation
    from shared.jobs import DownloadJob, InvalidJobError

    operation = notification.resource_data
    assert isinstance(operation, RecordOperation)
    call_id, operation_id = notification.call_id, notification.operation_id
    assert call_id is not None
    assert operation_id is not None
    if operation.status not in _FINAL:
        _log_outcome(Outcome.IGNORED, notification, status=operation.status)
        plan.report.count(Outcome.IGNORED)
        return
    if (call_id, operation_id) in plan.seen:
        _log_outcome(Outcome.DUPLICATE, notification, status=operation.status)
        plan.report.count(Outcome.DUPLICATE)
        return
    plan.seen.add((call_id, operation_id))
    # The bot flow moves on (thank-you prompt, hang up) once the recording is final.
    plan.bot_flow.append(notification)
    if operation.status == "failed":
        plan.failures.append(Failure(notification, "recordOperation failed"))
        return
    try:
        job = DownloadJob.from_operation(
            operation.model_copy(update={"id": operation_id}),
            call_id=call_id,
            tenant_id=plan.tenant_id,
            received_at=plan.received_at,
        )
    except InvalidJobError:
        reason = "completed without recordingLocation or recordingAccessToken"
        plan.failures.append(Failure(notification, reason))
        return
    plan.jobs.append((notification, job))


def _tell_call(
    handler: CallEventHandler, notification: CommsNotification, tenant_id: str | None
) -> Awaitable[None]:
    return handler.on_call_notification(notification, tenant_id=tenant_id)


def _tell_prompt(
    handler: CallEventHandler, notification: CommsNotification, tenant_id: str | None
) -> Awaitable[None]:
    return handler.on_prompt_notification(notification, tenant_id=tenant_id)


def _tell_record(
    handler: CallEventHandler, notification: CommsNotification, tenant_id: str | None
) -> Awaitable[None]:
    from shared.graph.models import RecordOperation

    operation = notification.resource_data
    assert isinstance(operation, RecordOperation)
    assert notification.call_id is not None
    final = operation.model_copy(update={"id": notification.operation_id})
    return handler.on_record_completed(notification.call_id, final)


@dataclass(frozen=True)
class Route:
    """How one resource kind is planned, and how the bot flow is told about it."""

    plan: Callable[[Plan, CommsNotification], None]
    tell: Callable[[CallEventHandler, CommsNotification, str | None], Awaitable[None]]


ROUTES: dict[str, Route] = {
    "recordOperation": Route(_plan_record_operation, _tell_record),
    "call": Route(_plan_for_bot_flow, _tell_call),
    "playPromptOperation": Route(_plan_for_bot_flow, _tell_prompt),
}


def plan_payload(
    payload: CommsNotifications, *, tenant_id: str | None, received_at: datetime
) -> Plan:
    plan = Plan(tenant_id=tenant_id, received_at=received_at, report=RoutingReport())
    for notification in payload.value:
        route = ROUTES.get(notification.resource_kind)
        if route is None:
            data = notification.resource_data
            declared = data.get("@odata.type") if isinstance(data, dict) else None
            _log_outcome(Outcome.IGNORED, notification, level=logging.DEBUG, type=declared)
            plan.report.count(Outcome.IGNORED)
            continue
        route.plan(plan, notification)
    return plan


# --------------------------------------------------------------------------- carrying it out


async def _send_jobs(
    queue: QueueClient,
    plan: Plan,
    deadline: float,
    on_missing_queue: Callable[[], Awaitable[object]] | None,
) -> None:
    notifications = [notification for notification, _ in plan.jobs]
    jobs = [job for _, job in plan.jobs]
    enqueued = await enqueue_jobs(queue, jobs, deadline=deadline, on_missing_queue=on_missing_queue)
    for index in enqueued.sent:
        _log_outcome(Outcome.QUEUED, notifications[index], tenant_id=jobs[index].tenant_id)
        plan.report.count(Outcome.QUEUED)
        plan.report.jobs.append(jobs[index])
    for index, why in sorted(enqueued.refused.items()):
        _log_outcome(Outcome.REFUSED, notifications[index], level=logging.ERROR, error=why)
        plan.report.count(Outcome.REFUSED)
    enqueued.raise_if_refused(len(jobs))


async def _write_failures(
    ready_ledger: Callable[[], Awaitable[OperationLedger]], plan: Plan
) -> None:
    """Record failed operations; raises :class:`NotStored` when one could not be written.

    Completed recordings are not written here: their job carries the facts and the worker's
    first ledger write records them. The ledger is asked for only when there is a failure:
    a payload of completions never loads the Tables SDK.
    """
    from shared.graph.models import RecordOperation

    if not plan.failures:
        return
    ledger = await ready_ledger()

    async def write(failure: Failure) -> None:
        from shared.graph.models import RecordOperation

        notification = failure.notification
        operation = notification.resource_data
        assert isinstance(operation, RecordOperation)
        assert notification.call_id is not None
        assert notification.operation_id is not None
        await ledger.mark_failed(
            notification.call_id,
            notification.operation_id,
            failure.reason,
            result=operation.result_info,
            client_context=operation.client_context,
            tenant_id=plan.tenant_id,
        )

    results = await asyncio.gather(*(write(f) for f in plan.failures), return_exceptions=True)
    unwritten = 0
    for failure, result in zip(plan.failures, results, strict=True):
        operation = failure.notification.resource_data
        assert isinstance(operation, RecordOperation)
        info = operation.result_info
        written = not isinstance(result, BaseException)
        unwritten += not written
        _log_outcome(
            Outcome.FAILED,
            failure.notification,
            # The notification is the only carrier of this result: keep it in the log at least.
            level=logging.WARNING if written else logging.ERROR,
            reason=failure.reason,
            result_code=info.code if info else None,
            result_subcode=info.subcode if info else None,
            ledger=None if written else "write_failed",
            error=None if written else describe_error(result),  # type: ignore[arg-type]
        )
        plan.report.count(Outcome.FAILED)
        count_outcome("failed", result_subcode=info.subcode if info else None, stage="graph")
    if unwritten:
        # The notification is the only carrier of this failure: Graph must send it again.
        raise NotStored(f"{unwritten} failed recording(s) could not be recorded; retry later")


async def _tell_bot_flow(handler: CallEventHandler, plan: Plan, time_limit: float) -> None:
    """Run the bot flow in payload order (call states must be seen in the order sent).

    A failing or slow handler never fails the request: the notification was authenticated and
    parsed, and an error here would make Graph resend notifications the bot flow already saw.
    """
    pending = list(plan.bot_flow)
    report = plan.report
    try:
        async with asyncio.timeout(time_limit):
            while pending:
                notification = pending[0]
                try:
                    await ROUTES[notification.resource_kind].tell(
                        handler, notification, plan.tenant_id
                    )
                except Exception as error:
                    _log_outcome(
                        Outcome.HANDLER_FAILED,
                        notification,
                        level=logging.ERROR,
                        error=type(error).__name__,
                    )
                    log.debug("bot flow handler error", exc_info=True)
                    report.count(Outcome.HANDLER_FAILED)
                else:
                    _log_outcome(Outcome.HANDLED, notification)
                    report.count(Outcome.HANDLED)
                pending.pop(0)
    except TimeoutError:
        for notification in pending:
            _log_outcome(
                Outcome.HANDLER_TIMEOUT,
                notification,
                level=logging.ERROR,
                timeout_seconds=time_limit,
            )
            report.count(Outcome.HANDLER_TIMEOUT)


async def route_notifications(
    payload: CommsNotifications,
    *,
    tenant_id: str | None,
    queue: QueueClient,
    ledger: Callable[[], Awaitable[OperationLedger]],
    handler: CallEventHandler,
    received_at: datetime | None = None,
    handler_timeout: float = HANDLER_TIMEOUT_SECONDS,
    enqueue_deadline: float = ENQUEUE_DEADLINE_SECONDS,
    on_missing_queue: Callable[[], Awaitable[object]] | None = None,
) -> RoutingReport:
    """Route every notification of an authenticated payload (see the module doc).

    Raises :class:`~shared.enqueue.NotStored` when a download job could not be queued (nothing
    else is attempted then) or a failure could not be recorded: the sender resends the payload,
    and the worker and the forward-only ledger make the repeat harmless. The payload's
    record operations must have their ids (:func:`~shared.notifications.reading.read_notifications`
    refuses those that do not). ``ledger`` returns the ledger ready for writes (its table
    created if missing); it is awaited only when a failure must be recorded.
    ``on_missing_queue`` runs before a missing download queue is created (see
    :func:`~shared.enqueue.enqueue_jobs`).
    """
    plan = plan_payload(payload, tenant_id=tenant_id, received_at=received_at or datetime.now(UTC))
    if plan.jobs:
        await _send_jobs(queue, plan, enqueue_deadline, on_missing_queue)
    written, _ = await asyncio.gather(
        _write_failures(ledger, plan),
        _tell_bot_flow(handler, plan, handler_timeout),
        return_exceptions=True,
    )
    if isinstance(written, BaseException):
        raise written
    return plan.report
