"""State of simulated calls and operations, their Graph shapes, and the records kept for inspection.

Every JSON shape here follows a Microsoft Graph v1.0 reference page (named next to it), and the
contract test (tests/graphsim/test_contract.py) parses each one with msgraph-sdk's own models.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Who calls the bot, in the identity shapes Graph documents for an incoming call's ``source``:
# a Teams user of the tenant, a phone number calling the bot's resource account (PSTN), a
# phone number withheld, a guest (Teams meeting) user.
CALLERS = ("teams-user", "pstn", "anonymous", "guest")
SIMULATED_CALLER_NUMBER = "+14255550123"
RESOURCE_ACCOUNT_NUMBER = "+14255550100"
RESOURCE_ACCOUNT_ID = "5c3a0000-0000-4000-8000-00000000ra01"
RESOURCE_ACCOUNT_NAME = "Reception"
# A PSTN call reaches the bot through the Reception call queue: its agent transferred it. Graph
# says so in the call's incomingContext (onBehalfOf: the queue's resource account; transferor:
# the agent, a Teams user of the tenant).
TRANSFEROR_AGENT_ID = "5c3a0000-0000-4000-8000-0000000a9e01"
TRANSFEROR_AGENT_NAME = "Reception Agent"
# identitySet members only communicationsIdentitySet has (Graph v1.0): a set holding one is
# typed as such, so Graph's own models place them (tests/graphsim/test_contract.py).
_COMMUNICATIONS_MEMBERS = frozenset(
    {"applicationInstance", "assertedIdentity", "azureCommunicationServicesUser", "encrypted"}
    | {"guest", "onPremises", "phone"}
)

SCENARIOS = (
    "max-duration",
    "stop-tone",
    "initial-silence",
    "hangup",
    "prompt-failed",
    "reply-completed",
    "reply-failed",
    "silence-then-answer",
    "hangup-before-stored",
)

ODATA_CALL = "#microsoft.graph.call"
ODATA_RECORD = "#microsoft.graph.recordOperation"
ODATA_PLAY_PROMPT = "#microsoft.graph.playPromptOperation"
ODATA_SUBSCRIBE_TO_TONE = "#microsoft.graph.subscribeToToneOperation"
SERVICE_HOSTED = "#microsoft.graph.serviceHostedMediaConfig"

# resultInfo values (code, subcode, message). Record subcodes are the ones Microsoft documents
# for record operations (shared/graph/subcodes.py); the messages are the reference pages' where one exists:
# 8515 (call: recordResponse), 8508 (call: cancelMediaProcessing, spelling included), 0 (call:
# playPrompt), 5001 (Delete call), 4521/1106 (Delete call, "Call end reason codes" table).
# 8535/8536 carry the messages of the same media platform's codes in Azure Communication
# Services (MediaEventReasonCode.PlayInvalidFileFormat / PlayDownloadFailed).
RESULT_MAX_DURATION = (200, 8515, "Action completed, max record duration reached.")
RESULT_STOP_TONE = (200, 8514, "Action completed, stop tone detected.")
RESULT_INITIAL_SILENCE = (400, 8510, "Action failed, initial silence timeout reached.")
RESULT_AUDIO_INACTIVE = (400, 8503, "Action failed, audio inactive.")
RESULT_PROMPT_FAILED = (500, 8511, "Action failed, play prompt failed.")
RESULT_PROMPT_INVALID_FORMAT = (400, 8535, "Action failed, invalid file format.")
RESULT_PROMPT_DOWNLOAD_FAILED = (400, 8536, "Action failed, file could not be downloaded.")
RESULT_CANCELED = (400, 8508, "Action failed, the operation was cancelled.")
RESULT_OPERATION_CALL_ENDED = (400, 8528, "Call terminated.")
RESULT_PROMPT_COMPLETED = (200, 0, "Action completed successfully.")
# The bot hung up (DELETE): the Delete call page's terminated notification.
RESULT_CALL_ENDED = (200, 5001, "The conversation has ended.")
RESULT_CALLER_HUNG_UP = (200, 4521, "Call ended by the other participant in peer-to-peer call.")
# Not answered within the answer timeout. Microsoft documents no code for exactly this; 1106 is
# the table's code for a call whose acceptance was not acknowledged in the allotted time.
RESULT_NOT_ANSWERED = (
    408,
    1106,
    "An acknowledgement was not received for the call acceptance in the allotted time.",
)

# recordOperation.completionReason (a beta property that v1.0's cancelMediaProcessing example
# shows on a failed recordOperation notification), by subcode.
COMPLETION_REASONS = {
    8508: "operationCanceled",
    8509: "maxSilenceTimeout",
    8510: "initialSilenceTimeout",
    8511: "playPromptFailed",
    8512: "playBeepFailed",
    8513: "mediaReceiveTimeout",
    8514: "stopToneDetected",
    8515: "maxRecordDurationReached",
    8535: "playPromptFailed",
    8536: "playPromptFailed",
}

# DTMF key as pressed -> toneInfo.tone (toneInfo resource type).
TONES = {
    **{str(digit): f"tone{digit}" for digit in range(10)},
    "*": "star",
    "#": "pound",
    "A": "a",
    "B": "b",
    "C": "c",
    "D": "d",
}


def result_info(code: int, subcode: int, message: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.resultInfo",
        "code": code,
        "subcode": subcode,
        "message": message,
    }


def etag(version: int) -> str:
    return f'W/"{version}"'


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
    # Keys the caller presses after each playPrompt completes: entry n after the n-th prompt
    # (e.g. ["2", "1"]). A key that is one of a running recordResponse's stopTones stops it.
    keys_after_prompts: list[str] = field(default_factory=list)
    # Who calls (one of CALLERS), and the number a PSTN caller calls from.
    caller: str = "teams-user"
    caller_number: str = SIMULATED_CALLER_NUMBER


@dataclass
class Operation:
    id: str
    call_id: str
    kind: str  # "record", "playPrompt" or "subscribeToTone"
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
        return {
            "record": ODATA_RECORD,
            "playPrompt": ODATA_PLAY_PROMPT,
            "subscribeToTone": ODATA_SUBSCRIBE_TO_TONE,
        }[self.kind]

    @property
    def final(self) -> bool:
        return self.status in ("completed", "failed")

    def _record_fields(self) -> dict[str, Any]:
        if self.status == "failed":
            # call: cancelMediaProcessing's failed recordOperation: empty strings, and a reason.
            subcode = int((self.result or {}).get("subcode") or 0)
            return {
                "recordingLocation": "",
                "recordingAccessToken": "",
                "completionReason": COMPLETION_REASONS.get(subcode, "unspecifiedError"),
            }
        if self.status == "completed":
            return {
                "recordingLocation": self.recording_location,
                "recordingAccessToken": self.recording_access_token,
            }
        return {}

    def resource(self) -> dict[str, Any]:
        """The operation as Graph returns it from its POST and from GET.

        recordResponse: the reply of call: recordResponse (``resultInfo`` and
        ``recordingLocation`` null while it runs). playPrompt: call: playPrompt's reply (no
        ``resultInfo`` until final). subscribeToTone: call: subscribeToTone's reply.
        """
        if self.kind == "subscribeToTone":
            return {
                "@odata.type": self.odata_type,
                "clientContext": self.client_context,
                "id": self.id,
                "status": self.status,
            }
        body: dict[str, Any] = {
            "@odata.type": self.odata_type,
            "id": self.id,
            "status": self.status,
        }
        if self.kind == "record":
            body["resultInfo"] = self.result
            body["recordingLocation"] = self.recording_location
            body.update(self._record_fields())
        elif self.result is not None:
            body["resultInfo"] = self.result
        body["clientContext"] = self.client_context
        return body

    def notification_data(self, url: str) -> dict[str, Any]:
        """resourceData of the operation's completion notification (recordResponse, playPrompt)."""
        data: dict[str, Any] = {
            "@odata.type": self.odata_type,
            "@odata.id": url,
            "@odata.etag": etag(self.etag),
            "id": self.id,
            "clientContext": self.client_context,
            "status": self.status,
            "resultInfo": self.result,
        }
        if self.kind == "record":
            data.update(self._record_fields())
        return data


