"""Graph wire models against the source document's own examples."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from shared.graph.ids import normalize_id, parse_resource_url
from shared.graph.models import (
    Call,
    CommsNotification,
    CommsNotifications,
    RecordOperation,
    RecordResponseRequest,
    odata_type_is,
)
from shared.graph.subcodes import RECORD_SUBCODES, describe_subcode
from tests.data import source_document as doc


def _field_of(error: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in error.errors()}


def test_source_request_example_validates_and_round_trips() -> None:
    request = RecordResponseRequest.model_validate(doc.REQUEST)
    assert request.max_record_duration_in_seconds == 10
    assert request.prompts[0].media_info.uri == "https://cdn.contoso.com/beep.wav"
    assert request.to_wire() == doc.REQUEST


def test_defaults_are_the_documented_ones() -> None:
    request = RecordResponseRequest()
    assert request.initial_silence_timeout_in_seconds == 5
    assert request.max_silence_timeout_in_seconds == 5
    assert request.max_record_duration_in_seconds == 5
    assert request.play_beep is True
    assert request.barge_in_allowed is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initialSilenceTimeoutInSeconds", 0),
        ("initialSilenceTimeoutInSeconds", 121),
        ("maxSilenceTimeoutInSeconds", 0),
        ("maxSilenceTimeoutInSeconds", 121),
        ("maxRecordDurationInSeconds", 0),
        ("maxRecordDurationInSeconds", 121),
        ("clientContext", "x" * 257),
        ("stopTones", ["#", "E"]),
        ("stopTones", ["12"]),
        ("prompts", [doc.REQUEST["prompts"][0], doc.REQUEST["prompts"][0]]),
        ("unknownParameter", True),
    ],
)
def test_each_limit_broken_alone_names_its_field(field: str, value: Any) -> None:
    body = copy.deepcopy(doc.REQUEST)
    body[field] = value
    with pytest.raises(ValidationError) as caught:
        RecordResponseRequest.model_validate(body)
    assert {name.split(".")[0] for name in _field_of(caught.value)} == {field}


def test_limits_at_their_bounds_are_accepted() -> None:
    body = copy.deepcopy(doc.REQUEST)
    body.update(
        initialSilenceTimeoutInSeconds=1,
        maxSilenceTimeoutInSeconds=120,
        maxRecordDurationInSeconds=120,
        clientContext="x" * 256,
        stopTones=list("0123456789*#ABCD"),
    )
    assert RecordResponseRequest.model_validate(body).max_record_duration_in_seconds == 120


def test_source_response_parses() -> None:
    operation = RecordOperation.model_validate(doc.RESPONSE)
    assert operation.status == "running"
    assert operation.id == doc.OPERATION_ID
    assert parse_resource_url(doc.RESPONSE_LOCATION) is not None
    ids = parse_resource_url(doc.RESPONSE_LOCATION)
    assert ids is not None
    assert (ids.call_id, ids.operation_id) == (doc.CALL_ID, doc.OPERATION_ID)


def test_completion_notification_parses_and_serialises_back() -> None:
    payload = CommsNotifications.model_validate(doc.COMPLETION_NOTIFICATION)
    notification = payload.value[0]
    assert notification.resource_kind == "recordOperation"
    operation = notification.resource_data
    assert isinstance(operation, RecordOperation)
    assert operation.result_info is not None
    assert operation.result_info.subcode == 8515
    assert (
        operation.recording_location == "https://file.location/17e3b46c-f61d-4f4d-9635-c626ef18e6ad"
    )

    ids = parse_resource_url(notification.resource_url)
    assert ids is not None
    assert normalize_id(ids.call_id) == doc.CALL_ID
    assert normalize_id(ids.operation_id or "") == doc.OPERATION_ID

    # Same keys and values back, @odata.* kept, when secrets are revealed for the wire.
    assert payload.to_wire(reveal_secrets=True) == doc.COMPLETION_NOTIFICATION


def test_access_token_never_shows_in_repr_or_default_dump() -> None:
    payload = CommsNotifications.model_validate(doc.COMPLETION_NOTIFICATION)
    assert "<access-token>" not in repr(payload)
    assert "<access-token>" not in str(payload.to_wire())
    assert "<access-token>" not in payload.model_dump_json()


@pytest.mark.parametrize(
    "odata_type",
    [
        "#microsoft.graph.call",
        "#Microsoft.Graph.Call",
        "#MICROSOFT.GRAPH.CALL",
        "microsoft.graph.call",
    ],
)
def test_dispatch_is_case_insensitive(odata_type: str) -> None:
    notification = CommsNotification.model_validate(
        {
            "changeType": "updated",
            "resourceUrl": "/communications/calls/abc",
            "resourceData": {"@odata.type": odata_type, "state": "established"},
        }
    )
    assert isinstance(notification.resource_data, Call)
    assert notification.resource_data.state == "established"


def test_unknown_resource_type_is_kept_not_raised() -> None:
    raw = {"@odata.type": "#microsoft.graph.participant", "id": "p1", "info": {"x": 1}}
    notification = CommsNotification.model_validate(
        {"changeType": "updated", "resourceUrl": "/communications/calls/abc", "resourceData": raw}
    )
    assert notification.resource_kind == "unknown"
    assert notification.resource_data == raw


def test_not_comms_notifications_is_rejected() -> None:
    with pytest.raises(ValidationError):
        CommsNotifications.model_validate({"@odata.type": "#microsoft.graph.user", "value": []})
    with pytest.raises(ValidationError):
        CommsNotifications.model_validate({"value": "nope"})


@pytest.mark.parametrize(
    ("url", "call_id", "operation_id"),
    [
        ("/communications/calls/c1/operations/o1", "c1", "o1"),
        ("communications/calls/c1", "c1", None),
        ("/app/calls/c2", "c2", None),
        ("/app/calls/c2/operations/o2", "c2", "o2"),
        ("https://graph.microsoft.com/v1.0/communications/calls/c3/operations/o3", "c3", "o3"),
    ],
)
def test_resource_url_ids(url: str, call_id: str, operation_id: str | None) -> None:
    ids = parse_resource_url(url)
    assert ids is not None
    assert (ids.call_id, ids.operation_id) == (call_id, operation_id)


@pytest.mark.parametrize(
    "url", ["/users/u1", "/communications/calls/", "/communications/calls/a/b"]
)
def test_resource_url_rejects_other_resources(url: str) -> None:
    assert parse_resource_url(url) is None


def test_ids_normalise_across_graph_spellings() -> None:
    assert normalize_id("57DAB8B1894C409AB240BD8BEAE78896") == normalize_id(
        "57dab8b1-894c-409a-b240-bd8beae78896"
    )


def test_odata_type_matching() -> None:
    assert odata_type_is("#microsoft.graph.recordOperation", "recordoperation")
    assert not odata_type_is("#microsoft.graph.recordOperationX", "recordOperation")
    assert not odata_type_is(None, "call")


def test_subcode_table_covers_the_documented_codes() -> None:
    assert describe_subcode(8515) == "8515: max record duration reached"
    assert describe_subcode(8510) == "8510: initial silence timeout"
    assert describe_subcode(9999) == "9999: unknown subcode"
    # The record subcodes Microsoft's Graph docs list for recordResponse's resultInfo.
    documented = {8500, 8501, 8503, 8508, 8509, 8510, 8511, 8512, 8513, 8514, 8515, 8528}
    documented |= {8535, 8536, 8588, 8589}
    unexplained = [code for code in documented if "unknown" in describe_subcode(code)]
    assert unexplained == []
    assert set(RECORD_SUBCODES) >= documented
