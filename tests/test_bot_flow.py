"""The bot flow, driven by the notifications the Graph simulator sends for real calls.

The simulator posts its notifications to a loopback endpoint that keeps them; the test hands
each one to :class:`BotFlow` the way the webhook does (call and prompt notifications to the
hooks; a finished record operation queued as a job, then ``on_record_completed``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest

from devtools.graphsim import GraphSimulator
from shared.bot.flow import BotFlow
from shared.bot.steps import attempt_of
from shared.graph.models import CommsNotification, RecordOperation
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus
from shared.queues import JOB_TIME_TO_LIVE
from shared.services import Services
from tests.conftest import TENANT_ID, use_simulator_identity
from tests.support.functions import http_request, invoke
from tests.support.inbox import Inbox, serve_inbox

THANK_YOU = "https://cdn.example/thank-you.wav"


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with serve_inbox(prompts=True) as box:
        yield box


@pytest.fixture
def sim(inbox: Inbox, start_simulator: Callable[..., GraphSimulator]) -> Iterator[GraphSimulator]:
    running = start_simulator(time_scale=0.01, callback_url=f"{inbox.base_url}/api/calls")
    yield running
    running.stop()


@pytest.fixture
async def bot_env(
    sim: GraphSimulator,
    inbox: Inbox,
    configure: Callable[..., Services],
    monkeypatch: pytest.MonkeyPatch,
) -> GraphSimulator:
    use_simulator_identity(monkeypatch, sim)
    configure(
        GRAPH_BASE_URL=sim.graph_base_url,
        GRAPH_CREDENTIAL_MODE="managedIdentity",
        CALLBACK_BASE_URL=inbox.base_url,
        BOT_AUTO_ANSWER="true",
        BOT_RECORD_PROMPT_URI="https://cdn.example/please-speak.wav",
        BOT_RECORD_MAX_DURATION_SECONDS="5",
        BOT_RECORD_STOP_TONES="#,*",
        BOT_THANK_YOU_PROMPT_URI=THANK_YOU,
        BOT_HANG_UP_AFTER_RECORDING="true",
    )
    return sim


def new_flow() -> BotFlow:
    """A flow as one app instance would build it (the storage fixture made the table)."""
    from shared.bot.flow import BotFlow
    from shared.services import app_services

    services = app_services()
    flow = services.call_events()  # as the webhook gets it: with its collaborators
    if isinstance(flow, BotFlow):
        return flow
    # Auto-answer off: the flow itself must still leave the call alone.
    return BotFlow(services.graph, services.ledger, services.settings, queue=services.storage.queue)


class WebhookStandIn:
    """What the webhook does with each notification for the bot flow."""

    def __init__(self, inbox: Inbox, flows: list[BotFlow], storage: Any) -> None:
        self.inbox = inbox
        self.flows = flows
        self.storage = storage
        self.handled = 0
        self.run_worker = True

    async def pump(self) -> int:
        batch = self.inbox.take(self.handled)
        self.handled += len(batch)
        for raw in batch:
            await self.deliver(CommsNotification.model_validate(raw))
        return len(batch)

    async def deliver(self, notification: CommsNotification) -> None:
        kind = notification.resource_kind
        if kind == "call":
            # Every instance may get it: the flows must agree through the ledger.
            await asyncio.gather(
                *(f.on_call_notification(notification, tenant_id=TENANT_ID) for f in self.flows)
            )
        elif kind == "playPromptOperation":
            await self.flows[0].on_prompt_notification(notification, tenant_id=TENANT_ID)
        elif kind == "recordOperation":
            operation = notification.resource_data
            assert isinstance(operation, RecordOperation)
            call_id, operation_id = notification.call_id, notification.operation_id
            assert call_id is not None
            assert operation_id is not None
            operation = operation.model_copy(update={"id": operation_id})
            ledger = OperationLedger(self.storage.table)
            if operation.status == "failed":
                await ledger.mark_failed(
                    call_id, operation_id, "recordOperation failed", result=operation.result_info
                )
                await self.flows[0].on_record_completed(call_id, operation)
                return
            job = DownloadJob.from_notification(notification, tenant_id=TENANT_ID)
            await self.storage.queue.send_message(
                job.to_message(), time_to_live=int(JOB_TIME_TO_LIVE.total_seconds())
            )
            await ledger.advance(call_id, operation_id, OperationStatus.COMPLETED)
            await self.flows[0].on_record_completed(call_id, operation)
            if self.run_worker:
                # The queue trigger: the registered worker stores it and tells the bot flow.
                await invoke("download_recording", func.QueueMessage(body=job.to_message()))

    async def run_until(self, done: Any, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while True:
            await self.pump()
            if done():
                await asyncio.sleep(0.05)
                await self.pump()  # whatever was still in flight
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the call did not reach the expected state")
            await asyncio.sleep(0.01)


def graph_requests(sim: GraphSimulator, call_id: str) -> list[tuple[str, str, int | None]]:
    """(method, last path segment, status) of the calls-API requests for one call."""
    out = []
    for r in sim.requests:
        if call_id not in r.path:
            continue
        tail = r.path.rsplit("/", 1)[-1]
        out.append((r.method, "call" if tail == call_id else tail, r.status_code))
    return out


async def test_full_call_answers_records_once_thanks_and_hangs_up(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow(), new_flow()], storage)

    call_id = sim.place_call(duplicate_established=True)
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    established = [n for n in inbox.take(0) if n["resourceData"].get("state") == "established"]
    assert len(established) == 2  # sent twice, each to two instances
    assert graph_requests(sim, call_id) == [
        ("POST", "answer", 202),
        ("POST", "recordResponse", 200),
        ("POST", "playPrompt", 200),
        ("DELETE", "call", 204),
    ]
    assert all(r.token_valid for r in sim.requests)
    answer = next(r for r in sim.requests if r.path.endswith("/answer")).body
    assert answer["callbackUri"] == f"{inbox.base_url}/api/calls"
    assert answer["acceptedModalities"] == ["audio"]
    media = answer["mediaConfig"]
    assert media["@odata.type"] == "#microsoft.graph.serviceHostedMediaConfig"
    assert {m["uri"] for m in media["preFetchMedia"]} == {
        "https://cdn.example/please-speak.wav",
        f"{inbox.base_url}/api/prompts/reprompt.wav",  # unset: the shipped one
        THANK_YOU,
    }
    record = next(r for r in sim.requests if r.path.endswith("/recordResponse")).body
    assert record["maxRecordDurationInSeconds"] == 5
    assert record["stopTones"] == ["#", "*"]
    assert record["prompts"][0]["mediaInfo"]["uri"] == "https://cdn.example/please-speak.wav"
    assert attempt_of(record["clientContext"]) == 1
    prompt = next(r for r in sim.requests if r.path.endswith("/playPrompt")).body
    assert prompt["prompts"][0]["mediaInfo"]["uri"] == THANK_YOU

    (operation,) = [op for op in sim.operations if op.kind == "record"]
    messages = [m async for m in storage.queue.receive_messages()]
    assert len(messages) == 1
    job = DownloadJob.from_message(messages[0].content)
    assert job.operation_id == operation.id
    assert job.client_context == record["clientContext"]
    row = await OperationLedger(storage.table).get(call_id, operation.id)
    assert row is not None
    assert row.status is OperationStatus.STORED
    assert row.get("StartedBy") == "bot"
    assert row.get("Attempt") == 1


async def test_established_handled_concurrently_starts_one_recording(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = bot_env
    flows = [new_flow() for _ in range(3)]
    webhook = WebhookStandIn(inbox, flows[:1], storage)
    call_id = sim.place_call()

    def established() -> dict[str, Any] | None:
        return next(
            (n for n in inbox.take(0) if n["resourceData"].get("state") == "established"), None
        )

    # Answer through the flow; hold back the established notification.
    deadline = time.monotonic() + 5
    while (raw := established()) is None and time.monotonic() < deadline:
        batch = [n for n in inbox.take(webhook.handled)]
        webhook.handled += len(batch)
        for item in batch:
            if item["resourceData"].get("state") != "established":
                await webhook.deliver(CommsNotification.model_validate(item))
        await asyncio.sleep(0.01)
    assert raw is not None
    notification = CommsNotification.model_validate(raw)

    await asyncio.gather(
        *(f.on_call_notification(notification, tenant_id=TENANT_ID) for f in flows * 2)
    )

    assert [r for r in graph_requests(sim, call_id) if r[1] == "recordResponse"] == [
        ("POST", "recordResponse", 200)
    ]
    rows = await OperationLedger(storage.table).list_call(call_id)
    assert len(rows) == 1
    assert rows[0].status is OperationStatus.RUNNING


async def test_caller_hanging_up_before_completion_abandons_the_operation(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)

    call_id = sim.place_call("hangup")
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    (operation,) = [op for op in sim.operations if op.kind == "record"]
    row = await OperationLedger(storage.table).get(call_id, operation.id)
    assert row is not None
    assert row.status is OperationStatus.ABANDONED
    assert "call ended" in row.get("FailureReason")
    assert not any(r.path.endswith("/operations") for r in sim.requests)
    assert ("DELETE", "call", 204) not in graph_requests(sim, call_id)
    assert [m async for m in storage.queue.receive_messages()] == []


async def test_graph_refusing_the_recording_releases_the_claim_for_a_retry(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = bot_env
    sim.add_api_faults("recordResponse", ["500"])
    webhook = WebhookStandIn(inbox, [new_flow()], storage)

    call_id = sim.place_call(duplicate_established=True)
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    records = [r for r in graph_requests(sim, call_id) if r[1] == "recordResponse"]
    assert records == [("POST", "recordResponse", 500), ("POST", "recordResponse", 200)]
    assert ("DELETE", "call", 204) in graph_requests(sim, call_id)


async def test_failures_are_logged_with_the_call_id_and_never_raised(
    bot_env: GraphSimulator, storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared")
    flow = new_flow()
    ghost = str(uuid.uuid4())
    incoming = CommsNotification.model_validate(
        {
            "changeType": "created",
            "resourceUrl": f"/communications/calls/{ghost}",
            "resourceData": {"@odata.type": "#microsoft.graph.call", "state": "incoming"},
        }
    )

    await flow.on_call_notification(incoming, tenant_id=TENANT_ID)

    failures = [r for r in caplog.records if "failed" in r.getMessage() and ghost in r.getMessage()]
    assert failures
    assert "ItemNotFound" in caplog.text
    assert "eyJ" not in caplog.text
    # The answer claim was given back, so a later notification may try again.
    assert await OperationLedger(storage.table).claim(ghost, "answer")


async def test_auto_answer_off_leaves_the_call_alone(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any, configure: Callable[..., Services]
) -> None:
    configure(BOT_AUTO_ANSWER="false")
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)

    call_id = sim.place_call()
    await sim.async_wait_for(lambda: inbox.take(0), within=5)
    await webhook.pump()

    assert graph_requests(sim, call_id) == []
    assert sim.call(call_id).state == "incoming"


async def test_terminated_settles_a_recording_started_by_the_api(
    bot_env: GraphSimulator, storage: Any
) -> None:
    ledger = OperationLedger(storage.table)
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    await ledger.advance(call_id, operation_id, OperationStatus.RUNNING, StartedBy="api")
    done_id = str(uuid.uuid4())
    await ledger.advance(call_id, done_id, OperationStatus.COMPLETED)
    terminated = CommsNotification.model_validate(
        {
            "changeType": "deleted",
            "resourceUrl": f"/communications/calls/{call_id}",
            "resourceData": {"@odata.type": "#microsoft.graph.call", "state": "terminated"},
        }
    )

    await new_flow().on_call_notification(terminated, tenant_id=TENANT_ID)

    running = await ledger.get(call_id, operation_id)
    done = await ledger.get(call_id, done_id)
    assert running is not None
    assert running.status is OperationStatus.ABANDONED
    assert done is not None
    assert done.status is OperationStatus.COMPLETED


async def test_full_call_through_the_webhook(
    bot_env: GraphSimulator,
    inbox: Inbox,
    storage: Any,
    configure: Callable[..., Services],
) -> None:
    """The same call with the real webhook function (JWT checked, routing, job) in the loop."""
    from shared.services import app_services
    from tests.support.functions import invoke

    sim = bot_env
    configure(INBOUND_OPENID_CONFIGURATION_URL=sim.openid_configuration_url)
    assert isinstance(app_services().call_events(), BotFlow)
    forwarded = 0

    async def forward() -> None:
        nonlocal forwarded
        for notification in inbox.take(forwarded):
            forwarded += 1
            body = {"@odata.type": "#microsoft.graph.commsNotifications", "value": [notification]}
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {sim.sign_token()}",
            }
            response = await invoke(
                "notifications",
                http_request("POST", "http://localhost/api/calls", body=body, headers=headers),
            )
            assert response.status_code == 202, response.get_body()
        # The queue trigger's part: the worker stores each job and tells the bot flow.
        async for message in storage.queue.receive_messages():
            worked.append(DownloadJob.from_message(message.content).operation_id)
            await invoke("download_recording", func.QueueMessage(body=message.content))
            await storage.queue.delete_message(message)

    worked: list[str] = []
    call_id = sim.place_call(duplicate_established=True)
    deadline = time.monotonic() + 10
    while sim.call(call_id).state != "terminated" or forwarded < len(inbox.take(0)):
        assert time.monotonic() < deadline, "the call did not end"
        await forward()
        await asyncio.sleep(0.01)

    assert graph_requests(sim, call_id) == [
        ("POST", "answer", 202),
        ("POST", "recordResponse", 200),
        ("POST", "playPrompt", 200),
        ("DELETE", "call", 204),
    ]
    (operation,) = [op for op in sim.operations if op.kind == "record"]
    assert worked == [operation.id]
    row = await OperationLedger(storage.table).get(call_id, operation.id)
    assert row is not None
    assert row.status is OperationStatus.STORED


async def test_legacy_first_notification_is_204_then_the_graph_one_is_answered(
    bot_env: GraphSimulator,
    inbox: Inbox,
    storage: Any,
    configure: Callable[..., Services],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Teams docs, protocol determination: the legacy-format first notification gets 204, and the
    platform sends it again in the Graph format, which the bot answers."""
    from tests.data import legacy_notification
    from tests.support.functions import invoke

    sim = bot_env
    configure(INBOUND_OPENID_CONFIGURATION_URL=sim.openid_configuration_url)
    caplog.set_level(logging.INFO, logger="blueprints")

    async def post(body: Any, headers: dict[str, str]) -> Any:
        return await invoke(
            "notifications",
            http_request("POST", "http://localhost/api/calls", body=body, headers=headers),
        )

    legacy_headers = legacy_notification.headers()
    unauthenticated = await post(legacy_notification.body_bytes(), legacy_headers)
    assert unauthenticated.status_code == 401  # authenticated like every other request

    call_id = sim.place_call()
    await sim.async_wait_for(lambda: inbox.take(0), within=5)
    legacy = await post(
        legacy_notification.body_bytes(),
        {**legacy_headers, "Authorization": f"Bearer {sim.sign_token()}"},
    )
    assert legacy.status_code == 204
    assert legacy.get_body() == b""
    assert "outcome=legacy_format" in caplog.text
    assert "legacy_call_id=11111111-2222-3333-4444-555555555555" in caplog.text
    assert graph_requests(sim, call_id) == []

    (incoming,) = inbox.take(0)
    graph_format = await post(
        {"@odata.type": "#microsoft.graph.commsNotifications", "value": [incoming]},
        {"Content-Type": "application/json", "Authorization": f"Bearer {sim.sign_token()}"},
    )
    assert graph_format.status_code == 202
    assert graph_requests(sim, call_id)[0] == ("POST", "answer", 202)


