"""The bot flow: what the bot does on each state of a call, driven by Graph's notifications.

- ``incoming``: answer with ``serviceHostedMediaConfig`` (prompts pre-fetched), audio only,
  callback ``CALLBACK_BASE_URL/api/calls``, within Graph's 15-second limit;
- ``established``: start exactly one recordResponse per call with the ``BOT_RECORD_*`` settings,
  the recording notice as its prompt;
- record operation failed on silence (8510 initial silence, 8503 audio inactive): the re-prompt
  and a new recordResponse, up to ``BOT_RECORD_ATTEMPTS`` per call, each its own ledger row;
- record operation finished otherwise: once the ledger says the recording is ``stored`` or
  ``failed`` (the worker tells the flow; the webhook checks too, whichever sees it first), the
  thank-you prompt, then hang up; the worker hangs up anyway once the download has taken
  ``BOT_HANG_UP_WAIT_SECONDS``, since the platform discards the recording once the call ends;
- with ``BOT_CONFIRM_RECORDING``: once stored, the recording is played back with "press 1 to
  keep it, 2 to record again" (call: subscribeToTone, then the tone notifications); 2 erases it
  at once and records again (within the attempts), 1 or no key within
  ``BOT_CONFIRM_TIMEOUT_SECONDS`` keeps it;
- ``terminated``: operations still ``requested``/``running`` become ``abandoned``, since the
  platform may never send their completion once the caller has hung up.

Several instances receive the notifications of one call, duplicated and out of order, so every
once-per-call step is claimed in the ledger (Table Storage), never remembered in memory. Each
Graph request has a short budget so the webhook still answers quickly, and no failure escapes a
handler: it is logged with the call id, and the other notifications of the payload go on.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from shared.bot.confirm import ConfirmSteps
from shared.bot.steps import (
    AFTER_RECORDING_CLAIM,
    CONFIRM_CONTEXT,
    CONFIRM_WAIT_CONTEXT,
    FINAL_STATUSES,
    KEEP_TONE,
    SILENCE_SUBCODES,
    THANK_YOU_CONTEXT,
    attempt_in,
    attempt_of,
    refused_attempt,
)
from shared.graph.errors import GraphError
from shared.graph.ids import normalize_id
from shared.graph.models import (
    Call,
    CommsNotification,
    PlayPromptOperation,
    RecordOperation,
)
from shared.ledger import (
    RECORDING_FATE_KNOWN,
    Column,
    OperationRecord,
    OperationStatus,
)
from shared.logevents import log_event
from shared.prompts import prompt_uri

log = logging.getLogger(__name__)
_Resource = TypeVar("_Resource", Call, PlayPromptOperation)


def _addressed(
    notification: CommsNotification, kind: type[_Resource], refused: str
) -> tuple[str, _Resource] | None:
    """The call id and the resource, or None (logged as ``refused``) when they are not there."""
    resource = notification.resource_data
    if notification.call_id is None or not isinstance(resource, kind):
        log_event(log, refused, level=logging.WARNING, resource=notification.resource_url)
        return None
    return notification.call_id, resource


class BotFlow(ConfirmSteps):
    """Implements the webhook's ``CallEventHandler`` with Graph, the ledger and the queue."""

    # ----------------------------------------------------------------- the webhook's hook

    async def on_call_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        addressed = _addressed(notification, Call, "bot flow: not a call notification")
        if addressed is None:
            return
        call_id, call = addressed
        state = (call.state or "").lower()
        change = notification.change_type.lower()
        try:
            if call.tone_info is not None and change != "deleted":
                await self._on_tone(call_id, call.tone_info.tone or "")
            elif change == "deleted" or state == "terminated":
                await self._settle_unfinished(call_id, call)
            elif state == "incoming":
                await self._answer(call_id, call)
            elif state == "established":
                await self._record(call_id, tenant_id)
            else:
                log_event(
                    log,
                    "bot flow: call state needs nothing",
                    level=logging.DEBUG,
                    call_id=call_id,
                    state=state,
                    change_type=change,
                )
        except Exception as error:
            self._log_failure("call " + (state or change), call_id, error)

    async def on_prompt_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        addressed = _addressed(
            notification, PlayPromptOperation, "bot flow: not a playPrompt notification"
        )
        if addressed is None:
            return
        call_id, prompt = addressed
        context = prompt.client_context or ""
        if (
            context.startswith((CONFIRM_CONTEXT, CONFIRM_WAIT_CONTEXT))
            and prompt.status in FINAL_STATUSES
        ):
            try:
                await self._on_confirm_prompt(call_id, context, prompt.status or "")
            except Exception as error:
                self._log_failure("confirmation prompt finished", call_id, error)
            return
        if prompt.client_context != THANK_YOU_CONTEXT or prompt.status not in FINAL_STATUSES:
            log_event(
                log,
                "bot flow: prompt needs nothing",
                level=logging.DEBUG,
                call_id=call_id,
                status=prompt.status,
            )
            return
        try:
            if self._settings.hang_up_after_recording:
                await self._hang_up(call_id)
        except Exception as error:
            self._log_failure("thank-you prompt finished", call_id, error)

    async def on_record_completed(self, call_id: str, operation: RecordOperation) -> None:
        """A record operation finished (completed or failed): re-prompt, or move on once safe.

        The webhook calls this for a ``recordOperation`` notification with a final status (after
        queuing its job); the flow calls it itself when Graph's reply was already final. Only the
        bot's own recordings move the call on; one started through the API is the operator's.
        """
        call_id = normalize_id(call_id)
        try:
            if operation.status == "completed" and operation.id:
                # Before hanging up: our own hang-up brings the call's "terminated" notification,
                # which settles every operation still "running" as abandoned. (The worker records
                # the completion too, but it may not have started yet.)
                await self._ledger.mark_completed(
                    call_id,
                    operation.id,
                    result=operation.result_info,
                    client_context=operation.client_context,
                )
            record = await self._ledger.get(call_id, operation.id) if operation.id else None
            attempt = attempt_of(operation.client_context) or attempt_in(record)
            if attempt is None:
                log_event(
                    log,
                    "bot flow: not the bot's recording; the call is left as it is",
                    call_id=call_id,
                    operation_id=operation.id,
                )
                return
            subcode = operation.result_info.subcode if operation.result_info else None
            if operation.status == "failed" and subcode in SILENCE_SUBCODES:
                if attempt < self._settings.record_attempts:
                    try:
                        await self._record(call_id, None, attempt=attempt + 1)
                        return
                    except GraphError as error:
                        # Its refused row is the call's latest attempt: the sweep moves it on.
                        self._log_failure("re-prompt", call_id, error)
                        return
                    except Exception as error:
                        # No notification would ever move this call on: finish it now.
                        self._log_failure("re-prompt", call_id, error)
                log_event(
                    log,
                    "bot flow: silence again; no attempts left",
                    call_id=call_id,
                    attempts=attempt,
                )
            if operation.status == "completed" and (
                record is None or record.status not in RECORDING_FATE_KNOWN
            ):
                # Hanging up now could lose the recording (the platform discards it once the
                # call ends): the worker continues once it is stored or failed.
                log_event(
                    log,
                    "bot flow: recording not stored yet; the download moves the call on",
                    call_id=call_id,
                    operation_id=operation.id,
                    ledger=record.status.value if record else None,
                )
                return
            stored = record is not None and record.status is OperationStatus.STORED
            await self._after_recording(call_id, recorded=stored)
        except Exception as error:
            self._log_failure("record completed", call_id, error)

    async def on_recording_settled(
        self, call_id: str, operation_id: str, *, overdue: bool = False
    ) -> None:
        """The worker settled a download (or it is taking longer than BOT_HANG_UP_WAIT_SECONDS).

        Runs the after-recording step for the bot's own recordings once the ledger says the
        recording is stored or failed; ``overdue`` runs it whatever the ledger says.
        """
        call_id = normalize_id(call_id)
        try:
            record = await self._ledger.get(call_id, operation_id)
            if record is None or attempt_in(record) is None:
                return
            if record.status not in RECORDING_FATE_KNOWN and not overdue:
                return
            if overdue and refused_attempt(record):
                await self._after_refused(call_id, record)
                return
            if overdue and record.status not in RECORDING_FATE_KNOWN:
                log_event(
                    log,
                    "bot flow: recording still not stored; moving on anyway",
                    level=logging.WARNING,
                    call_id=call_id,
                    operation_id=operation_id,
                    ledger=record.status.value,
                    wait_seconds=self._settings.hang_up_wait_seconds,
                )
            stored = record.status is OperationStatus.STORED
            if stored and self._settings.confirm_recording:
                asked = await self._confirm(call_id, record)
                if asked == "now" or (asked == "before" and not overdue):
                    return  # the caller's key (or the wait's end) moves the call on
                if asked == "before" and await self._decide(
                    call_id, record.operation_id, KEEP_TONE, timed_out=True
                ):
                    # Asked long ago and never decided (the wait's prompt was refused...):
                    # no key means keep, as when the wait ends.
                    return
            await self._after_recording(call_id, recorded=stored, overdue=overdue)
        except Exception as error:
            self._log_failure("recording settled", call_id, error)

    async def _after_refused(self, call_id: str, record: OperationRecord) -> None:
        """The sweep found the call's latest attempt refused by Graph: record again, or end it.

        Within ``BOT_RECORD_ATTEMPTS`` the recording is asked for again (with the notice: the
        caller heard nothing yet); past them the call ends without a thank-you. The refused
        row's ``FailureReason`` keeps why.
        """
        attempt = attempt_in(record) or 1
        if attempt < self._settings.record_attempts:
            log_event(
                log,
                "bot flow: recording again after Graph refused it",
                call_id=call_id,
                attempt=attempt + 1,
            )
            await self._record(call_id, None, attempt=attempt + 1, again=True)
            return
        log_event(
            log,
            "bot flow: Graph refused every recording; ending the call",
            level=logging.WARNING,
            call_id=call_id,
            attempts=attempt,
            reason=record.get(Column.FAILURE_REASON),
        )
        await self._after_recording(call_id, recorded=False, overdue=True)

    async def _after_recording(
        self, call_id: str, *, recorded: bool, overdue: bool = False
    ) -> None:
        """Once per call: the thank-you prompt when something was recorded, then hang up.

        ``overdue`` (the cleanup's sweep, long after the step was due): if the step already ran,
        the call is still listed because its hang-up was refused and gave its claim back (or
        the thank-you's completion never came): hang up now. The hang-up's own claim keeps a
        call already hung up, or ended by the caller, alone.
        """
        if not await self._ledger.claim(call_id, AFTER_RECORDING_CLAIM):
            if overdue and self._settings.hang_up_after_recording:
                await self._hang_up(call_id)
                return
            log_event(log, "bot flow: after-recording step already done", call_id=call_id)
            return
        thank_you = prompt_uri(self._settings, "thank-you")
        if recorded and thank_you and await self._thank(call_id, thank_you):
            return  # the prompt's own completion notification hangs up
        if self._settings.hang_up_after_recording:
            await self._hang_up(call_id)
