"""Building the events' collaborators from the settings (called by the composition root).

Kept apart from :mod:`shared.services` so that the root stays a list of properties: the
publisher (the app's managed identity, the topic's endpoint), the deployment's event format, and
the outbox that joins them to the ledger.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from shared.events.cloudevent import EventFormat
from shared.events.outbox import EventOutbox
from shared.events.publisher import EventGridPublisher

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.ledger import OperationLedger
    from shared.settings import Settings
    from shared.storage import StorageClients


def event_publisher(settings: Settings) -> EventGridPublisher:
    """The topic's publisher, authenticated as the app's user-assigned managed identity."""
    from azure.identity.aio import ManagedIdentityCredential

    if not settings.events_endpoint:
        raise RuntimeError("EVENTS_ENDPOINT is not set")
    return EventGridPublisher(
        settings.events_endpoint,
        ManagedIdentityCredential(client_id=settings.managed_identity_client_id),
        timeout_seconds=settings.events_publish_timeout_seconds,
        # Local simulator only (refused in Azure): its TLS listener's CA.
        ca_file=settings.graph_authority_ca_file,
    )


def event_format(settings: Settings, storage: StorageClients) -> Callable[[], EventFormat]:
    """The deployment's event format, built on first use (the container URL loads the Blob SDK)."""

    @functools.cache
    def build() -> EventFormat:
        return EventFormat(
            type_prefix=settings.events_type_prefix,
            source=settings.event_source,
            container_url=storage.container.url,
        )

    return build


def event_outbox(
    settings: Settings, ledger: OperationLedger, storage: StorageClients
) -> EventOutbox:
    return EventOutbox(
        ledger=ledger,
        publisher=event_publisher(settings),
        fmt=event_format(settings, storage),
        queue=lambda: storage.events_queue,
    )