async def test_a_body_that_only_looks_partly_legacy_is_still_a_400(
    bot_env: GraphSimulator, storage: Any, configure: Callable[..., Services]
) -> None:
    from tests.support.functions import invoke

    configure(INBOUND_OPENID_CONFIGURATION_URL=bot_env.openid_configuration_url)
    response = await invoke(
        "notifications",
        http_request(
            "POST",
            "http://localhost/api/calls",
            body={"id": "x", "callState": "incoming"},  # no participants
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {bot_env.sign_token()}",
            },
        ),
    )
    assert response.status_code == 400


# -- the caller's experience (issue 16) ---------------------------------------------------------


def record_requests(sim: GraphSimulator, call_id: str) -> list[dict[str, Any]]:
    return [
        r.body for r in sim.requests if call_id in r.path and r.path.endswith("/recordResponse")
    ]


async def test_the_call_stays_open_until_the_recording_is_stored(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    """Completion arrives, the worker has not run: no thank-you, no hang-up. Once the worker
    stored the recording, the flow thanks the caller and hangs up."""
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)
    webhook.run_worker = False
    call_id = sim.place_call()
    await webhook.run_until(
        lambda: any(op.kind == "record" and op.status == "completed" for op in sim.operations)
    )
    (operation,) = [op for op in sim.operations if op.kind == "record"]
    await webhook.run_until(lambda: webhook.handled == len(inbox.take(0)))
    actions = [tail for _, tail, _ in graph_requests(sim, call_id)]
    assert actions == ["answer", "recordResponse"]  # completed, but not stored: the call is open
    row = await OperationLedger(storage.table).get(call_id, operation.id)
    assert row is not None
    assert row.status is OperationStatus.COMPLETED

    (message,) = [m async for m in storage.queue.receive_messages()]
    await invoke("download_recording", func.QueueMessage(body=message.content))
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    row = await OperationLedger(storage.table).get(call_id, operation.id)
    assert row is not None
    assert row.status is OperationStatus.STORED
    assert [tail for _, tail, _ in graph_requests(sim, call_id)] == [
        "answer",
        "recordResponse",
        "playPrompt",
        "call",
    ]
    prompt = next(r for r in sim.requests if r.path.endswith("/playPrompt")).body
    assert prompt["prompts"][0]["mediaInfo"]["uri"] == THANK_YOU


