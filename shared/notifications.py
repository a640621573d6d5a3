"""Graph's notifications to ``POST /api/calls``: read the payload, route each notification.

Routing by the resource's ``@odata.type``:

- ``recordOperation`` completed with a ``recordingLocation``: a download job on the queue (the
  job carries the completion's facts; the worker's first ledger write records them, so this hot
  path costs one storage request per recording);
- ``recordOperation`` failed, or completed without a location: the failure goes to the ledger;
- ``call`` and ``playPromptOperation``, and final record operations once queued or recorded:
  handed to the bot flow (a :class:`CallEventHandler`);
- anything else: logged at debug and acknowledged.

The webhook replies 2xx only once every job of the payload is on the queue; otherwise
:class:`QueueUnavailable` makes it answer 503 so the sender retries the whole payload (the worker
and the ledger make a repeated job harmless). Recording access tokens never leave the job message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from shared.graph.models import CommsNotification, CommsNotifications, RecordOperation, normalize_id
from shared.graph.models import parse_resource_url as _parse_resource_url
from shared.jobs import JOB_TIME_TO_LIVE, DownloadJob, InvalidJobError
from shared.ledger import OperationLedger, OperationStatus, result_fields
from shared.problems import Problem, validation_problem

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.settings import Settings
    from shared.storage import StorageClients

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
JSON_MEDIA_TYPE = "application/json"
# Graph waits for our answer; the bot flow gets a few seconds in total, then the webhook replies.
HANDLER_TIMEOUT_SECONDS = 5.0
# Past this the sender is better served by a 503 and a retry than by waiting on the queue
# (the storage client's own timeouts and retries can add up to much more).
ENQUEUE_DEADLINE_SECONDS = 8.0


# --------------------------------------------------------------------------- bot-flow hook


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
    """The stand-in until the bot flow is plugged in: logs what it would have handled."""

    async def on_call_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        data = notification.resource_data
        state = getattr(data, "state", None)
        log.info(
            "call notification not handled (no bot flow) call_id=%s change_type=%s state=%s",
            _call_id(notification),
            notification.change_type,
            state,
        )

    async def on_prompt_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        data = notification.resource_data
        log.info(
            "playPrompt notification not handled (no bot flow) call_id=%s operation_id=%s status=%s",
            _call_id(notification),
            _operation_id(notification),
            getattr(data, "status", None),
        )

    async def on_record_completed(self, call_id: str, operation: RecordOperation) -> None:
        log.info(
            "record operation finished (no bot flow) call_id=%s operation_id=%s status=%s",
            call_id,
            operation.id,
            operation.status,
        )


def call_event_handler(settings: Settings, storage: StorageClients) -> CallEventHandler:
    """The bot flow the webhook hands notifications to: the one place to plug it in."""
    if settings.auto_answer and settings.callback_base_url:
        from shared.bot.flow import bot_flow

        return bot_flow(settings, storage)
    return LoggingCallEventHandler()


# --------------------------------------------------------------------------- reading the body


def _flatten_errors(error: ValidationError, prefix: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """pydantic errors with nested model errors expanded, so a field path names the leaf.

    ``resourceData`` is validated inside a validator, whose nested error would otherwise surface
    as one message that embeds the offending input.
    """
    flat: list[dict[str, Any]] = []
    for item in error.errors(include_input=False, include_url=False):
        location = prefix + tuple(item["loc"])
        nested = (item.get("ctx") or {}).get("error")
        if isinstance(nested, ValidationError):
            flat.extend(_flatten_errors(nested, location))
        else:
            flat.append({"loc": location, "msg": item["msg"].split("\n", 1)[0]})
    return flat


def read_notifications(
    body: bytes, *, content_type: str | None, content_length: str | None
) -> CommsNotifications:
    """The payload of a notification request, or a :class:`Problem` (415, 413 or 400)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        raise Problem(
            415,
            f"Content-Type must be {JSON_MEDIA_TYPE}, not {media_type[:80] or 'missing'}",
            headers={"Accept-Post": JSON_MEDIA_TYPE},
        )
    if content_length is not None and content_length.strip():
        try:
            declared = int(content_length)
        except ValueError:
            raise Problem(400, "Content-Length is not a number") from None
        if declared > MAX_BODY_BYTES:
            raise Problem(413, f"body exceeds {MAX_BODY_BYTES} bytes (Content-Length)")
    # The header can lie or be absent (chunked); the body actually received decides too.
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, f"body exceeds {MAX_BODY_BYTES} bytes")
    if not body:
        raise Problem(400, "body is empty; expected a commsNotifications JSON object")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise Problem(400, "body is not UTF-8 encoded JSON") from None
    except ValueError as error:
        raise Problem(400, f"body is not valid JSON: {error}") from None
    try:
        payload = CommsNotifications.model_validate(data)
    except ValidationError as error:
        raise validation_problem(
            _flatten_errors(error), status=400, title="Not a commsNotifications payload"
        ) from None
    _check_record_operations(payload)
    return payload


