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
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.graph.errors import GraphClientError, GraphError
from shared.graph.models import (
    AnswerRequest,
    Call,
    CommsNotification,
    MediaInfo,
    MediaPrompt,
    PlayPromptOperation,
    PlayPromptRequest,
    RecordOperation,
    RecordResponseRequest,
    ServiceHostedMediaConfig,
    SubscribeToToneRequest,
    normalize_id,
)
from shared.ledger import (
    ABANDONED_REASON,
    Column,
    OperationLedger,
    OperationRecord,
    OperationStatus,
    utc_now,
)
from shared.logevents import log_event
from shared.prompts import SHIPPED, prompt_uri
from shared.record_response import start_recording
from shared.telemetry import count_outcome, ms_since_notification, record_answer_latency

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.graph.client import GraphCallsClient
    from shared.settings import Settings

log = logging.getLogger(__name__)

ANSWER_CLAIM = "answer"
RECORD_CLAIM = "record-response"
AFTER_RECORDING_CLAIM = "after-recording"
HANG_UP_CLAIM = "hang-up"
THANK_YOU_CONTEXT = "bot-thank-you"
TONES_CLAIM = "tones"
# The confirmation's prompts carry the recording they ask about: "bot-confirm:<operationId>".
CONFIRM_CONTEXT = "bot-confirm:"
CONFIRM_WAIT_CONTEXT = "bot-confirm-wait:"
_CONFIRM_PROMPTS = ("confirm", "silence")
KEEP_TONE = "tone1"
RECORD_AGAIN_TONE = "tone2"
# Graph drops a call not answered within 15 s, and the webhook gives the bot flow 5 s for a
# whole payload: each Graph request gets a few seconds, retries included.
GRAPH_BUDGET_SECONDS = 4.0
_UNSETTLED = (OperationStatus.REQUESTED, OperationStatus.RUNNING)
_FINAL = ("completed", "failed")
# Where the recording's fate is known: the after-recording step may run.
_SETTLED = (
    OperationStatus.STORED,
    OperationStatus.FAILED,
    OperationStatus.EXPIRED,
    OperationStatus.ERASED,
)
# The caller said nothing: 8510 initial silence timeout, 8503 audio inactive (Graph's subcodes).
SILENCE_SUBCODES = frozenset({8510, 8503})
# The bot's recordings carry their attempt in the clientContext Graph echoes back.
_ATTEMPT_CONTEXT = "bot-attempt-"


def attempt_context(attempt: int) -> str:
    """The clientContext of the bot's ``attempt``-th recording of a call (unique per request)."""
    return f"{_ATTEMPT_CONTEXT}{attempt}:{uuid.uuid4()}"


def attempt_of(client_context: str | None) -> int | None:
    """The attempt number a bot recording's clientContext carries; None for other recordings."""
    if not client_context or not client_context.startswith(_ATTEMPT_CONTEXT):
        return None
    number = client_context[len(_ATTEMPT_CONTEXT) :].split(":", 1)[0]
    return int(number) if number.isdigit() else None


def record_claim(attempt: int) -> str:
    """The once-per-call claim of the bot's ``attempt``-th recording."""
    return RECORD_CLAIM if attempt == 1 else f"{RECORD_CLAIM}-{attempt}"


def media_info(uri: str) -> MediaInfo:
    """A prompt's media; the resourceId is stable per URI so Graph's prompt cache can hit."""
    return MediaInfo(uri=uri, resource_id=str(uuid.uuid5(uuid.NAMESPACE_URL, uri)))


