"""What an IVR flow needs from the simulator: tones, prompts fetched as Graph fetches them,
several recordings per call, and the caller's scripted behaviour."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.graphsim import GraphSimulator
from devtools.graphsim.recordings import wav_header
from devtools.loopback import LoopbackServer

from .conftest import CALLS, Bot, is_operation, is_state
from .conftest import answered_call as _established


def _wav(rate: int = 16_000, channels: int = 1, bits: int = 16) -> bytes:
    data = b"\0" * 3200
    header = bytearray(wav_header(len(data)))
    block = channels * bits // 8
    header[20:36] = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return bytes(header) + data


@pytest.fixture(scope="module")
def prompts() -> Iterator[str]:
    """Prompts on loopback: one Graph plays, one in the wrong format, one missing."""
    files = {"ok.wav": _wav(), "8khz.wav": _wav(rate=8_000), "text.wav": b"hello"}

    async def serve(request: Request) -> Response:
        body = files.get(request.path_params["name"])
        if body is None:
            return Response(status_code=404)
        return Response(body, media_type="audio/wav")

    with LoopbackServer(Starlette(routes=[Route("/prompts/{name}", serve)])) as server:
        yield f"{server.base_url}/prompts"


def _prompt(uri: str) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"uri": uri}}


def _operations(bot: Bot) -> list[dict[str, Any]]:
    return [n["resourceData"] for n in bot.notifications() if is_operation(n)]


def _tones(bot: Bot) -> list[tuple[int, str]]:
    return [
        (n["resourceData"]["toneInfo"]["sequenceId"], n["resourceData"]["toneInfo"]["tone"])
        for n in bot.notifications()
        if "toneInfo" in n["resourceData"]
    ]


def test_subscribe_to_tone_replies_completed_and_tones_follow(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph)
    # Before subscribing, key presses send nothing.
    assert sim.press_keys(call_id, "5") == 0
    reply = graph.post(f"{CALLS}/{call_id}/subscribeToTone", json={"clientContext": "tones"})
    assert reply.status_code == 200
    body = reply.json()
    # call: subscribeToTone's reply.
    assert body == {
        "@odata.type": "#microsoft.graph.subscribeToToneOperation",
        "clientContext": "tones",
        "id": body["id"],
        "status": "completed",
    }
    assert reply.headers["location"].endswith(f"/operations/{body['id']}")
    assert sim.press_keys(call_id, "1#*") == 3
    sim.wait_for(lambda: len(_tones(bot)) == 3)
    assert _tones(bot) == [(1, "tone1"), (2, "pound"), (3, "star")]
    tone = next(n for n in bot.notifications() if "toneInfo" in n["resourceData"])
    assert tone["changeType"] == "updated"
    assert tone["resourceUrl"] == f"/communications/calls/{call_id}"
    assert tone["resourceData"]["state"] == "established"
    # subscribeToTone has no completion notification of its own.
    assert _operations(bot) == []
    with pytest.raises(ValueError, match="0-9"):
        sim.press_keys(call_id, "x")


def test_subscribe_to_tone_needs_an_established_service_hosted_call(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = sim.place_call(callback_url=bot.url)
    bot.wait_for(is_state("incoming"))
    refused = graph.post(f"{CALLS}/{call_id}/subscribeToTone", json={})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "InvalidMediaMode"
    too_long = graph.post(f"{CALLS}/{call_id}/subscribeToTone", json={"clientContext": "c" * 257})
    assert too_long.status_code == 400


def test_scripted_caller_presses_keys_after_each_prompt(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph, keys_after_prompts=["2", "1"])
    graph.post(f"{CALLS}/{call_id}/subscribeToTone", json={})
    for context in ("confirm", "again"):
        graph.post(
            f"{CALLS}/{call_id}/playPrompt",
            json={"clientContext": context, "prompts": [_prompt("https://p/confirm.wav")]},
        )
    sim.wait_for(lambda: len(_tones(bot)) == 2, timeout=5)
    assert _tones(bot) == [(1, "tone2"), (2, "tone1")]
    # Each key follows the prompt before it.
    order = [
        n["resourceData"].get("clientContext") or n["resourceData"]["toneInfo"]["tone"]
        for n in bot.notifications()
        if is_operation(n) or "toneInfo" in n["resourceData"]
    ]
    assert order == ["confirm", "tone2", "again", "tone1"]


def test_a_stop_tone_ends_the_recording_early(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph)
    started = graph.post(
        f"{CALLS}/{call_id}/recordResponse",
        json={"maxRecordDurationInSeconds": 120, "stopTones": ["#"], "playBeep": False},
    ).json()
    sim.wait_for(lambda: sim.operation(started["id"]).status == "running")
    sim.press_keys(call_id, "1")  # not a stop tone
    time.sleep(0.05)  # let some audio be heard; the outcome does not depend on how much
    sim.press_keys(call_id, "#")
    done = bot.wait_for(is_operation)["resourceData"]
    assert done["status"] == "completed"
    assert done["resultInfo"]["subcode"] == 8514
    handle = sim.recording_for(started["id"])
    assert handle is not None
    assert 0 < handle.duration_seconds < 120


@pytest.mark.parametrize(
    ("name", "status", "subcode"),
    [
        ("ok.wav", "completed", 0),
        ("8khz.wav", "failed", 8535),
        ("text.wav", "failed", 8535),
        ("missing.wav", "failed", 8536),
    ],
)
def test_prompts_on_this_machine_are_fetched_and_checked(
    sim: GraphSimulator,
    bot: Bot,
    graph: httpx.Client,
    prompts: str,
    name: str,
    status: str,
    subcode: int,
) -> None:
    call_id = _established(sim, bot, graph)
    started = graph.post(
        f"{CALLS}/{call_id}/playPrompt", json={"prompts": [_prompt(f"{prompts}/{name}")]}
    ).json()
    done = bot.wait_for(is_operation)["resourceData"]
    assert done["status"] == status
    assert done["resultInfo"]["subcode"] == subcode
    reason = sim.prompt_failure(started["id"])
    assert (reason is None) is (status == "completed")
    if name == "8khz.wav":
        assert reason is not None
        assert "8000 Hz" in reason


def test_an_unreachable_prompt_fails_the_recording_with_8536(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph)
    graph.post(
        f"{CALLS}/{call_id}/recordResponse",
        json={"prompts": [_prompt("http://127.0.0.1:9/notice.wav")]},
    )
    done = bot.wait_for(is_operation)["resourceData"]
    assert done["status"] == "failed"
    assert done["resultInfo"]["subcode"] == 8536
    assert done["completionReason"] == "playPromptFailed"
    assert sim.recordings == []


def test_silence_then_answer_fails_once_then_records(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph, scenario="silence-then-answer")
    body = {"maxRecordDurationInSeconds": 2, "initialSilenceTimeoutInSeconds": 1}
    first = graph.post(f"{CALLS}/{call_id}/recordResponse", json=body).json()
    bot.wait_for(is_operation)
    second = graph.post(f"{CALLS}/{call_id}/recordResponse", json=body).json()
    sim.wait_for(lambda: len(_operations(bot)) == 2, timeout=5)
    failed, stored = _operations(bot)
    assert (failed["id"], failed["resultInfo"]["subcode"]) == (first["id"], 8510)
    assert (stored["id"], stored["resultInfo"]["subcode"]) == (second["id"], 8515)
    assert sim.recording_for(first["id"]) is None
    handle = sim.recording_for(second["id"])
    assert handle is not None
    assert handle.duration_seconds == 2


def test_several_recordings_per_call_are_distinct(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established(sim, bot, graph)
    ids = [
        graph.post(
            f"{CALLS}/{call_id}/recordResponse", json={"maxRecordDurationInSeconds": 1}
        ).json()["id"]
        for _ in range(3)
    ]
    sim.wait_for(lambda: len(_operations(bot)) == 3, timeout=5)
    handles = [sim.recording_for(operation_id) for operation_id in ids]
    assert all(h is not None and h.call_id == call_id for h in handles)
    assert len({h.sha256 for h in handles if h is not None}) == 3
    assert len({n["recordingLocation"] for n in _operations(bot)}) == 3


def test_the_caller_hangs_up_before_the_recording_is_stored(bot: Bot) -> None:
    with GraphSimulator("bot", time_scale=0.01, recording_retention_seconds=30) as sim:
        headers = {"Authorization": f"Bearer {sim.graph_token()}"}
        with httpx.Client(base_url=sim.graph_base_url, headers=headers) as graph:
            call_id = _established(sim, bot, graph, scenario="hangup-before-stored")
            started = graph.post(
                f"{CALLS}/{call_id}/recordResponse", json={"maxRecordDurationInSeconds": 1}
            ).json()
            terminated = bot.wait_for(is_state("terminated"))
        # The completion came first, then the caller was gone: the recording is still there,
        # and its retention countdown has started.
        kinds = [
            "operation" if is_operation(n) else n["resourceData"].get("state")
            for n in bot.notifications()
        ]
        assert kinds[-2:] == ["operation", "terminated"]
        assert terminated["resourceData"]["resultInfo"]["subcode"] == 4521
        completion = _operations(bot)[0]
        assert completion["status"] == "completed"
        handle = sim.recording_for(started["id"])
        assert handle is not None
        download = httpx.get(
            completion["recordingLocation"],
            headers={"Authorization": f"Bearer {completion['recordingAccessToken']}"},
        )
        assert download.status_code == 200
        stored = next(
            r for r in sim.recordings_store.all() if r.recording_id == handle.recording_id
        )
        assert stored.expires_at is not None
