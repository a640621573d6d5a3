"""The download job: what the webhook puts on ``recording-downloads`` for the worker.

The message carries the recording's access token (the worker needs it), so it is short-lived:
its time-to-live matches how long the platform keeps a recording, and the cleanup purges
poisoned copies after a few minutes. It may also carry the sender's W3C ``traceparent``, so the
worker's spans join the webhook's trace (optional: older messages without it still work).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from pydantic import (
    Field,
    SecretStr,
    field_serializer,
)

from shared.graph.ids import normalize_id, parse_resource_url
from shared.graph.models import CommsNotification, RecordOperation
from shared.job_message import JobMessageModel, MessageKind
from shared.queue_jobs import InvalidJobMessage


class InvalidJobError(InvalidJobMessage):
    """A queue message that is not a download job (the message says which field, never secrets)."""


class DownloadJob(JobMessageModel):
    """Version 1 of the download job message."""

    kind: ClassVar[MessageKind] = MessageKind("download", "a download job", InvalidJobError)

    client_context: str | None = None
    tenant_id: str | None = None
    recording_location: str = Field(min_length=1)
    recording_access_token: SecretStr
    result_code: int | None = None
    result_subcode: int | None = None
    result_message: str | None = None
    received_at: datetime
    # The webhook's span context; None when nothing was traced or the message predates it.
    traceparent: str | None = None

    @field_serializer("recording_access_token", when_used="json")
    def _reveal_on_the_queue(self, token: SecretStr) -> str:
        # Only the JSON form written to the queue carries the token; repr() and logs never do.
        return token.get_secret_value()

    @classmethod
    def from_notification(
        cls,
        notification: CommsNotification,
        *,
        tenant_id: str | None,
        received_at: datetime | None = None,
    ) -> DownloadJob:
        """The job for a completed ``recordOperation`` notification that has a location."""
        operation = notification.resource_data
        if not isinstance(operation, RecordOperation):
            raise InvalidJobError("notification is not a recordOperation")
        return cls.from_operation(
            operation,
            call_id=call_id_of(notification),
            tenant_id=tenant_id,
            received_at=received_at,
        )

    @classmethod
    def from_operation(
        cls,
        operation: RecordOperation,
        *,
        call_id: str,
        tenant_id: str | None,
        received_at: datetime | None = None,
    ) -> DownloadJob:
        if not operation.recording_location or operation.recording_access_token is None:
            raise InvalidJobError("recordOperation has no recordingLocation or access token")
        if not operation.id:
            raise InvalidJobError("recordOperation has no id")
        result = operation.result_info
        return cls(
            call_id=normalize_id(call_id),
            operation_id=normalize_id(operation.id),
            client_context=operation.client_context,
            tenant_id=tenant_id,
            recording_location=operation.recording_location,
            recording_access_token=operation.recording_access_token,
            result_code=result.code if result else None,
            result_subcode=result.subcode if result else None,
            result_message=result.message if result else None,
            received_at=received_at or datetime.now(UTC),
        )


def call_id_of(notification: CommsNotification) -> str:
    ids = parse_resource_url(notification.resource_url)
    if ids is None:
        raise InvalidJobError("resourceUrl is not a call or operation URL")
    return normalize_id(ids.call_id)