async def test_silence_is_reprompted_then_the_call_ends_after_the_last_attempt(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)

    call_id = sim.place_call("initial-silence")
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    first, second = record_requests(sim, call_id)
    assert first["prompts"][0]["mediaInfo"]["uri"] == "https://cdn.example/please-speak.wav"
    assert second["prompts"][0]["mediaInfo"]["uri"] == f"{inbox.base_url}/api/prompts/reprompt.wav"
    assert [attempt_of(r["clientContext"]) for r in (first, second)] == [1, 2]
    rows = await OperationLedger(storage.table).list_call(call_id)
    assert [(r.get("Attempt"), r.status, r.get("ResultSubcode")) for r in rows] == [
        (1, OperationStatus.FAILED, 8510),
        (2, OperationStatus.FAILED, 8510),
    ]
    # Nothing was recorded: no thank-you, the bot hangs up once.
    assert [tail for _, tail, _ in graph_requests(sim, call_id)][-1] == "call"
    assert "playPrompt" not in [tail for _, tail, _ in graph_requests(sim, call_id)]


async def test_one_attempt_means_no_reprompt(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any, configure: Callable[..., Services]
) -> None:
    configure(BOT_RECORD_ATTEMPTS="1")
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)
    call_id = sim.place_call("initial-silence")
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")
    assert len(record_requests(sim, call_id)) == 1
    assert ("DELETE", "call", 204) in graph_requests(sim, call_id)


