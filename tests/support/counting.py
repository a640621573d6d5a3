"""A real storage transport that remembers each request it sends (retries included)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.pipeline.transport import AioHttpTransport


class CountingTransport(AioHttpTransport):
    """The real aiohttp transport, remembering every request it sends (retries included)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[str, str, dict[str, list[str]]]] = []

    async def send(self, request: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url)
        self.sent.append((request.method, url.path, parse_qs(url.query)))
        return await super().send(request, **kwargs)
