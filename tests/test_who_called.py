"""Who called (issue 27), in process: call metadata under each privacy setting, WAV facts, the
list across calls, and who called following the recordings' retention to the minute.

Real Azurite and the registered functions; the identity shapes are the ones Graph documents.
Through the real webhook, worker and host: tests/e2e/test_who_called*.py.
"""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.blob_layout import wav_facts
from shared.graph.ids import normalize_id
from shared.ledger import OperationLedger, OperationStatus
from shared.ledger.identity import IDENTITY_COLUMNS, call_metadata_columns, call_view
from shared.ledger.index import encode_token, time_partition
from shared.retention import run_cleanup, sweep_recordings_index
from shared.settings import get_settings
from tests.support.clock import Clock
from tests.support.functions import http_request, invoke, json_body
from tests.support.recordings import put_recording, recording_status

S = OperationStatus
USER = {
    "user": {"id": "8a0b1c2d-0000-4000-8000-00000000aaaa", "displayName": "Ada", "tenantId": "t1"}
}
PSTN = {"phone": {"id": "+33612345678"}}
ANONYMOUS: dict[str, Any] = {"phone": {}}
GUEST = {"guest": {"id": "guest-1", "displayName": "Visitor"}}
RESOURCE_ACCOUNT = {"applicationInstance": {"id": "ra-1"}, "phone": {"id": "+14255550100"}}
# A call that came through a call queue (incomingContext resource type): for its resource account,
# transferred by the agent who took it first.
QUEUE = {"applicationInstance": {"id": "queue-1", "displayName": "Support"}}
AGENT = {"user": {"id": "agent-1", "displayName": "Grace", "tenantId": "t1"}}
TRANSFERRED = {
    "@odata.type": "#microsoft.graph.incomingContext",
    "sourceParticipantId": "p-1",
    "onBehalfOf": {"@odata.type": "#microsoft.graph.communicationsIdentitySet", **QUEUE},
    "transferor": {"@odata.type": "#microsoft.graph.identitySet", **AGENT},
}