async def test_a_download_still_failing_after_the_wait_hangs_up_anyway(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any, configure: Callable[..., Services]
) -> None:
    from shared.download import TransientDownloadError

    configure(BOT_HANG_UP_WAIT_SECONDS="0")
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)
    webhook.run_worker = False
    call_id = sim.place_call(recording_faults=["503:0"] * 20)
    await webhook.run_until(lambda: [m for m in inbox.take(0) if "operations" in m["resourceUrl"]])
    (message,) = [m async for m in storage.queue.receive_messages()]

    with pytest.raises(TransientDownloadError):
        await invoke("download_recording", func.QueueMessage(body=message.content))
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    (operation,) = [op for op in sim.operations if op.kind == "record"]
    row = await OperationLedger(storage.table).get(call_id, operation.id)
    assert row is not None
    assert row.status is OperationStatus.DOWNLOADING  # the queue retries it later
    actions = [tail for _, tail, _ in graph_requests(sim, call_id)]
    assert actions == ["answer", "recordResponse", "call"]  # no thank-you: nothing is safe yet


async def test_a_caller_who_hangs_up_before_stored_still_gets_the_recording_stored(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)
    webhook.run_worker = False
    call_id = sim.place_call(hangup_after_completion_seconds=0)
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")
    (operation,) = [op for op in sim.operations if op.kind == "record"]
    (message,) = [m async for m in storage.queue.receive_messages()]

    await invoke("download_recording", func.QueueMessage(body=message.content))
    await webhook.pump()

    row = await OperationLedger(storage.table).get(call_id, operation.id)
    assert row is not None
    assert row.status is OperationStatus.STORED
    # The after-recording step ran once and found the call gone: nothing raised, call settled.
    assert not await OperationLedger(storage.table).claim(call_id, "after-recording")
    assert [tail for _, tail, _ in graph_requests(sim, call_id)][:2] == ["answer", "recordResponse"]


