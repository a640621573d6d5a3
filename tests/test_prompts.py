"""The prompts: the shipped files are what Graph plays, the route serves only them, and a
configured prompt URL in the wrong format is reported by /api/health, naming the setting."""

from __future__ import annotations

import io
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.loopback import LoopbackServer
from shared.prompts import PROMPTS_DIR, SHIPPED, prompt_uri, wav_format_problem
from shared.services import Services
from shared.settings import SettingsError, load_settings
from tests.conftest import settings_from
from tests.support.functions import http_request, invoke, json_body


def wav(*, rate: int = 16_000, channels: int = 1, width: int = 2, seconds: float = 0.2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\x00" * int(rate * seconds) * channels * width)
    return out.getvalue()


# -- the shipped files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_prompt_is_pcm_16_bit_mono_16_khz(name: str) -> None:
    path = PROMPTS_DIR / f"{name}.wav"
    with wave.open(str(path), "rb") as reader:
        assert reader.getcomptype() == "NONE"  # PCM
        assert reader.getsampwidth() == 2
        assert reader.getnchannels() == 1
        assert reader.getframerate() == 16_000
        seconds = reader.getnframes() / reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    if SHIPPED[name].text:
        assert 1.0 < seconds < 15.0, seconds
        assert frames.count(0) < len(frames) // 2  # speech, not silence
    else:
        assert (seconds, frames.count(0)) == (1.0, len(frames))  # one second of silence


def test_only_the_shipped_prompts_are_in_the_folder() -> None:
    assert sorted(p.name for p in PROMPTS_DIR.iterdir()) == sorted(f"{n}.wav" for n in SHIPPED)


def test_the_deployment_package_keeps_the_prompts() -> None:
    ignored = (PROMPTS_DIR.parent / ".funcignore").read_text().split()
    assert not any(line.strip("/") in {"prompts", "prompts/*", "*.wav"} for line in ignored)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (wav(), None),
        (wav(rate=22_050), "22050 Hz"),
        (wav(channels=2), "2 channels"),
        (wav(width=1), "8-bit"),
        (b"ID3\x04\x00" + b"\x00" * 200, "not a PCM WAV file"),
    ],
)
def test_wav_format_problem_names_what_graph_would_refuse(
    header: bytes, problem: str | None
) -> None:
    found = wav_format_problem(header[:4096])
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


# -- the route ---------------------------------------------------------------------------------


async def get_prompt(name: str, headers: dict[str, str] | None = None) -> Any:
    return await invoke(
        "prompt",
        http_request(
            "GET",
            f"http://localhost/api/prompts/{name}.wav",
            route_params={"name": name},
            headers=headers,
        ),
    )


@pytest.mark.parametrize("name", sorted(SHIPPED))
async def test_a_shipped_prompt_is_served_cacheable(name: str) -> None:
    response = await get_prompt(name)
    assert response.status_code == 200
    assert response.mimetype == "audio/wav"
    assert response.get_body() == (PROMPTS_DIR / f"{name}.wav").read_bytes()
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    again = await get_prompt(name, {"If-None-Match": response.headers["ETag"]})
    assert (again.status_code, again.get_body()) == (304, b"")


@pytest.mark.parametrize("name", ["beep", "NOTICE", "..%2Fhost", "notice.wav", ""])
async def test_any_other_name_is_a_404_problem(name: str) -> None:
    response = await get_prompt(name)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "notice" in json_body(response)["detail"]


def test_only_the_shipped_names_are_served() -> None:
    assert sorted(SHIPPED) == ["confirm", "notice", "reprompt", "silence", "thank-you"]


# -- which URL the bot uses --------------------------------------------------------------------


def test_unset_prompts_are_the_shipped_ones_and_none_turns_one_off(
    app_env: dict[str, str],
) -> None:
    settings = settings_from(
        {
            **app_env,
            "CALLBACK_BASE_URL": "https://bot.example/",
            "BOT_REPROMPT_URI": "https://cdn.example/again.wav",
            "BOT_THANK_YOU_PROMPT_URI": "None",
        }
    )
    assert prompt_uri(settings, "notice") == "https://bot.example/api/prompts/notice.wav"
    assert prompt_uri(settings, "reprompt") == "https://cdn.example/again.wav"
    assert prompt_uri(settings, "thank-you") is None


def test_a_prompt_setting_that_is_not_a_url_is_refused_by_name(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read from the environment: the error that names the setting is load_settings' own.
    monkeypatch.setenv("BOT_RECORD_PROMPT_URI", "notice.wav")
    with pytest.raises(SettingsError, match="BOT_RECORD_PROMPT_URI"):
        load_settings()


# -- configured prompt URLs in /api/health ------------------------------------------------------


@pytest.fixture(scope="module")
def prompt_host() -> Iterator[tuple[str, Counter[str]]]:
    """Prompts on loopback, one per format; counts the requests per path."""
    files = {
        "/good.wav": wav(),
        "/cd-quality.wav": wav(rate=44_100, channels=2),
        "/song.mp3": b"ID3\x04\x00" + b"\x00" * 4096,
    }
    hits: Counter[str] = Counter()

    async def serve(request: Request) -> Response:
        hits[request.url.path] += 1
        data = files.get(request.url.path)
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="audio/wav")

    app = Starlette(routes=[Route("/{path:path}", serve)])
    with LoopbackServer(app) as server:
        yield server.base_url, hits


async def health() -> tuple[int, dict[str, Any]]:
    response = await invoke("health", http_request("GET", "/api/health"))
    return response.status_code, json_body(response)


@pytest.mark.usefixtures("storage")
async def test_configured_prompts_in_graphs_format_are_healthy(
    configure: Callable[..., Services], prompt_host: tuple[str, Counter[str]]
) -> None:
    base, _ = prompt_host
    configure(BOT_RECORD_PROMPT_URI=f"{base}/good.wav")
    status, body = await health()
    assert (status, body["checks"]["prompts"]) == (200, "ok")


@pytest.mark.usefixtures("storage")
async def test_a_wrong_format_is_reported_by_setting_once_and_logged(
    configure: Callable[..., Services],
    prompt_host: tuple[str, Counter[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    base, hits = prompt_host
    configure(
        BOT_RECORD_PROMPT_URI=f"{base}/cd-quality.wav?sig=secret-sas",
        BOT_REPROMPT_URI=f"{base}/song.mp3",
        BOT_THANK_YOU_PROMPT_URI=f"{base}/missing.wav",
    )
    before = hits.copy()

    status, body = await health()
    again, _ = await health()

    assert status == again == 503
    report = body["checks"]["prompts"]
    assert "BOT_RECORD_PROMPT_URI: 16-bit, 2 channels, 44100 Hz" not in report  # width is fine
    assert "BOT_RECORD_PROMPT_URI: 2 channels, 44100 Hz" in report
    assert "BOT_REPROMPT_URI: not a PCM WAV file" in report
    assert "BOT_THANK_YOU_PROMPT_URI: fetching it answered HTTP 404" in report
    # One fetch each: a verdict is kept for the process.
    paths = ("/cd-quality.wav", "/song.mp3", "/missing.wav", "/good.wav")
    assert [hits[path] - before[path] for path in paths] == [1, 1, 1, 0]
    logged = [r.getMessage() for r in caplog.records if "setting=" in r.getMessage()]
    assert any("setting=BOT_REPROMPT_URI" in line for line in logged)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("shared")]
    assert ours
    assert not any("secret-sas" in line for line in ours)
    assert "secret-sas" not in report
