"""State of simulated calls and operations, and the records kept for inspection."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

SCENARIOS = ("max-duration", "stop-tone", "initial-silence", "hangup", "prompt-failed")

# resultInfo values (code, subcode, message) used by the simulator. The subcodes are the ones
# Microsoft documents for record operations (DESIGN.md); 8515's message is the source document's.
RESULT_MAX_DURATION = (200, 8515, "Action completed, max record duration reached.")
RESULT_STOP_TONE = (200, 8514, "Action completed, stop tone detected.")
RESULT_INITIAL_SILENCE = (400, 8510, "Action failed, initial silence timeout reached.")
RESULT_PROMPT_FAILED = (500, 8511, "Action failed, play prompt failed.")
RESULT_CANCELED = (400, 8508, "Action failed, the operation was canceled.")
RESULT_PROMPT_COMPLETED = (200, 0, "Action completed successfully.")
RESULT_CALL_ENDED = (200, 0, "The conversation has ended.")
RESULT_NOT_ANSWERED = (408, 0, "The call was not answered in time.")


def result_info(code: int, subcode: int, message: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.resultInfo",
        "code": code,
        "subcode": subcode,
        "message": message,
    }


@dataclass
class CallOptions:
    """Per-call choices made when the call is placed."""

    scenario: str = "max-duration"
    callback_url: str | None = None
    duplicate_established: bool = False
    out_of_order: bool = False
    notification_delay_seconds: float = 0.0
    duplicate_completion: bool = False
    recording_faults: list[str] = field(default_factory=list)
    # How long the caller speaks (simulated seconds) in the stop-tone scenario.
    speech_seconds: float = 3.0
    # The caller hangs up this many simulated seconds after the last operation completes.
    hangup_after_completion_seconds: float | None = None


@dataclass
class Operation:
    id: str
    call_id: str
    kind: str  # "record" or "playPrompt"
    client_context: str | None
    params: dict[str, Any]
    status: str = "notStarted"
    result: dict[str, Any] | None = None
    recording_id: str | None = None
    recording_location: str | None = None
    recording_access_token: str | None = field(default=None, repr=False)
    etag: int = 1
    created_at: float = field(default_factory=time.time)

    @property
    def odata_type(self) -> str:
        return (
            "#microsoft.graph.recordOperation"
            if self.kind == "record"
            else "#microsoft.graph.playPromptOperation"
        )

    def resource(self) -> dict[str, Any]:
        """The operation as Graph returns it from POST and GET (the source document's shape)."""
        body: dict[str, Any] = {
            "@odata.type": self.odata_type,
            "id": self.id,
            "status": self.status,
            "resultInfo": self.result,
        }
        if self.kind == "record":
            body["recordingLocation"] = self.recording_location
        body["clientContext"] = self.client_context
        return body


@dataclass
class Call:
    id: str
    tenant_id: str
    bot_app_id: str
    callback_uri: str
    options: CallOptions
    my_participant_id: str
    caller_id: str
    state: str = "incoming"
    media_config_type: str | None = None
    accepted_modalities: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.call",
            "state": self.state,
            "direction": "incoming",
            "callbackUri": self.callback_uri,
            "source": {
                "@odata.type": "#microsoft.graph.participantInfo",
                "identity": {
                    "@odata.type": "#microsoft.graph.identitySet",
                    "user": {
                        "@odata.type": "#microsoft.graph.identity",
                        "id": self.caller_id,
                        "displayName": "Simulated Caller",
                        "tenantId": self.tenant_id,
                    },
                },
                "region": "emea",
                "languageId": "en-US",
            },
            "targets": [
                {
                    "@odata.type": "#microsoft.graph.invitationParticipantInfo",
                    "identity": {
                        "@odata.type": "#microsoft.graph.identitySet",
                        "application": {
                            "@odata.type": "#microsoft.graph.identity",
                            "id": self.bot_app_id,
                            "displayName": "Recording bot",
                        },
                    },
                }
            ],
            "requestedModalities": ["audio"],
            "tenantId": self.tenant_id,
            "myParticipantId": self.my_participant_id,
            "id": self.id,
        }
        if self.result is not None:
            body["resultInfo"] = self.result
        return body

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "scenario": self.options.scenario,
            "callbackUri": self.callback_uri,
            "mediaConfigType": self.media_config_type,
            "operations": list(self.operations),
            "createdAt": self.created_at,
            "endedAt": self.ended_at,
        }


@dataclass
class Delivery:
    """One notification POST and what came back."""

    url: str
    body: dict[str, Any]
    call_id: str
    status_code: int | None = None
    error: str | None = None
    sent_at: float = field(default_factory=time.time)
    elapsed_seconds: float | None = None

    @property
    def notifications(self) -> list[dict[str, Any]]:
        value = self.body.get("value", [])
        return value if isinstance(value, list) else []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RequestRecord:
    """One request received on the calls API (secrets removed)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    token_valid: bool
    status_code: int | None = None
    received_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