async def test_shipped_prompts_silence_then_answer_is_stored_thanked_and_hung_up(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any, configure: Callable[..., Services]
) -> None:
    """The default flow with the app's own prompts, which the simulator fetches from the app and
    checks as Graph does (a wrong format would fail the operation with 8535)."""
    configure(BOT_RECORD_PROMPT_URI="", BOT_THANK_YOU_PROMPT_URI="")  # unset: the shipped ones
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)

    call_id = sim.place_call("silence-then-answer")
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    shipped = f"{inbox.base_url}/api/prompts"
    first, second = record_requests(sim, call_id)
    assert first["prompts"][0]["mediaInfo"]["uri"] == f"{shipped}/notice.wav"
    assert second["prompts"][0]["mediaInfo"]["uri"] == f"{shipped}/reprompt.wav"
    prompt = next(r for r in sim.requests if r.path.endswith("/playPrompt")).body
    assert prompt["prompts"][0]["mediaInfo"]["uri"] == f"{shipped}/thank-you.wav"
    rows = await OperationLedger(storage.table).list_call(call_id)
    assert [(r.get("Attempt"), r.status) for r in rows] == [
        (1, OperationStatus.FAILED),
        (2, OperationStatus.STORED),
    ]
    assert rows[0].get("ResultSubcode") == 8510
    assert [tail for _, tail, _ in graph_requests(sim, call_id)] == [
        "answer",
        "recordResponse",
        "recordResponse",
        "playPrompt",
        "call",
    ]
    assert all(status is not None and status < 300 for _, _, status in graph_requests(sim, call_id))
    assert set(inbox.prompts_served) == {"notice", "reprompt", "thank-you"}  # fetched by "Graph"
    # Every operation succeeded: no prompt was refused (8535) or unreachable (8536).
    assert all(
        op.status == "completed"
        for op in sim.operations
        if op.call_id == call_id and op.kind == "playPrompt"
    )


