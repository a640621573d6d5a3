"""Pydantic models that mirror Microsoft Graph v1.0 calling resources on the wire.

Field names are Graph's (camelCase aliases, ``@odata.type``); fields Graph adds later are kept
(``extra="allow"``) so a model round-trips what it was given. ``recordingAccessToken`` is a
:class:`~pydantic.SecretStr`: it never shows in ``repr``, logs or ``model_dump()`` unless asked.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SkipValidation,
    field_serializer,
    field_validator,
)
from pydantic.alias_generators import to_camel

from shared.graph.ids import ResourceIds, normalize_id, parse_resource_url

ODATA_TYPE = "@odata.type"
DTMF_TONES = frozenset("0123456789*#ABCD")
MAX_CLIENT_CONTEXT = 256
MAX_PROMPTS = 1


class GraphModel(BaseModel):
    """Base for Graph resources: camelCase on the wire, unknown fields kept, ``@odata.type``."""

    # defer_build: schemas are built on first use, not at import (cold start).
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        frozen=False,
        defer_build=True,
    )
    odata_type_value: ClassVar[str | None] = None

    odata_type: str | None = Field(default=None, alias=ODATA_TYPE)

    def model_post_init(self, context: Any, /) -> None:
        if self.odata_type is None and self.odata_type_value is not None:
            self.odata_type = self.odata_type_value

    def to_wire(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The JSON object Graph would send or accept (aliases, no unset optional nulls)."""
        data = self.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            context={"reveal_secrets": reveal_secrets},
        )
        return data


def odata_type_is(value: str | None, expected: str) -> bool:
    """Graph's ``@odata.type`` matched case-insensitively, with or without ``#microsoft.graph.``."""
    if not value:
        return False
    name = value.lower().removeprefix("#").removeprefix("microsoft.graph.")
    return name == expected.lower()


# --------------------------------------------------------------------------- media and prompts


class MediaInfo(GraphModel):
    # Graph's own examples send mediaInfo without @odata.type; so do we.
    uri: str
    resource_id: str | None = None


class MediaPrompt(GraphModel):
    odata_type_value = "#microsoft.graph.mediaPrompt"
    media_info: MediaInfo


class ResultInfo(GraphModel):
    odata_type_value = "#microsoft.graph.resultInfo"
    code: int | None = None
    subcode: int | None = None
    message: str | None = None


# --------------------------------------------------------------------------- recordResponse


TimeoutSeconds = Annotated[int, Field(ge=1, le=120)]


class RecordResponseRequest(GraphModel):
    """Body of ``POST /communications/calls/{id}/recordResponse``, with the documented limits."""

    # The rest of GraphModel's config is inherited: an API caller's unknown field is refused.
    model_config = ConfigDict(extra="forbid")

    prompts: list[MediaPrompt] = Field(default_factory=list, max_length=MAX_PROMPTS)
    barge_in_allowed: bool = False
    initial_silence_timeout_in_seconds: TimeoutSeconds = 5
    max_silence_timeout_in_seconds: TimeoutSeconds = 5
    max_record_duration_in_seconds: TimeoutSeconds = 5
    play_beep: bool = True
    stop_tones: list[str] = Field(default_factory=list)
    client_context: str | None = Field(default=None, max_length=MAX_CLIENT_CONTEXT)

    @field_validator("stop_tones")
    @classmethod
    def _dtmf_only(cls, tones: list[str]) -> list[str]:
        bad = [tone for tone in tones if tone not in DTMF_TONES]
        if bad:
            raise ValueError(f"stop tones must be DTMF tones 0-9, *, #, A-D; got {bad!r}")
        return tones


OperationStatus = Literal["notStarted", "running", "completed", "failed"]


class CommsOperation(GraphModel):
    id: str | None = None
    status: OperationStatus | None = None
    client_context: str | None = None
    result_info: ResultInfo | None = None


class RecordOperation(CommsOperation):
    odata_type_value = "#microsoft.graph.recordOperation"
    recording_location: str | None = None
    recording_access_token: SecretStr | None = None

    @field_serializer("recording_access_token")
    def _token_only_when_asked(self, token: SecretStr | None, info: Any) -> str | None:
        if token is None:
            return None
        context = info.context or {}
        return token.get_secret_value() if context.get("reveal_secrets") else str(token)


class PlayPromptOperation(CommsOperation):
    odata_type_value = "#microsoft.graph.playPromptOperation"


# --------------------------------------------------------------------------- calls


CallState = Literal[
    "incoming",
    "establishing",
    "established",
    "hold",
    "transferring",
    "transferAccepted",
    "redirecting",
    "terminating",
    "terminated",
    "unknownFutureValue",
]


