"""The bot's steps on a call: answer, record (attempt by attempt), thank, hang up, settle.

Each step is claimed in the ledger where it must happen once per call, has a short Graph budget,
and logs its failures with the call id instead of raising into the webhook. :class:`BotFlow`
(:mod:`shared.bot.flow`) decides when each step runs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.clock import utc_now
from shared.graph.errors import GraphClientError, GraphError, GraphThrottledError
from shared.ledger import (
    ABANDONED_REASON,
    STILL_RECORDING,
    Column,
    OperationLedger,
    OperationRecord,
    OperationStatus,
)
from shared.logevents import log_event, log_failure
from shared.prompts import SHIPPED, prompt_uri
from shared.record_response import start_recording
from shared.telemetry import count_outcome, ms_since_notification, record_answer_latency

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient

    from shared.graph.client import GraphCallsClient
    from shared.graph.models import Call, MediaInfo, RecordOperation, RecordResponseRequest
    from shared.settings import Settings

log = logging.getLogger("shared.bot.flow")

ANSWER_CLAIM = "answer"
RECORD_CLAIM = "record-response"
AFTER_RECORDING_CLAIM = "after-recording"
HANG_UP_CLAIM = "hang-up"
THANK_YOU_CONTEXT = "bot-thank-you"
TONES_CLAIM = "tones"
# The confirmation's prompts carry the recording they ask about: "bot-confirm:<operationId>".
CONFIRM_CONTEXT = "bot-confirm:"
CONFIRM_WAIT_CONTEXT = "bot-confirm-wait:"
CONFIRM_PROMPTS = ("confirm", "silence")
KEEP_TONE = "tone1"
RECORD_AGAIN_TONE = "tone2"
# Graph drops a call not answered within 15 s, and the webhook gives the bot flow 5 s for a
# whole payload: each Graph request gets a few seconds, retries included.
GRAPH_BUDGET_SECONDS = 4.0
FINAL_STATUSES = ("completed", "failed")
# The caller said nothing: 8510 initial silence timeout, 8503 audio inactive (Graph's subcodes).
SILENCE_SUBCODES = frozenset({8510, 8503})
# The FailureReason of a bot attempt Graph refused to start (there is no recording to fetch).
RECORD_REFUSED_REASON = "Graph refused the bot's recordResponse"
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
    from shared.graph.models import MediaInfo

    return MediaInfo(uri=uri, resource_id=str(uuid.uuid5(uuid.NAMESPACE_URL, uri)))


class CallSteps:
    """The steps, sharing the flow's collaborators (Graph, the ledger, the settings, the queue)."""

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

    async def on_record_completed(self, call_id: str, operation: RecordOperation) -> None:
        """What follows a final record operation: :class:`~shared.bot.flow.BotFlow` decides."""

    # ----------------------------------------------------------------- steps

    async def _answer(self, call_id: str, call: Call | None = None) -> None:
        from shared.graph.models import AnswerRequest, ServiceHostedMediaConfig

        settings = self._settings
        if not settings.auto_answer:
            log_event(log, "bot flow: incoming; auto-answer is off", call_id=call_id)
            await self._capture_call(call_id, call, answered=False)
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
        names = [n for n in SHIPPED if settings.confirm_recording or n not in CONFIRM_PROMPTS]
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
        except GraphThrottledError as error:
            await self._release(call_id, ANSWER_CLAIM)
            # Graph's limit for this app is spent past the answer's budget (or the gate knew it
            # would be and sent nothing): the call stays unanswered and Graph ends it at 15 s,
            # which costs no request; answering calls the limit cannot carry would only starve
            # the calls already answered of their recordResponse and hang-up.
            log_event(
                log,
                "bot flow: not answered: Graph is throttling this app",
                level=logging.WARNING,
                call_id=call_id,
                **error.log_fields(),
                retry_after_s=error.retry_after,
            )
            return
        except BaseException:
            await self._release(call_id, ANSWER_CLAIM)
            raise
        # Graph drops a call not answered within 15 s of its notification: this is that margin.
        latency_ms = ms_since_notification()
        if latency_ms is not None:
            record_answer_latency(latency_ms)
        log_event(log, "bot flow: answered", call_id=call_id, answer_latency_ms=latency_ms)
        await self._capture_call(call_id, call, answered=True)

    async def _capture_call(self, call_id: str, call: Call | None, *, answered: bool) -> None:
        """Who called, from the incoming call's notification, once the answer is sent (the
        15-second deadline comes first). A failure here never fails the call."""
        from shared.ledger.identity import call_metadata_columns

        if call is None:
            return
        try:
            columns = call_metadata_columns(
                call.to_wire(),
                privacy=self._settings.caller_identity,
                source="notification",
                answered_at=self._clock() if answered else None,
            )
            await self._ledger.mark_call_metadata(call_id, columns)
        except Exception as error:
            log_event(
                log,
                "bot flow: call metadata not captured",
                level=logging.WARNING,
                call_id=call_id,
                error=type(error).__name__,
            )

    def _record_request(self, attempt: int = 1, *, again: bool = False) -> RecordResponseRequest:
        from shared.graph.models import MediaPrompt, RecordResponseRequest

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
        except BaseException as error:
            # Graph refused (or we were cut short): a later "established" may try again.
            await self._release(call_id, claim)
            if isinstance(error, GraphError):
                await self._note_refused(call_id, request, attempt, error)
            raise
        if started.operation.status in FINAL_STATUSES:
            # Graph's reply was final: no notification follows, so continue from here.
            await self.on_record_completed(call_id, started.operation)

    async def _note_refused(
        self, call_id: str, request: RecordResponseRequest, attempt: int, error: GraphError
    ) -> None:
        """Write the refused attempt as a failed bot recording, so the open-call sweep finds it.

        Graph sends no further notification for an answered call that records nothing: without
        a row the call would stay answered, silent, with no next step. The row (a fresh id, not
        Graph's: there is no operation) is what the cleanup's sweep moves on later, retrying the
        recording while attempts are left, else hanging up; its ``FailureReason`` says why.
        """
        if isinstance(error, GraphClientError) and error.status == 404:
            return  # the call is gone: nothing is left open
        reason = (
            f"{RECORD_REFUSED_REASON}: {error.status or 'no response'} {error.code} after "
            f"{error.attempts} attempt(s) within {self._budget:g} s; nothing was recorded"
        )
        try:
            await self._ledger.mark_started(
                call_id,
                str(uuid.uuid4()),
                OperationStatus.FAILED,
                requested_at=self._clock(),
                client_context=request.client_context,
                started_by="bot",
                max_record_duration_seconds=request.max_record_duration_in_seconds,
                failure_reason=reason,
                attempt=attempt,
            )
        except Exception as failure:
            log_failure(
                log,
                "bot flow: refused recording not written; nothing will move the call on",
                failure,
                call_id=call_id,
                attempt=attempt,
            )
            return
        count_outcome("failed", stage="record_refused")
        log_event(
            log,
            "bot flow: recordResponse refused; the cleanup retries it or hangs up",
            level=logging.WARNING,
            call_id=call_id,
            attempt=attempt,
            reason=reason,
        )

    async def _thank(self, call_id: str, uri: str) -> bool:
        """Play the thank-you prompt; True when its completion notification will follow."""
        from shared.graph.models import MediaPrompt, PlayPromptRequest

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
        return prompt.status not in FINAL_STATUSES

    async def _hang_up(self, call_id: str) -> None:
        if not await self._ledger.claim(call_id, HANG_UP_CLAIM):
            log_event(log, "bot flow: already hung up, or the call ended", call_id=call_id)
            return
        try:
            await self._graph.hang_up(call_id, within=self._budget)
        except GraphClientError as error:
            if error.status == 404:
                log_event(log, "bot flow: already gone when hanging up", call_id=call_id)
                return
            await self._release(call_id, HANG_UP_CLAIM)
            raise
        except BaseException:
            # Refused (throttled past the budget) or cut short: the claim goes back so the
            # cleanup's open-call sweep hangs up later; nothing else would.
            await self._release(call_id, HANG_UP_CLAIM)
            raise
        log_event(log, "bot flow: hung up", call_id=call_id)

    async def _settle_unfinished(self, call_id: str, call: Call) -> None:
        ended = call.result_info.message if call.result_info else None
        # The call is over: the open-call sweep must not hang up (or record) on it again.
        await self._ledger.claim(call_id, HANG_UP_CLAIM)
        settled = []
        for record in await self._ledger.list_call(call_id):
            if record.status not in STILL_RECORDING:
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
            log_failure(
                log,
                "bot flow: claim not released; the step will not be retried",
                error,
                call_id=call_id,
                claim=claim,
            )

    def _log_failure(self, step: str, call_id: str, error: BaseException) -> None:
        # GraphError's text is Graph's own message and ids; other errors: the type only, since
        # SDK messages can carry request details.
        detail = str(error) if isinstance(error, GraphError) else type(error).__name__
        extra: dict[str, Any] = {"call_id": call_id, "bot_step": step}
        if isinstance(error, GraphError):
            extra.update(error.log_fields())
        log_event(log, "bot flow: step failed", level=logging.ERROR, **extra, error=detail)


def refused_attempt(record: OperationRecord) -> bool:
    """Whether the row is a bot attempt Graph refused to start (written by the bot itself)."""
    reason = record.get(Column.FAILURE_REASON)
    return isinstance(reason, str) and reason.startswith(RECORD_REFUSED_REASON)


def attempt_in(record: OperationRecord | None) -> int | None:
    """The attempt number the ledger row of a bot recording holds."""
    if record is None or record.get(Column.STARTED_BY) != "bot":
        return None
    value = record.get(Column.ATTEMPT)
    return int(value) if isinstance(value, int) else 1