async def test_confirm_2_records_again_and_deletes_the_first_then_1_keeps_the_second(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any, configure: Callable[..., Services]
) -> None:
    from shared.blob_layout import blob_name_for

    configure(BOT_CONFIRM_RECORDING="true", BOT_CONFIRM_TIMEOUT_SECONDS="3")
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow(), new_flow()], storage)

    # The scripted caller: "2" after the first question, "1" after the second.
    call_id = sim.place_call(keys_after_prompts=["2", "1"])
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated", within=20)

    actions = [tail for _, tail, _ in graph_requests(sim, call_id)]
    assert actions.count("subscribeToTone") == 1
    assert actions.count("recordResponse") == 2
    assert actions[-1] == "call"
    first, second = record_requests(sim, call_id)
    assert second["bargeInAllowed"] is True  # cuts the first confirmation's wait short
    assert second["prompts"] == first["prompts"]  # the notice again, not "I did not hear"
    rows = await OperationLedger(storage.table).list_call(call_id)
    assert [(r.get("Attempt"), r.status) for r in rows] == [
        (1, OperationStatus.ERASED),
        (2, OperationStatus.STORED),
    ]
    # The discarded recording is gone at once; the kept one is there.
    names = [blob.name async for blob in storage.container.list_blobs()]
    assert blob_name_for(call_id, rows[0].operation_id) not in names
    assert blob_name_for(call_id, rows[1].operation_id) in names
    # Each question played the recording itself (a read URL to its blob), then asked.
    plays = [
        r.body
        for r in sim.requests
        if call_id in r.path
        and r.path.endswith("/playPrompt")
        and r.body["clientContext"].startswith("bot-confirm:")
    ]
    assert [p["clientContext"].split(":", 1)[1] for p in plays] == [
        rows[0].operation_id,
        rows[1].operation_id,
    ]
    for play in plays:
        playback, question = (p["mediaInfo"]["uri"] for p in play["prompts"])
        assert "sig=" in playback
        assert question.endswith("/api/prompts/confirm.wav")
    thanks = [
        r.body
        for r in sim.requests
        if call_id in r.path
        and r.path.endswith("/playPrompt")
        and r.body["clientContext"] == "bot-thank-you"
    ]
    assert len(thanks) == 1