class BotFlow:
    """Implements the webhook's ``CallEventHandler`` with Graph, the ledger and the queue."""

    def __init__(
        self,
        graph: GraphCallsClient,
        ledger: OperationLedger,
        settings: Settings,
        *,
        queue: QueueClient,
        graph_budget_seconds: float = GRAPH_BUDGET_SECONDS,
        clock: Callable[[], datetime] = utc_now,
        playback_url: Callable[[OperationRecord], Awaitable[str | None]] | None = None,
        erase: Callable[[str, str], Awaitable[object]] | None = None,
    ) -> None:
        self._graph = graph
        self._ledger = ledger
        self._settings = settings
        self._queue = queue
        # The confirmation's collaborators: a short-lived read URL of a stored recording, and
        # the erasure of a discarded one.
        self._playback_url = playback_url
        self._erase = erase
        self._budget = graph_budget_seconds
        self._clock = clock

    # ----------------------------------------------------------------- the webhook's hook

    async def on_call_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        call = notification.resource_data
        call_id = notification.call_id
        if call_id is None or not isinstance(call, Call):
            log_event(
                log,
                "bot flow: not a call notification",
                level=logging.WARNING,
                resource=notification.resource_url,
            )
            return
        state = (call.state or "").lower()
        change = notification.change_type.lower()
        try:
            if call.tone_info is not None and change != "deleted":
                await self._on_tone(call_id, call.tone_info.tone or "")
            elif change == "deleted" or state == "terminated":
                await self._settle_unfinished(call_id, call)
            elif state == "incoming":
                await self._answer(call_id)
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
        prompt = notification.resource_data
        call_id = notification.call_id
        if call_id is None or not isinstance(prompt, PlayPromptOperation):
            log_event(
                log,
                "bot flow: not a playPrompt notification",
                level=logging.WARNING,
                resource=notification.resource_url,
            )
            return
        context = prompt.client_context or ""
        if context.startswith((CONFIRM_CONTEXT, CONFIRM_WAIT_CONTEXT)) and prompt.status in _FINAL:
            try:
                await self._on_confirm_prompt(call_id, context, prompt.status or "")
            except Exception as error:
                self._log_failure("confirmation prompt finished", call_id, error)
            return
        if prompt.client_context != THANK_YOU_CONTEXT or prompt.status not in _FINAL:
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
            attempt = attempt_of(operation.client_context) or _attempt_in(record)
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
                record is None or record.status not in _SETTLED
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
            if record is None or _attempt_in(record) is None:
                return
            if record.status not in _SETTLED and not overdue:
                return
            if overdue and record.status not in _SETTLED:
                log_event(
                    log,
                    "bot flow: recording still not stored; moving on anyway",
                    level=logging.WARNING,
                    call_id=call_id,
                    operation_id=operation_id,
                    ledger=record.status.value,
                    wait_seconds=self._settings.hang_up_wait_seconds,
                )
            if (
                record.status is OperationStatus.STORED
                and self._settings.confirm_recording
                and await self._confirm(call_id, record)
            ):
                return  # the caller's key (or the wait's end) moves the call on
            await self._after_recording(call_id, recorded=record.status is OperationStatus.STORED)
        except Exception as error:
            self._log_failure("recording settled", call_id, error)

    async def _after_recording(self, call_id: str, *, recorded: bool) -> None:
        """Once per call: the thank-you prompt when something was recorded, then hang up."""
        if not await self._ledger.claim(call_id, AFTER_RECORDING_CLAIM):
            log_event(log, "bot flow: after-recording step already done", call_id=call_id)
            return
        thank_you = prompt_uri(self._settings, "thank-you")
        if recorded and thank_you and await self._thank(call_id, thank_you):
            return  # the prompt's own completion notification hangs up
        if self._settings.hang_up_after_recording:
            await self._hang_up(call_id)

    # ----------------------------------------------------------------- confirm or re-record

    async def _confirm(self, call_id: str, record: OperationRecord) -> bool:
        """Play the stored recording back and ask; True when the question is on its way."""
        question = prompt_uri(self._settings, "confirm")
        if self._playback_url is None or question is None:
            return False
        if not await self._ledger.claim(call_id, f"confirm-{record.operation_id}"):
            return True  # another instance asked already
        playback = await self._playback_url(record)
        if playback is None:
            return False
        if await self._ledger.claim(call_id, TONES_CLAIM):
            try:
                await self._graph.subscribe_to_tone(
                    call_id,
                    SubscribeToToneRequest(client_context=str(uuid.uuid4())),
                    within=self._budget,
                )
            except BaseException:
                await self._release(call_id, TONES_CLAIM)
                raise
        # The read URL is unique per request: its resourceId must not hit Graph's prompt cache.
        recording = MediaInfo(uri=playback, resource_id=str(uuid.uuid4()))
        request = PlayPromptRequest(
            prompts=[
                MediaPrompt(media_info=recording),
                MediaPrompt(media_info=media_info(question)),
            ],
            client_context=CONFIRM_CONTEXT + record.operation_id,
        )
        await self._graph.play_prompt(call_id, request, within=self._budget)
        log_event(
            log, "bot flow: confirmation asked", call_id=call_id, operation_id=record.operation_id
        )
        return True

    async def _on_confirm_prompt(self, call_id: str, context: str, status: str) -> None:
        if context.startswith(CONFIRM_WAIT_CONTEXT):
            # The wait ran out (or was cut short by a new recording): no key means keep it.
            operation_id = context.removeprefix(CONFIRM_WAIT_CONTEXT)
            if status == "completed":
                await self._decide(call_id, operation_id, KEEP_TONE, timed_out=True)
            return
        operation_id = context.removeprefix(CONFIRM_CONTEXT)
        record = await self._ledger.get(call_id, operation_id)
        if record is None or record.status is not OperationStatus.STORED:
            return  # already discarded by a "2" pressed during the question
        silence = prompt_uri(self._settings, "silence")
        if status != "completed" or silence is None:
            await self._decide(call_id, operation_id, KEEP_TONE, timed_out=True)
            return
        # The time to answer: BOT_CONFIRM_TIMEOUT_SECONDS one-second silences (one operation).
        wait = PlayPromptRequest(
            prompts=[MediaPrompt(media_info=media_info(silence))]
            * self._settings.confirm_timeout_seconds,
            client_context=CONFIRM_WAIT_CONTEXT + operation_id,
        )
        await self._graph.play_prompt(call_id, wait, within=self._budget)

    async def _on_tone(self, call_id: str, tone: str) -> None:
        if not self._settings.confirm_recording or tone not in (KEEP_TONE, RECORD_AGAIN_TONE):
            log_event(log, "bot flow: key ignored", level=logging.DEBUG, call_id=call_id, tone=tone)
            return
        # The recording being confirmed: the call's latest stored bot recording.
        stored = [
            r
            for r in await self._ledger.list_call(call_id)
            if r.status is OperationStatus.STORED and _attempt_in(r) is not None
        ]
        if not stored:
            return
        latest = max(stored, key=lambda r: _attempt_in(r) or 0)
        await self._decide(call_id, latest.operation_id, tone)

    async def _decide(
        self, call_id: str, operation_id: str, tone: str, *, timed_out: bool = False
    ) -> None:
        """The caller's answer about one recording (once per recording, whoever sees it)."""
        if not await self._ledger.claim(call_id, f"decided-{operation_id}"):
            return
        record = await self._ledger.get(call_id, operation_id)
        attempt = _attempt_in(record) or 1
        again = tone == RECORD_AGAIN_TONE and attempt < self._settings.record_attempts
        log_event(
            log,
            "bot flow: confirmation answered",
            call_id=call_id,
            operation_id=operation_id,
            decision="record again" if again else "keep",
            timed_out=timed_out,
            tone=None if timed_out else tone,
        )
        if not again:
            await self._after_recording(call_id, recorded=True)
            return
        if self._erase is not None:
            # The caller discarded it: gone at once, not at the end of its retention.
            await self._erase(call_id, operation_id)
        await self._record(call_id, None, attempt=attempt + 1, again=True)

    # ----------------------------------------------------------------- steps

    async def _answer(self, call_id: str) -> None:
        settings = self._settings
        if not settings.auto_answer:
            log_event(log, "bot flow: incoming; auto-answer is off", call_id=call_id)
            return
        if not settings.callback_base_url:
            log_event(
                log,
                "bot flow: not answered: CALLBACK_BASE_URL is not set",
                level=logging.ERROR,
                call_id=call_id,
            )
            return
        if not await self._ledger.claim(call_id, ANSWER_CLAIM):
            log_event(log, "bot flow: already answered by another notification", call_id=call_id)
            return
        names = [n for n in SHIPPED if settings.confirm_recording or n not in _CONFIRM_PROMPTS]
        prompts = [uri for uri in (prompt_uri(settings, name) for name in names) if uri]
        request = AnswerRequest(
            callback_uri=f"{settings.callback_base_url}/api/calls",
            accepted_modalities=["audio"],
            media_config=ServiceHostedMediaConfig(
                pre_fetch_media=[media_info(uri) for uri in prompts] or None
            ),
        )
        try:
            await self._graph.answer(call_id, request, within=self._budget)
        except BaseException:
            await self._release(call_id, ANSWER_CLAIM)
            raise
        # Graph drops a call not answered within 15 s of its notification: this is that margin.
        latency_ms = ms_since_notification()
        if latency_ms is not None:
            record_answer_latency(latency_ms)
        log_event(log, "bot flow: answered", call_id=call_id, answer_latency_ms=latency_ms)

    def _record_request(self, attempt: int = 1, *, again: bool = False) -> RecordResponseRequest:
        settings = self._settings
        # After silence: "I did not hear anything"; after the caller asked to record again: the
        # notice, cutting the confirmation's wait short (bargeInAllowed).
        prompt = prompt_uri(settings, "notice" if attempt == 1 or again else "reprompt")
        return RecordResponseRequest(
            prompts=[MediaPrompt(media_info=media_info(prompt))] if prompt else [],
            barge_in_allowed=again,
            initial_silence_timeout_in_seconds=settings.record_initial_silence_seconds,
            max_silence_timeout_in_seconds=settings.record_max_silence_seconds,
            max_record_duration_in_seconds=settings.record_max_duration_seconds,
            play_beep=settings.record_play_beep,
            stop_tones=list(settings.record_stop_tones),
            client_context=attempt_context(attempt),
        )

    async def _record(
        self, call_id: str, tenant_id: str | None, *, attempt: int = 1, again: bool = False
    ) -> None:
        if not self._settings.auto_answer:
            return  # calls answered elsewhere: only the API starts recordings
        request = self._record_request(attempt, again=again)
        claim = record_claim(attempt)
        if not await self._ledger.claim(call_id, claim):
            log_event(
                log, "bot flow: recordResponse already started", call_id=call_id, attempt=attempt
            )
            return
        try:
            started = await start_recording(
                call_id,
                request,
                graph=self._graph,
                ledger=self._ledger,
                queue=self._queue,
                started_by="bot",
                tenant_id=tenant_id,
                within=self._budget,
                clock=self._clock,
                attempt=attempt,
            )
        except BaseException:
            # Graph refused (or we were cut short): a later "established" may try again.
            await self._release(call_id, claim)
            raise
        if started.operation.status in _FINAL:
            # Graph's reply was final: no notification follows, so continue from here.
            await self.on_record_completed(call_id, started.operation)

    async def _thank(self, call_id: str, uri: str) -> bool:
        """Play the thank-you prompt; True when its completion notification will follow."""
        request = PlayPromptRequest(
            prompts=[MediaPrompt(media_info=media_info(uri))], client_context=THANK_YOU_CONTEXT
        )
        try:
            prompt, prompt_id = await self._graph.play_prompt(call_id, request, within=self._budget)
        except GraphError as error:
            self._log_failure("thank-you prompt", call_id, error)
            return False
        log_event(
            log,
            "bot flow: thank-you prompt",
            call_id=call_id,
            operation_id=prompt_id,
            status=prompt.status,
        )
        return prompt.status not in _FINAL

    async def _hang_up(self, call_id: str) -> None:
        if not await self._ledger.claim(call_id, HANG_UP_CLAIM):
            log_event(log, "bot flow: already hung up", call_id=call_id)
            return
        try:
            await self._graph.hang_up(call_id, within=self._budget)
        except GraphClientError as error:
            if error.status == 404:
                log_event(log, "bot flow: already gone when hanging up", call_id=call_id)
                return
            raise
        log_event(log, "bot flow: hung up", call_id=call_id)

    async def _settle_unfinished(self, call_id: str, call: Call) -> None:
        ended = call.result_info.message if call.result_info else None
        settled = []
        for record in await self._ledger.list_call(call_id):
            if record.status not in _UNSETTLED:
                continue
            transition = await self._ledger.mark_abandoned(
                call_id, record.operation_id, ABANDONED_REASON, call_end_message=ended
            )
            if transition.changed:
                settled.append(record.operation_id)
        count_outcome("abandoned", stage="call_terminated", amount=len(settled))
        log_event(
            log,
            "bot flow: call terminated",
            call_id=call_id,
            abandoned=len(settled),
            abandoned_operations=",".join(settled) or None,
        )

    async def _release(self, call_id: str, claim: str) -> None:
        try:
            await self._ledger.release(call_id, claim)
        except Exception as error:
            log_event(
                log,
                "bot flow: claim not released; the step will not be retried",
                level=logging.ERROR,
                call_id=call_id,
                claim=claim,
                error=type(error).__name__,
            )

    def _log_failure(self, step: str, call_id: str, error: BaseException) -> None:
        # GraphError's text is Graph's own message and ids; other errors: the type only, since
        # SDK messages can carry request details.
        detail = str(error) if isinstance(error, GraphError) else type(error).__name__
        extra: dict[str, Any] = {"call_id": call_id, "bot_step": step}
        if isinstance(error, GraphError):
            extra.update(error.log_fields())
        log_event(log, "bot flow: step failed", level=logging.ERROR, **extra, error=detail)


def _attempt_in(record: OperationRecord | None) -> int | None:
    """The attempt number the ledger row of a bot recording holds."""
    if record is None or record.get(Column.STARTED_BY) != "bot":
        return None
    value = record.get(Column.ATTEMPT)
    return int(value) if isinstance(value, int) else 1
