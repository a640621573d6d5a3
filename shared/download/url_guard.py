"""Decide whether a recording location may be fetched, before any byte leaves the process.

The location comes from a notification: if an attacker could forge one, the worker would fetch
whatever it names with the recording's bearer token and store the answer. So only public https
hosts are fetched: no IP literal, no name that resolves to a loopback, private, link-local (the
instance metadata service lives at 169.254.169.254), unspecified, reserved or multicast address,
and, when configured, only hosts under an allowed suffix.

Known limit: the name is resolved here and again by the HTTP client when it connects, so a DNS
answer that changes in between (rebinding) is not caught; the allow-list of host suffixes is the
defence for deployments that need it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

# httpx loads where a request is made: the webhook, which imports this, never needs it.
if TYPE_CHECKING:
    import httpx


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Given a host and port, the addresses it resolves to (as strings).
Resolver = Callable[[str, int], Awaitable[list[str]]]

RESOLVE_TIMEOUT_SECONDS = 5.0


class RecordingUrlRefused(ValueError):
    """The recording location is not one the worker may fetch (the message says why, no secret)."""


class RecordingHostUnresolvable(OSError):
    """The host name did not resolve (DNS may be having a bad moment: worth a retry)."""


@dataclass(frozen=True)
class UrlPolicy:
    """What the guard allows; built from the app settings."""

    allow_insecure: bool = False
    allowed_host_suffixes: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, allow_insecure: bool, suffixes: Sequence[str]) -> UrlPolicy:
        cleaned = tuple(s.strip().lower().strip(".") for s in suffixes if s.strip().strip("."))
        return cls(allow_insecure=allow_insecure, allowed_host_suffixes=cleaned)


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address the host resolves to, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError) as error:
        raise RecordingHostUnresolvable(f"recording host {host!r} did not resolve") from error
    return [str(info[4][0]) for info in infos]


def _describe_forbidden(address: IPAddress, policy: UrlPolicy) -> str | None:
    """Why this address may not be fetched, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Loopback first: IPv6 ::1 also counts as reserved, and local development needs it.
    if address.is_loopback:
        return None if policy.allow_insecure else "a loopback address"
    # Never allowed, not even in local development: the metadata service and friends.
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if policy.allow_insecure:
        # Local development: the simulator and containers live on loopback or private networks.
        return None
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a non-public address"
    return None


def _host_allowed(host: str, suffixes: tuple[str, ...]) -> bool:
    return not suffixes or any(host == s or host.endswith("." + s) for s in suffixes)


async def check_recording_url(
    url: str | httpx.URL,
    policy: UrlPolicy,
    *,
    resolve: Resolver = resolve_host,
) -> httpx.URL:
    """The parsed URL if the worker may fetch it; raises :class:`RecordingUrlRefused` otherwise.

    Raises :class:`RecordingHostUnresolvable` when the host does not resolve right now.
    """
    import httpx

    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise RecordingUrlRefused("recording location is not a valid URL") from None
    scheme = parsed.scheme.lower()
    if scheme != "https" and not (scheme == "http" and policy.allow_insecure):
        allowed = "https or http" if policy.allow_insecure else "https"
        raise RecordingUrlRefused(
            f"recording location scheme {scheme or '(none)'!r}: only {allowed}"
        )
    if parsed.userinfo:
        raise RecordingUrlRefused("recording location carries credentials in its URL")
    host = parsed.host.lower().rstrip(".")
    if not host:
        raise RecordingUrlRefused("recording location has no host")
    if not _host_allowed(host, policy.allowed_host_suffixes):
        raise RecordingUrlRefused(
            f"recording host {host!r} is not under RECORDING_ALLOWED_HOST_SUFFIXES"
        )
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not policy.allow_insecure:
            raise RecordingUrlRefused(f"recording host {host!r} is an IP address, not a name")
        addresses = [host]
    else:
        port = parsed.port or (443 if scheme == "https" else 80)
        addresses = await resolve(host, port)
        if not addresses:
            raise RecordingHostUnresolvable(f"recording host {host!r} did not resolve")
    for text in addresses:
        # Scoped IPv6 answers look like "fe80::1%eth0".
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = _describe_forbidden(address, policy)
        if reason is not None:
            raise RecordingUrlRefused(f"recording host {host!r} resolves to {reason}")
    return parsed


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Whether two URLs share scheme, host and port (the bearer token may follow)."""
    return (a.scheme, a.host.lower(), a.port or _default_port(a)) == (
        b.scheme,
        b.host.lower(),
        b.port or _default_port(b),
    )


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
