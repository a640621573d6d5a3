"""The composition root: every collaborator a trigger needs, built in one place, one per loop.

Triggers ask :func:`app_services` for a :class:`Services` and pass its parts to the plain-Python
core. The Functions worker runs every async function on one event loop, so in Azure this is one
object per worker process: one set of storage clients, one Graph client with its token cache, one
inbound-token validator with its key cache, one HTTP pool for recording locations. The aiohttp and
httpx sessions inside are bound to the loop that created them, hence one per loop (tests and the
local host run several loops in one process).

The staleness rule is the settings object: services built from :func:`get_settings` are rebuilt
when it returns another object (a test or the local host reloaded the settings); services put in
place with :func:`use_services` stay until replaced. Replaced services stay open until
:func:`close_services`, which closes all of the loop's at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING

from shared.bot.hooks import CallEventHandler, LoggingCallEventHandler
from shared.clock import utc_now
from shared.erasure import erase_operation
from shared.ledger import OperationLedger, OperationRecord
from shared.recording_access import recording_url
from shared.settings import get_settings
from shared.storage import Resource, StorageClients

if TYPE_CHECKING:
    import httpx
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.auth.inbound import InboundTokenValidator
    from shared.auth.management import ManagementAuth
    from shared.events.outbox import EventOutbox
    from shared.graph.client import GraphCallsClient
    from shared.graph.permission import GraphPermissionCheck
    from shared.messaging.auth import BotFrameworkTokenValidator
    from shared.messaging.connector import BotConnectorClient
    from shared.prompts import PromptChecks
    from shared.settings import Settings
    from shared.transcription.speech import SpeechClient


class Services:
    """The app's collaborators for one event loop; the expensive ones are built on first use."""

    def __init__(self, settings: Settings, *, storage: StorageClients | None = None) -> None:
        self.settings = settings
        self.storage = storage or StorageClients(settings)
        self._ledger: OperationLedger | None = None
        self._graph: GraphCallsClient | None = None
        self._inbound: InboundTokenValidator | None = None
        self._recording_http: httpx.AsyncClient | None = None
        self._speech: SpeechClient | None = None
        self._prompt_checks: PromptChecks | None = None
        self._bot_credential: AsyncTokenCredential | None = None
        self._graph_permission: GraphPermissionCheck | None = None
        self._channel_auth: BotFrameworkTokenValidator | None = None
        self._bot_connector: BotConnectorClient | None = None
        self._events: EventOutbox | None = None

    @property
    def ledger(self) -> OperationLedger:
        # Built on first use: the table client loads the Tables SDK, which a webhook that only
        # queues download jobs never needs.
        if self._ledger is None:
            self._ledger = OperationLedger(self.storage.table)
            # Events on: each step's write carries its event marker and is announced.
            self._ledger.events = self.events
        return self._ledger

    @property
    def events(self) -> EventOutbox | None:
        """The lifecycle events' outbox (EVENTS_ENDPOINT), None when events are off."""
        if self._events is None and self.settings.events_enabled:
            from shared.events.wiring import event_outbox

            self._events = event_outbox(self.settings, self.ledger, self.storage)
        return self._events

    async def ready_ledger(self) -> OperationLedger:
        """:attr:`ledger`, with its table created first if missing (once per process)."""
        await self.storage.ensure_once((Resource.TABLE,))
        return self.ledger

    @property
    def bot_credential(self) -> AsyncTokenCredential:
        """The bot's one credential: its Graph tokens and its Bot Connector tokens."""
        if self._bot_credential is None:
            from shared.graph.credentials import graph_credential

            self._bot_credential = graph_credential(self.settings)
        return self._bot_credential

    @property
    def graph(self) -> GraphCallsClient:
        if self._graph is None:
            from shared.graph.client import GraphCallsClient

            self._graph = GraphCallsClient(self.settings.graph_base_url, self.bot_credential)
        return self._graph

    @property
    def graph_permission(self) -> GraphPermissionCheck:
        """Whether the bot's Graph token carries Calls.AccessMedia.All (for /api/health)."""
        if self._graph_permission is None:
            from shared.graph.permission import GraphPermissionCheck

            self._graph_permission = GraphPermissionCheck(self.bot_credential)
        return self._graph_permission

    @property
    def channel_auth(self) -> BotFrameworkTokenValidator:
        """The Bot Connector's tokens on /api/messages, with their own key cache."""
        if self._channel_auth is None:
            from shared.messaging.auth import channel_validator_from_settings

            self._channel_auth = channel_validator_from_settings(self.settings)
        return self._channel_auth

    @property
    def bot_connector(self) -> BotConnectorClient:
        if self._bot_connector is None:
            from shared.messaging.connector import BotConnectorClient

            self._bot_connector = BotConnectorClient(self.bot_credential)
        return self._bot_connector

    @property
    def inbound(self) -> InboundTokenValidator:
        if self._inbound is None:
            from shared.auth.inbound import validator_from_settings

            self._inbound = validator_from_settings(self.settings)
        return self._inbound

    @property
    def recording_http(self) -> httpx.AsyncClient:
        if self._recording_http is None or self._recording_http.is_closed:
            from shared.download.fetch import new_http_client

            self._recording_http = new_http_client()
        return self._recording_http

    @property
    def speech(self) -> SpeechClient:
        """Fast transcription with the managed identity (TRANSCRIPTION_ENDPOINT)."""
        if self._speech is None:
            from azure.identity.aio import ManagedIdentityCredential

            from shared.transcription.speech import SpeechClient

            if not self.settings.transcription_endpoint:
                raise RuntimeError("TRANSCRIPTION_ENDPOINT is not set")
            self._speech = SpeechClient(
                self.settings.transcription_endpoint,
                ManagedIdentityCredential(client_id=self.settings.managed_identity_client_id),
            )
        return self._speech

    @property
    def prompt_checks(self) -> PromptChecks:
        """The configured prompt URLs' format checks, each kept once it has a verdict."""
        if self._prompt_checks is None:
            from shared.prompts import PromptChecks

            self._prompt_checks = PromptChecks(self.settings, self.recording_http)
        return self._prompt_checks

    def call_events(self) -> CallEventHandler:
        """Where call and prompt notifications go: the bot flow when enabled, else a log line.

        The one place that decides whether the bot flow handles call events.
        """
        if not self.settings.bot_flow_enabled:
            return LoggingCallEventHandler()
        from shared.bot.flow import BotFlow

        return BotFlow(
            self.graph,
            self.ledger,
            self.settings,
            queue=self.storage.queue,
            playback_url=self._playback_url,
            erase=self._erase,
        )

    # The confirmation's collaborators reach the blob client only when called: a webhook that
    # never plays a recording back or erases one never loads the Blob SDK.

    async def _playback_url(self, record: OperationRecord) -> str | None:
        """A short-lived read URL of a stored recording, for Graph to play it to the caller."""
        url = await recording_url(
            record,
            blob_service=self.storage.blob_service,
            container_name=self.storage.container_name,
            now=utc_now(),
            ttl=timedelta(minutes=self.settings.status_url_ttl_minutes),
        )
        return url.url if url else None

    async def _erase(self, call_id: str, operation_id: str) -> object:
        return await erase_operation(
            call_id, operation_id, ledger=self.ledger, container=self.storage.container
        )

    async def ready_call_events(self) -> CallEventHandler:
        """:meth:`call_events`, with the ledger's table created first when the bot flow is on.

        The bot flow keeps its state in the ledger; the logging handler touches no storage.
        """
        if self.settings.bot_flow_enabled:
            await self.ready_ledger()
        return self.call_events()

    async def aclose(self) -> None:
        """Close every client this object opened (safe to call twice)."""
        if self._bot_connector is not None:
            await self._bot_connector.aclose()
            self._bot_connector = None
        if self._events is not None:
            await self._events.aclose()  # publishes in flight end first: they use storage
            self._events = None
        if self._graph is not None:
            await self._graph.aclose()  # closes the bot's credential too
            self._graph = None
            self._bot_credential = None
        if self._bot_credential is not None:
            await self._bot_credential.close()
            self._bot_credential = None
        if self._recording_http is not None:
            await self._recording_http.aclose()
            self._recording_http = None
        if self._speech is not None:
            await self._speech.aclose()
            self._speech = None
        await self.storage.close()

    @property
    def management_auth(self) -> ManagementAuth:
        """Who may call the management routes: Entra ID tokens with app roles (its key cache)."""
        auth: ManagementAuth | None = getattr(self, "_management_auth", None)
        if auth is None:
            from shared.auth.management import management_auth_from_settings

            auth = management_auth_from_settings(self.settings)
            self._management_auth = auth
        return auth