class ToneInfo(GraphModel):
    """A key the caller pressed (call ``updated`` after call: subscribeToTone): ``tone1``..."""

    odata_type_value = "#microsoft.graph.toneInfo"
    sequence_id: int | None = None
    tone: str | None = None


class SubscribeToToneOperation(CommsOperation):
    odata_type_value = "#microsoft.graph.subscribeToToneOperation"


class SubscribeToToneRequest(GraphModel):
    """Body of ``POST /communications/calls/{id}/subscribeToTone``."""

    client_context: str | None = Field(default=None, max_length=MAX_CLIENT_CONTEXT)


class Call(GraphModel):
    odata_type_value = "#microsoft.graph.call"
    id: str | None = None
    state: str | None = None  # CallState; kept open because Graph adds states
    direction: str | None = None
    callback_uri: str | None = None
    tenant_id: str | None = None
    my_participant_id: str | None = None
    result_info: ResultInfo | None = None
    source: dict[str, Any] | None = None
    targets: list[dict[str, Any]] | None = None
    media_config: dict[str, Any] | None = None
    tone_info: ToneInfo | None = None


class ServiceHostedMediaConfig(GraphModel):
    odata_type_value = "#microsoft.graph.serviceHostedMediaConfig"
    pre_fetch_media: list[MediaInfo] | None = None


class AnswerRequest(GraphModel):
    """Body of ``POST /communications/calls/{id}/answer``."""

    callback_uri: str
    accepted_modalities: list[str] = Field(default_factory=lambda: ["audio"])
    media_config: ServiceHostedMediaConfig = Field(default_factory=ServiceHostedMediaConfig)


class PlayPromptRequest(GraphModel):
    prompts: list[MediaPrompt] = Field(min_length=1)
    client_context: str | None = Field(default=None, max_length=MAX_CLIENT_CONTEXT)


# --------------------------------------------------------------------------- notifications


ResourceData = RecordOperation | PlayPromptOperation | Call | dict[str, Any]
_RESOURCE_TYPES: tuple[type[GraphModel], ...] = (RecordOperation, PlayPromptOperation, Call)


class CommsNotification(GraphModel):
    odata_type_value = "#microsoft.graph.commsNotification"
    change_type: str
    resource_url: str = Field(validation_alias=AliasChoices("resourceUrl", "resource"))
    # Validated by _dispatch_on_odata_type alone: a plain union would coerce unknown types.
    resource_data: Annotated[ResourceData | None, SkipValidation] = None

    @field_validator("resource_data", mode="before")
    @classmethod
    def _dispatch_on_odata_type(cls, value: Any) -> Any:
        """Pick the model by ``@odata.type`` (case-insensitive); unknown types stay a dict."""
        if not isinstance(value, dict):
            return value
        declared = value.get(ODATA_TYPE)
        for model in _RESOURCE_TYPES:
            expected = (model.odata_type_value or "").removeprefix("#microsoft.graph.")
            if odata_type_is(declared, expected):
                return model.model_validate(value)
        return dict(value)

    @property
    def resource_kind(self) -> str:
        """``recordOperation``, ``playPromptOperation``, ``call`` or ``unknown``."""
        data = self.resource_data
        if isinstance(data, RecordOperation):
            return "recordOperation"
        if isinstance(data, PlayPromptOperation):
            return "playPromptOperation"
        if isinstance(data, Call):
            return "call"
        return "unknown"

    @functools.cached_property
    def resource_ids(self) -> ResourceIds | None:
        """The ids in ``resourceUrl``, as sent (None when it is not a calls URL)."""
        return parse_resource_url(self.resource_url)

    @functools.cached_property
    def call_id(self) -> str | None:
        """The call this notification is about, in canonical form (from ``resourceUrl``)."""
        ids = self.resource_ids
        return normalize_id(ids.call_id) if ids else None

    @functools.cached_property
    def operation_id(self) -> str | None:
        """The operation's id, canonical: ``resourceData.id``, else the one in ``resourceUrl``.

        None for a notification about the call itself (a call's ``resourceData.id`` is the call's).
        """
        if self.resource_kind == "call":
            return None
        data = self.resource_data
        declared = data.get("id") if isinstance(data, dict) else getattr(data, "id", None)
        if not declared:
            ids = self.resource_ids
            declared = ids.operation_id if ids else None
        return normalize_id(str(declared)) if declared else None


class CommsNotifications(GraphModel):
    odata_type_value = "#microsoft.graph.commsNotifications"
    value: list[CommsNotification] = Field(min_length=1)

    @field_validator("odata_type")
    @classmethod
    def _is_comms_notifications(cls, value: str | None) -> str | None:
        if value is not None and not odata_type_is(value, "commsNotifications"):
            raise ValueError(f"expected #microsoft.graph.commsNotifications, got {value!r}")
        return value
