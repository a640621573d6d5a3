"""The app's storage clients, built in one place from the ``AzureWebJobsStorage`` settings.

Locally that is a connection string (Azurite); in Azure it is identity-based: the service URIs
with the user-assigned managed identity (``AzureWebJobsStorage__clientId``). The clients are
async (aiohttp transport) and created once per event loop: the Functions worker runs every async
function on one loop, so in Azure that means once per worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.queues import (
    DOWNLOAD_QUEUE,
    EVENTS_POISON_QUEUE,
    EVENTS_QUEUE,
    POISON_QUEUE,
    TRANSCRIPTION_POISON_QUEUE,
    TRANSCRIPTION_QUEUE,
)

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables.aio import TableClient, TableServiceClient
    from azure.storage.blob.aio import BlobServiceClient, ContainerClient
    from azure.storage.queue.aio import QueueClient

    from shared.settings import Settings

RECORDINGS_CONTAINER = "recordings"
OPERATIONS_TABLE = "recordingoperations"

# Explicit, short timeouts: the webhook must answer within a few hundred milliseconds, and the
# SDK's own defaults (minutes, with long retry chains) would hold a notification hostage.
CONNECTION_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 20
RETRY_TOTAL = 3
# Making sure the resources exist is a few small requests; past this the request goes on without.
ENSURE_TIMEOUT_SECONDS = 3.0
ENSURE_RETRY_SECONDS = 30.0
log = logging.getLogger(__name__)


class Resource(StrEnum):
    """A storage resource the app creates when it is missing (see :meth:`StorageClients.ensure_once`)."""

    QUEUE = "queue"
    POISON_QUEUE = "poison_queue"
    CONTAINER = "container"
    TABLE = "table"
    TRANSCRIPTION_QUEUE = "transcription_queue"
    TRANSCRIPTION_POISON_QUEUE = "transcription_poison_queue"
    EVENTS_QUEUE = "events_queue"
    EVENTS_POISON_QUEUE = "events_poison_queue"


ALL_RESOURCES = frozenset(Resource)


def _client_options() -> dict[str, Any]:
    return {
        "connection_timeout": CONNECTION_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
        "retry_total": RETRY_TOTAL,
        "retry_backoff_factor": 0.2,
        "retry_backoff_max": 2,
    }


def _lenient_base64_decoder() -> Any:
    """Base64 like the trigger; a message that is not base64 comes back as its raw UTF-8 bytes.

    The poison queue collects what the trigger could not handle, including text another writer
    put there unencoded. With the strict policy one such message fails every receive, and the
    cleanup could never purge the tokens in the messages beside it.
    """
    from azure.core.exceptions import DecodeError
    from azure.storage.queue import BinaryBase64DecodePolicy

    class LenientBase64DecodePolicy(BinaryBase64DecodePolicy):
        def decode(self, content: str, response: Any) -> bytes:
            try:
                return super().decode(content, response)
            except DecodeError:
                return content.encode("utf-8")

    return LenientBase64DecodePolicy()


def _storage_retry_options() -> dict[str, Any]:
    # Queue and blob clients retry with the storage SDK's own ExponentialRetry, which ignores
    # retry_backoff_*: its defaults sleep 15 s and more before each retry (about 90 s in all).
    return {"initial_backoff": 0, "increment_base": 1, "random_jitter_range": 0.5}


@dataclass
class StorageClients:
    """Queue, blob and table clients for the app's resources, sharing one credential."""

    settings: Settings
    queue_name: str = DOWNLOAD_QUEUE
    poison_queue_name: str = POISON_QUEUE
    container_name: str = RECORDINGS_CONTAINER
    table_name: str = OPERATIONS_TABLE
    _credential: AsyncTokenCredential | None = field(default=None, init=False, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _ensured: frozenset[Resource] = field(default=frozenset(), init=False, repr=False)
    _ensure_again_at: float = field(default=0.0, init=False, repr=False)
    _ensuring: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def _managed_identity(self) -> AsyncTokenCredential:
        if self._credential is None:
            from azure.identity.aio import ManagedIdentityCredential

            self._credential = ManagedIdentityCredential(client_id=self.settings.storage_client_id)
        return self._credential

    def _client(self, client_type: Any, kind: str, *args: Any, **options: Any) -> Any:
        """A ``client_type`` for the ``kind`` service, the way the settings say to reach it.

        With a connection string it is used as is; otherwise (identity-based storage) the
        settings' validator has made sure the service URIs are set.
        """
        if not self.settings.uses_identity_based_storage:
            return client_type.from_connection_string(
                self.settings.storage_connection_string, *args, **options
            )
        uri = getattr(self.settings, f"storage_{kind}_service_uri")
        return client_type(uri, *args, credential=self._managed_identity(), **options)

    def _cached(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _queue(self, name: str) -> QueueClient:
        from azure.storage.queue import TextBase64EncodePolicy
        from azure.storage.queue.aio import QueueClient

        # The queue trigger reads base64 (host.json messageEncoding); write what it reads.
        client: QueueClient = self._cached(
            f"queue:{name}",
            lambda: self._client(
                QueueClient,
                "queue",
                name,
                message_encode_policy=TextBase64EncodePolicy(),
                message_decode_policy=_lenient_base64_decoder(),
                **_client_options(),
                **_storage_retry_options(),
            ),
        )
        return client

    @property
    def queue(self) -> QueueClient:
        return self._queue(self.queue_name)

    @property
    def poison_queue(self) -> QueueClient:
        return self._queue(self.poison_queue_name)

    @property
    def transcription_queue(self) -> QueueClient:
        """``recording-transcriptions`` (used only when transcription is enabled)."""
        return self._queue(TRANSCRIPTION_QUEUE)

    @property
    def transcription_poison_queue(self) -> QueueClient:
        return self._queue(TRANSCRIPTION_POISON_QUEUE)

    @property
    def events_queue(self) -> QueueClient:
        """``recording-events``: lifecycle events whose first publish failed (EVENTS_ENDPOINT)."""
        return self._queue(EVENTS_QUEUE)

    @property
    def events_poison_queue(self) -> QueueClient:
        return self._queue(EVENTS_POISON_QUEUE)

    @property
    def blob_service(self) -> BlobServiceClient:
        from azure.storage.blob.aio import BlobServiceClient

        client: BlobServiceClient = self._cached(
            "blob",
            lambda: self._client(
                BlobServiceClient, "blob", **_client_options(), **_storage_retry_options()
            ),
        )
        return client

    @property
    def container(self) -> ContainerClient:
        # Built once: each download and each status read uses it (a client costs its pipeline).
        client: ContainerClient = self._cached(
            "container", lambda: self.blob_service.get_container_client(self.container_name)
        )
        return client

    @property
    def table_service(self) -> TableServiceClient:
        from azure.data.tables.aio import TableServiceClient

        client: TableServiceClient = self._cached(
            "table", lambda: self._client(TableServiceClient, "table", **_client_options())
        )
        return client

    @property
    def table(self) -> TableClient:
        client: TableClient = self._cached(
            "table_client", lambda: self.table_service.get_table_client(self.table_name)
        )
        return client

    def _creators(self) -> dict[Resource, Callable[[], Awaitable[Any]]]:
        return {
            Resource.QUEUE: lambda: self.queue.create_queue(),
            Resource.POISON_QUEUE: lambda: self.poison_queue.create_queue(),
            Resource.CONTAINER: lambda: self.container.create_container(),
            Resource.TABLE: lambda: self.table_service.create_table_if_not_exists(self.table_name),
            Resource.TRANSCRIPTION_QUEUE: lambda: self.transcription_queue.create_queue(),
            Resource.TRANSCRIPTION_POISON_QUEUE: (
                lambda: self.transcription_poison_queue.create_queue()
            ),
            Resource.EVENTS_QUEUE: lambda: self.events_queue.create_queue(),
            Resource.EVENTS_POISON_QUEUE: lambda: self.events_poison_queue.create_queue(),
        }

    async def ensure_resources(self, resources: Iterable[Resource] = ALL_RESOURCES) -> None:
        """Create ``resources`` (default: all) if missing, concurrently; existing is fine.

        Only the clients of the named resources are built: a path that names the queue alone
        never loads the Blob or Tables SDK.
        """
        from azure.core.exceptions import ResourceExistsError

        creators = self._creators()

        async def create(resource: Resource) -> None:
            with contextlib.suppress(ResourceExistsError):
                await creators[resource]()

        await asyncio.gather(*(create(resource) for resource in resources))

    async def ensure_once(
        self,
        resources: Iterable[Resource] = ALL_RESOURCES,
        *,
        within: float = ENSURE_TIMEOUT_SECONDS,
    ) -> bool:
        """:meth:`ensure_resources` for those of ``resources`` not made sure of yet (per process).

        A fresh account (a new Azurite, or Azure before anything ran) then works from the first
        request. A failure is logged and tried again on a later call; the request goes on, and
        its own storage call decides its answer (a 503 when storage is really down).
        """
        wanted = frozenset(resources)
        if wanted <= self._ensured or time.monotonic() < self._ensure_again_at:
            return wanted <= self._ensured
        async with self._ensuring:
            missing = wanted - self._ensured
            if not missing or time.monotonic() < self._ensure_again_at:
                return not missing
            try:
                await asyncio.wait_for(self.ensure_resources(sorted(missing)), within)
            except Exception as error:
                # Not again for a while: while storage is down, requests must not each wait here.
                self._ensure_again_at = time.monotonic() + ENSURE_RETRY_SECONDS
                log.warning(
                    "storage: could not make sure the app's resources exist (%s)",
                    type(error).__name__,
                )
                return False
            self._ensured |= missing
            return True

    async def close(self) -> None:
        for client in self._cache.values():
            await client.close()
        self._cache.clear()
        if self._credential is not None:
            await self._credential.close()
            self._credential = None