def call(source: dict[str, Any], context: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {
        "source": {"identity": source},
        "targets": [{"identity": RESOURCE_ACCOUNT}],
        "direction": "incoming",
        "callChainId": "chain-1",
        "tenantId": "tenant-1",
    }
    if context is not None:
        body["incomingContext"] = context
    return body


def wav(seconds: float, *, rate: int = 16000, extra_chunk: bool = True) -> bytes:
    data = b"\0\0" * int(rate * seconds)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    chunks = b"fmt " + struct.pack("<I", 16) + fmt
    if extra_chunk:
        chunks += b"LIST" + struct.pack("<I", 5) + b"INFOx\0"  # odd size: padded
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


# -- plain Python -------------------------------------------------------------------------


def test_wav_facts_come_from_the_chunks() -> None:
    body = wav(1.5)
    facts = wav_facts(body[:4096], len(body))
    assert facts is not None
    assert (facts.sample_rate, facts.channels, facts.bits_per_sample) == (16000, 1, 16)
    assert facts.duration_seconds == 1.5
    assert wav_facts(b"ID3not a wav" * 10, 120) is None
    # A streamed header (unknown data length) is bounded by the bytes stored.
    streamed = bytearray(body)
    at = streamed.index(b"data") + 4
    streamed[at : at + 4] = b"\xff\xff\xff\xff"
    again = wav_facts(bytes(streamed[:4096]), len(streamed))
    assert again is not None
    assert again.duration_seconds == 1.5


def test_identity_shapes_and_privacy() -> None:
    user = call_metadata_columns(call(USER), privacy="full", source="notification")
    assert user["CallerKind"] == "user"
    assert user["CallerDisplayName"] == "Ada"
    assert user["CalledPhone"] == "+14255550100"
    assert user["CallChainId"] == "chain-1"
    pstn = call_metadata_columns(call(PSTN), privacy="full", source="notification")
    assert pstn["CallerKind"] == "phone"
    assert pstn["CallerPhone"] == "+33612345678"
    anonymous = call_metadata_columns(call(ANONYMOUS), privacy="full", source="notification")
    assert anonymous["CallerKind"] == "anonymous"
    assert "CallerKey" not in anonymous
    guest = call_metadata_columns(call(GUEST), privacy="full", source="notification")
    assert guest["CallerKind"] == "guest"
    assert guest["CallerId"] == "guest-1"

    masked = call_metadata_columns(call(PSTN), privacy="masked", source="notification")
    assert masked["CallerPhone"] == "+*******5678"
    assert "CallerId" not in masked
    masked_user = call_metadata_columns(call(USER), privacy="masked", source="notification")
    assert "CallerDisplayName" not in masked_user
    assert masked_user["CallerId"]
    none = call_metadata_columns(call(PSTN), privacy="none", source="notification")
    assert not [name for name in none if name.startswith("Caller") and name != "CallerPrivacy"]


def test_whom_the_call_was_for_and_who_transferred_it_follow_the_privacy_setting() -> None:
    full = call_metadata_columns(call(PSTN, TRANSFERRED), privacy="full", source="notification")
    assert {k: v for k, v in full.items() if k.startswith(("OnBehalfOf", "Transferor"))} == {
        "OnBehalfOfKind": "applicationInstance",
        "OnBehalfOfId": "queue-1",
        "OnBehalfOfDisplayName": "Support",
        "TransferorKind": "user",
        "TransferorId": "agent-1",
        "TransferorDisplayName": "Grace",
    }
    assert call_view(full)["call"]["onBehalfOf"] == {
        "kind": "applicationInstance",
        "id": "queue-1",
        "displayName": "Support",
    }
    assert call_view(full)["call"]["transferor"] == {
        "kind": "user",
        "id": "agent-1",
        "displayName": "Grace",
    }

    # masked: no display names; a number transferred from keeps its last digits only.
    by_phone = {**TRANSFERRED, "transferor": {"phone": {"id": "+33612345678"}}}
    masked = call_metadata_columns(call(USER, by_phone), privacy="masked", source="notification")
    assert call_view(masked)["call"]["onBehalfOf"] == {
        "kind": "applicationInstance",
        "id": "queue-1",
    }
    assert call_view(masked)["call"]["transferor"] == {"kind": "phone", "id": "+*******5678"}

    # none: nobody, not even whom the call was for (a delegate's call is for a person).
    none = call_metadata_columns(call(PSTN, TRANSFERRED), privacy="none", source="notification")
    assert not set(none) & set(IDENTITY_COLUMNS)
    assert "onBehalfOf" not in call_view(none)["call"]

    # No incomingContext (a call dialled directly), or one without parties: no columns, no keys.
    for context in (None, {"sourceParticipantId": "p-1"}):
        direct = call_metadata_columns(call(PSTN, context), privacy="full", source="notification")
        assert not [k for k in direct if k.startswith(("OnBehalfOf", "Transferor"))]
        assert set(call_view(direct)["call"]) & {"onBehalfOf", "transferor"} == set()
    # A resource account alone (Graph's answer example targets one) is named, not "anonymous".
    only = call_metadata_columns(
        {"targets": [{"identity": QUEUE}]}, privacy="full", source="notification"
    )
    assert (only["CalledKind"], only["CalledId"]) == ("applicationInstance", "queue-1")


# -- the ledger and the routes, on Azurite -------------------------------------------------


def holds_identity(fields: Any) -> list[str]:
    """The identity columns (the caller's, and whom the call was for or who transferred it) that
    ``fields`` holds a value in."""
    return [name for name in IDENTITY_COLUMNS if fields.get(name) not in (None, "")]


async def stored_with_identity(
    storage: Any,
    call_id: str,
    operation_id: str,
    at: datetime,
    source: dict[str, Any],
    *,
    expires_at: datetime | None = None,
    context: dict[str, Any] | None = None,
) -> None:
    ledger = OperationLedger(storage.table)
    await ledger.mark_call_metadata(
        call_id, call_metadata_columns(call(source, context), privacy="full", source="notification")
    )
    key = await ledger.index_recording(call_id, operation_id, at)
    fields = await ledger.call_fields(call_id)
    expires_at = expires_at or at + timedelta(hours=1)
    name = await put_recording(storage, call_id, operation_id, expires_at, wav(0.1))
    await ledger.advance(call_id, operation_id, S.DOWNLOADING, IndexKey=key, **fields)
    await ledger.advance(call_id, operation_id, S.STORED, BlobName=name, ExpiresAt=expires_at)


async def test_erasing_a_withheld_numbers_call_forgets_who_transferred_it(storage: Any) -> None:
    # No caller to erase by (no key, no caller index row), yet the call's row names a person.
    ledger = OperationLedger(storage.table)
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    await stored_with_identity(
        storage, call_id, operation_id, datetime.now(UTC), ANONYMOUS, context=TRANSFERRED
    )
    assert "TransferorId" in holds_identity(await ledger.call_fields(call_id))
    response = await invoke(
        "erase_call_recordings",
        http_request("DELETE", "http://localhost/api/recordings", params={"callId": call_id}),
    )
    assert response.status_code == 204
    assert not holds_identity(await ledger.call_fields(call_id))
    record = await ledger.get(call_id, operation_id)
    assert record is not None
    assert record.status is S.ERASED
    assert not holds_identity(record.fields)


async def list_page(**params: str) -> Any:
    return await invoke(
        "list_recordings", http_request("GET", "http://localhost/api/recordings", params=params)
    )


async def test_the_list_pages_newest_first_filters_and_skips_orphans(storage: Any) -> None:
    ledger = OperationLedger(storage.table)
    base = datetime.now(UTC) - timedelta(minutes=30)
    marker = str(uuid.uuid4())
    made = []
    for n in range(7):
        call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
        source = {"user": {"id": marker, "displayName": "Same"}} if n % 2 else GUEST
        await stored_with_identity(
            storage, call_id, operation_id, base + timedelta(seconds=n), source
        )
        made.append(operation_id)
    # An index row that points to nothing (a crash between two writes).
    orphan = await ledger.index_recording(
        str(uuid.uuid4()), str(uuid.uuid4()), base + timedelta(seconds=3)
    )

    frm = (base - timedelta(seconds=1)).isoformat()
    to = (base + timedelta(seconds=10)).isoformat()
    seen: list[str] = []
    token: str | None = None
    while True:
        params = {"from": frm, "to": to, "top": "3"}
        if token:
            params["continuationToken"] = token
        response = await list_page(**params)
        assert response.status_code == 200
        body = json_body(response)
        seen += [item["operationId"] for item in body["recordings"]]
        token = body.get("continuationToken")
        if not token:
            break
    assert seen == list(reversed(made))

    by_caller = json_body(await list_page(caller=marker, top="50"))
    assert [i["operationId"] for i in by_caller["recordings"]] == [made[5], made[3], made[1]]
    assert (
        json_body(await list_page(status="expired", **{"from": frm, "to": to}))["recordings"] == []
    )

    assert (await list_page(continuationToken="not-ours")).status_code == 400
    assert (await list_page(continuationToken=encode_token("x/y"))).status_code == 400
    assert (await list_page(caller="not a caller\x01")).status_code == 400

    # The hourly sweep, as run once this hour has closed (tests/test_index_sweep.py has more).
    assert await sweep_recordings_index(ledger, now=datetime.now(UTC) + timedelta(hours=2)) >= 1
    bucket, row = orphan.split("/", 1)
    assert not [
        e
        async for e in storage.table.query_entities(
            "PartitionKey eq @pk and RowKey eq @rk",
            parameters={"pk": time_partition(bucket), "rk": row},
        )
    ]
    whole = json_body(await list_page(**{"from": frm, "to": to, "top": "50"}))
    assert [item["operationId"] for item in whole["recordings"]] == list(reversed(made))


# -- who called follows the recordings' retention ----------------------------------------


async def caller_index_rows(storage: Any) -> list[dict[str, Any]]:
    return [
        entity
        async for entity in storage.table.query_entities(
            "Kind eq @kind", parameters={"kind": "callerIndex"}
        )
    ]


async def cleanup_at(storage: Any, moment: datetime) -> Any:
    clock = Clock(moment)
    return await run_cleanup(
        container=storage.container,
        ledger=OperationLedger(storage.table, clock=clock),
        poison_queue=storage.poison_queue,
        settings=get_settings(),
        clock=clock,
    )


async def erase_by_caller(number: str) -> dict[str, Any]:
    response = await invoke(
        "erase_call_recordings",
        http_request("DELETE", "http://localhost/api/recordings", params={"caller": number}),
    )
    assert response.status_code == 200
    body: dict[str, Any] = json_body(response)
    return body


async def test_the_last_recording_expiring_forgets_who_called(storage: Any) -> None:
    ledger = OperationLedger(storage.table)
    number = f"+3361{uuid.uuid4().int % 10**7:07d}"
    call_id, first, second = (str(uuid.uuid4()) for _ in range(3))
    now = datetime.now(UTC)
    for operation_id, minutes in ((first, 5), (second, 20)):
        await stored_with_identity(
            storage,
            call_id,
            operation_id,
            now,
            {"phone": {"id": number}},
            expires_at=now + timedelta(minutes=minutes),
            context=TRANSFERRED,
        )

    # One recording left alive: the call still names its caller, and its caller can be found.
    summary = await cleanup_at(storage, now + timedelta(minutes=10))
    assert summary.rows_marked_expired == 1
    assert summary.caller_identities_forgotten == 0
    assert holds_identity(await ledger.call_fields(call_id))
    assert len(await caller_index_rows(storage)) == 1

    summary = await cleanup_at(storage, now + timedelta(minutes=30))
    assert summary.rows_marked_expired == 1
    assert summary.caller_identities_forgotten == 1
    assert not holds_identity(await ledger.call_fields(call_id))
    assert await caller_index_rows(storage) == []
    for operation_id in (first, second):
        record = await ledger.get(call_id, operation_id)
        assert record is not None
        assert record.status is S.EXPIRED
        assert not holds_identity(record.fields)
    # Nothing of that caller is left to erase, and the answer says so.
    assert await erase_by_caller(number) == {
        "erasedRecordings": 0,
        "erasedCalls": 0,
        "complete": True,
    }


async def test_a_call_without_a_recording_forgets_who_called_after_the_retention(
    storage: Any,
) -> None:
    ledger = OperationLedger(storage.table)
    number = f"+3361{uuid.uuid4().int % 10**7:07d}"
    silent, recorded, operation_id = (str(uuid.uuid4()) for _ in range(3))
    now = datetime.now(UTC)
    await ledger.mark_call_metadata(
        silent,
        call_metadata_columns(
            call({"phone": {"id": number}}, TRANSFERRED), privacy="full", source="notification"
        ),
    )
    # A call whose recording is still stored keeps its caller, whatever its row's age.
    await stored_with_identity(
        storage, recorded, operation_id, now, USER, expires_at=now + timedelta(hours=5)
    )
    retention = timedelta(minutes=get_settings().recording_retention_minutes)

    summary = await cleanup_at(storage, now + retention - timedelta(minutes=1))
    assert summary.caller_identities_forgotten == 0
    assert holds_identity(await ledger.call_fields(silent))

    summary = await cleanup_at(storage, now + retention + timedelta(minutes=1))
    assert summary.caller_identities_forgotten == 1
    assert not holds_identity(await ledger.call_fields(silent))
    assert holds_identity(await ledger.call_fields(recorded))
    assert [row["CallId"] for row in await caller_index_rows(storage)] == [recorded]
    assert await erase_by_caller(number) == {
        "erasedRecordings": 0,
        "erasedCalls": 0,
        "complete": True,
    }
    # A second run finds nothing more to forget.
    again = await cleanup_at(storage, now + retention + timedelta(minutes=2))
    assert again.caller_identities_forgotten == 0


async def test_a_failed_recording_forgets_who_called_with_its_call(storage: Any) -> None:
    """A recording that failed after its first write holds the copy of who called that write
    made; when its call forgets the caller, so does it (in the same transaction)."""
    ledger = OperationLedger(storage.table)
    number = f"+3361{uuid.uuid4().int % 10**7:07d}"
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    await ledger.mark_call_metadata(
        call_id,
        call_metadata_columns(
            call({"phone": {"id": number}}, TRANSFERRED), privacy="full", source="notification"
        ),
    )
    fields = await ledger.call_fields(call_id)
    await ledger.advance(call_id, operation_id, S.DOWNLOADING, **fields)
    await ledger.advance(call_id, operation_id, S.FAILED)
    failed = await ledger.get(call_id, operation_id)
    assert failed is not None
    assert holds_identity(failed.fields)

    retention = timedelta(minutes=get_settings().recording_retention_minutes)
    summary = await cleanup_at(storage, now + retention + timedelta(minutes=1))

    assert summary.caller_identities_forgotten >= 1
    assert not holds_identity(await ledger.call_fields(call_id))
    failed = await ledger.get(call_id, operation_id)
    assert failed is not None
    assert failed.status is S.FAILED
    assert not holds_identity(failed.fields)
    assert "caller" not in json_body(await recording_status(call_id, operation_id))


async def test_capturing_a_new_calls_metadata_costs_two_writes(storage: Any) -> None:
    """The caller index row, then the call's row created blind: no read for a call just arrived.
    A call erased already (its guard row exists) costs the create's 409, a read and the index
    row's delete, and keeps the erasure."""
    from azure.data.tables.aio import TableClient

    from tests.support.counting import CountingTransport

    columns = call_metadata_columns(call(PSTN), privacy="full", source="notification")
    fresh, erased = str(uuid.uuid4()), str(uuid.uuid4())
    await OperationLedger(storage.table).mark_call_erased(erased, identity=False)
    sent = []
    for call_id in (fresh, erased):
        transport = CountingTransport()
        table = TableClient.from_connection_string(
            storage.settings.storage_connection_string, storage.table_name, transport=transport
        )
        async with table:
            await OperationLedger(table).mark_call_metadata(call_id, columns)
        sent.append([method for method, _, _ in transport.sent])

    assert sent[0] == ["PATCH", "POST"]  # upsert of the caller index row, create of the call's
    # The create finds the guard: read it, keep the erasure, take the index row back.
    assert sent[1] == ["PATCH", "POST", "GET", "DELETE"]
    ledger = OperationLedger(storage.table)
    assert (await ledger.call_fields(fresh))["CallerPhone"] == "+33612345678"
    assert "CallerPhone" not in await ledger.call_fields(erased)
    # The erased call is not left in its caller's index (the index row written first goes).
    indexed = [row["CallId"] for row in await caller_index_rows(storage)]
    assert normalize_id(fresh) in indexed
    assert normalize_id(erased) not in indexed


def test_an_azure_communication_services_caller_is_named_by_its_v1_member() -> None:
    """Graph v1.0 names an ACS user ``azureCommunicationServicesUser`` (``acsUser`` in beta);
    ``assertedIdentity`` is whom the caller presents as, not who called."""
    acs_id = "8:acs:1b5cc06b-f352-4571-b1e6-d9b259b7c776_00000007-0464-274b-b274-5a3a0d00010f"
    v1 = {
        "azureCommunicationServicesUser": {"id": acs_id, "displayName": "Web caller"},
        "assertedIdentity": {
            "@odata.type": "#microsoft.graph.communicationsPhoneIdentity",
            "id": "+14255550111",
        },
    }
    columns = call_metadata_columns(call(v1), privacy="full", source="notification")
    assert (columns["CallerKind"], columns["CallerId"]) == (
        "azureCommunicationServicesUser",
        acs_id,
    )
    assert "CallerPhone" not in columns
    beta = call_metadata_columns(
        call({"acsUser": {"id": acs_id}}), privacy="full", source="notification"
    )
    assert (beta["CallerKind"], beta["CallerId"]) == ("acsUser", acs_id)


async def test_a_call_and_a_caller_together_are_refused_not_half_done(storage: Any) -> None:
    """``callId`` and ``caller`` in one request: a 400 naming ``caller``, and nothing erased."""
    call_id, operation_id = str(uuid.uuid4()), str(uuid.uuid4())
    await stored_with_identity(storage, call_id, operation_id, datetime.now(UTC), PSTN)
    both = {"callId": call_id, "caller": "+33612345678"}
    for method, function in (("DELETE", "erase_call_recordings"), ("GET", "list_recordings")):
        response = await invoke(
            function, http_request(method, "http://localhost/api/recordings", params=both)
        )
        assert response.status_code == 400
        assert "caller" in json_body(response)["detail"]
    record = await OperationLedger(storage.table).get(call_id, operation_id)
    assert record is not None
    assert record.status is S.STORED


def test_a_number_graph_sends_outside_e164_is_kept_as_sent_and_masked() -> None:
    """Not the E.164 form Graph documents (a national number): still a phone caller, never
    taken for a withheld number, and masked like any number."""
    national = call({"phone": {"id": "0612345678"}})
    full = call_metadata_columns(national, privacy="full", source="notification")
    assert (full["CallerKind"], full["CallerPhone"]) == ("phone", "0612345678")
    masked = call_metadata_columns(national, privacy="masked", source="notification")
    assert masked["CallerPhone"] == "******5678"
    assert "CallerId" not in masked
    withheld = call_metadata_columns(
        call({"phone": {"id": "Anonymous"}}), privacy="full", source="notification"
    )
    assert withheld["CallerKind"] == "anonymous"
    assert "CallerKey" not in withheld