def _check_record_operations(payload: CommsNotifications) -> None:
    """A record operation we cannot tie to a call and an operation id is refused as a whole.

    Refusing the payload (nothing is enqueued) is better than acknowledging it and losing the
    recording: the sender sees a 400 that names the field.
    """
    errors = []
    for index, notification in enumerate(payload.value):
        if notification.resource_kind != "recordOperation":
            continue
        ids = _parse_resource_url(notification.resource_url)
        if ids is None:
            errors.append(
                {
                    "loc": ("value", index, "resourceUrl"),
                    "msg": "not a /communications/calls/{id}/operations/{id} URL",
                }
            )
            continue
        operation = notification.resource_data
        assert isinstance(operation, RecordOperation)
        if not operation.id and not ids.operation_id:
            errors.append(
                {
                    "loc": ("value", index, "resourceData", "id"),
                    "msg": "record operation has no id (neither in resourceData nor resourceUrl)",
                }
            )
    if errors:
        raise validation_problem(errors, status=400, title="Not a commsNotifications payload")


# --------------------------------------------------------------------------- routing


class Outcome(StrEnum):
    QUEUED = "queued"
    REFUSED = "refused"  # the job could not be queued: the request answers 503
    FAILED = "failed"
    DUPLICATE = "duplicate"
    HANDLED = "handled"
    HANDLER_FAILED = "handler_failed"
    HANDLER_TIMEOUT = "handler_timeout"
    IGNORED = "ignored"


class QueueUnavailable(Exception):
    """Some download job of the payload could not be queued (the message is safe to return)."""


