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
    RESULT_CALL_ENDED,
    RESULT_CANCELED,
    RESULT_INITIAL_SILENCE,
    RESULT_MAX_DURATION,
    RESULT_NOT_ANSWERED,
    RESULT_PROMPT_COMPLETED,
    RESULT_PROMPT_FAILED,
    RESULT_STOP_TONE,
    SCENARIOS,
    Call,
    CallOptions,
    Delivery,
    Operation,
    RequestRecord,
    result_info,
)
from .recordings import MAX_RECORD_SECONDS, RecordingStore
from .validation import SERVICE_HOSTED, GraphError

log = logging.getLogger("devtools.graphsim")

USER_AGENT = "Microsoft-Skype/3.0,(Calling/1.0)"
# Simulated (not wall-clock) seconds spent on each step of an operation.
PROMPT_SECONDS = 2.0
BEEP_SECONDS = 0.5
ESTABLISHING_SECONDS = 0.5


def id_key(identifier: str) -> str:
    """Graph writes the same GUID dashed (ids, Location) or compact upper-case (resourceUrl)."""
    return identifier.replace("-", "").lower()


def compact(identifier: str) -> str:
    return identifier.replace("-", "").upper()


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
        # Per-request faults on the calls API, keyed by action ("answer", "recordResponse"...).
        self.api_faults: dict[str, list[str]] = {}
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._queues: dict[str, list[str]] = {}
        self._running: dict[str, tuple[str, asyncio.Task[None]]] = {}

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

    def _call_notification(self, call: Call, change_type: str) -> dict[str, Any]:
        resource = call.resource()
        resource["@odata.id"] = f"/communications/calls/{call.id}"
        return {
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": change_type,
            "resourceUrl": f"/communications/calls/{call.id}",
            "resourceData": resource,
        }

    def _operation_url(self, operation: Operation) -> str:
        if self.settings.compact_ids_in_operation_urls:
            # The source document's completion notification writes both ids compact upper-case.
            return f"/communications/calls/{compact(operation.call_id)}/operations/{compact(operation.id)}"
        return f"/communications/calls/{operation.call_id}/operations/{operation.id}"

    def _operation_notification(self, operation: Operation) -> dict[str, Any]:
        url = self._operation_url(operation)
        data: dict[str, Any] = {
            "@odata.type": operation.odata_type,
            "@odata.id": url,
            "@odata.etag": f'W/"{operation.etag}"',
            "id": operation.id,
            "clientContext": operation.client_context,
            "status": operation.status,
            "resultInfo": operation.result,
        }
        if operation.recording_location is not None:
            data["recordingLocation"] = operation.recording_location
            data["recordingAccessToken"] = operation.recording_access_token
        return {
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "deleted",
            "resourceUrl": url,
            "resourceData": data,
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
        assert self._client is not None
        s = self.settings
        token = self.keys.sign(notification_claims(s.bot_app_id, s.tenant_id))
        delivery = Delivery(url=url, body=body, call_id=call_id)
        started = time.monotonic()
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
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        delivery.elapsed_seconds = time.monotonic() - started
        with self.lock:
            self.deliveries.append(delivery)
        log.debug("notification to %s for call %s -> %s", url, call_id, delivery.status_code)

    # -- calls -----------------------------------------------------------------------------

    async def place_call(self, options: CallOptions) -> Call:
        if options.scenario not in SCENARIOS:
            raise ValueError(
                f"unknown scenario {options.scenario!r}; known: {', '.join(SCENARIOS)}"
            )
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
        self._send(call, self._call_notification(call, "created"))
        self._spawn(self._answer_deadline(call))
        return call

    async def _answer_deadline(self, call: Call) -> None:
        # Teams drops a call the bot does not answer within 15 seconds (wall clock here).
        await asyncio.sleep(self.settings.answer_timeout_seconds)
        if call.state == "incoming":
            await self.terminate(call.id, result=RESULT_NOT_ANSWERED)

    async def answer(self, call_id: str, params: dict[str, Any]) -> Call:
        call = self.find_call(call_id)
        if call.state != "incoming":
            raise GraphError(
                400,
                "CallNotIncoming",
                f"Call is '{call.state}'; only an incoming call can be answered.",
            )
        call.callback_uri = params["callbackUri"]
        call.media_config_type = params["mediaConfigType"]
        call.accepted_modalities = list(params["acceptedModalities"])
        call.state = "establishing"
        self._spawn(self._establish(call))
        return call

    async def _establish(self, call: Call) -> None:
        establishing = self._call_notification(call, "updated")
        await self._sleep_sim(ESTABLISHING_SECONDS)
        if call.state != "establishing":
            return
        # The state is established before the notification leaves: a bot reacting to it at once
        # must be able to call recordResponse.
        call.state = "established"
        established = self._call_notification(call, "updated")
        copies = 2 if call.options.duplicate_established else 1
        if call.options.out_of_order:
            self._send(call, established, copies=copies)
            self._send(call, establishing)
        else:
            self._send(call, establishing)
            self._send(call, established, copies=copies)
        self._kick(call)

    async def terminate(
        self, call_id: str, *, result: tuple[int, int, str] = RESULT_CALL_ENDED
    ) -> Call:
        """End a call (bot hang-up, caller hang-up or timeout): cancel its operations silently."""
        call = self.find_call(call_id)
        if call.state == "terminated":
            return call
        call.state = "terminated"
        call.ended_at = time.time()
        call.result = result_info(*result)
        # Known platform behaviour: operations cut by the end of the call get no completion
        # notification; only the call's terminated notification follows.
        for operation_id in self._queues.pop(call.id, []):
            self._finish(
                self.operations[id_key(operation_id)], "failed", (400, 8528, "Call terminated.")
            )
        running = self._running.pop(call.id, None)
        if running is not None:
            self._finish(
                self.operations[id_key(running[0])], "failed", (400, 8528, "Call terminated.")
            )
            running[1].cancel()
        self._send(call, self._call_notification(call, "deleted"))
        self.recordings.expire_call(call.id, self.settings.recording_retention_seconds)
        return call

    # -- operations ------------------------------------------------------------------------

    def _finish(self, operation: Operation, status: str, result: tuple[int, int, str]) -> None:
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
        if outcome is None:
            return  # the call ended mid-operation
        status, result = outcome
        if self._running.get(call.id, ("",))[0] == operation.id:
            del self._running[call.id]
        self._finish(operation, status, result)
        copies = 2 if call.options.duplicate_completion else 1
        self._send(call, self._operation_notification(operation), copies=copies)
        self._kick(call)
        delay = call.options.hangup_after_completion_seconds
        if delay is not None and call.id not in self._running and not self._queues.get(call.id):
            self._spawn(self._caller_hangup_later(call, delay))

    async def _caller_hangup_later(self, call: Call, delay: float) -> None:
        await self._sleep_sim(delay)
        if call.id not in self._running and not self._queues.get(call.id):
            await self.terminate(call.id)

    async def _run_prompt(
        self, call: Call, operation: Operation
    ) -> tuple[str, tuple[int, int, str]]:
        await self._sleep_sim(PROMPT_SECONDS)
        if call.options.scenario == "prompt-failed":
            return "failed", RESULT_PROMPT_FAILED
        return "completed", RESULT_PROMPT_COMPLETED

    async def _run_record(
        self, call: Call, operation: Operation
    ) -> tuple[str, tuple[int, int, str]] | None:
        params = operation.params
        scenario = call.options.scenario
        if params["prompts"]:
            await self._sleep_sim(PROMPT_SECONDS)
        if scenario == "prompt-failed":
            return "failed", RESULT_PROMPT_FAILED
        if params["playBeep"]:
            await self._sleep_sim(BEEP_SECONDS)
        if scenario == "initial-silence":
            await self._sleep_sim(params["initialSilenceTimeoutInSeconds"])
            return "failed", RESULT_INITIAL_SILENCE
        max_seconds = min(params["maxRecordDurationInSeconds"], MAX_RECORD_SECONDS)
        if scenario == "hangup":
            await self._sleep_sim(max(0.5, min(max_seconds, call.options.speech_seconds) / 2))
            # Leave the running slot first so terminate() does not cancel this very task.
            self._running.pop(call.id, None)
            self._finish(operation, "failed", (400, 8528, "Call terminated."))
            await self.terminate(call.id)
            return None
        if scenario == "stop-tone" and call.options.speech_seconds < max_seconds:
            duration, result = call.options.speech_seconds, RESULT_STOP_TONE
        else:
            duration, result = float(max_seconds), RESULT_MAX_DURATION
        await self._sleep_sim(duration)
        recording = self.recordings.create(
            duration_seconds=duration,
            faults=list(call.options.recording_faults),
            call_id=call.id,
            operation_id=operation.id,
        )
        operation.recording_id = recording.recording_id
        operation.recording_location = recording.location
        operation.recording_access_token = recording.access_token
        return "completed", result