async def test_confirm_without_an_answer_keeps_the_recording(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any, configure: Callable[..., Services]
) -> None:
    configure(BOT_CONFIRM_RECORDING="true", BOT_CONFIRM_TIMEOUT_SECONDS="2")
    sim = bot_env
    webhook = WebhookStandIn(inbox, [new_flow()], storage)

    call_id = sim.place_call()
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated", within=20)

    rows = await OperationLedger(storage.table).list_call(call_id)
    assert [r.status for r in rows] == [OperationStatus.STORED]
    contexts = [
        r.body["clientContext"]
        for r in sim.requests
        if call_id in r.path and r.path.endswith("/playPrompt")
    ]
    assert [c.split(":", 1)[0] for c in contexts] == [
        "bot-confirm",
        "bot-confirm-wait",
        "bot-thank-you",
    ]
    wait = next(
        r.body
        for r in sim.requests
        if r.path.endswith("/playPrompt") and r.body["clientContext"].startswith("bot-confirm-wait")
    )
    assert len(wait["prompts"]) == 2  # BOT_CONFIRM_TIMEOUT_SECONDS one-second silences


# ----------------------------------------------------------------- Graph throttling (issue 30)


def short_budget_flow(seconds: float = 1.0) -> BotFlow:
    """A flow whose Graph requests give up sooner: a refusal past the budget without waiting 4 s."""
    from shared.services import app_services

    services = app_services()
    return BotFlow(
        services.graph,
        services.ledger,
        services.settings,
        queue=services.storage.queue,
        graph_budget_seconds=seconds,
    )


async def sweep(flow: BotFlow) -> int:
    """The cleanup's open-call sweep, with no wait: every call the bot left open is due."""
    from datetime import timedelta

    from shared.bot.open_calls import settle_open_calls
    from shared.clock import utc_now

    return await settle_open_calls(flow._ledger, flow, now=utc_now(), wait=timedelta(0))


