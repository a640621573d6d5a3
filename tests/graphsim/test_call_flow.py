"""Scripted calls end to end: notifications in Graph's shapes, scenarios, bargeIn, retention."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.graphsim import GraphSimulator
from tests.data import source_document

from .conftest import CALLS, Bot, answer_body, is_operation, is_state
from .conftest import answered_call as _answer

SOURCE_EXAMPLE_REQUEST: dict[str, Any] = source_document.REQUEST


@pytest.fixture
def slow_sim() -> Iterator[GraphSimulator]:
    """A slower clock (a simulated second is 0.1 s) so overlapping operations really overlap."""
    with GraphSimulator("bot", time_scale=0.1) as running:
        yield running


@pytest.fixture
def slow_graph(slow_sim: GraphSimulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {slow_sim.graph_token()}"}
    with httpx.Client(base_url=slow_sim.graph_base_url, headers=headers, timeout=5.0) as client:
        yield client


def _compact(identifier: str) -> str:
    return identifier.replace("-", "").upper()


def _record(graph: httpx.Client, call_id: str, **overrides: Any) -> dict[str, Any]:
    response = graph.post(
        f"{CALLS}/{call_id}/recordResponse", json={**SOURCE_EXAMPLE_REQUEST, **overrides}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_full_call_in_the_source_documents_shape(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = sim.place_call("max-duration", callback_url=bot.url)
    incoming = bot.wait_for(is_state("incoming"))
    assert bot.received[0].body["@odata.type"] == "#microsoft.graph.commsNotifications"
    assert incoming["@odata.type"] == "#microsoft.graph.commsNotification"
    assert incoming["changeType"] == "created"
    assert incoming["resourceUrl"] == f"/communications/calls/{call_id}"
    call = incoming["resourceData"]
    assert call["@odata.type"] == "#microsoft.graph.call"
    assert call["id"] == call_id
    assert call["direction"] == "incoming"
    assert call["tenantId"] == sim.tenant_id
    assert call["callbackUri"] == bot.url
    assert call["myParticipantId"]
    assert call["source"]["identity"]["user"]["id"]
    assert call["targets"][0]["identity"]["application"]["id"] == sim.bot_app_id

    assert graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url)).status_code == 202
    bot.wait_for(is_state("established"))
    states = [n["resourceData"]["state"] for n in bot.notifications()]
    assert states == ["incoming", "establishing", "established"]
    assert all(n["changeType"] == "updated" for n in bot.notifications()[1:])

    started = _record(graph, call_id)
    completion = bot.wait_for(is_operation, timeout=5)
    op_url = f"/communications/calls/{_compact(call_id)}/operations/{_compact(started['id'])}"
    data = completion["resourceData"]
    assert completion == {
        "@odata.type": "#microsoft.graph.commsNotification",
        "changeType": "deleted",
        "resourceUrl": op_url,
        "resourceData": {
            "@odata.type": "#microsoft.graph.recordOperation",
            "@odata.id": op_url,
            "@odata.etag": data["@odata.etag"],
            "id": started["id"],
            "clientContext": "d45324c1-fcb5-430a-902c-f20af696537c",
            "status": "completed",
            "resultInfo": {
                "@odata.type": "#microsoft.graph.resultInfo",
                "code": 200,
                "subcode": 8515,
                "message": "Action completed, max record duration reached.",
            },
            "recordingLocation": data["recordingLocation"],
            "recordingAccessToken": data["recordingAccessToken"],
        },
    }
    assert re.fullmatch(r'W/"\d+"', data["@odata.etag"])
    assert data["recordingLocation"].startswith(f"{sim.base_url}/recordings/")

    # The recording is 10 s of audio (maxRecordDurationInSeconds), served to its token only.
    download = httpx.get(
        data["recordingLocation"],
        headers={"Authorization": f"Bearer {data['recordingAccessToken']}"},
    )
    assert download.status_code == 200
    handle = sim.recording_for(started["id"])
    assert handle is not None
    assert handle.call_id == call_id
    assert handle.duration_seconds == 10
    assert len(download.content) == handle.size == 44 + 10 * 32000
    assert hashlib.sha256(download.content).hexdigest() == handle.sha256
    assert (
        graph.get(f"{CALLS}/{call_id}/operations/{started['id']}").json()["status"] == "completed"
    )

    # Bot hangs up: terminated notification, then the recording is discarded after retention.
    assert graph.delete(f"{CALLS}/{call_id}").status_code == 204
    terminated = bot.wait_for(is_state("terminated"))
    assert terminated["changeType"] == "deleted"
    assert all(d.status_code == 202 for d in sim.deliveries)


def test_recording_discarded_after_call_ends(bot: Bot) -> None:
    with GraphSimulator("bot", time_scale=0.01, recording_retention_seconds=0.3) as sim:
        headers = {"Authorization": f"Bearer {sim.graph_token()}"}
        with httpx.Client(base_url=sim.graph_base_url, headers=headers) as graph:
            call_id = _answer(sim, bot, graph, hangup_after_completion_seconds=1)
            _record(graph, call_id, maxRecordDurationInSeconds=1, prompts=[])
            data = bot.wait_for(is_operation)["resourceData"]
            bot.wait_for(is_state("terminated"))
        auth = {"Authorization": f"Bearer {data['recordingAccessToken']}"}
        sim.wait_for(
            lambda: httpx.get(data["recordingLocation"], headers=auth).status_code == 404,
            timeout=3,
            interval=0.05,
        )


@pytest.mark.parametrize(
    ("scenario", "status", "subcode", "has_recording", "reason"),
    [
        ("stop-tone", "completed", 8514, True, None),
        ("initial-silence", "failed", 8510, False, "initialSilenceTimeout"),
        ("prompt-failed", "failed", 8511, False, "playPromptFailed"),
    ],
)
def test_scenarios(
    sim: GraphSimulator,
    bot: Bot,
    graph: httpx.Client,
    scenario: str,
    status: str,
    subcode: int,
    has_recording: bool,
    reason: str | None,
) -> None:
    call_id = _answer(sim, bot, graph, scenario=scenario, speech_seconds=4)
    _record(graph, call_id)
    data = bot.wait_for(is_operation)["resourceData"]
    assert data["status"] == status
    assert data["resultInfo"]["subcode"] == subcode
    if has_recording:
        assert data["recordingLocation"].startswith(sim.base_url)
        assert data["recordingAccessToken"]
        assert "completionReason" not in data
    else:
        # call: cancelMediaProcessing's failed recordOperation: empty strings and a reason.
        assert data["recordingLocation"] == data["recordingAccessToken"] == ""
        assert data["completionReason"] == reason
    if scenario == "stop-tone":
        handle = sim.recording_for(data["id"])
        assert handle is not None
        assert handle.duration_seconds == 4


def test_hangup_scenario_sends_terminated_and_no_completion(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _answer(sim, bot, graph, scenario="hangup")
    started = _record(graph, call_id)
    bot.wait_for(is_state("terminated"))
    assert not [n for n in bot.notifications() if is_operation(n)]
    assert sim.recordings == []
    assert sim.operation(started["id"]).status == "failed"
    assert sim.call(call_id).state == "terminated"


def test_barge_in_false_queues_behind_running_operation(
    slow_sim: GraphSimulator, bot: Bot, slow_graph: httpx.Client
) -> None:
    sim, graph = slow_sim, slow_graph
    call_id = _answer(sim, bot, graph)
    first = _record(
        graph, call_id, bargeInAllowed=False, clientContext="first", maxRecordDurationInSeconds=2
    )
    second = _record(
        graph, call_id, bargeInAllowed=False, clientContext="second", maxRecordDurationInSeconds=1
    )
    assert first["status"] == "running"
    assert second["status"] == "notStarted"
    sim.wait_for(lambda: len([n for n in bot.notifications() if is_operation(n)]) == 2, timeout=5)
    completions = [n["resourceData"] for n in bot.notifications() if is_operation(n)]
    assert [c["clientContext"] for c in completions] == ["first", "second"]
    assert all(c["resultInfo"]["subcode"] == 8515 for c in completions)


def test_barge_in_true_cancels_running_and_queued(
    slow_sim: GraphSimulator, bot: Bot, slow_graph: httpx.Client
) -> None:
    sim, graph = slow_sim, slow_graph
    call_id = _answer(sim, bot, graph)
    prompt = graph.post(
        f"{CALLS}/{call_id}/playPrompt",
        json={"clientContext": "prompt", "prompts": [{"mediaInfo": {"uri": "https://p"}}]},
    )
    assert prompt.status_code == 200
    assert prompt.json()["@odata.type"] == "#microsoft.graph.playPromptOperation"
    queued = _record(graph, call_id, bargeInAllowed=False, clientContext="queued")
    barging = _record(
        graph, call_id, bargeInAllowed=True, clientContext="barging", maxRecordDurationInSeconds=1
    )
    assert barging["status"] == "running"
    sim.wait_for(lambda: len([n for n in bot.notifications() if is_operation(n)]) == 3, timeout=5)
    results = {
        n["resourceData"]["clientContext"]: n["resourceData"]
        for n in bot.notifications()
        if is_operation(n)
    }
    for canceled in ("prompt", "queued"):
        assert results[canceled]["status"] == "failed"
        assert results[canceled]["resultInfo"]["subcode"] == 8508
    assert results["barging"]["status"] == "completed"
    assert sim.operation(queued["id"]).status == "failed"


def test_play_prompt_completes_with_a_notification(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _answer(sim, bot, graph)
    response = graph.post(
        f"{CALLS}/{call_id}/playPrompt",
        json={"clientContext": "p", "prompts": [{"mediaInfo": {"uri": "https://p"}}]},
    )
    assert response.headers["location"].endswith(f"/operations/{response.json()['id']}")
    done = bot.wait_for(is_operation)["resourceData"]
    assert done["@odata.type"] == "#microsoft.graph.playPromptOperation"
    assert done["status"] == "completed"
    assert "recordingLocation" not in done


def test_duplicate_and_out_of_order_notifications(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = sim.place_call(
        callback_url=bot.url,
        duplicate_established=True,
        out_of_order=True,
        duplicate_completion=True,
    )
    bot.wait_for(is_state("incoming"))
    graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url))
    bot.wait_for(is_state("establishing"))
    states = [n["resourceData"]["state"] for n in bot.notifications()]
    assert states == ["incoming", "established", "established", "establishing"]
    _record(graph, call_id, maxRecordDurationInSeconds=1, prompts=[])
    sim.wait_for(lambda: len([n for n in bot.notifications() if is_operation(n)]) == 2, timeout=5)
    first, second = [n for n in bot.notifications() if is_operation(n)]
    assert first == second


def test_delayed_notifications(bot: Bot) -> None:
    with GraphSimulator("bot", time_scale=0.01) as sim:
        sim.place_call(callback_url=bot.url, notification_delay_seconds=0.3)
        sim.wait_for(lambda: sim.deliveries, timeout=3)
        delivery = sim.deliveries[0]
        assert delivery.status_code == 202
        call = sim.calls[0]
        assert delivery.sent_at - call.created_at >= 0.3


def _created_body(delivery: Any) -> bool:
    return bool(delivery.notifications and delivery.notifications[0]["changeType"] == "created")


def _terminated(delivery: Any) -> bool:
    data = delivery.notifications[0]["resourceData"] if delivery.notifications else {}
    return bool(data.get("state") == "terminated")


def test_failed_deliveries_are_retried_then_the_next_notification_follows(bot: Bot) -> None:
    with GraphSimulator(
        "bot", time_scale=0.01, notification_retries=2, notification_retry_backoff_seconds=0.01
    ) as sim:
        bot.script = [503, 500]
        call_id = sim.place_call(callback_url=bot.url)
        bot.wait_for(is_state("incoming"))
        sim.caller_hangup(call_id)
        bot.wait_for(is_state("terminated"))
        # The bot has the last notification before the simulator journals its answer.
        sim.wait_for(lambda: len(sim.deliveries) >= 4, timeout=5)
        outcomes = [(d.attempt, d.status_code) for d in sim.deliveries]
        assert outcomes == [(1, 503), (2, 500), (3, 202), (1, 202)]
        first, second, third = (d.body for d in sim.deliveries[:3])
        assert first == second == third


def test_a_4xx_answer_is_final_and_retries_are_bounded(bot: Bot) -> None:
    with GraphSimulator(
        "bot", time_scale=0.01, notification_retries=2, notification_retry_backoff_seconds=0.01
    ) as sim:
        bot.script = [400]
        refused = sim.place_call(callback_url=bot.url)
        sim.wait_for(lambda: sim.deliveries, timeout=5)
        sim.caller_hangup(refused)
        bot.wait_for(is_state("terminated"))
        assert [(d.attempt, d.status_code) for d in sim.deliveries] == [(1, 400), (1, 202)]

        unreachable = sim.place_call(callback_url="http://127.0.0.1:9/unreachable")
        sim.caller_hangup(unreachable)
        sim.wait_for(
            lambda: [d for d in sim.deliveries if d.call_id == unreachable and _terminated(d)],
            timeout=10,
        )
        created = [d for d in sim.deliveries if d.call_id == unreachable and _created_body(d)]
        assert [d.attempt for d in created] == [1, 2, 3]
        assert all(d.status_code is None and d.error for d in created)


def test_unanswered_call_is_terminated(bot: Bot) -> None:
    with GraphSimulator("bot", time_scale=0.01, answer_timeout_seconds=0.2) as sim:
        call_id = sim.place_call(callback_url=bot.url)
        terminated = bot.wait_for(is_state("terminated"))
        assert terminated["resourceData"]["resultInfo"]["code"] == 408
        assert sim.call(call_id).state == "terminated"


def test_caller_hangup_via_control_api(sim: GraphSimulator, bot: Bot, graph: httpx.Client) -> None:
    call_id = _answer(sim, bot, graph)
    response = httpx.post(f"{sim.base_url}/_sim/calls/{call_id}/hangup")
    assert response.json()["state"] == "terminated"
    bot.wait_for(is_state("terminated"))
    refused = graph.post(f"{CALLS}/{call_id}/recordResponse", json={})
    assert refused.json()["error"]["code"] == "CallNotEstablished"
