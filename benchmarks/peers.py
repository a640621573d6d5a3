"""The peers: what a user would otherwise pick, measured on the same rig as the app.

- the inline peer, the approach of Microsoft's C# recordResponse sample: the webhook handler
  validates the notification's token, reads the completed ``recordOperation``, downloads the
  recording from ``recordingLocation`` with ``recordingAccessToken`` into memory and uploads it
  to Blob Storage in one request, then answers. No queue, no ledger, no claim, no hashing.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from azure.storage.blob.aio import ContainerClient

    from shared.auth.inbound import InboundTokenValidator


class InlinePeer:
    """A webhook that stores the recording before it answers (no durability in between)."""

    def __init__(
        self, validator: InboundTokenValidator, http: httpx.AsyncClient, container: ContainerClient
    ) -> None:
        self._validator = validator
        self._http = http
        self._container = container

    async def handle(self, body: dict[str, Any], authorization: str, expected_size: int) -> float:
        """Seconds from the notification's arrival to the blob uploaded (the peer's answer)."""
        started = time.perf_counter()
        await self._validator.validate_authorization(authorization)
        payload = json.loads(json.dumps(body))  # the request body, as the handler reads it
        data = payload["value"][0]["resourceData"]
        response = await self._http.get(
            data["recordingLocation"],
            headers={"Authorization": f"Bearer {data['recordingAccessToken']}"},
        )
        response.raise_for_status()
        content = response.content
        # One Put Blob: the SDK sends a body below max_single_put_size (64 MiB) in one request.
        await self._container.upload_blob(f"peer-{uuid.uuid4()}.wav", content, overwrite=True)
        elapsed = time.perf_counter() - started
        if len(content) != expected_size:
            raise RuntimeError(f"inline peer stored {len(content)} of {expected_size} bytes")
        return elapsed
