"""Contract: every payload the simulator produces parses with Microsoft's own Graph models.

msgraph-sdk (a dev dependency only) is generated from Graph v1.0's metadata. Each resource the
simulator sends or returns is read with kiota's JsonParseNode into the SDK's model chosen by its
``@odata.type``; kiota puts any property the model does not know into ``additional_data``, and
an enum value it does not know becomes None. So each payload must:

- parse into the expected model class;
- leave ``additional_data`` empty everywhere, except the documented exceptions below;
- serialize back (kiota's JsonSerializationWriter) to the same JSON, nulls aside.

Documented exceptions (in ``additional_data`` because the SDK's models have no such property):
- ``@odata.id``, ``@odata.etag`` on a notification's resourceData: OData annotations, shown in
  every notification example (call: answer, call: recordResponse, call: playPrompt).
- ``@odata.context`` on GET call: in Get call's example response.
- ``completionReason`` on a failed recordOperation: v1.0's call: cancelMediaProcessing example
  notification carries it (the property is in beta's recordOperation, not in v1.0's metadata).

The SDK has no model for the envelope (commsNotifications / commsNotification): Graph's
commsNotification page says resourceData "is available as additional data". The envelope is
checked against those two pages' properties instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kiota_abstractions.serialization import Parsable
from kiota_serialization_json.json_parse_node import JsonParseNode
from kiota_serialization_json.json_serialization_writer import (
    JsonSerializationWriter,
)
from msgraph.generated.models.call import Call
from msgraph.generated.models.entity import Entity
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.play_prompt_operation import PlayPromptOperation
from msgraph.generated.models.record_operation import RecordOperation
from msgraph.generated.models.subscribe_to_tone_operation import (
    SubscribeToToneOperation,
)

from devtools.graphsim import GraphSimulator
from devtools.loopback import LoopbackServer

from .conftest import BOT_APP_ID, CALLS, Bot, answer_body, is_operation, is_state

NOTIFICATION_ANNOTATIONS = frozenset({"@odata.id", "@odata.etag"})
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
PROMPT = {
    "@odata.type": "#microsoft.graph.mediaPrompt",
    "mediaInfo": {
        "@odata.type": "#microsoft.graph.mediaInfo",
        "uri": "https://cdn.contoso.com/beep.wav",
        "resourceId": "1D6DE2D4-CD51-4309-8DAA-70768651088E",
    },
}


# --------------------------------------------------------------------------- collecting


@dataclasses.dataclass
class Payload:
    body: dict[str, Any]
    model: type[Parsable]
    allowed_extra: frozenset[str] = frozenset()
    error: bool = False


@pytest.fixture(scope="module")
def contract_bot() -> Iterator[Bot]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    holder: list[Bot] = []

    async def callback(request: Request) -> Response:
        from .conftest import Received

        body = await request.json()
        with holder[0].lock:
            holder[0].received.append(Received(dict(request.headers), body))
        return Response(status_code=202)

    app = Starlette(routes=[Route("/api/calls", callback, methods=["POST"])])
    with LoopbackServer(app) as server:
        holder.append(Bot(url=f"{server.base_url}/api/calls"))
        yield holder[0]


def _responses(sim: GraphSimulator, bot: Bot) -> dict[str, Payload]:
    """Drive calls through every path; keep each reply and GET the SDK must read."""
    out: dict[str, Payload] = {}
    headers = {"Authorization": f"Bearer {sim.graph_token()}"}
    with httpx.Client(base_url=sim.graph_base_url, headers=headers, timeout=5) as graph:

        def answered(scenario: str = "max-duration", **options: Any) -> str:
            call_id = sim.place_call(scenario, callback_url=bot.url, **options)
            sim.wait_for(lambda: sim.call(call_id).state == "incoming", timeout=5)
            body = answer_body(bot.url)
            body["mediaConfig"]["preFetchMedia"] = [PROMPT["mediaInfo"]]
            assert graph.post(f"{CALLS}/{call_id}/answer", json=body).status_code == 202
            sim.wait_for(lambda: sim.call(call_id).state == "established", timeout=5)
            return call_id

        call_id = answered(keys_after_prompts=["1#"])
        tone = graph.post(f"{CALLS}/{call_id}/subscribeToTone", json={"clientContext": "t"})
        out["reply subscribeToTone"] = Payload(tone.json(), SubscribeToToneOperation)
        prompt = graph.post(
            f"{CALLS}/{call_id}/playPrompt", json={"clientContext": "p", "prompts": [PROMPT]}
        ).json()
        out["reply playPrompt"] = Payload(prompt, PlayPromptOperation)
        record = graph.post(
            f"{CALLS}/{call_id}/recordResponse",
            json={"clientContext": "r", "prompts": [PROMPT], "maxRecordDurationInSeconds": 3},
        ).json()
        out["reply recordResponse"] = Payload(record, RecordOperation)
        out["GET operation (queued)"] = Payload(
            graph.get(f"{CALLS}/{call_id}/operations/{record['id']}").json(), RecordOperation
        )
        sim.wait_for(lambda: sim.operation(record["id"]).final, timeout=10)
        out["GET recordOperation (completed)"] = Payload(
            graph.get(f"{CALLS}/{call_id}/operations/{record['id']}").json(), RecordOperation
        )
        out["GET playPromptOperation (completed)"] = Payload(
            graph.get(f"{CALLS}/{call_id}/operations/{prompt['id']}").json(),
            PlayPromptOperation,
        )
        out["GET call (established)"] = Payload(
            graph.get(f"{CALLS}/{call_id}").json(), Call, frozenset({"@odata.context"})
        )
        # A long recording canceled by a barging one; then a prompt that cannot be fetched.
        long = graph.post(
            f"{CALLS}/{call_id}/recordResponse", json={"maxRecordDurationInSeconds": 120}
        ).json()
        graph.post(
            f"{CALLS}/{call_id}/recordResponse",
            json={"bargeInAllowed": True, "maxRecordDurationInSeconds": 1},
        )
        sim.wait_for(lambda: sim.operation(long["id"]).final, timeout=10)
        out["GET recordOperation (failed)"] = Payload(
            graph.get(f"{CALLS}/{call_id}/operations/{long['id']}").json(),
            RecordOperation,
            frozenset({"completionReason"}),
        )
        unreachable = {"mediaInfo": {"uri": "http://127.0.0.1:9/missing.wav"}}
        graph.post(f"{CALLS}/{call_id}/playPrompt", json={"prompts": [unreachable]})
        sim.wait_for(lambda: len([n for n in bot.notifications() if is_operation(n)]) >= 5)
        assert graph.delete(f"{CALLS}/{call_id}").status_code == 204

        silent = answered("initial-silence")
        graph.post(f"{CALLS}/{silent}/recordResponse", json={"initialSilenceTimeoutInSeconds": 1})
        for scenario in ("reply-completed", "reply-failed"):
            final = answered(scenario)
            reply = graph.post(f"{CALLS}/{final}/recordResponse", json={}).json()
            extra = frozenset({"completionReason"}) if reply["status"] == "failed" else frozenset()
            out[f"reply recordResponse ({scenario})"] = Payload(reply, RecordOperation, extra)
        # Every caller shape: a phone or guest identity set, a PSTN call's incomingContext.
        for caller in ("pstn", "anonymous", "guest"):
            shaped = sim.place_call(callback_url=bot.url, caller=caller)
            sim.wait_for(lambda shaped=shaped: sim.call(shaped).state == "incoming", timeout=5)
            out[f"GET call ({caller})"] = Payload(
                graph.get(f"{CALLS}/{shaped}").json(), Call, frozenset({"@odata.context"})
            )
            graph.post(f"{CALLS}/{shaped}/reject", json={"reason": "busy"})
        rejected = sim.place_call(callback_url=bot.url)
        sim.wait_for(lambda: sim.call(rejected).state == "incoming", timeout=5)
        assert graph.post(f"{CALLS}/{rejected}/reject", json={"reason": "busy"}).status_code == 202

        out["error 404"] = Payload(graph.get(f"{CALLS}/nope").json(), ODataError, error=True)
        out["error 400"] = Payload(
            graph.post(f"{CALLS}/{silent}/recordResponse", json={"prompts": "x"}).json(),
            ODataError,
            error=True,
        )
        out["error 401"] = Payload(
            httpx.get(f"{sim.graph_base_url}{CALLS}/x").json(), ODataError, error=True
        )
    return out


@pytest.fixture(scope="module")
def collected(contract_bot: Bot) -> dict[str, Any]:
    with GraphSimulator(BOT_APP_ID, time_scale=0.01) as sim:
        responses = _responses(sim, contract_bot)
        contract_bot.wait_for(
            lambda n: n["changeType"] == "deleted" and "state" not in n.get("resourceData", {})
        )
        contract_bot.wait_for(is_state("terminated"))
        sim.wait_for(
            lambda: len([n for n in contract_bot.notifications() if is_operation(n)]) >= 6,
            timeout=10,
        )
        envelopes = [r.body for r in contract_bot.received]
    return {"responses": responses, "envelopes": envelopes}


# --------------------------------------------------------------------------- checking


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _same(original: Any, round_trip: Any) -> bool:
    """Equal JSON; strings compared case-insensitively (the SDK writes some enum members, such
    as operationStatus, with their member name's case)."""
    if isinstance(original, dict) and isinstance(round_trip, dict):
        return original.keys() == round_trip.keys() and all(
            _same(original[k], round_trip[k]) for k in original
        )
    if isinstance(original, list) and isinstance(round_trip, list):
        return len(original) == len(round_trip) and all(
            _same(a, b) for a, b in zip(original, round_trip, strict=True)
        )
    if isinstance(original, str) and isinstance(round_trip, str):
        return original.casefold() == round_trip.casefold()
    return bool(original == round_trip)


def _unplaced(model: Any, path: str = "$") -> list[str]:
    """Every property kiota could not place, with its path."""
    found = [f"{path}.{name}" for name in getattr(model, "additional_data", {}) or {}]
    if dataclasses.is_dataclass(model):
        for item in dataclasses.fields(model):
            if item.name in ("additional_data", "backing_store"):
                continue
            value = getattr(model, item.name)
            if isinstance(value, Parsable):
                found += _unplaced(value, f"{path}.{item.name}")
            elif isinstance(value, list):
                for index, element in enumerate(value):
                    if isinstance(element, Parsable):
                        found += _unplaced(element, f"{path}.{item.name}[{index}]")
    return found


def parse(data: dict[str, Any], factory: type[Parsable]) -> Parsable:
    node = JsonParseNode(json.loads(json.dumps(data)))
    return node.get_object_value(factory)  # type: ignore[arg-type]


def check(data: dict[str, Any], expected: type[Parsable], allowed: frozenset[str]) -> None:
    factory: type[Parsable] = ODataError if expected is ODataError else Entity
    model = parse(data, factory)
    assert type(model) is expected, f"parsed as {type(model).__name__}"
    unplaced = [p for p in _unplaced(model) if p.removeprefix("$.") not in allowed]
    assert unplaced == [], f"properties msgraph-sdk cannot place: {unplaced}"
    writer = JsonSerializationWriter()
    writer.write_object_value(None, model)
    round_trip = json.loads(writer.get_serialized_content())
    assert _same(_strip_nulls(data), _strip_nulls(round_trip)), (
        f"msgraph-sdk reads it differently:\n{json.dumps(data)}\n{json.dumps(round_trip)}"
    )


EXPECTED_RESOURCE = {
    "#microsoft.graph.call": Call,
    "#microsoft.graph.recordoperation": RecordOperation,
    "#microsoft.graph.playpromptoperation": PlayPromptOperation,
}

RESPONSE_NAMES = [
    "reply subscribeToTone",
    "reply playPrompt",
    "reply recordResponse",
    "GET operation (queued)",
    "GET recordOperation (completed)",
    "GET playPromptOperation (completed)",
    "GET call (established)",
    "GET call (pstn)",
    "GET call (anonymous)",
    "GET call (guest)",
    "GET recordOperation (failed)",
    "reply recordResponse (reply-completed)",
    "reply recordResponse (reply-failed)",
    "error 404",
    "error 400",
    "error 401",
]


@pytest.mark.parametrize("name", RESPONSE_NAMES)
def test_every_reply_and_get_parses_with_msgraph_models(
    collected: dict[str, Any], name: str
) -> None:
    payload: Payload = collected["responses"][name]
    check(payload.body, payload.model, payload.allowed_extra)


def test_every_notification_parses_with_msgraph_models(collected: dict[str, Any]) -> None:
    kinds: set[str] = set()
    for envelope in collected["envelopes"]:
        # commsNotifications: {@odata.type, value: [commsNotification]}.
        assert envelope.keys() == {"@odata.type", "value"}
        assert envelope["@odata.type"] == "#microsoft.graph.commsNotifications"
        for notification in envelope["value"]:
            # commsNotification: changeType, resourceUrl; resourceData as additional data.
            assert notification.keys() <= {
                "@odata.type",
                "changeType",
                "resourceUrl",
                "resourceData",
            }
            assert notification["@odata.type"] == "#microsoft.graph.commsNotification"
            assert notification["changeType"] in CHANGE_TYPES
            assert notification["resourceUrl"].startswith("/communications/calls/")
            data = notification["resourceData"]
            expected = EXPECTED_RESOURCE[data["@odata.type"].lower()]
            allowed = set(NOTIFICATION_ANNOTATIONS)
            if expected is RecordOperation and data.get("status") == "failed":
                allowed.add("completionReason")
            check(data, expected, frozenset(allowed))
            detail = data.get("status") or data.get("state") or "deleted"
            if "toneInfo" in data:
                detail = "tone"
            kinds.add(f"{expected.__name__} {notification['changeType']} {detail}")
    # Every kind of notification the simulator sends was seen (and so checked).
    assert kinds >= {
        "Call created incoming",
        "Call updated establishing",
        "Call updated established",
        "Call updated tone",
        "Call updated terminating",
        "Call deleted terminated",
        "Call deleted deleted",
        "RecordOperation deleted completed",
        "RecordOperation deleted failed",
        "PlayPromptOperation deleted completed",
        "PlayPromptOperation deleted failed",
    }, sorted(kinds)


def test_the_check_finds_what_the_sdk_cannot_place() -> None:
    # The contract test must be able to fail: an unknown property, an unknown enum value.
    good = {"@odata.type": "#microsoft.graph.call", "state": "established"}
    check(good, Call, frozenset())
    with pytest.raises(AssertionError, match="cannot place"):
        check({**good, "ringingTimeoutInSeconds": 5}, Call, frozenset())
    nested = {"source": {"identity": {"user": {"id": "x", "tenantId": "t"}}}}
    with pytest.raises(AssertionError, match=r"source\.identity\.user\.tenantId"):
        check({**good, **nested}, Call, frozenset())
    with pytest.raises(AssertionError, match="reads it differently"):
        check({**good, "direction": "sideways"}, Call, frozenset())