@dataclass
class RoutingReport:
    """What happened to each notification of one payload (for the request's log line)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    jobs: list[DownloadJob] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] += 1


def _call_id(notification: CommsNotification) -> str | None:
    ids = _parse_resource_url(notification.resource_url)
    return normalize_id(ids.call_id) if ids else None


def _operation_id(notification: CommsNotification) -> str | None:
    data = notification.resource_data
    op_id = getattr(data, "id", None) if not isinstance(data, dict) else data.get("id")
    if not op_id:
        ids = _parse_resource_url(notification.resource_url)
        op_id = ids.operation_id if ids else None
    return normalize_id(str(op_id)) if op_id else None


def _log_outcome(
    outcome: Outcome,
    notification: CommsNotification,
    *,
    level: int = logging.INFO,
    call_id: str | None = None,
    operation_id: str | None = None,
    **details: Any,
) -> None:
    call_id = call_id or _call_id(notification)
    operation_id = operation_id or _operation_id(notification)
    kind = notification.resource_kind
    text = " ".join(f"{name}={value}" for name, value in details.items())
    log.log(
        level,
        "notification outcome=%s kind=%s call_id=%s operation_id=%s change_type=%s %s",
        outcome.value,
        kind,
        call_id,
        operation_id,
        notification.change_type,
        text,
        extra={
            "outcome": outcome.value,
            "notification_kind": kind,
            "call_id": call_id,
            "operation_id": operation_id,
            **{f"detail_{name}": value for name, value in details.items()},
        },
    )


@dataclass(frozen=True)
class _Failure:
    notification: CommsNotification
    call_id: str
    operation_id: str
    reason: str


@dataclass
class _Plan:
    jobs: list[tuple[CommsNotification, DownloadJob]] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    bot_flow: list[CommsNotification] = field(default_factory=list)


def _plan(
    payload: CommsNotifications,
    *,
    tenant_id: str | None,
    received_at: datetime,
    report: RoutingReport,
) -> _Plan:
    plan = _Plan()
    seen: set[tuple[str, str]] = set()
    for notification in payload.value:
        kind = notification.resource_kind
        if kind in ("call", "playPromptOperation"):
            plan.bot_flow.append(notification)
            continue
        if kind != "recordOperation":
            data = notification.resource_data
            declared = data.get("@odata.type") if isinstance(data, dict) else None
            _log_outcome(Outcome.IGNORED, notification, level=logging.DEBUG, type=declared)
            report.count(Outcome.IGNORED)
            continue
        operation = notification.resource_data
        assert isinstance(operation, RecordOperation)
        call_id = _call_id(notification)
        operation_id = _operation_id(notification)
        if call_id is None or operation_id is None:
            raise AssertionError("route_notifications checked every record operation's ids")
        if operation.status not in ("completed", "failed"):
            _log_outcome(Outcome.IGNORED, notification, status=operation.status)
            report.count(Outcome.IGNORED)
            continue
        if (call_id, operation_id) in seen:
            _log_outcome(Outcome.DUPLICATE, notification, status=operation.status)
            report.count(Outcome.DUPLICATE)
            continue
        seen.add((call_id, operation_id))
        # The bot flow moves on (thank-you prompt, hang up) once the recording is final.
        plan.bot_flow.append(notification)
        if operation.status == "failed":
            plan.failures.append(
                _Failure(notification, call_id, operation_id, "recordOperation failed")
            )
            continue
        try:
            job = DownloadJob.from_operation(
                operation.model_copy(update={"id": operation_id}),
                call_id=call_id,
                tenant_id=tenant_id,
                received_at=received_at,
            )
        except InvalidJobError:
            plan.failures.append(
                _Failure(
                    notification,
                    call_id,
                    operation_id,
                    "completed without recordingLocation or recordingAccessToken",
                )
            )
            continue
        plan.jobs.append((notification, job))
    return plan


async def _send_jobs(
    queue: QueueClient,
    jobs: list[tuple[CommsNotification, DownloadJob]],
    report: RoutingReport,
    deadline: float,
) -> None:
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    time_to_live = int(JOB_TIME_TO_LIVE.total_seconds())
    creating = asyncio.Lock()
    created = False

    async def create_queue_once() -> None:
        # A fresh Azurite under `func start` has no queue yet; in Azure, Bicep creates it.
        nonlocal created
        async with creating:
            if not created:
                with contextlib.suppress(ResourceExistsError):
                    await queue.create_queue()
                created = True
                log.warning("queue %s did not exist; created it", queue.queue_name)

    async def send(job: DownloadJob) -> None:
        try:
            await queue.send_message(job.to_message(), time_to_live=time_to_live)
        except ResourceNotFoundError as error:
            if getattr(error, "error_code", None) != "QueueNotFound":
                raise
            await create_queue_once()
            await queue.send_message(job.to_message(), time_to_live=time_to_live)

    sent: set[int] = set()
    errors: dict[int, Exception] = {}

    async def settle(index: int, job: DownloadJob) -> None:
        try:
            await send(job)
        except Exception as error:  # any failure means "not on the queue": the request is 503
            errors[index] = error
        else:
            sent.add(index)

    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(settle(index, job) for index, (_, job) in enumerate(jobs)))
    except TimeoutError:
        pass  # whatever is not confirmed by now is refused; a late duplicate is harmless
    refused = 0
    for index, (notification, job) in enumerate(jobs):
        if index in sent:
            _log_outcome(
                Outcome.QUEUED,
                notification,
                call_id=job.call_id,
                operation_id=job.operation_id,
                tenant_id=job.tenant_id,
            )
            report.count(Outcome.QUEUED)
            report.jobs.append(job)
            continue
        refused += 1
        error = errors.get(index)
        _log_outcome(
            Outcome.REFUSED,
            notification,
            level=logging.ERROR,
            call_id=job.call_id,
            operation_id=job.operation_id,
            error=_describe_error(error) if error else f"no answer within {deadline} s",
        )
        report.count(Outcome.REFUSED)
    if refused:
        raise QueueUnavailable(
            f"{refused} of {len(jobs)} download job(s) could not be queued; retry later"
        )


def _describe_error(error: BaseException) -> str:
    """Type and storage error code only: SDK messages can be long and carry request details."""
    code = getattr(error, "error_code", None)
    return f"{type(error).__name__}({code})" if code else type(error).__name__


async def _write_ledger(
    ledger: OperationLedger,
    failures: Iterable[_Failure],
    tenant_id: str | None,
    report: RoutingReport,
) -> None:
    """Record failed operations; a write failure is logged, never turned into a 5xx.

    Completed recordings are not written here: their job carries the facts and the worker's
    first ledger write records them. Answering 5xx now would make the sender resend, and
    enqueue, everything again.
    """

    async def failed(failure: _Failure) -> None:
        operation = failure.notification.resource_data
        assert isinstance(operation, RecordOperation)
        result = operation.result_info
        await ledger.advance(
            failure.call_id,
            failure.operation_id,
            OperationStatus.FAILED,
            **result_fields(
                result.code if result else None,
                result.subcode if result else None,
                result.message if result else None,
            ),
            FailureReason=failure.reason,
            ClientContext=operation.client_context,
            TenantId=tenant_id,
        )

    failure_list = list(failures)
    results = await asyncio.gather(
        *(failed(failure) for failure in failure_list), return_exceptions=True
    )
    for failure, result in zip(failure_list, results, strict=True):
        operation = failure.notification.resource_data
        assert isinstance(operation, RecordOperation)
        info = operation.result_info
        subcode = info.subcode if info else None
        if isinstance(result, BaseException):
            # The notification is the only carrier of this result: keep it in the log at least.
            _log_outcome(
                Outcome.FAILED,
                failure.notification,
                level=logging.ERROR,
                call_id=failure.call_id,
                operation_id=failure.operation_id,
                reason=repr(failure.reason),
                result_code=info.code if info else None,
                result_subcode=subcode,
                ledger="write_failed",
                error=_describe_error(result),
            )
        else:
            _log_outcome(
                Outcome.FAILED,
                failure.notification,
                level=logging.WARNING,
                call_id=failure.call_id,
                operation_id=failure.operation_id,
                reason=repr(failure.reason),
                result_code=info.code if info else None,
                result_subcode=subcode,
            )
        report.count(Outcome.FAILED)


async def _hand_over(
    handler: CallEventHandler, notification: CommsNotification, tenant_id: str | None
) -> None:
    kind = notification.resource_kind
    if kind == "call":
        await handler.on_call_notification(notification, tenant_id=tenant_id)
    elif kind == "playPromptOperation":
        await handler.on_prompt_notification(notification, tenant_id=tenant_id)
    elif kind == "recordOperation":
        operation = notification.resource_data
        call_id, operation_id = _call_id(notification), _operation_id(notification)
        assert isinstance(operation, RecordOperation)
        assert call_id is not None
        await handler.on_record_completed(
            call_id, operation.model_copy(update={"id": operation_id})
        )


async def _hand_to_bot_flow(
    handler: CallEventHandler,
    notifications: list[CommsNotification],
    tenant_id: str | None,
    time_limit: float,
    report: RoutingReport,
) -> None:
    """Run the bot flow in payload order (call states must be seen in the order sent).

    A failing or slow handler never fails the request: the notification was authenticated and
    parsed, and an error here would make Graph resend notifications the bot flow already saw.
    """
    pending = list(notifications)
    try:
        async with asyncio.timeout(time_limit):
            while pending:
                notification = pending[0]
                try:
                    await _hand_over(handler, notification, tenant_id)
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
    ledger: OperationLedger,
    handler: CallEventHandler,
    received_at: datetime | None = None,
    handler_timeout: float = HANDLER_TIMEOUT_SECONDS,
    enqueue_deadline: float = ENQUEUE_DEADLINE_SECONDS,
) -> RoutingReport:
    """Route every notification of an authenticated payload (see the module doc).

    Raises :class:`QueueUnavailable` when a download job could not be queued; nothing else is
    attempted then, since the sender will resend the payload. A record operation without usable
    ids raises the same 400 :class:`Problem` as :func:`read_notifications`.
    """
    _check_record_operations(payload)
    report = RoutingReport()
    plan = _plan(
        payload,
        tenant_id=tenant_id,
        received_at=received_at or datetime.now(UTC),
        report=report,
    )
    if plan.jobs:
        await _send_jobs(queue, plan.jobs, report, enqueue_deadline)
    await asyncio.gather(
        _write_ledger(ledger, plan.failures, tenant_id, report),
        _hand_to_bot_flow(handler, plan.bot_flow, tenant_id, handler_timeout, report),
    )
    return report
