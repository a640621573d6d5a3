"""Calls API: token checks, Graph error shapes and the documented recordResponse limits."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devtools.graphsim import GraphSimulator

from .conftest import CALLS, Bot, answer_body, is_state


def _established_call(sim: GraphSimulator, bot: Bot, graph: httpx.Client) -> str:
    call_id = sim.place_call("max-duration", callback_url=bot.url)
    bot.wait_for(is_state("incoming"))
    assert graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url)).status_code == 202
    sim.wait_for(lambda: sim.call(call_id).state == "established", timeout=3)
    return call_id


def _assert_graph_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    inner = error["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == response.headers["client-request-id"]
    assert inner["date"]
    return error


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic abc", "Bearer not-a-jwt"],
)
def test_token_required(sim: GraphSimulator, authorization: str | None) -> None:
    headers = {"client-request-id": "c0ffee00-0000-0000-0000-000000000001"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx.get(f"{sim.graph_base_url}{CALLS}/x", headers=headers)
    error = _assert_graph_error(response, 401, "InvalidAuthenticationToken")
    assert error["innerError"]["client-request-id"] == "c0ffee00-0000-0000-0000-000000000001"
    assert sim.requests[-1].token_valid is False
    assert "authorization" not in sim.requests[-1].headers


def test_forged_tokens_are_refused(sim: GraphSimulator) -> None:
    # Signed by the notification key (a key the simulator owns, but not the Graph issuer's).
    forged = sim.sign_token({"aud": "https://graph.microsoft.com"})
    hs = sim.sign_token({"aud": "https://graph.microsoft.com"}, alg="HS256")
    for token in (forged, hs):
        response = httpx.get(
            f"{sim.graph_base_url}{CALLS}/x", headers={"Authorization": f"Bearer {token}"}
        )
        _assert_graph_error(response, 401, "InvalidAuthenticationToken")


def test_unknown_call_is_404(graph: httpx.Client) -> None:
    _assert_graph_error(graph.get(f"{CALLS}/nope"), 404, "ItemNotFound")
    _assert_graph_error(graph.get("/communications/nothing"), 404, "UnknownError")


def test_answer_requires_https_callback_unless_allowed(bot: Bot) -> None:
    with GraphSimulator("bot", allow_insecure_callbacks=False, time_scale=0.01) as strict:
        call_id = strict.place_call(callback_url=bot.url)
        headers = {"Authorization": f"Bearer {strict.graph_token()}"}
        response = httpx.post(
            f"{strict.graph_base_url}{CALLS}/{call_id}/answer",
            json=answer_body(bot.url),
            headers=headers,
        )
        error = _assert_graph_error(response, 400, "BadRequest")
        assert "https" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"acceptedModalities": ["audio"], "mediaConfig": {}}, "callbackUri"),
        ({"callbackUri": "https://x", "mediaConfig": {}}, "acceptedModalities"),
        ({"callbackUri": "https://x", "acceptedModalities": ["audio"]}, "mediaConfig"),
        (
            {
                "callbackUri": "https://x",
                "acceptedModalities": ["audio"],
                "mediaConfig": {"@odata.type": "#microsoft.graph.fooMediaConfig"},
            },
            "mediaConfig",
        ),
    ],
)
def test_answer_body_validation(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client, body: dict[str, Any], field: str
) -> None:
    call_id = sim.place_call(callback_url=bot.url)
    error = _assert_graph_error(
        graph.post(f"{CALLS}/{call_id}/answer", json=body), 400, "BadRequest"
    )
    assert field in error["message"]


def test_answer_twice_is_refused(sim: GraphSimulator, bot: Bot, graph: httpx.Client) -> None:
    call_id = _established_call(sim, bot, graph)
    response = graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url))
    _assert_graph_error(response, 400, "CallNotIncoming")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompts": [{"mediaInfo": {"uri": "https://a"}}] * 2}, "prompts"),
        ({"prompts": "x"}, "prompts"),
        ({"prompts": [{"mediaInfo": {}}]}, "mediaInfo"),
        ({"maxRecordDurationInSeconds": 0}, "maxRecordDurationInSeconds"),
        ({"maxRecordDurationInSeconds": 121}, "maxRecordDurationInSeconds"),
        ({"initialSilenceTimeoutInSeconds": 0}, "initialSilenceTimeoutInSeconds"),
        ({"initialSilenceTimeoutInSeconds": 121}, "initialSilenceTimeoutInSeconds"),
        ({"maxSilenceTimeoutInSeconds": 0}, "maxSilenceTimeoutInSeconds"),
        ({"maxSilenceTimeoutInSeconds": 121}, "maxSilenceTimeoutInSeconds"),
        ({"maxSilenceTimeoutInSeconds": 2.5}, "maxSilenceTimeoutInSeconds"),
        ({"maxRecordDurationInSeconds": True}, "maxRecordDurationInSeconds"),
        ({"clientContext": "x" * 257}, "clientContext"),
        ({"clientContext": 5}, "clientContext"),
        ({"stopTones": ["#", "E"]}, "stopTones"),
        ({"stopTones": ["##"]}, "stopTones"),
        ({"stopTones": "#"}, "stopTones"),
        ({"bargeInAllowed": "yes"}, "bargeInAllowed"),
        ({"playBeep": 1}, "playBeep"),
        ({"ClientContext": "typo"}, "ClientContext"),
    ],
)
def test_record_response_limits(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client, body: dict[str, Any], field: str
) -> None:
    call_id = _established_call(sim, bot, graph)
    response = graph.post(f"{CALLS}/{call_id}/recordResponse", json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]["message"]
    assert sim.call(call_id).operations == []


def test_record_response_limits_at_the_boundaries_are_accepted(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = _established_call(sim, bot, graph)
    body = {
        "clientContext": "c" * 256,
        "maxRecordDurationInSeconds": 120,
        "initialSilenceTimeoutInSeconds": 1,
        "maxSilenceTimeoutInSeconds": 120,
        "stopTones": ["0", "9", "*", "#", "A", "D"],
        "prompts": [
            {"@odata.type": "#microsoft.graph.mediaPrompt", "mediaInfo": {"uri": "https://p"}}
        ],
    }
    response = graph.post(f"{CALLS}/{call_id}/recordResponse", json=body)
    assert response.status_code == 200, response.text


def test_invalid_json_is_400(sim: GraphSimulator, bot: Bot, graph: httpx.Client) -> None:
    call_id = _established_call(sim, bot, graph)
    response = graph.post(
        f"{CALLS}/{call_id}/recordResponse",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    _assert_graph_error(response, 400, "BadRequest")
    _assert_graph_error(
        graph.post(f"{CALLS}/{call_id}/recordResponse", json=[1]), 400, "InvalidRequest"
    )


def test_record_response_refused_before_established(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = sim.place_call(callback_url=bot.url)
    response = graph.post(f"{CALLS}/{call_id}/recordResponse", json={})
    # Not answered at all: no media config yet.
    _assert_graph_error(response, 403, "InvalidMediaMode")


def test_record_response_refused_while_establishing(bot: Bot) -> None:
    # A slow clock keeps the call in "establishing" long enough to observe it.
    with GraphSimulator("bot", time_scale=10.0) as slow:
        call_id = slow.place_call(callback_url=bot.url)
        headers = {"Authorization": f"Bearer {slow.graph_token()}"}
        base = f"{slow.graph_base_url}{CALLS}/{call_id}"
        assert (
            httpx.post(f"{base}/answer", json=answer_body(bot.url), headers=headers).status_code
            == 202
        )
        response = httpx.post(f"{base}/recordResponse", json={}, headers=headers)
        error = _assert_graph_error(response, 400, "CallNotEstablished")
        assert "8501" in error["message"]


def test_record_response_refused_on_app_hosted_media(
    sim: GraphSimulator, bot: Bot, graph: httpx.Client
) -> None:
    call_id = sim.place_call(callback_url=bot.url)
    body = answer_body(bot.url, media="#microsoft.graph.appHostedMediaConfig")
    assert graph.post(f"{CALLS}/{call_id}/answer", json=body).status_code == 202
    sim.wait_for(lambda: sim.call(call_id).state == "established", timeout=3)
    response = graph.post(f"{CALLS}/{call_id}/recordResponse", json={})
    error = _assert_graph_error(response, 403, "InvalidMediaMode")
    assert "serviceHostedMediaConfig" in error["message"]


def test_record_response_answer_shape(sim: GraphSimulator, bot: Bot, graph: httpx.Client) -> None:
    call_id = _established_call(sim, bot, graph)
    response = graph.post(
        f"{CALLS}/{call_id}/recordResponse",
        json={"clientContext": "d45324c1-fcb5-430a-902c-f20af696537c", "bargeInAllowed": True},
        headers={"client-request-id": "my-id"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "@odata.type": "#microsoft.graph.recordOperation",
        "id": body["id"],
        "status": "running",
        "resultInfo": None,
        "recordingLocation": None,
        "clientContext": "d45324c1-fcb5-430a-902c-f20af696537c",
    }
    assert response.headers["location"] == (
        f"{sim.graph_base_url}/communications/calls/{call_id}/operations/{body['id']}"
    )
    assert response.headers["client-request-id"] == "my-id"
    assert response.headers["request-id"]
    operation = graph.get(response.headers["location"])
    assert operation.json()["id"] == body["id"]
    call = graph.get(f"{CALLS}/{call_id}").json()
    assert call["state"] == "established"
    assert call["@odata.type"] == "#microsoft.graph.call"


def test_api_faults_per_request(sim: GraphSimulator, bot: Bot, graph: httpx.Client) -> None:
    call_id = sim.place_call(callback_url=bot.url)
    sim.add_api_faults("answer", ["429:2", "503"])
    first = graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url))
    _assert_graph_error(first, 429, "TooManyRequests")
    assert first.headers["retry-after"] == "2"
    _assert_graph_error(
        graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url)),
        503,
        "ServiceUnavailable",
    )
    assert graph.post(f"{CALLS}/{call_id}/answer", json=answer_body(bot.url)).status_code == 202
    statuses = [r.status_code for r in sim.requests if r.path.endswith("/answer")]
    assert statuses == [429, 503, 202]
    with pytest.raises(ValueError, match="unknown API fault"):
        sim.add_api_faults("answer", ["reset"])


def test_expired_graph_token_is_refused(sim: GraphSimulator) -> None:
    sim.graph_tokens.lifetime_seconds = -60
    expired = sim.graph_token()
    response = httpx.get(
        f"{sim.graph_base_url}{CALLS}/x", headers={"Authorization": f"Bearer {expired}"}
    )
    error = _assert_graph_error(response, 401, "InvalidAuthenticationToken")
    assert "expired" in error["message"]