async def test_a_hang_up_refused_past_its_budget_is_retried_by_the_sweep_and_the_call_ends(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    sim = bot_env
    # Retry-After 1 s against a 1 s budget: refused with no retry left.
    sim.add_api_faults("hangup", ["429:1"])
    flow = short_budget_flow()
    webhook = WebhookStandIn(inbox, [flow], storage)

    call_id = sim.place_call()
    await webhook.run_until(lambda: ("DELETE", "call", 429) in graph_requests(sim, call_id))
    await asyncio.sleep(0.5)
    await webhook.pump()
    assert sim.call(call_id).state == "established", "refused: the call is still open"

    await asyncio.sleep(1.1)  # Graph's Retry-After, which the client now honours for every step
    assert await sweep(flow) == 1
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    assert graph_requests(sim, call_id) == [
        ("POST", "answer", 202),
        ("POST", "recordResponse", 200),
        ("POST", "playPrompt", 200),  # the thank-you, once: the sweep does not replay it
        ("DELETE", "call", 429),
        ("DELETE", "call", 204),
    ]
    # Settled: a later sweep sends nothing more for this call.
    await sweep(flow)
    assert len(graph_requests(sim, call_id)) == 5


async def test_a_recording_refused_past_its_budget_is_retried_by_the_sweep(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any
) -> None:
    from shared.bot.steps import RECORD_REFUSED_REASON

    sim = bot_env
    sim.add_api_faults("recordResponse", ["429:1"])
    flow = short_budget_flow()
    webhook = WebhookStandIn(inbox, [flow], storage)

    call_id = sim.place_call()
    await webhook.run_until(lambda: ("POST", "recordResponse", 429) in graph_requests(sim, call_id))
    await asyncio.sleep(0.3)
    await webhook.pump()
    assert sim.call(call_id).state == "established"
    # The refusal is in the ledger, where the sweep (and an operator) finds it.
    (refused,) = await OperationLedger(storage.table).list_call(call_id)
    assert refused.status is OperationStatus.FAILED
    assert refused.get("FailureReason").startswith(RECORD_REFUSED_REASON)
    assert "429 TooManyRequests" in refused.get("FailureReason")
    assert (refused.get("StartedBy"), refused.get("Attempt")) == ("bot", 1)

    await asyncio.sleep(1.1)
    assert await sweep(flow) == 1
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    assert [(tail, status) for _, tail, status in graph_requests(sim, call_id)] == [
        ("answer", 202),
        ("recordResponse", 429),
        ("recordResponse", 200),
        ("playPrompt", 200),
        ("call", 204),
    ]
    first, retried = [r.body for r in sim.requests if r.path.endswith("/recordResponse")]
    assert attempt_of(first["clientContext"]) == 1
    # The notice again (the caller heard nothing yet), as the call's second attempt.
    assert attempt_of(retried["clientContext"]) == 2
    assert retried["prompts"] == first["prompts"]
    rows = await OperationLedger(storage.table).list_call(call_id)
    stored = [r for r in rows if r.status is OperationStatus.STORED]
    assert len(stored) == 1
    assert stored[0].get("Attempt") == 2


async def test_a_recording_refused_with_no_attempt_left_ends_the_call(
    bot_env: GraphSimulator, inbox: Inbox, storage: Any, configure: Callable[..., Services]
) -> None:
    configure(BOT_RECORD_ATTEMPTS="1")
    sim = bot_env
    sim.add_api_faults("recordResponse", ["429:1"])
    flow = short_budget_flow()
    webhook = WebhookStandIn(inbox, [flow], storage)

    call_id = sim.place_call()
    await webhook.run_until(lambda: ("POST", "recordResponse", 429) in graph_requests(sim, call_id))
    await asyncio.sleep(1.1)
    await webhook.pump()
    assert await sweep(flow) == 1
    await webhook.run_until(lambda: sim.call(call_id).state == "terminated")

    # No thank-you: nothing was recorded. The refused row says why the call ended.
    assert [(tail, status) for _, tail, status in graph_requests(sim, call_id)] == [
        ("answer", 202),
        ("recordResponse", 429),
        ("call", 204),
    ]
    (row,) = await OperationLedger(storage.table).list_call(call_id)
    assert row.status is OperationStatus.FAILED
    assert "nothing was recorded" in row.get("FailureReason")


class _NeverClosed:
    """A gate that forgets every Retry-After: each request learns of the throttling alone."""

    def close(self, retry_after: float) -> None:
        return None

    def throttled_for(self) -> float:
        return 0.0

    def wait_before_sending(self, deadline: float) -> float | None:
        return 0.0


async def _answer_a_burst(sim: GraphSimulator, flow: BotFlow, calls: int) -> list[str]:
    """Incoming calls 0.1 s apart, each answered by the flow as its notification arrives."""

    async def incoming(call_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        notification = CommsNotification.model_validate(
            {
                "changeType": "created",
                "resourceUrl": f"/communications/calls/{call_id}",
                "resourceData": {"@odata.type": "#microsoft.graph.call", "state": "incoming"},
            }
        )
        await flow.on_call_notification(notification, tenant_id=TENANT_ID)

    ids = [sim.place_call() for _ in range(calls)]
    await asyncio.gather(*(incoming(call_id, 0.1 * n) for n, call_id in enumerate(ids)))
    return ids


async def test_graphs_retry_after_holds_back_the_other_steps_so_fewer_requests_are_refused(
    bot_env: GraphSimulator, storage: Any
) -> None:
    from devtools.graphsim.throttling import ThrottleLimit
    from shared.graph.throttle_gate import ThrottleGate

    sim = bot_env
    flow = new_flow()
    graph = flow._graph

    def answers(ids: list[str]) -> tuple[int, int]:
        sent = [
            r for r in sim.requests if r.path.endswith("/answer") and r.path.split("/")[-2] in ids
        ]
        return sum(r.status_code == 202 for r in sent), sum(r.status_code == 429 for r in sent)

    # One request per 2 s for this app: the first call is answered, the others must wait.
    sim.calls_throttle.configure(ThrottleLimit(1, 2.0))
    graph.gate = _NeverClosed()  # type: ignore[assignment]
    alone = answers(await _answer_a_burst(sim, flow, 5))

    sim.calls_throttle.configure(ThrottleLimit(1, 2.0))
    graph.gate = ThrottleGate()
    shared = answers(await _answer_a_burst(sim, flow, 5))
    sim.calls_throttle.configure(None)

    # The same calls get through Graph's limit either way; the gate only spares the 429s.
    print(f"answered, refused: without the gate {alone}, with it {shared}")
    assert shared[0] >= alone[0] - 1
    assert shared[1] <= 3, f"with the gate: {shared[1]} refused"
    assert shared[1] * 2 <= alone[1], f"refused: {shared[1]} with the gate, {alone[1]} without"
