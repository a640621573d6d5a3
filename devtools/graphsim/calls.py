"""The call engine: simulated calls, their operations and the notifications they produce.

Every method here runs on the simulator's event loop (the uvicorn thread); GraphSimulator hops
onto that loop with run_coroutine_threadsafe. Inspection lists are guarded by a threading lock
because tests read them from other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .keys import KeyRing, notification_claims
from .models import (
    CALLERS,
    RESULT_AUDIO_INACTIVE,
    RESULT_CALL_ENDED,
    RESULT_CALLER_HUNG_UP,
    RESULT_CANCELED,
    RESULT_INITIAL_SILENCE,
    RESULT_MAX_DURATION,
    RESULT_NOT_ANSWERED,
    RESULT_OPERATION_CALL_ENDED,
    RESULT_PROMPT_COMPLETED,
    RESULT_PROMPT_FAILED,
    RESULT_STOP_TONE,
    SCENARIOS,
    TONES,
    Call,
    CallOptions,
    Delivery,
    Operation,
    RequestRecord,
    result_info,
)
from .prompts import check_prompt
from .recordings import MAX_RECORD_SECONDS, RecordingStore
from .validation import SERVICE_HOSTED, GraphError

log = logging.getLogger("devtools.graphsim")

USER_AGENT = "Microsoft-Skype/3.0,(Calling/1.0)"
# Simulated (not wall-clock) seconds spent on each step of an operation.
PROMPT_SECONDS = 2.0
BEEP_SECONDS = 0.5
ESTABLISHING_SECONDS = 0.5
# A scripted caller presses keys this long after the prompt before them ends.
KEY_PRESS_DELAY_SECONDS = 0.5
# Never wait longer than this between two delivery attempts, whatever Retry-After says.
MAX_RETRY_DELAY_SECONDS = 10.0

Result = tuple[int, int, str]


def id_key(identifier: str) -> str:
    """Graph writes the same GUID dashed (ids, Location) or compact upper-case (resourceUrl)."""
    return identifier.replace("-", "").lower()


def compact(identifier: str) -> str:
    return identifier.replace("-", "").upper()


def retryable(status_code: int | None) -> bool:
    """A delivery worth repeating: no answer at all, 408, 429 or a 5xx."""
    return status_code is None or status_code in (408, 429) or status_code >= 500


@dataclass
class EngineSettings:
    bot_app_id: str
    tenant_id: str
    time_scale: float
    recording_retention_seconds: float
    answer_timeout_seconds: float
    notification_timeout_seconds: float
    compact_ids_in_operation_urls: bool
    default_callback_url: str | None
    # Failed deliveries (5xx, 408, 429, transport errors) are tried again this many times,
    # after base, 2*base, 4*base... wall seconds (or the bot's Retry-After, capped).
    notification_retries: int = 3
    notification_retry_backoff_seconds: float = 0.5


class CallEngine:
    def __init__(
        self,
        settings: EngineSettings,
        keys: KeyRing,
        recordings: RecordingStore,
        graph_base_url: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.recordings = recordings
        self._graph_base_url = graph_base_url
        self.lock = threading.Lock()
        self.calls: dict[str, Call] = {}
        self.operations: dict[str, Operation] = {}
        self.deliveries: list[Delivery] = []
        self.requests: list[RequestRecord] = []
        # Why a prompt could not be played, per operation id (the simulator's own journal).
        self.prompt_failures: dict[str, str] = {}
        # Per-request faults on the calls API, keyed by action ("answer", "recordResponse"...).
        self.api_faults: dict[str, list[str]] = {}
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._queues: dict[str, list[str]] = {}
        self._running: dict[str, tuple[str, asyncio.Task[None]]] = {}
        # A stop tone pressed during a running recordResponse, per operation id.
        self._stop_tones: dict[str, asyncio.Event] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self.settings.notification_timeout_seconds,
            headers={"User-Agent": USER_AGENT},
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._client is not None:
            await self._client.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        # Keep a reference: the loop only holds weak references to tasks.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _sleep_sim(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.settings.time_scale)

    # -- lookups ---------------------------------------------------------------------------

    def find_call(self, call_id: str) -> Call:
        call = self.calls.get(id_key(call_id))
        if call is None:
            raise GraphError(404, "ItemNotFound", f"Call '{call_id}' was not found.")
        return call

    def find_operation(self, call_id: str, operation_id: str) -> Operation:
        call = self.find_call(call_id)
        operation = self.operations.get(id_key(operation_id))
        if operation is None or id_key(operation.call_id) != id_key(call.id):
            raise GraphError(404, "ItemNotFound", f"Operation '{operation_id}' was not found.")
        return operation

    # -- notifications ---------------------------------------------------------------------

    def _call_notification(
        self, call: Call, change_type: str, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A call notification; every one carries @odata.id and a new @odata.etag (call: answer).

        ``data`` is what the notification says beyond those: the full call for ``created``
        (call: answer), ``state`` for an update, ``state`` and ``resultInfo`` for the end
        (Delete call), ``toneInfo`` for a key press (call: subscribeToTone), nothing for a
        rejected call (call: reject).
        """
        call.etag += 1
        resource = {**call.annotations(), **(data if data is not None else call.resource())}
        return {
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": change_type,
            "resourceUrl": call.url,
            "resourceData": resource,
        }

    def _operation_url(self, operation: Operation) -> str:
        if self.settings.compact_ids_in_operation_urls:
            # The source document's completion notification writes both ids compact upper-case.
            return f"/communications/calls/{compact(operation.call_id)}/operations/{compact(operation.id)}"
        return f"/communications/calls/{operation.call_id}/operations/{operation.id}"

    def _operation_notification(self, operation: Operation) -> dict[str, Any]:
        url = self._operation_url(operation)
        return {
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "deleted",
            "resourceUrl": url,
            "resourceData": operation.notification_data(url),
        }

    def _send(self, call: Call, notification: dict[str, Any], *, copies: int = 1) -> None:
        """Queue a notification; per call, notifications leave in the order they were queued."""
        lock = self._send_locks.setdefault(call.id, asyncio.Lock())
        body = {"@odata.type": "#microsoft.graph.commsNotifications", "value": [notification]}
        url = call.callback_uri
        delay = call.options.notification_delay_seconds

        async def deliver() -> None:
            async with lock:
                for _ in range(copies):
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._post(url, body, call.id)

        self._spawn(deliver())

    async def _post(self, url: str, body: dict[str, Any], call_id: str) -> None:
        """POST one notification; try again (bounded, backing off) while the bot cannot take it.

        Microsoft documents retries for change notifications (exponential backoff, up to 4
        hours); for calling callbacks it documents none. The simulator retries what can succeed
        later (no answer, 408, 429, 5xx) a few times, so a bot that briefly fails is tested
        against a second delivery of the same notification; a 4xx is the bot's final word.
        """
        assert self._client is not None
        s = self.settings
        delay = s.notification_retry_backoff_seconds
        for attempt in range(1, s.notification_retries + 2):
            token = self.keys.sign(notification_claims(s.bot_app_id, s.tenant_id))
            delivery = Delivery(url=url, body=body, call_id=call_id, attempt=attempt)
            started = time.monotonic()
            retry_after: str | None = None
            try:
                response = await self._client.post(
                    url,
                    json=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                        "client-request-id": str(uuid.uuid4()),
                    },
                )
                delivery.status_code = response.status_code
                retry_after = response.headers.get("retry-after")
            except httpx.HTTPError as exc:
                delivery.error = f"{type(exc).__name__}: {exc}"
            delivery.elapsed_seconds = time.monotonic() - started
            with self.lock:
                self.deliveries.append(delivery)
            log.debug("notification to %s for call %s -> %s", url, call_id, delivery.status_code)
            if not retryable(delivery.status_code) or attempt > s.notification_retries:
                return
            wait = delay
            if retry_after is not None and retry_after.strip().isdigit():
                wait = float(retry_after.strip())
            await asyncio.sleep(min(wait, MAX_RETRY_DELAY_SECONDS))
            delay *= 2

    # -- calls -----------------------------------------------------------------------------

    async def place_call(self, options: CallOptions) -> Call:
        if options.scenario not in SCENARIOS:
            raise ValueError(
                f"unknown scenario {options.scenario!r}; known: {', '.join(SCENARIOS)}"
            )
        for keys in options.keys_after_prompts:
            check_keys(keys)
        if options.caller not in CALLERS:
            raise ValueError(f"unknown caller {options.caller!r}; known: {', '.join(CALLERS)}")
        callback = options.callback_url or self.settings.default_callback_url
        if not callback:
            raise ValueError("no callback URL: pass callbackUrl or start the simulator with one")
        call = Call(
            id=str(uuid.uuid4()),
            tenant_id=self.settings.tenant_id,
            bot_app_id=self.settings.bot_app_id,
            callback_uri=callback,
            options=options,
            my_participant_id=str(uuid.uuid4()),
            caller_id=str(uuid.uuid4()),
        )
        with self.lock:
            self.calls[id_key(call.id)] = call
        incoming = call.resource()
        del incoming["resultInfo"]  # null until the call ends; call: answer's example omits it
        self._send(call, self._call_notification(call, "created", incoming))
        self._spawn(self._answer_deadline(call))
        return call

    async def _answer_deadline(self, call: Call) -> None:
        # Teams drops a call the bot does not answer within 15 seconds (wall clock here).
        await asyncio.sleep(self.settings.answer_timeout_seconds)
        if call.state == "incoming":
            await self.terminate(call.id, result=RESULT_NOT_ANSWERED)

    def _require_incoming(self, call: Call, action: str) -> None:
        if call.state != "incoming":
            raise GraphError(
                400,
                "CallNotIncoming",
                f"Call is '{call.state}'; only an incoming call can be {action}.",
            )

    async def answer(self, call_id: str, params: dict[str, Any]) -> Call:
        call = self.find_call(call_id)
        self._require_incoming(call, "answered")
        call.callback_uri = params["callbackUri"]
        call.media_config_type = params["mediaConfigType"]
        call.media_config = params.get("mediaConfig") or {"@odata.type": call.media_config_type}
        call.accepted_modalities = list(params["acceptedModalities"])
        call.state = "establishing"
        self._spawn(self._establish(call))
        return call

    async def reject(self, call_id: str, params: dict[str, Any]) -> Call:
        """call: reject: 202, then a ``deleted`` notification that names the call only."""
        call = self.find_call(call_id)
        self._require_incoming(call, "rejected")
        if params.get("callbackUri"):
            call.callback_uri = params["callbackUri"]
        call.state = "terminated"
        call.ended_at = time.time()
        self._send(call, self._call_notification(call, "deleted", {}))
        return call

    async def _establish(self, call: Call) -> None:
        establishing = self._call_notification(call, "updated", {"state": "establishing"})
        await self._sleep_sim(ESTABLISHING_SECONDS)
        if call.state != "establishing":
            return
        # The state is established before the notification leaves: a bot reacting to it at once
        # must be able to call recordResponse.
        call.state = "established"
        established = self._call_notification(call, "updated", {"state": "established"})
        copies = 2 if call.options.duplicate_established else 1
        if call.options.out_of_order:
            self._send(call, established, copies=copies)
            self._send(call, establishing)
        else:
            self._send(call, establishing)
            self._send(call, established, copies=copies)
        self._kick(call)

    async def terminate(
        self, call_id: str, *, result: Result = RESULT_CALL_ENDED, by_bot: bool = False
    ) -> Call:
        """End a call (bot hang-up, caller hang-up or timeout): cancel its operations silently.

        The bot's DELETE gets ``terminating`` then ``terminated`` (Delete call); the other ends
        only ``terminated``.
        """
        call = self.find_call(call_id)
        if call.state == "terminated":
            return call
        if by_bot:
            self._send(call, self._call_notification(call, "updated", {"state": "terminating"}))
        call.state = "terminated"
        call.ended_at = time.time()
        call.result = result_info(*result)
        # Known platform behaviour: operations cut by the end of the call get no completion
        # notification; only the call's terminated notification follows.
        for operation_id in self._queues.pop(call.id, []):
            self._finish(
                self.operations[id_key(operation_id)], "failed", RESULT_OPERATION_CALL_ENDED
            )
        running = self._running.pop(call.id, None)
        if running is not None:
            self._finish(self.operations[id_key(running[0])], "failed", RESULT_OPERATION_CALL_ENDED)
            running[1].cancel()
        self._send(
            call,
            self._call_notification(
                call, "deleted", {"state": "terminated", "resultInfo": call.result}
            ),
        )
        self.recordings.expire_call(call.id, self.settings.recording_retention_seconds)
        return call

    async def caller_hangup(self, call_id: str) -> Call:
        return await self.terminate(call_id, result=RESULT_CALLER_HUNG_UP)

    # -- tones -----------------------------------------------------------------------------

    async def press_keys(self, call_id: str, keys: str) -> int:
        """The caller presses keys: a toneInfo notification per key if the bot subscribed
        (call: subscribeToTone), and a key among a running recording's stopTones stops it.
        Returns how many tone notifications were sent."""
        check_keys(keys)
        call = self.find_call(call_id)
        if call.state != "established":
            raise GraphError(
                400, "CallNotEstablished", f"Call is '{call.state}'; keys need an established call."
            )
        sent = 0
        for key in keys.upper():
            if call.tone_subscribed:
                call.tone_sequence += 1
                tone = {
                    "@odata.type": "#microsoft.graph.toneInfo",
                    "sequenceId": call.tone_sequence,
                    "tone": TONES[key],
                }
                data = {"state": call.state, "toneInfo": tone}
                self._send(call, self._call_notification(call, "updated", data))
                sent += 1
            running = self._running.get(call.id)
            if running is not None:
                operation = self.operations[id_key(running[0])]
                event = self._stop_tones.get(operation.id)
                if event is not None and key in operation.params.get("stopTones", []):
                    event.set()
        return sent

    async def _press_later(self, call: Call, keys: str) -> None:
        await self._sleep_sim(KEY_PRESS_DELAY_SECONDS)
        if call.state == "established":
            await self.press_keys(call.id, keys)

    # -- operations ------------------------------------------------------------------------

    def _finish(self, operation: Operation, status: str, result: Result) -> None:
        operation.status = status
        operation.result = result_info(*result)
        operation.etag += 1

    def _new_operation(self, call: Call, kind: str, params: dict[str, Any]) -> Operation:
        operation = Operation(
            id=str(uuid.uuid4()),
            call_id=call.id,
            kind=kind,
            client_context=params.get("clientContext"),
            params=params,
        )
        with self.lock:
            self.operations[id_key(operation.id)] = operation
        call.operations.append(operation.id)
        return operation

    def operation_location(self, operation: Operation) -> str:
        return f"{self._graph_base_url()}/communications/calls/{operation.call_id}/operations/{operation.id}"

    async def start_operation(self, call_id: str, kind: str, params: dict[str, Any]) -> Operation:
        call = self.find_call(call_id)
        if call.media_config_type != SERVICE_HOSTED:
            raise GraphError(
                403,
                "InvalidMediaMode",
                "This action is supported only for calls answered with serviceHostedMediaConfig (8500).",
            )
        if call.state != "established":
            raise GraphError(
                400,
                "CallNotEstablished",
                f"Call is '{call.state}'; the action needs an established call (8501).",
            )
        operation = self._new_operation(call, kind, params)
        if kind == "subscribeToTone":
            # Its reply is already completed: no notification follows (commsOperation); tones
            # come as call updates from now on.
            call.tone_subscribed = True
            operation.status = "completed"
            return operation
        scenario = call.options.scenario
        if kind == "record" and scenario in ("reply-completed", "reply-failed"):
            # commsOperation: a reply that is already completed or failed has no notification.
            if scenario == "reply-completed":
                self._store_recording(call, operation, float(self._max_seconds(operation)))
                self._finish(operation, "completed", RESULT_MAX_DURATION)
            else:
                self._finish(operation, "failed", RESULT_AUDIO_INACTIVE)
            return operation
        if params.get("bargeInAllowed"):
            self._cancel_pending(call)
        self._queues.setdefault(call.id, []).append(operation.id)
        self._kick(call)
        return operation

    def _cancel_pending(self, call: Call) -> None:
        """bargeInAllowed: true cancels queued and running record/playPrompt operations."""
        canceled = list(self._queues.pop(call.id, []))
        running = self._running.pop(call.id, None)
        if running is not None:
            running[1].cancel()
            canceled.insert(0, running[0])
        for operation_id in canceled:
            operation = self.operations[id_key(operation_id)]
            self._finish(operation, "failed", RESULT_CANCELED)
            self._send(call, self._operation_notification(operation))

    def _kick(self, call: Call) -> None:
        if call.state != "established" or call.id in self._running:
            return
        queue = self._queues.get(call.id)
        if not queue:
            return
        operation = self.operations[id_key(queue.pop(0))]
        operation.status = "running"
        operation.etag += 1
        task = self._spawn(self._run(call, operation))
        self._running[call.id] = (operation.id, task)

    async def _run(self, call: Call, operation: Operation) -> None:
        try:
            if operation.kind == "record":
                outcome = await self._run_record(call, operation)
            else:
                outcome = await self._run_prompt(call, operation)
        except asyncio.CancelledError:
            return  # whoever cancelled has settled the operation
        finally:
            self._stop_tones.pop(operation.id, None)
        if outcome is None:
            return  # the call ended mid-operation
        status, result = outcome
        if self._running.get(call.id, ("",))[0] == operation.id:
            del self._running[call.id]
        self._finish(operation, status, result)
        copies = 2 if call.options.duplicate_completion else 1
        self._send(call, self._operation_notification(operation), copies=copies)
        if operation.kind == "playPrompt" and status == "completed":
            index = call.prompts_played
            call.prompts_played += 1
            if index < len(call.options.keys_after_prompts):
                self._spawn(self._press_later(call, call.options.keys_after_prompts[index]))
        self._kick(call)
        if (
            operation.kind == "record"
            and status == "completed"
            and call.options.scenario == "hangup-before-stored"
        ):
            # The caller is gone as soon as the recording is done: the platform's retention
            # countdown starts before the bot can possibly have stored it.
            await self.caller_hangup(call.id)
            return
        delay = call.options.hangup_after_completion_seconds
        if delay is not None and call.id not in self._running and not self._queues.get(call.id):
            self._spawn(self._caller_hangup_later(call, delay))

    async def _caller_hangup_later(self, call: Call, delay: float) -> None:
        await self._sleep_sim(delay)
        if call.id not in self._running and not self._queues.get(call.id):
            await self.caller_hangup(call.id)

    async def _play_prompts(self, call: Call, operation: Operation) -> Result | None:
        """Fetch and play the operation's prompts; the failure's resultInfo, or None."""
        assert self._client is not None
        for prompt in operation.params.get("prompts", []):
            uri = str(prompt["mediaInfo"]["uri"])
            failure = await check_prompt(self._client, uri)
            if failure is not None:
                result, reason = failure
                with self.lock:
                    self.prompt_failures[operation.id] = reason
                return result
            await self._sleep_sim(PROMPT_SECONDS)
        return None

    async def _run_prompt(self, call: Call, operation: Operation) -> tuple[str, Result]:
        failure = await self._play_prompts(call, operation)
        if failure is not None:
            return "failed", failure
        if call.options.scenario == "prompt-failed":
            return "failed", RESULT_PROMPT_FAILED
        return "completed", RESULT_PROMPT_COMPLETED

    def _max_seconds(self, operation: Operation) -> int:
        return int(min(operation.params["maxRecordDurationInSeconds"], MAX_RECORD_SECONDS))

    def _store_recording(self, call: Call, operation: Operation, duration: float) -> None:
        recording = self.recordings.create(
            duration_seconds=duration,
            faults=list(call.options.recording_faults),
            call_id=call.id,
            operation_id=operation.id,
        )
        operation.recording_id = recording.recording_id
        operation.recording_location = recording.location
        operation.recording_access_token = recording.access_token

    async def _listen(self, operation: Operation, seconds: float) -> float | None:
        """Record for ``seconds``; if the caller presses a stop tone first, the seconds heard."""
        event = self._stop_tones.setdefault(operation.id, asyncio.Event())
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.wait_for(event.wait(), seconds * self.settings.time_scale)
        except TimeoutError:
            return None
        heard = (loop.time() - started) / self.settings.time_scale
        # Whole samples of 16 kHz audio, at least one.
        return max(round(heard * 16_000), 1) / 16_000

    async def _run_record(self, call: Call, operation: Operation) -> tuple[str, Result] | None:
        params = operation.params
        scenario = call.options.scenario
        # Keys pressed from now on (prompt and beep included) can stop this recording.
        self._stop_tones[operation.id] = asyncio.Event()
        attempt = call.record_attempts
        call.record_attempts += 1
        failure = await self._play_prompts(call, operation)
        if failure is not None:
            return "failed", failure
        if scenario == "prompt-failed":
            return "failed", RESULT_PROMPT_FAILED
        if params["playBeep"]:
            await self._sleep_sim(BEEP_SECONDS)
        if scenario == "initial-silence" or (scenario == "silence-then-answer" and attempt == 0):
            await self._sleep_sim(params["initialSilenceTimeoutInSeconds"])
            return "failed", RESULT_INITIAL_SILENCE
        max_seconds = self._max_seconds(operation)
        if scenario == "hangup":
            await self._sleep_sim(max(0.5, min(max_seconds, call.options.speech_seconds) / 2))
            # Leave the running slot first so terminate() does not cancel this very task.
            self._running.pop(call.id, None)
            self._finish(operation, "failed", RESULT_OPERATION_CALL_ENDED)
            await self.caller_hangup(call.id)
            return None
        if scenario == "stop-tone" and call.options.speech_seconds < max_seconds:
            duration, result = call.options.speech_seconds, RESULT_STOP_TONE
            await self._sleep_sim(duration)
        else:
            heard = await self._listen(operation, float(max_seconds))
            if heard is None:
                duration, result = float(max_seconds), RESULT_MAX_DURATION
            else:
                duration, result = heard, RESULT_STOP_TONE
        self._store_recording(call, operation, duration)
        return "completed", result


def check_keys(keys: str) -> None:
    """Keys a caller can press: DTMF 0-9, *, #, A-D."""
    if not keys:
        raise ValueError("no keys given")
    bad = [key for key in keys.upper() if key not in TONES]
    if bad:
        raise ValueError(f"cannot press {''.join(bad)!r}: keys are 0-9, *, # and A-D")
