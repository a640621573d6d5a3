"""Shapes and status codes as Microsoft's Graph v1.0 reference pages show them.

Each test names the page whose example it holds the simulator to.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest

from devtools.graphsim import GraphSimulator

from .conftest import CALLS, Bot, answer_body, answered_call, is_operation, is_state

PROMPT = {"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"uri": "https://p/a.wav"}}


def _established(sim: GraphSimulator, bot: Bot, graph: httpx.Client, **options: Any) -> str:
    """Answered as the answer page's example does: with media to fetch ahead."""
    body = answer_body(bot.url)
    body["mediaConfig"]["preFetchMedia"] = [
        {"uri": "https://cdn.contoso.com/beep.wav", "resourceId": "f8971b04"}
    ]
    return answered_call(sim, bot, graph, answer=body, **options)


def _call_notifications(bot: Bot) -> list[dict[str, Any]]:
    return [n for n in bot.notifications() if not is_operation(n)]


def test_call_notifications_carry_odata_id_and_a_new_etag_each(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    # call: answer, example 1: incoming (full call), establishing, established (state only).
    call_id = _established(sim, bot, graph)
    incoming, establishing, established = _call_notifications(bot)
    for notification in (incoming, establishing, established):
        data = notification["resourceData"]
        assert data["@odata.type"] == "#microsoft.graph.call"
        assert data["@odata.id"] == f"/communications/calls/{call_id}"
        assert re.fullmatch(r'W/"\d+"', data["@odata.etag"])
    etags = [n["resourceData"]["@odata.etag"] for n in (incoming, establishing, established)]
    assert len(set(etags)) == 3
    assert set(establishing["resourceData"]) == {"@odata.type", "@odata.id", "@odata.etag", "state"}
    assert set(established["resourceData"]) == set(establishing["resourceData"])
    assert incoming["resourceData"]["source"]["identity"]["user"].keys() == {
        "@odata.type",
        "id",
        "displayName",
    }
    assert "resultInfo" not in incoming["resourceData"]


def test_get_of_an_answered_call_has_its_media_config(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    # Get call: mediaConfig as answered, and the entity's @odata.context.
    call_id = _established(sim, bot, graph)
    call = graph.get(f"{CALLS}/{call_id}").json()
    assert call["mediaConfig"] == {
        "@odata.type": "#microsoft.graph.serviceHostedMediaConfig",
        "preFetchMedia": [{"uri": "https://cdn.contoso.com/beep.wav", "resourceId": "f8971b04"}],
    }
    assert call["@odata.context"] == (
        f"{sim.graph_base_url}/$metadata#communications/calls/$entity"
    )
    assert call["state"] == "established"
    assert call["resultInfo"] is None


def test_bot_hang_up_sends_terminating_then_terminated(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    # Delete call: 204, "terminating" (updated), then "terminated" (deleted) with 200/5001.
    call_id = _established(sim, bot, graph)
    assert graph.delete(f"{CALLS}/{call_id}").status_code == 204
    terminated = bot.wait_for(is_state("terminated"))
    terminating = _call_notifications(bot)[-2]
    assert terminating["changeType"] == "updated"
    assert terminating["resourceData"]["state"] == "terminating"
    assert terminated["changeType"] == "deleted"
    result = terminated["resourceData"]["resultInfo"]
    assert (result["code"], result["subcode"], result["message"]) == (
        200,
        5001,
        "The conversation has ended.",
    )


def test_caller_hang_up_ends_with_the_peer_to_peer_reason(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph)
    sim.caller_hangup(call_id)
    terminated = bot.wait_for(is_state("terminated"))
    assert terminated["resourceData"]["resultInfo"]["subcode"] == 4521
    assert "terminating" not in [n["resourceData"].get("state") for n in bot.notifications()]


def test_reject_answers_202_and_the_call_is_deleted(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    # call: reject: 202, then a "deleted" notification that only names the call.
    call_id = sim.place_call(callback_url=bot.url)
    bot.wait_for(is_state("incoming"))
    bad = graph.post(f"{CALLS}/{call_id}/reject", json={"reason": "later"})
    assert bad.status_code == 400
    assert "reason" in bad.json()["error"]["message"]
    assert graph.post(f"{CALLS}/{call_id}/reject", json={"reason": "busy"}).status_code == 202
    deleted = bot.wait_for(lambda n: n["changeType"] == "deleted")
    assert set(deleted["resourceData"]) == {"@odata.type", "@odata.id", "@odata.etag"}
    assert sim.call(call_id).state == "terminated"
    again = graph.post(f"{CALLS}/{call_id}/reject", json={"reason": "none"})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "CallNotIncoming"


def test_play_prompt_takes_up_to_20_prompts_and_replies_as_documented(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph)
    too_many = graph.post(f"{CALLS}/{call_id}/playPrompt", json={"prompts": [PROMPT] * 21})
    assert too_many.status_code == 400
    assert "20" in too_many.json()["error"]["message"]
    reply = graph.post(
        f"{CALLS}/{call_id}/playPrompt", json={"clientContext": "c", "prompts": [PROMPT] * 20}
    )
    assert reply.status_code == 200
    body = reply.json()
    # call: playPrompt's reply: no resultInfo while it runs.
    assert body == {
        "@odata.type": "#microsoft.graph.playPromptOperation",
        "id": body["id"],
        "status": "running",
        "clientContext": "c",
    }
    done = bot.wait_for(is_operation, timeout=10)["resourceData"]
    assert done["resultInfo"] == {
        "@odata.type": "#microsoft.graph.resultInfo",
        "code": 200,
        "subcode": 0,
        "message": "Action completed successfully.",
    }


def test_a_canceled_recording_is_notified_as_cancel_media_processing_shows(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph)
    first = graph.post(
        f"{CALLS}/{call_id}/recordResponse", json={"maxRecordDurationInSeconds": 120}
    ).json()
    graph.post(
        f"{CALLS}/{call_id}/recordResponse",
        json={"bargeInAllowed": True, "maxRecordDurationInSeconds": 1},
    )
    canceled = bot.wait_for(lambda n: is_operation(n) and n["resourceData"]["id"] == first["id"])
    data = canceled["resourceData"]
    assert data["status"] == "failed"
    assert data["resultInfo"]["subcode"] == 8508
    assert data["resultInfo"]["message"] == "Action failed, the operation was cancelled."
    assert (data["recordingLocation"], data["recordingAccessToken"]) == ("", "")
    assert data["completionReason"] == "operationCanceled"


@pytest.mark.parametrize(
    ("scenario", "status", "subcode"),
    [("reply-completed", "completed", 8515), ("reply-failed", "failed", 8503)],
)
def test_a_reply_that_is_already_final_has_no_notification(
    sim: GraphSimulator,
    bot: Bot,
    graph: httpx.Client,
    scenario: str,
    status: str,
    subcode: int,
) -> None:
    # commsOperation: a completed or failed reply has no subsequent notification.
    call_id = _established(sim, bot, graph, scenario=scenario)
    reply = graph.post(f"{CALLS}/{call_id}/recordResponse", json={"maxRecordDurationInSeconds": 2})
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == status
    assert body["resultInfo"]["subcode"] == subcode
    if status == "completed":
        handle = sim.recording_for(body["id"])
        assert handle is not None
        assert body["recordingLocation"] == handle.location
        assert body["recordingAccessToken"] == handle.access_token
        download = httpx.get(
            handle.location, headers={"Authorization": f"Bearer {handle.access_token}"}
        )
        assert hashlib.sha256(download.content).hexdigest() == handle.sha256
    else:
        assert (body["recordingLocation"], body["recordingAccessToken"]) == ("", "")
        assert body["completionReason"] == "unspecifiedError"
    # Notifications of a call leave in order: once "terminated" arrived, none other is coming.
    graph.delete(f"{CALLS}/{call_id}")
    bot.wait_for(is_state("terminated"))
    assert not [n for n in bot.notifications() if is_operation(n)]


def test_a_recording_can_be_served_without_content_length(sim: GraphSimulator) -> None:
    # call: recordResponse, "Retrieving the recording file": Transfer-Encoding: chunked.
    rec = sim.add_recording(size_bytes=300_000, faults=["chunked"])
    response = httpx.get(rec.location, headers={"Authorization": f"Bearer {rec.access_token}"})
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert response.headers["transfer-encoding"] == "chunked"
    assert hashlib.sha256(response.content).hexdigest() == rec.sha256
    again = httpx.get(rec.location, headers={"Authorization": f"Bearer {rec.access_token}"})
    assert int(again.headers["content-length"]) == rec.size
