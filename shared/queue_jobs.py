"""What every queue job shares: how it is sent, how one delivery of it runs, how it ends.

The download and transcription workers are the same skeleton around different bodies: a message
that is not a job is settled at once (never retried); a job continues its sender's trace; a
terminal error is recorded and settles the message; a transient one gives the message back to
the host (which redelivers it, then poisons it), recorded as given up on its last delivery; each
delivery ends in exactly one ``<event> outcome=...`` log line. This module is that skeleton, so a
worker is only what differs: parsing, the body, where a failure is recorded, what its outcome
carries.

How to add a queue worker (say, an event publisher):

1. The message: a model with ``call_id``, ``operation_id``, ``traceparent``, ``log_fields()``,
   ``to_message()`` and ``with_traceparent()`` (:class:`JobMessage`); its parse error derives
   from :class:`InvalidJobMessage`. Send it with :func:`send_job`.
2. The outcome: a frozen dataclass deriving from :class:`JobOutcome`, its ``kind`` a
   :class:`JobKind` (the event name of its span and log line, its logger, its metric stage) and
   ``line`` the fields its log line adds.
3. The errors: subclasses of :class:`TransientJobError` and :class:`TerminalJobError`.
4. The delivery: a dataclass deriving from :class:`QueueJob` (its fields the collaborators)
   with ``run`` (the body; inline retries through :meth:`QueueJob.with_retries`),
   ``record_failure`` (where a failure is recorded) and, if something must be given back,
   ``close``.
5. The worker function calls :func:`run_job` with the parser, a factory of its ``QueueJob`` and
   the host's ``dequeue_count``; its blueprint lets a :class:`TransientJobError` propagate.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

from opentelemetry.trace import SpanKind

from shared.clock import Stopwatch
from shared.hostconfig import is_last_delivery
from shared.logevents import log_event
from shared.telemetry import continue_trace, count_outcome, current_traceparent, span

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.backoff import Backoff

log = logging.getLogger(__name__)


class JobError(Exception):
    """A job's body failed; ``reason`` is safe to log and to record (never a token or URL)."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class TransientJobError(JobError):
    """Worth trying again: retried inline, then raised so the host redelivers the message."""


class TerminalJobError(JobError):
    """Trying again cannot help: the failure is recorded and the message settled."""


class InvalidJobMessage(ValueError):
    """A queue message that is not the job its queue carries (the message says which field)."""


class JobMessage(Protocol):
    """What the skeleton reads of a job message (the pydantic models in ``shared.jobs`` and
    ``shared.transcription.job``)."""

    @property
    def call_id(self) -> str: ...

    @property
    def operation_id(self) -> str: ...

    @property
    def traceparent(self) -> str | None: ...

    def log_fields(self) -> dict[str, Any]: ...

    def to_message(self) -> str: ...

    def with_traceparent(self, traceparent: str | None) -> Self: ...


@dataclass(frozen=True)
class JobKind:
    """One queue's jobs: the name of their span and log line, their logger, their metric stage."""

    event: str
    logger: logging.Logger
    stage: str

    def log(
        self,
        level: int,
        outcome: str,
        call_id: str | None,
        operation_id: str | None,
        *,
        reason: str | None = None,
        **fields: Any,
    ) -> None:
        """The one line of a delivery: ``<event> outcome=... call_id=... ... reason=...``."""
        log_event(
            self.logger,
            self.event,
            level=level,
            outcome=outcome,
            call_id=call_id,
            operation_id=operation_id,
            **fields,
            reason=reason,
        )


@dataclass(frozen=True)
class JobOutcome:
    """How one message was settled (a transient failure raises instead)."""

    kind: ClassVar[JobKind]
    # The fields of the log line between the ids and the reason, in their order.
    line: ClassVar[tuple[str, ...]] = ("attempts", "duration_ms")

    outcome: str
    call_id: str | None
    operation_id: str | None
    failure_reason: str | None = None
    attempts: int = 0
    duration_ms: int = 0

    def logged(self) -> Self:
        """This outcome, after its log line (``invalid`` an error, ``failed`` a warning)."""
        level = {"invalid": logging.ERROR, "failed": logging.WARNING}.get(
            self.outcome, logging.INFO
        )
        self.kind.log(
            level,
            self.outcome,
            self.call_id,
            self.operation_id,
            reason=self.failure_reason,
            **{name: getattr(self, name) for name in self.line},
        )
        return self


JobT = TypeVar("JobT", bound=JobMessage)
OutcomeT = TypeVar("OutcomeT", bound=JobOutcome)
T = TypeVar("T")


