"""The recording URL guard, and the redirect rules of the fetch (unit tests, no network)."""

from __future__ import annotations

import httpx
import pytest

from shared.download.fetch import TerminalDownloadError, guard, open_recording
from shared.download.url_guard import (
    RecordingHostUnresolvable,
    RecordingUrlRefused,
    UrlPolicy,
    check_recording_url,
    resolve_host,
)

PRODUCTION = UrlPolicy()
LOCAL_DEV = UrlPolicy(allow_insecure=True)
PUBLIC_ADDRESS = "52.114.128.1"


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(addresses)

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/metadata/instance", "scheme 'http'"),
        ("https://169.254.169.254/metadata/instance", "IP address"),
        ("https://127.0.0.1/recording", "IP address"),
        ("https://10.0.0.1/recording", "IP address"),
        ("https://[::1]/recording", "IP address"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://files.example.com/recording.wav", "scheme 'ftp'"),
        ("gopher://files.example.com/", "scheme 'gopher'"),
        ("https://user:secret@files.example.com/rec", "credentials"),
        ("not a url at all", "scheme"),
    ],
)
async def test_refused_in_production_without_resolving(url: str, why: str) -> None:
    resolve = resolving_to(PUBLIC_ADDRESS)
    with pytest.raises(RecordingUrlRefused, match=why):
        await check_recording_url(url, PRODUCTION, resolve=resolve)
    assert resolve.asked == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.10", "private"),
        ("172.16.0.5", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
async def test_names_resolving_to_internal_addresses_are_refused(address: str, why: str) -> None:
    with pytest.raises(RecordingUrlRefused, match=why):
        await check_recording_url(
            "https://file.location/rec", PRODUCTION, resolve=resolving_to(PUBLIC_ADDRESS, address)
        )


async def test_localhost_really_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(RecordingUrlRefused, match="loopback"):
        await check_recording_url("https://localhost/rec", PRODUCTION)


async def test_public_https_name_is_allowed() -> None:
    url = await check_recording_url(
        "https://file.location/17e3b46c?x=1", PRODUCTION, resolve=resolving_to(PUBLIC_ADDRESS)
    )
    assert url.host == "file.location"


async def test_allowed_host_suffixes() -> None:
    policy = UrlPolicy.from_settings(False, [".skype.com", "teams.microsoft.com "])
    resolve = resolving_to(PUBLIC_ADDRESS)
    for ok in ("https://media.skype.com/r", "https://skype.com/r", "https://teams.microsoft.com/r"):
        await check_recording_url(ok, policy, resolve=resolve)
    for bad in ("https://evilskype.com/r", "https://skype.com.evil.net/r"):
        with pytest.raises(RecordingUrlRefused, match="RECORDING_ALLOWED_HOST_SUFFIXES"):
            await check_recording_url(bad, policy, resolve=resolve)


async def test_local_development_allows_http_and_loopback_but_never_metadata() -> None:
    await check_recording_url("http://127.0.0.1:7072/recordings/1", LOCAL_DEV)
    await check_recording_url("http://localhost:7072/recordings/1", LOCAL_DEV)
    with pytest.raises(RecordingUrlRefused, match="link-local"):
        await check_recording_url("http://169.254.169.254/metadata", LOCAL_DEV)
    with pytest.raises(RecordingUrlRefused, match="scheme 'file'"):
        await check_recording_url("file:///etc/passwd", LOCAL_DEV)


async def test_unresolvable_host_is_transient_not_refused() -> None:
    with pytest.raises(RecordingHostUnresolvable):
        await resolve_host("no-such-host.invalid", 443)


async def test_guard_maps_refusal_to_a_terminal_error_without_the_url_query() -> None:
    with pytest.raises(TerminalDownloadError) as caught:
        await guard("https://10.0.0.1/rec?sig=supersecret", PRODUCTION)
    assert "supersecret" not in caught.value.reason


def transport(log: list[httpx.Request], routes: dict[str, httpx.Response]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        log.append(request)
        return routes[str(request.url)]

    return httpx.MockTransport(handle)


async def test_redirect_to_another_host_does_not_carry_the_token() -> None:
    seen: list[httpx.Request] = []
    routes = {
        "https://file.location/rec": httpx.Response(
            302, headers={"Location": "https://cdn.example.net/blob"}
        ),
        "https://cdn.example.net/blob": httpx.Response(200, content=b"RIFF"),
    }
    async with httpx.AsyncClient(transport=transport(seen, routes)) as http:
        url = await guard("https://file.location/rec", PRODUCTION, resolving_to(PUBLIC_ADDRESS))
        async with open_recording(
            http, url, "tok", PRODUCTION, resolve=resolving_to(PUBLIC_ADDRESS)
        ) as response:
            assert await response.aread() == b"RIFF"
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert "authorization" not in seen[1].headers


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://file.location/rec2", "scheme 'http'"),
        ("https://169.254.169.254/latest", "IP address"),
        ("file:///etc/passwd", "scheme 'file'"),
    ],
)
async def test_redirect_targets_are_guarded(location: str, why: str) -> None:
    seen: list[httpx.Request] = []
    routes = {"https://file.location/rec": httpx.Response(307, headers={"Location": location})}
    async with httpx.AsyncClient(transport=transport(seen, routes)) as http:
        url = await guard("https://file.location/rec", PRODUCTION, resolving_to(PUBLIC_ADDRESS))
        with pytest.raises(TerminalDownloadError, match=why):
            async with open_recording(
                http, url, "tok", PRODUCTION, resolve=resolving_to(PUBLIC_ADDRESS)
            ):
                pass
    assert len(seen) == 1


async def test_redirect_loops_stop() -> None:
    seen: list[httpx.Request] = []
    routes = {
        "https://file.location/a": httpx.Response(302, headers={"Location": "/b"}),
        "https://file.location/b": httpx.Response(302, headers={"Location": "/a"}),
    }
    async with httpx.AsyncClient(transport=transport(seen, routes)) as http:
        url = await guard("https://file.location/a", PRODUCTION, resolving_to(PUBLIC_ADDRESS))
        with pytest.raises(TerminalDownloadError, match="redirected more than 3"):
            async with open_recording(
                http, url, "tok", PRODUCTION, resolve=resolving_to(PUBLIC_ADDRESS)
            ):
                pass
    assert len(seen) == 4
    # Same origin: the token may follow a redirect within the original host.
    assert all(r.headers["authorization"] == "Bearer tok" for r in seen)
