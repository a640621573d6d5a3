"""POST /api/calls end to end: real signed tokens from the simulator, real Azurite queue/table."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.storage.queue.aio import QueueClient

from devtools.azurite import Azurite, free_port
from devtools.graphsim import GraphSimulator
from devtools.graphsim.keys import SigningKey
from shared.graph.models import CommsNotification, CommsNotifications, RecordOperation
from shared.jobs import DownloadJob
from shared.ledger import OperationLedger, OperationStatus
from shared.notifications import (
    MAX_BODY_BYTES,
    LoggingCallEventHandler,
    NotStored,
    Outcome,
    QueueUnavailable,
    route_notifications,
)
from shared.queues import DOWNLOAD_QUEUE, JOB_TIME_TO_LIVE
from shared.services import Services, use_services
from shared.settings import get_settings
from shared.storage import StorageClients
from tests.data import source_document as doc
from tests.support.functions import http_request, invoke, json_body

from .conftest import BOT_APP_ID

URL = "http://localhost:7071/api/calls"
JWT_PATTERN = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*")

# Every secret this module hands to the app, and every log line the app writes while the module
# runs; the last test checks that none of the first appears in the second.
ISSUED_SECRETS: set[str] = set()
MODULE_LOG: list[str] = []


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        # extra= fields are part of what Application Insights receives: check them too.
        MODULE_LOG.append(f"{text} {record.__dict__!r}")


@pytest.fixture(scope="module", autouse=True)
def _no_secret_in_any_log_of_the_module() -> Iterator[None]:
    """After the module's tests, whichever ran and in whatever order: no secret was logged."""
    handler = _Collect(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)
    everything = "\n".join(MODULE_LOG)
    leaked = [value[:12] + "..." for value in ISSUED_SECRETS if value in everything]
    assert leaked == [], f"secrets issued by this module's tests reached the log: {leaked}"
    assert not JWT_PATTERN.search(everything), "a JWT reached the log"


def token(sim: GraphSimulator, claims: dict[str, Any] | None = None, **options: Any) -> str:
    issued = sim.sign_token(claims, **options)
    ISSUED_SECRETS.add(issued)
    return issued


def access_token() -> str:
    value = f"recording-access-token-{secrets.token_urlsafe(24)}"
    ISSUED_SECRETS.add(value)
    return value


async def post(
    body: bytes | str | dict[str, Any],
    bearer: str | None,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> func.HttpResponse:
    all_headers = {"Content-Type": content_type, "User-Agent": "Microsoft-Skype/3.0,(Calling/1.0)"}
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    all_headers.update(headers or {})
    return await invoke("notifications", http_request("POST", URL, body=body, headers=all_headers))


async def queued_jobs(connection_string: str) -> list[DownloadJob]:
    """The queue's messages, decoded the way the queue trigger will (base64, then the model)."""
    async with QueueClient.from_connection_string(connection_string, DOWNLOAD_QUEUE) as raw:
        messages = await raw.peek_messages(max_messages=32)
    return [DownloadJob.from_message(base64.b64decode(message.content)) for message in messages]


def completion(
    call_id: str = doc.CALL_ID,
    operation_id: str = doc.OPERATION_ID,
    *,
    status: str = "completed",
    location: str | None = "https://file.location/17e3b46c-f61d-4f4d-9635-c626ef18e6ad",
    subcode: int = 8515,
) -> dict[str, Any]:
    """One recordOperation notification, shaped like the source document's."""
    notification = copy.deepcopy(doc.COMPLETION_NOTIFICATION["value"][0])
    compact_call = call_id.replace("-", "").upper()
    compact_op = operation_id.replace("-", "").upper()
    notification["resourceUrl"] = f"/communications/calls/{compact_call}/operations/{compact_op}"
    data = notification["resourceData"]
    data["id"] = operation_id
    data["status"] = status
    data["resultInfo"]["subcode"] = subcode
    if location is None:
        data.pop("recordingLocation")
        data.pop("recordingAccessToken")
    else:
        data["recordingLocation"] = location
        data["recordingAccessToken"] = access_token()
    return notification


def call_state(call_id: str, state: str, change_type: str = "updated") -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": change_type,
        "resourceUrl": f"/communications/calls/{call_id}",
        "resourceData": {"@odata.type": "#microsoft.graph.call", "id": call_id, "state": state},
    }