@dataclass(eq=False)
class QueueJob(ABC, Generic[JobT, OutcomeT]):
    """One delivery of one parsed job: the steps a worker supplies to :func:`run_job`.

    A subclass is a dataclass too: its fields are the worker's collaborators (after ``job`` and
    ``watch``), its ``outcome_type`` the :class:`JobOutcome` subclass ``OutcomeT`` names.
    """

    # ``OutcomeT`` itself (a class variable cannot name a type variable).
    outcome_type: ClassVar[type[JobOutcome]]

    job: JobT
    watch: Stopwatch
    attempts: int = field(default=0, init=False)

    @abstractmethod
    async def run(self) -> OutcomeT:
        """The body: an outcome, or a :class:`JobError` saying whether to try again."""

    @abstractmethod
    async def record_failure(self, reason: str) -> None:
        """Record that the job failed (terminal, or given up on its last delivery)."""

    async def close(self) -> None:
        """After the delivery, however it ended (a lease to give back, say)."""

    async def with_retries(self, backoff: Backoff, attempt: Callable[[int], Awaitable[T]]) -> T:
        """``attempt(1)``, ``attempt(2)``... on ``backoff``, counted in the outcome's attempts."""

        async def counted(number: int) -> T:
            self.attempts = number
            return await attempt(number)

        return await backoff.retry(
            counted,
            retryable=TransientJobError,
            since=self.watch,
            log=self.outcome_type.kind.logger,
            event=self.outcome_type.kind.event,
            **self.job.log_fields(),
        )

    def settled(self, outcome: str, **fields: Any) -> OutcomeT:
        """The job's outcome with its ids, attempts and duration, logged."""
        result = self.outcome_type(
            outcome,
            self.job.call_id,
            self.job.operation_id,
            attempts=self.attempts,
            duration_ms=self.watch.elapsed_ms,
            **fields,
        )
        return cast("OutcomeT", result.logged())

    async def failed(self, reason: str) -> OutcomeT:
        await self.record_failure(reason)
        count_outcome("failed", stage=self.outcome_type.kind.stage)
        return self.settled("failed", failure_reason=reason)

    async def give_back(self, error: TransientJobError, dequeue_count: int | None) -> None:
        """The message goes back to the queue; on its last delivery the failure is recorded."""
        last = is_last_delivery(dequeue_count)
        kind = self.outcome_type.kind
        if last:
            await self.record_failure(f"{error.reason} (gave up after {dequeue_count} deliveries)")
            count_outcome("poisoned", stage=kind.stage)
        kind.log(
            logging.WARNING,
            "poisoned" if last else "retry_later",
            self.job.call_id,
            self.job.operation_id,
            reason=error.reason,
            attempts=self.attempts,
            duration_ms=self.watch.elapsed_ms,
        )


async def run_job(
    message: str | bytes,
    *,
    parse: Callable[[str | bytes], JobT],
    start: Callable[[JobT, Stopwatch], QueueJob[JobT, OutcomeT]],
    outcome_type: type[OutcomeT],
    dequeue_count: int | None,
    record_invalid: Callable[[str, str, str], Awaitable[None]] | None = None,
) -> OutcomeT:
    """Run one delivery of a queue message; raises :class:`TransientJobError` to have it back.

    ``parse`` turns the message into a job or raises :class:`InvalidJobMessage`; such a message
    is settled as ``invalid`` (``record_invalid`` gets its ids when they can still be read).
    ``start`` builds the delivery's steps; the delivery's span continues the sender's trace.
    """
    watch = Stopwatch()
    try:
        job = parse(message)
    except InvalidJobMessage as invalid:
        reason = str(invalid)
        call_id, operation_id = readable_ids(message)
        if call_id and operation_id and record_invalid is not None:
            await record_invalid(call_id, operation_id, reason)
        return outcome_type(
            "invalid", call_id, operation_id, failure_reason=reason, duration_ms=watch.elapsed_ms
        ).logged()
    delivery = start(job, watch)
    kind = outcome_type.kind
    with continue_trace(
        job.traceparent, kind.event, dequeue_count=dequeue_count, **job.log_fields()
    ):
        try:
            return await delivery.run()
        except TerminalJobError as terminal:
            return await delivery.failed(terminal.reason)
        except TransientJobError as transient:
            await delivery.give_back(transient, dequeue_count)
            raise
        finally:
            await delivery.close()


def readable_ids(message: str | bytes) -> tuple[str | None, str | None]:
    """The call and operation ids of a broken message, when they can still be read."""
    try:
        data = json.loads(message)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    ids = []
    for name in ("call_id", "operation_id"):
        value = data.get(name)
        ids.append(value.strip() if isinstance(value, str) and value.strip() else None)
    return ids[0], ids[1]


async def create_missing_queue(queue: QueueClient) -> None:
    """Create ``queue``, which a fresh account lacks (another instance may be creating it too)."""
    import contextlib

    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        await queue.create_queue()
    log_event(log, "queue created", level=logging.WARNING, queue=queue.queue_name)


async def send_job(
    queue: QueueClient,
    job: JobMessage,
    *,
    queue_name: str,
    time_to_live: int,
    create_queue: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Send ``job``; a missing queue is created (``create_queue``) and the send tried again.

    One producer span per job (named after ``queue_name``); its context travels in the message,
    so the worker's spans are its children: one trace from the sender to the job's outcome.
    """
    from azure.core.exceptions import ResourceNotFoundError

    with span(f"{queue_name} send", kind=SpanKind.PRODUCER, **job.log_fields()):
        message = job.with_traceparent(current_traceparent()).to_message()
        try:
            await queue.send_message(message, time_to_live=time_to_live)
        except ResourceNotFoundError as error:
            if getattr(error, "error_code", None) != "QueueNotFound":
                raise
            if create_queue is None:
                await create_missing_queue(queue)
            else:
                await create_queue()
            await queue.send_message(message, time_to_live=time_to_live)