class _Slot:
    """The loop's current services, and those they replaced (closed with them at shutdown)."""

    __slots__ = ("pinned", "retired", "services")

    def __init__(self, services: Services, *, pinned: bool, retired: list[Services]) -> None:
        self.services = services
        self.pinned = pinned
        self.retired = retired


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slot] = weakref.WeakKeyDictionary()


def app_services() -> Services:
    """The running loop's services (raises :class:`SettingsError` when settings are invalid)."""
    loop = asyncio.get_running_loop()
    slot = _per_loop.get(loop)
    if slot is not None and slot.pinned:
        return slot.services
    settings = get_settings()
    if slot is not None and slot.services.settings is settings:
        return slot.services
    services = Services(settings)
    _per_loop[loop] = _Slot(services, pinned=False, retired=_retire(slot))
    return services


async def ready_services() -> Services:
    """:func:`app_services`, with the app's storage resources created on first use."""
    services = app_services()
    await services.storage.ensure_once()
    return services


def use_services(services: Services) -> None:
    """Make ``services`` the running loop's, until replaced (tests, the local host, benchmarks)."""
    loop = asyncio.get_running_loop()
    previous = _per_loop.get(loop)
    retired = _retire(previous) if previous and previous.services is not services else []
    _per_loop[loop] = _Slot(services, pinned=True, retired=retired)


async def close_services() -> None:
    """Close and forget the running loop's services, current and replaced (at shutdown)."""
    slot = _per_loop.pop(asyncio.get_running_loop(), None)
    if slot is None:
        return
    for services in [*slot.retired, slot.services]:
        with contextlib.suppress(Exception):
            await services.aclose()


def _retire(slot: _Slot | None) -> list[Services]:
    # Replaced services are not closed at once: a caller may still hold their clients.
    return [] if slot is None else [*slot.retired, slot.services]