def prompt_completed(call_id: str, operation_id: str) -> dict[str, Any]:
    return {
        "changeType": "deleted",
        "resourceUrl": f"/communications/calls/{call_id}/operations/{operation_id}",
        "resourceData": {
            "@odata.type": "#microsoft.graph.playPromptOperation",
            "id": operation_id,
            "status": "completed",
        },
    }


def payload(*notifications: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.commsNotifications", "value": list(notifications)}


def source_document_payload() -> tuple[dict[str, Any], str]:
    body = copy.deepcopy(doc.COMPLETION_NOTIFICATION)
    secret = access_token()
    body["value"][0]["resourceData"]["recordingAccessToken"] = secret
    return body, secret


def uid() -> str:
    return secrets.token_hex(16)


def canonical(compact: str) -> str:
    return f"{compact[:8]}-{compact[8:12]}-{compact[12:16]}-{compact[16:20]}-{compact[20:]}"


# --------------------------------------------------------------------------- the happy path


async def test_source_document_completion_queues_one_job(
    webhook: StorageClients, sim: GraphSimulator, app_env: dict[str, str]
) -> None:
    body, secret = source_document_payload()
    before = time.time()
    response = await post(body, token(sim))

    assert response.status_code == 202
    assert response.get_body() == b""
    jobs = await queued_jobs(app_env["AzureWebJobsStorage"])
    assert len(jobs) == 1
    job = jobs[0]
    data = doc.COMPLETION_NOTIFICATION["value"][0]["resourceData"]
    assert job.version == 1
    assert job.call_id == doc.CALL_ID
    assert job.operation_id == doc.OPERATION_ID
    assert job.client_context == data["clientContext"]
    assert job.tenant_id == sim.tenant_id
    assert job.recording_location == data["recordingLocation"]
    assert job.recording_access_token.get_secret_value() == secret
    assert (job.result_code, job.result_subcode) == (200, 8515)
    assert job.result_message == data["resultInfo"]["message"]
    assert job.received_at.timestamp() >= before - 1

    async with QueueClient.from_connection_string(
        app_env["AzureWebJobsStorage"], DOWNLOAD_QUEUE
    ) as raw:
        [message] = await raw.peek_messages()
        # The worker reads with the same client: what it receives must not be double-encoded.
        assert base64.b64decode(message.content).startswith(b"{")
    async for message in webhook.queue.receive_messages():
        assert message.expires_on - message.inserted_on == JOB_TIME_TO_LIVE

    # The job carries the completion; the worker's first ledger write records it. The webhook's
    # hot path makes no ledger round trip for a queued recording.
    assert await OperationLedger(webhook.table).get(doc.CALL_ID, doc.OPERATION_ID) is None


async def test_mixed_payload_queues_one_job_per_completed_recording(
    webhook: StorageClients, sim: GraphSimulator, app_env: dict[str, str]
) -> None:
    first_call, second_call = uid(), uid()
    recorded = [uid(), uid(), uid()]
    failed_op, no_location_op, running_op = uid(), uid(), uid()
    body = payload(
        call_state(first_call, "established"),
        completion(canonical(first_call), canonical(recorded[0])),
        completion(canonical(first_call), canonical(failed_op), status="failed", subcode=8510),
        prompt_completed(first_call, uid()),
        completion(canonical(second_call), canonical(recorded[1])),
        {
            "changeType": "created",
            "resourceUrl": f"/communications/calls/{second_call}/participants/x",
            "resourceData": {"@odata.type": "#microsoft.graph.somethingNew", "id": "x"},
        },
        completion(canonical(second_call), canonical(no_location_op), location=None),
        completion(canonical(second_call), canonical(running_op), status="running"),
        completion(canonical(second_call), canonical(recorded[2])),
        call_state(second_call, "terminated", "deleted"),
    )

    response = await post(body, token(sim))

    assert response.status_code == 202
    jobs = await queued_jobs(app_env["AzureWebJobsStorage"])
    assert sorted(job.operation_id for job in jobs) == sorted(canonical(op) for op in recorded)
    assert {job.call_id for job in jobs} == {canonical(first_call), canonical(second_call)}
    ledger = OperationLedger(webhook.table)
    failed = await ledger.get(first_call, failed_op)
    assert failed is not None
    assert failed.status is OperationStatus.FAILED
    assert failed.get("ResultMeaning") == "8510: initial silence timeout"
    assert failed.get("FailureReason") == "recordOperation failed"
    no_location = await ledger.get(second_call, no_location_op)
    assert no_location is not None
    assert no_location.status is OperationStatus.FAILED
    assert "without recordingLocation" in no_location.get("FailureReason")
    assert await ledger.get(second_call, running_op) is None
    for op in recorded[1:]:
        assert await ledger.get(second_call, op) is None  # queued: the worker writes the row


async def test_missing_queue_is_created_and_the_job_queued(
    webhook: StorageClients, sim: GraphSimulator, app_env: dict[str, str]
) -> None:
    await webhook.queue.delete_queue()
    body, _ = source_document_payload()

    response = await post(body, token(sim))

    assert response.status_code == 202
    assert [job.operation_id for job in await queued_jobs(app_env["AzureWebJobsStorage"])] == [
        doc.OPERATION_ID
    ]


async def _own_storage(sim: GraphSimulator, configure: Callable[..., Services]) -> StorageClients:
    """The app with a ledger table and a recordings container of its own, neither created yet."""
    settings = configure(INBOUND_OPENID_CONFIGURATION_URL=sim.openid_configuration_url).settings
    suffix = uid()[:12]
    own = StorageClients(settings, table_name=f"ops{suffix}", container_name=f"rec-{suffix}")
    use_services(Services(settings, storage=own))
    return own


async def _has_table(storage: StorageClients) -> bool:
    names = [table.name async for table in storage.table_service.list_tables()]
    return storage.table_name in names


async def test_a_completion_leaves_the_table_and_the_container_to_their_users(
    webhook: StorageClients,
    sim: GraphSimulator,
    app_env: dict[str, str],
    configure: Callable[..., Services],
) -> None:
    own = await _own_storage(sim, configure)
    body, _ = source_document_payload()

    assert (await post(body, token(sim))).status_code == 202

    assert len(await queued_jobs(app_env["AzureWebJobsStorage"])) == 1
    # The webhook's first request creates nothing it does not use: the worker's trigger
    # makes sure of the table and the container before it writes to them.
    assert not await own.container.exists()
    assert not await _has_table(own)


async def test_a_failed_recording_creates_the_ledger_table_it_is_written_to(
    webhook: StorageClients, sim: GraphSimulator, configure: Callable[..., Services]
) -> None:
    own = await _own_storage(sim, configure)
    call_id, operation_id = uid(), uid()
    failed = payload(completion(call_id, operation_id, status="failed", location=None))

    assert (await post(failed, token(sim))).status_code == 202

    row = await OperationLedger(own.table).get(canonical(call_id), canonical(operation_id))
    assert row is not None
    assert row.status is OperationStatus.FAILED
    assert not await own.container.exists()


async def test_rotated_signing_key_is_accepted_without_restart(
    webhook: StorageClients, app_env: dict[str, str], configure: Callable[..., Services]
) -> None:
    with GraphSimulator(BOT_APP_ID) as own_sim:
        configure(INBOUND_OPENID_CONFIGURATION_URL=own_sim.openid_configuration_url)
        first, _ = source_document_payload()
        assert (await post(first, token(own_sim))).status_code == 202

        own_sim.rotate_key(keep_old=False)
        second, _ = source_document_payload()
        response = await post(second, token(own_sim))

        assert response.status_code == 202
        assert len(await queued_jobs(app_env["AzureWebJobsStorage"])) == 2


async def test_call_and_prompt_notifications_are_acknowledged(
    webhook: StorageClients,
    sim: GraphSimulator,
    app_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    call_id = uid()
    response = await post(
        payload(call_state(call_id, "established"), prompt_completed(call_id, uid())), token(sim)
    )
    assert response.status_code == 202
    assert await queued_jobs(app_env["AzureWebJobsStorage"]) == []
    handled = [r for r in caplog.records if getattr(r, "outcome", None) == Outcome.HANDLED]
    assert [r.notification_kind for r in handled] == ["call", "playPromptOperation"]  # type: ignore[attr-defined]


async def test_unknown_types_are_logged_at_debug_and_acknowledged(
    webhook: StorageClients, sim: GraphSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    body = payload(
        {
            "changeType": "updated",
            "resourceUrl": "/communications/calls/abc/participants",
            "resourceData": {"@odata.type": "#microsoft.graph.participant", "id": "p"},
        },
        {"changeType": "updated", "resourceUrl": "/somewhere/else", "resourceData": [1, 2]},
    )
    response = await post(body, token(sim))
    assert response.status_code == 202
    ignored = [r for r in caplog.records if getattr(r, "outcome", None) == Outcome.IGNORED]
    assert len(ignored) == 2
    assert {r.levelno for r in ignored} == {logging.DEBUG}


# --------------------------------------------------------------------------- authentication


def _bad_tokens(sim: GraphSimulator) -> dict[str, tuple[str | None, str]]:
    from .test_inbound_auth import hs256_signed_with_public_key

    now = int(time.time())
    forged = hs256_signed_with_public_key(sim)
    ISSUED_SECRETS.add(forged)
    return {
        "none": (None, "TokenMissing"),
        "malformed": ("this-is-not-a-jwt", "TokenMalformed"),
        "wrong signature": (
            token(sim, key=SigningKey.generate(), headers={"kid": sim.current_kid}),
            "BadSignature",
        ),
        "alg none": (token(sim, alg="none"), "DisallowedAlgorithm"),
        "HS256 with public key": (forged, "DisallowedAlgorithm"),
        "expired": (token(sim, {"exp": now - 3600, "nbf": now - 7200}), "TokenExpired"),
        "not yet valid": (token(sim, {"nbf": now + 3600}), "TokenNotYetValid"),
        "issued in the future": (token(sim, {"iat": now + 3600}), "TokenNotYetValid"),
        "wrong audience": (token(sim, {"aud": "another-bot"}), "WrongAudience"),
        "wrong issuer": (token(sim, {"iss": "https://sts.example"}), "WrongIssuer"),
        "no tid": (token(sim, {"tid": None}), "TenantMissing"),
        "tenant not allowed": (token(sim), "TenantNotAllowed"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "none",
        "malformed",
        "wrong signature",
        "alg none",
        "issued in the future",
        "HS256 with public key",
        "expired",
        "not yet valid",
        "wrong audience",
        "wrong issuer",
        "no tid",
        "tenant not allowed",
    ],
)
async def test_bad_token_is_401_and_nothing_is_queued(
    webhook: StorageClients,
    sim: GraphSimulator,
    app_env: dict[str, str],
    configure: Callable[..., Services],
    case: str,
) -> None:
    if case == "tenant not allowed":
        configure(INBOUND_ALLOWED_TENANTS="11111111-2222-3333-4444-555555555555")
    bearer, failure = _bad_tokens(sim)[case]
    body, _ = source_document_payload()

    response = await post(body, bearer)

    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    problem = json_body(response)
    assert problem["failure"] == failure
    assert problem["status"] == 401
    if bearer:
        assert bearer not in response.get_body().decode()
    assert await queued_jobs(app_env["AzureWebJobsStorage"]) == []
    assert await OperationLedger(webhook.table).get(doc.CALL_ID, doc.OPERATION_ID) is None


async def test_authentication_comes_before_the_body(
    webhook: StorageClients, sim: GraphSimulator
) -> None:
    response = await post(b"{not json", None, content_type="text/plain")
    assert response.status_code == 401


async def test_unreachable_openid_endpoint_is_503(
    webhook: StorageClients,
    sim: GraphSimulator,
    app_env: dict[str, str],
    configure: Callable[..., Services],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1/.well-known/OpenIdConfiguration"
    configure(INBOUND_OPENID_CONFIGURATION_URL=dead)
    body, _ = source_document_payload()

    response = await post(body, token(sim))

    assert response.status_code == 503
    assert json_body(response)["failure"] == "SigningKeysUnavailable"
    assert "Retry-After" in response.headers
    assert await queued_jobs(app_env["AzureWebJobsStorage"]) == []


# --------------------------------------------------------------------------- body rules


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "detail"),
    [
        (b'{"value": []}', "text/plain", {}, 415, "Content-Type"),
        (b'{"value": []}', "application/xml", {}, 415, "Content-Type"),
        (
            b'{"padding": "' + b"x" * MAX_BODY_BYTES + b'"}',
            "application/json",
            {},
            413,
            "exceeds",
        ),
        (
            b'{"value": []}',
            "application/json",
            {"Content-Length": str(MAX_BODY_BYTES + 1)},
            413,
            "Content-Length",
        ),
        (b"{not json", "application/json", {}, 400, "not valid JSON"),
        (b"\xff\xfe\x00", "application/json", {}, 400, "UTF-8"),
        (b"", "application/json", {}, 400, "empty"),
        (b"[1, 2]", "application/json", {}, 400, "body"),
        (b'{"value": []}', "application/json", {}, 400, "value"),
        (
            b'{"value": [{"changeType": "deleted"}]}',
            "application/json",
            {},
            400,
            "value.0.resourceUrl",
        ),
        (
            b'{"@odata.type": "#microsoft.graph.somethingElse", "value": [{"changeType": "x", "resourceUrl": "/communications/calls/a"}]}',
            "application/json",
            {},
            400,
            "@odata.type",
        ),
        (
            b'{"value": [{"changeType": "deleted", "resourceUrl": "/nowhere", "resourceData": {"@odata.type": "#microsoft.graph.recordOperation", "id": "op", "status": "completed"}}]}',
            "application/json",
            {},
            400,
            "value.0.resourceUrl",
        ),
        (
            b'{"value": [{"changeType": "deleted", "resourceUrl": "/communications/calls/c/operations/o", "resourceData": {"@odata.type": "#microsoft.graph.recordOperation", "status": "finished"}}]}',
            "application/json",
            {},
            400,
            "value.0.resourceData.status",
        ),
    ],
    ids=[
        "text/plain",
        "xml",
        "oversize body",
        "oversize Content-Length",
        "malformed JSON",
        "not UTF-8",
        "empty",
        "not an object",
        "no notifications",
        "no resourceUrl",
        "not commsNotifications",
        "record operation without call",
        "unknown record status",
    ],
)
async def test_bad_body_is_refused_and_nothing_is_queued(
    webhook: StorageClients,
    sim: GraphSimulator,
    app_env: dict[str, str],
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    response = await post(body, token(sim), content_type=content_type, headers=headers)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert detail in response.get_body().decode()
    assert await queued_jobs(app_env["AzureWebJobsStorage"]) == []


async def test_content_type_with_charset_is_json(
    webhook: StorageClients, sim: GraphSimulator
) -> None:
    body, _ = source_document_payload()
    response = await post(body, token(sim), content_type="Application/JSON; charset=utf-8")
    assert response.status_code == 202


# --------------------------------------------------------------------------- failures


async def test_unreachable_queue_is_503(
    webhook: StorageClients,
    sim: GraphSimulator,
    azurite: Azurite,
    configure: Callable[..., Services],
) -> None:
    dead_queue = re.sub(
        r"QueueEndpoint=[^;]+",
        f"QueueEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1",
        azurite.connection_string,
    )
    configure(AzureWebJobsStorage=dead_queue)
    body, _ = source_document_payload()

    response = await post(body, token(sim))

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "could not be queued" in json_body(response)["detail"]
    # Nothing was acknowledged, so nothing is marked as handed to the worker either.
    assert await OperationLedger(webhook.table).get(doc.CALL_ID, doc.OPERATION_ID) is None
    assert await queued_jobs(azurite.connection_string) == []


class RecordingHandler:
    """A bot flow that writes down what it was given, optionally failing or hanging."""

    def __init__(self, *, fail_on: str | None = None, hang_on: str | None = None) -> None:
        self.seen: list[tuple[str, str | None, str | None]] = []
        self.record_ids: list[str | None] = []
        self.fail_on = fail_on
        self.hang_on = hang_on

    async def _handle(self, kind: str, notification: CommsNotification, tenant: str | None) -> None:
        state = getattr(notification.resource_data, "state", None) or getattr(
            notification.resource_data, "status", None
        )
        if state == self.hang_on:
            await asyncio.Event().wait()
        self.seen.append((kind, state, tenant))
        if state == self.fail_on:
            raise RuntimeError("bot flow broke")

    async def on_call_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        await self._handle("call", notification, tenant_id)

    async def on_prompt_notification(
        self, notification: CommsNotification, *, tenant_id: str | None
    ) -> None:
        await self._handle("prompt", notification, tenant_id)

    async def on_record_completed(self, call_id: str, operation: RecordOperation) -> None:
        self.seen.append(("record", operation.status, call_id))
        self.record_ids.append(operation.id)


def _payload(*notifications: dict[str, Any]) -> CommsNotifications:
    return CommsNotifications.model_validate(payload(*notifications))


def ready(ledger: OperationLedger) -> Callable[[], Awaitable[OperationLedger]]:
    """The ledger as routing asks for it (the table is already there in these tests)."""

    async def ledger_ready() -> OperationLedger:
        return ledger

    return ledger_ready


async def test_bot_flow_gets_its_notifications_in_payload_order(
    storage: StorageClients,
) -> None:
    call_id, recorded, failed, running = uid(), uid(), uid(), uid()
    handler = RecordingHandler()
    report = await route_notifications(
        _payload(
            call_state(call_id, "establishing"),
            call_state(call_id, "established"),
            completion(canonical(call_id), canonical(running), status="running"),
            completion(canonical(call_id), canonical(recorded)),
            completion(canonical(call_id), canonical(recorded)),  # Graph sends duplicates
            completion(canonical(call_id), canonical(failed), status="failed"),
            prompt_completed(call_id, uid()),
            call_state(call_id, "terminated", "deleted"),
        ),
        tenant_id="t-1",
        queue=storage.queue,
        ledger=ready(OperationLedger(storage.table)),
        handler=handler,
    )
    assert handler.seen == [
        ("call", "establishing", "t-1"),
        ("call", "established", "t-1"),
        ("record", "completed", canonical(call_id)),
        ("record", "failed", canonical(call_id)),
        ("prompt", "completed", "t-1"),
        ("call", "terminated", "t-1"),
    ]
    assert handler.record_ids == [canonical(recorded), canonical(failed)]
    assert report.outcomes == {
        "handled": 6,
        "queued": 1,
        "failed": 1,
        "duplicate": 1,
        "ignored": 1,
    }


async def test_failing_bot_flow_never_fails_the_payload(
    storage: StorageClients, caplog: pytest.LogCaptureFixture
) -> None:
    call_id = uid()
    handler = RecordingHandler(fail_on="establishing")
    report = await route_notifications(
        _payload(
            call_state(call_id, "establishing"),
            completion(canonical(uid()), canonical(uid())),
            call_state(call_id, "established"),
        ),
        tenant_id=None,
        queue=storage.queue,
        ledger=ready(OperationLedger(storage.table)),
        handler=handler,
    )
    assert [state for _, state, _ in handler.seen] == ["establishing", "completed", "established"]
    assert report.outcomes == {"handler_failed": 1, "handled": 2, "queued": 1}
    [failure] = [r for r in caplog.records if getattr(r, "outcome", None) == "handler_failed"]
    assert failure.call_id == canonical(call_id)  # type: ignore[attr-defined]


async def test_slow_bot_flow_is_cut_off(storage: StorageClients) -> None:
    call_id = uid()
    handler = RecordingHandler(hang_on="established")
    report = await route_notifications(
        _payload(
            call_state(call_id, "establishing"),
            call_state(call_id, "established"),
            call_state(call_id, "terminated"),
        ),
        tenant_id=None,
        queue=storage.queue,
        ledger=ready(OperationLedger(storage.table)),
        handler=handler,
        handler_timeout=0.2,
    )
    assert [state for _, state, _ in handler.seen] == ["establishing"]
    assert report.outcomes == {"handled": 1, "handler_timeout": 2}


async def test_a_failure_the_ledger_cannot_record_is_not_acknowledged(
    storage: StorageClients, caplog: pytest.LogCaptureFixture
) -> None:
    missing_table = storage.table_service.get_table_client("nosuchtable")
    with pytest.raises(NotStored):
        await route_notifications(
            _payload(
                completion(canonical(uid()), canonical(uid())),
                completion(canonical(uid()), canonical(uid()), status="failed", subcode=8528),
            ),
            tenant_id="t",
            queue=storage.queue,
            ledger=ready(OperationLedger(missing_table)),
            handler=LoggingCallEventHandler(),
        )
    # The recording's job is on the queue, and the failure's only carrier is in the log.
    assert (await storage.queue.get_queue_properties()).approximate_message_count == 1
    assert any("ledger=write_failed" in r.getMessage() for r in caplog.records)


async def test_queue_failure_is_raised_for_the_503(
    storage: StorageClients, azurite: Azurite
) -> None:
    dead = re.sub(
        r"QueueEndpoint=[^;]+",
        f"QueueEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1",
        azurite.connection_string,
    )
    async with QueueClient.from_connection_string(
        dead, DOWNLOAD_QUEUE, retry_total=0, connection_timeout=2
    ) as queue:
        with pytest.raises(QueueUnavailable):
            await route_notifications(
                _payload(completion(canonical(uid()), canonical(uid()))),
                tenant_id=None,
                queue=queue,
                ledger=ready(OperationLedger(storage.table)),
                handler=LoggingCallEventHandler(),
            )


async def test_queue_that_never_answers_is_refused_at_the_deadline(
    storage: StorageClients, azurite: Azurite
) -> None:
    # A listening socket nobody accepts from: connections open, requests get no answer.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        port = black_hole.getsockname()[1]
        silent = re.sub(
            r"QueueEndpoint=[^;]+",
            f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1",
            azurite.connection_string,
        )
        async with QueueClient.from_connection_string(silent, DOWNLOAD_QUEUE) as queue:
            with pytest.raises(QueueUnavailable):
                await route_notifications(
                    _payload(completion(canonical(uid()), canonical(uid()))),
                    tenant_id=None,
                    queue=queue,
                    ledger=ready(OperationLedger(storage.table)),
                    handler=LoggingCallEventHandler(),
                    enqueue_deadline=0.3,
                )


async def test_without_a_callback_url_call_events_are_only_logged(
    services: Services, configure: Callable[..., Services]
) -> None:
    from shared.bot.flow import BotFlow
    from shared.services import app_services

    assert isinstance(services.call_events(), LoggingCallEventHandler)
    configure(BOT_AUTO_ANSWER="true", CALLBACK_BASE_URL="https://bot.example")
    assert isinstance(app_services().call_events(), BotFlow)
    configure(CALLBACK_BASE_URL="")
    assert isinstance(app_services().call_events(), LoggingCallEventHandler)


async def test_the_bot_flow_gets_its_ledger_table_and_the_logging_handler_none(
    sim: GraphSimulator, configure: Callable[..., Services]
) -> None:
    own = await _own_storage(sim, configure)
    services = Services(own.settings, storage=own)

    assert isinstance(await services.ready_call_events(), LoggingCallEventHandler)
    assert not await _has_table(own)

    with_bot = configure(BOT_AUTO_ANSWER="true", CALLBACK_BASE_URL="https://bot.example")
    services = Services(with_bot.settings, storage=own)
    await services.ready_call_events()
    assert await _has_table(own)  # the flow's claims and rows go there from its first call
    await services.aclose()


# --------------------------------------------------------------------------- secrets


async def test_no_token_or_jwt_in_any_log_line(
    webhook: StorageClients,
    sim: GraphSimulator,
    caplog: pytest.LogCaptureFixture,
    configure: Callable[..., Services],
    azurite: Azurite,
) -> None:
    caplog.set_level(logging.DEBUG)
    body, secret = source_document_payload()
    assert (await post(body, token(sim))).status_code == 202
    assert (await post(body, token(sim, {"aud": "x"}))).status_code == 401
    configure(
        AzureWebJobsStorage=re.sub(
            r"QueueEndpoint=[^;]+",
            f"QueueEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1",
            azurite.connection_string,
        ),
    )
    assert (await post(body, token(sim))).status_code == 503

    here = caplog.text + "".join(
        logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info
    )
    assert "POST /api/calls status=202" in here
    assert "POST /api/calls status=401" in here
    assert "outcome=queued" in here
    assert secret not in here
    assert not JWT_PATTERN.search(here)
    # The module-wide check (every test's logs) runs when the module ends, in any order.


async def test_invalid_settings_give_503_not_a_crash(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:

    monkeypatch.setenv("RECORDING_RETENTION_MINUTES", "soon")  # the environment is what is read
    get_settings.cache_clear()
    response = await invoke(
        "notifications",
        http_request("POST", "/api/calls", body=doc.COMPLETION_NOTIFICATION),
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert "RECORDING_RETENTION_MINUTES" not in response.get_body().decode()
    assert any("RECORDING_RETENTION_MINUTES" in r.getMessage() for r in caplog.records)


def test_the_app_quiets_the_libraries_that_log_every_request() -> None:
    # The Functions worker forwards every INFO record: one per storage request header set (Azure
    # SDK) and one per URL, SAS query included (httpx), unless the app raises their level.
    import function_app  # noqa: F401 - importing the app is what configures the loggers

    for name in ("azure", "azure.core.pipeline.policies.http_logging_policy", "httpx"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
