"""Local Microsoft Graph calling simulator (development and test tool, never deployed)."""

from .keys import NOTIFICATION_ISSUER, SigningKey
from .models import SCENARIOS, Call, CallOptions, Delivery, Operation, RequestRecord
from .server import DEFAULT_TENANT_ID, GraphSimulator, RecordingHandle

__all__ = [
    "DEFAULT_TENANT_ID",
    "NOTIFICATION_ISSUER",
    "SCENARIOS",
    "Call",
    "CallOptions",
    "Delivery",
    "GraphSimulator",
    "Operation",
    "RecordingHandle",
    "RequestRecord",
    "SigningKey",
]
