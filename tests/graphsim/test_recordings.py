"""Recordings: access token, exact bytes, retention, and each fault as named."""

from __future__ import annotations

import hashlib
import struct
import time

import httpx
import pytest

from devtools.graphsim import GraphSimulator


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_served_only_with_its_token(sim: GraphSimulator) -> None:
    rec = sim.add_recording(duration_seconds=1)
    other = sim.add_recording(duration_seconds=1)
    missing = httpx.get(rec.location)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert httpx.get(rec.location, headers=_auth(other.access_token)).status_code == 401
    assert httpx.get(rec.location, headers=_auth(sim.graph_token())).status_code == 401
    ok = httpx.get(rec.location, headers=_auth(rec.access_token))
    assert ok.status_code == 200
    assert rec.request_count == 4


def test_wav_is_byte_identical_to_what_was_generated(sim: GraphSimulator) -> None:
    rec = sim.add_recording(duration_seconds=8)
    response = httpx.get(rec.location, headers=_auth(rec.access_token))
    body = response.content
    assert response.headers["content-type"] == "application/octet-stream"
    assert int(response.headers["content-length"]) == rec.size == len(body) == 44 + 8 * 32000
    assert hashlib.sha256(body).hexdigest() == rec.sha256
    assert body[:4] == b"RIFF"
    assert body[8:16] == b"WAVEfmt "
    fmt, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", body[20:36])
    assert (fmt, channels, rate, byte_rate, align, bits) == (1, 1, 16000, 32000, 2, 16)
    assert body[36:40] == b"data"
    assert struct.unpack("<I", body[40:44])[0] == 8 * 32000
    # Two recordings never share content, even with the same length.
    assert sim.add_recording(duration_seconds=8).sha256 != rec.sha256


def test_large_recording_streams_with_exact_size(sim: GraphSimulator) -> None:
    rec = sim.add_recording(size_bytes=20 * 1024 * 1024 + 7)
    digest = hashlib.sha256()
    received = 0
    with httpx.stream("GET", rec.location, headers=_auth(rec.access_token), timeout=30) as response:
        assert int(response.headers["content-length"]) == rec.size
        for chunk in response.iter_bytes():
            digest.update(chunk)
            received += len(chunk)
    assert received == rec.size == 20 * 1024 * 1024 + 7
    assert digest.hexdigest() == rec.sha256


def test_add_recording_through_the_control_api(sim: GraphSimulator) -> None:
    created = httpx.post(
        f"{sim.base_url}/_sim/recordings", json={"sizeBytes": 1000, "faults": ["503"]}
    ).json()
    assert created["size"] == 1000
    first = httpx.get(created["location"], headers=_auth(created["accessToken"]))
    assert first.status_code == 503
    second = httpx.get(created["location"], headers=_auth(created["accessToken"]))
    assert hashlib.sha256(second.content).hexdigest() == created["sha256"]
    info = httpx.get(f"{sim.base_url}/_sim/recordings/{created['id']}").json()
    assert info["requestCount"] == 2
    bad = httpx.post(f"{sim.base_url}/_sim/recordings", json={"faults": ["teapot"]})
    assert bad.status_code == 400


def test_recording_vanishes_after_its_retention(sim: GraphSimulator) -> None:
    rec = sim.add_recording(duration_seconds=0.5, expires_after_seconds=0.3)
    assert httpx.get(rec.location, headers=_auth(rec.access_token)).status_code == 200
    sim.wait_for(
        lambda: httpx.get(rec.location, headers=_auth(rec.access_token)).status_code == 404,
        timeout=3,
        interval=0.05,
    )
    gone = httpx.get(rec.location, headers=_auth(rec.access_token))
    assert gone.json()["error"]["code"] == "ItemNotFound"


@pytest.mark.parametrize(
    ("fault", "status"), [("503", 503), ("429", 429), ("401", 401), ("404", 404)]
)
def test_status_faults_then_success(sim: GraphSimulator, fault: str, status: int) -> None:
    rec = sim.add_recording(duration_seconds=1, faults=[fault, fault])
    for _ in range(2):
        response = httpx.get(rec.location, headers=_auth(rec.access_token))
        assert response.status_code == status
        assert response.json()["error"]["code"]
        if status in (429, 503):
            assert response.headers["retry-after"] == "1"
    ok = httpx.get(rec.location, headers=_auth(rec.access_token))
    assert ok.status_code == 200
    assert hashlib.sha256(ok.content).hexdigest() == rec.sha256
    assert rec.request_count == 3
    assert rec.pending_faults == []


def test_retry_after_is_configurable(sim: GraphSimulator) -> None:
    rec = sim.add_recording(duration_seconds=1, faults=["429:7"])
    assert httpx.get(rec.location, headers=_auth(rec.access_token)).headers["retry-after"] == "7"


@pytest.mark.parametrize("fault", ["reset", "short"])
def test_truncating_faults_break_the_transfer(sim: GraphSimulator, fault: str) -> None:
    rec = sim.add_recording(size_bytes=300_000, faults=[fault])
    received = 0

    def download() -> None:
        nonlocal received
        with httpx.stream("GET", rec.location, headers=_auth(rec.access_token)) as response:
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == rec.size
            for chunk in response.iter_raw():
                received += len(chunk)

    with pytest.raises(httpx.RemoteProtocolError):
        download()
    assert 0 < received < rec.size
    if fault == "reset":
        assert received <= rec.size // 2
    else:
        assert received >= rec.size - 4096
    ok = httpx.get(rec.location, headers=_auth(rec.access_token))
    assert hashlib.sha256(ok.content).hexdigest() == rec.sha256


def test_slow_fault_trips_a_read_timeout(sim: GraphSimulator) -> None:
    rec = sim.add_recording(size_bytes=300_000, faults=["slow:1.0"])
    started = time.monotonic()
    timeout = httpx.Timeout(5.0, read=0.2)
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream("GET", rec.location, headers=_auth(rec.access_token), timeout=timeout) as r,
    ):
        for _ in r.iter_raw():
            pass
    assert time.monotonic() - started < 1.0
    ok = httpx.get(rec.location, headers=_auth(rec.access_token))
    assert hashlib.sha256(ok.content).hexdigest() == rec.sha256


def test_not_wav_fault_serves_a_body_whose_format_cannot_be_read(sim: GraphSimulator) -> None:
    from shared.blob_layout import wav_facts

    rec = sim.add_recording(duration_seconds=1, faults=["not-wav"])
    response = httpx.get(rec.location, headers=_auth(rec.access_token))
    assert response.status_code == 200
    body = response.content
    assert int(response.headers["content-length"]) == rec.size == len(body)
    assert body[:4] != b"RIFF"
    assert wav_facts(body[:4096], len(body)) is None
    # Only the header differs: the samples are the recording's own.
    ok = httpx.get(rec.location, headers=_auth(rec.access_token)).content
    assert body[44:] == ok[44:]
    assert wav_facts(ok[:4096], len(ok)) is not None


def test_size_and_duration_are_exclusive(sim: GraphSimulator) -> None:
    with pytest.raises(ValueError, match="not both"):
        sim.add_recording(size_bytes=100, duration_seconds=1)
    with pytest.raises(ValueError, match="unknown fault"):
        sim.add_recording(faults=["boom"])
