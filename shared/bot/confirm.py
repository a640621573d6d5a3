"""Confirm or re-record (``BOT_CONFIRM_RECORDING``): play the recording back, then 1 or 2.

Once stored, the recording is played back from a short-lived read URL with "press 1 to keep it,
2 to record again" (call: subscribeToTone, then the tone notifications). 2 erases it at once and
records again within the attempts; 1, or no key within ``BOT_CONFIRM_TIMEOUT_SECONDS``, keeps it.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Literal

from shared.graph.models import (
    MediaInfo,
    MediaPrompt,
    PlayPromptRequest,
    SubscribeToToneRequest,
)
from shared.ledger import (
    OperationRecord,
    OperationStatus,
)
from shared.logevents import log_event
from shared.prompts import prompt_uri

if TYPE_CHECKING:
    pass

from shared.bot.steps import (
    CONFIRM_CONTEXT,
    CONFIRM_WAIT_CONTEXT,
    KEEP_TONE,
    RECORD_AGAIN_TONE,
    TONES_CLAIM,
    CallSteps,
    attempt_in,
    media_info,
)

log = logging.getLogger("shared.bot.flow")

Asked = Literal["now", "before", "no"]


class ConfirmSteps(CallSteps):
    """The confirmation's steps; the after-recording step is :class:`~shared.bot.flow.BotFlow`'s."""

    async def _after_recording(
        self, call_id: str, *, recorded: bool, overdue: bool = False
    ) -> None:
        """Thank the caller and hang up (:class:`~shared.bot.flow.BotFlow` does it)."""

    # ----------------------------------------------------------------- confirm or re-record

    async def _confirm(self, call_id: str, record: OperationRecord) -> Asked:
        """Play the stored recording back and ask: "now" when the question is on its way,
        "before" when it was asked already (another instance, an earlier notification), "no"
        when there is nothing to ask with."""
        question = prompt_uri(self._settings, "confirm")
        if self._playback_url is None or question is None:
            return "no"
        if not await self._ledger.claim(call_id, f"confirm-{record.operation_id}"):
            return "before"
        playback = await self._playback_url(record)
        if playback is None:
            return "no"
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
        return "now"

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
            if r.status is OperationStatus.STORED and attempt_in(r) is not None
        ]
        if not stored:
            return
        latest = max(stored, key=lambda r: attempt_in(r) or 0)
        await self._decide(call_id, latest.operation_id, tone)

    async def _decide(
        self, call_id: str, operation_id: str, tone: str, *, timed_out: bool = False
    ) -> bool:
        """The caller's answer about one recording (once per recording, whoever sees it).

        False when it was decided already.
        """
        if not await self._ledger.claim(call_id, f"decided-{operation_id}"):
            return False
        record = await self._ledger.get(call_id, operation_id)
        attempt = attempt_in(record) or 1
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
            return True
        if self._erase is not None:
            # The caller discarded it: gone at once, not at the end of its retention.
            await self._erase(call_id, operation_id)
        await self._record(call_id, None, attempt=attempt + 1, again=True)
        return True