@dataclass
class Call:
    id: str
    tenant_id: str
    bot_app_id: str
    callback_uri: str
    options: CallOptions
    my_participant_id: str
    caller_id: str
    # The caller's participant id (participantInfo.participantId; incomingContext's
    # sourceParticipantId) and the call chain's id (the same across transfers).
    caller_participant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_chain_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "incoming"
    media_config_type: str | None = None
    # The answer's mediaConfig as Graph returns it from GET call (the documented properties).
    media_config: dict[str, Any] | None = None
    accepted_modalities: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    etag: int = 1
    tone_subscribed: bool = False
    tone_sequence: int = 0
    record_attempts: int = 0
    prompts_played: int = 0
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None

    @property
    def url(self) -> str:
        return f"/communications/calls/{self.id}"

    def caller_identity(self) -> dict[str, Any]:
        """The caller's ``identitySet`` for the call's ``CallOptions.caller`` shape."""
        kind = self.options.caller
        if kind not in CALLERS:
            raise ValueError(f"unknown caller {kind!r}; known: {', '.join(CALLERS)}")
        if kind == "pstn":
            return _identity_set(phone=_identity(self.options.caller_number))
        if kind == "anonymous":
            # A withheld number: the phone member comes without an id.
            return _identity_set(phone={"@odata.type": "#microsoft.graph.identity"})
        if kind == "guest":
            return _identity_set(guest=_identity(self.caller_id, "Simulated Guest"))
        return _identity_set(user=_identity(self.caller_id, "Simulated Caller"))

    def target_identity(self) -> dict[str, Any]:
        """What was called: the bot itself, or (a phone call) the bot's resource account."""
        if self.options.caller in {"pstn", "anonymous"}:
            return _identity_set(
                applicationInstance=self._resource_account(),
                phone=_identity(RESOURCE_ACCOUNT_NUMBER),
            )
        return _identity_set(application=_identity(self.bot_app_id, "Recording bot"))

    def _resource_account(self) -> dict[str, Any]:
        return _identity(RESOURCE_ACCOUNT_ID, RESOURCE_ACCOUNT_NAME)

    def incoming_context(self) -> dict[str, Any] | None:
        """The call's ``incomingContext`` (incomingContext resource type): a PSTN call came
        through the Reception call queue, whose agent transferred it to the bot."""
        if self.options.caller != "pstn":
            return None
        return {
            "@odata.type": "#microsoft.graph.incomingContext",
            "sourceParticipantId": self.caller_participant_id,
            "onBehalfOf": _identity_set(applicationInstance=self._resource_account()),
            "transferor": _identity_set(user=_identity(TRANSFEROR_AGENT_ID, TRANSFEROR_AGENT_NAME)),
        }

    def resource(self) -> dict[str, Any]:
        """The call in full: the incoming notification (call: answer) and GET call."""
        body: dict[str, Any] = {
            "@odata.type": ODATA_CALL,
            "state": self.state,
            "direction": "incoming",
            "callbackUri": self.callback_uri,
            "source": {
                "@odata.type": "#microsoft.graph.participantInfo",
                "identity": self.caller_identity(),
                "participantId": self.caller_participant_id,
                "region": "emea",
                "languageId": "en-US",
            },
            "targets": [
                {
                    "@odata.type": "#microsoft.graph.invitationParticipantInfo",
                    "identity": self.target_identity(),
                }
            ],
            "requestedModalities": ["audio"],
            "tenantId": self.tenant_id,
            "myParticipantId": self.my_participant_id,
            "callChainId": self.call_chain_id,
            "id": self.id,
        }
        context = self.incoming_context()
        if context is not None:
            body["incomingContext"] = context
        if self.media_config is not None:
            body["mediaConfig"] = self.media_config
        body["resultInfo"] = self.result
        return body

    def annotations(self) -> dict[str, Any]:
        return {"@odata.type": ODATA_CALL, "@odata.id": self.url, "@odata.etag": etag(self.etag)}

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
    """One notification POST attempt and what came back."""

    url: str
    body: dict[str, Any]
    call_id: str
    status_code: int | None = None
    error: str | None = None
    sent_at: float = field(default_factory=time.time)
    elapsed_seconds: float | None = None
    # 1 for the first try; retries of the same notification count up.
    attempt: int = 1

    @property
    def notifications(self) -> list[dict[str, Any]]:
        value = self.body.get("value", [])
        return value if isinstance(value, list) else []

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line: when, which call, what it said, what came back."""
        parts = []
        for n in self.notifications:
            data = n.get("resourceData") or {}
            kind = str(data.get("@odata.type", "?")).removeprefix("#microsoft.graph.")
            detail = data.get("status") or data.get("state") or ""
            tone = (data.get("toneInfo") or {}).get("tone")
            subcode = (data.get("resultInfo") or {}).get("subcode")
            text = f"{n.get('changeType', '?')} {kind}"
            text += f" {detail}" if detail else ""
            text += f" tone={tone}" if tone else ""
            text += f" subcode={subcode}" if subcode is not None else ""
            parts.append(text)
        outcome = str(self.status_code) if self.status_code is not None else (self.error or "?")
        stamp = time.strftime("%H:%M:%S", time.localtime(self.sent_at))
        retry = f" (attempt {self.attempt})" if self.attempt > 1 else ""
        return f"{stamp} call={self.call_id} {'; '.join(parts) or '-'} -> {outcome}{retry}"


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
    # appid of the Graph token used: the managed identity's or, federated, the bot's.
    token_app_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _identity_set(**members: dict[str, Any]) -> dict[str, Any]:
    """An ``identitySet`` of these members, typed ``communicationsIdentitySet`` when one of them
    exists only there (``phone``, ``guest``, ``applicationInstance``...)."""
    typed = (
        "communicationsIdentitySet" if _COMMUNICATIONS_MEMBERS & members.keys() else "identitySet"
    )
    return {"@odata.type": f"#microsoft.graph.{typed}", **members}


def _identity(ident: str, display_name: str | None = None) -> dict[str, Any]:
    """A ``microsoft.graph.identity`` with only the properties given (v1.0's identity has no
    ``tenantId``: only its derived types do)."""
    out: dict[str, Any] = {"@odata.type": "#microsoft.graph.identity", "id": ident}
    if display_name is not None:
        out["displayName"] = display_name
    return out
