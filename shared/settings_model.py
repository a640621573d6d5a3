"""Every setting the app reads, in one place: the pydantic-settings model behind
:mod:`shared.settings`, which loads it on first use (importing ``function_app`` loads no pydantic)
and turns its validation errors into ``SettingsError``. This module imports nothing of the app's.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_OPENID_CONFIGURATION_URL = "https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration"
DEFAULT_ALLOWED_ISSUERS = ("https://graph.microsoft.com", "https://api.botframework.com")
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_CLEANUP_SCHEDULE = "0 */5 * * * *"

GraphCredentialMode = Literal["managedIdentity", "federated", "localAppRegistration"]
# How much of a caller's identity the ledger keeps (docs/retention.md).
CallerIdentityPrivacy = Literal["full", "masked", "none"]
CommaList = Annotated[tuple[str, ...], NoDecode]
# A BCP-47 locale as Speech names them (en-US, zh-Hans-CN): language, then subtags.
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){1,2}$")
# Regional endpoints take keys only; Entra tokens need the resource's custom subdomain.
_REGIONAL_SPEECH_HOST = re.compile(r"\.api\.cognitive\.(microsoft\.com|azure\.cn)$")


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """The app's configuration. Field aliases are the exact app-setting names."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        populate_by_name=False,
        frozen=True,
        env_ignore_empty=True,  # local.settings.json lists every setting, unset ones as ""
    )

    # --- Storage (host storage; the app's own clients use the same account) ---
    storage_connection_string: str | None = Field(default=None, alias="AzureWebJobsStorage")
    storage_queue_service_uri: str | None = Field(
        default=None, alias="AzureWebJobsStorage__queueServiceUri"
    )
    storage_blob_service_uri: str | None = Field(
        default=None, alias="AzureWebJobsStorage__blobServiceUri"
    )
    storage_table_service_uri: str | None = Field(
        default=None, alias="AzureWebJobsStorage__tableServiceUri"
    )
    storage_credential: str | None = Field(default=None, alias="AzureWebJobsStorage__credential")
    storage_client_id: str | None = Field(default=None, alias="AzureWebJobsStorage__clientId")

    # --- Inbound notifications (Graph -> POST /api/calls) ---
    bot_app_id: str = Field(alias="BOT_APP_ID", min_length=1)
    inbound_openid_configuration_url: str = Field(
        default=DEFAULT_OPENID_CONFIGURATION_URL, alias="INBOUND_OPENID_CONFIGURATION_URL"
    )
    inbound_allowed_issuers: CommaList = Field(
        default=DEFAULT_ALLOWED_ISSUERS, alias="INBOUND_ALLOWED_ISSUERS"
    )
    inbound_allowed_tenants: CommaList = Field(default=(), alias="INBOUND_ALLOWED_TENANTS")

    # --- Outbound Graph calls ---
    graph_base_url: str = Field(default=DEFAULT_GRAPH_BASE_URL, alias="GRAPH_BASE_URL")
    graph_credential_mode: GraphCredentialMode = Field(
        default="managedIdentity", alias="GRAPH_CREDENTIAL_MODE"
    )
    # Client id of the user-assigned managed identity (also the name azure-identity reads).
    managed_identity_client_id: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_CLIENT_ID"), alias="AZURE_CLIENT_ID"
    )
    # Federated mode: the Entra app registration (bot app id) and its tenant.
    graph_app_client_id: str | None = Field(default=None, alias="GRAPH_APP_CLIENT_ID")
    graph_tenant_id: str | None = Field(default=None, alias="GRAPH_TENANT_ID")
    # localAppRegistration mode (a developer's machine only): the bot app's own secret or
    # certificate, from local.settings.json. Never logged (SecretStr), refused in Azure.
    graph_client_secret: SecretStr | None = Field(default=None, alias="GRAPH_CLIENT_SECRET")
    graph_client_certificate_path: str | None = Field(
        default=None, alias="GRAPH_CLIENT_CERTIFICATE_PATH"
    )
    graph_client_certificate_password: SecretStr | None = Field(
        default=None, alias="GRAPH_CLIENT_CERTIFICATE_PASSWORD"
    )
    # Local simulator only: the CA its TLS token endpoint's certificate chains to.
    graph_authority_ca_file: str | None = Field(default=None, alias="GRAPH_AUTHORITY_CA_FILE")
    # Set by the Functions host in Azure: local-only settings are refused when present.
    website_instance_id: str | None = Field(default=None, alias="WEBSITE_INSTANCE_ID")
    website_site_name: str | None = Field(default=None, alias="WEBSITE_SITE_NAME")

    # --- Bot flow ---
    callback_base_url: str | None = Field(default=None, alias="CALLBACK_BASE_URL")
    auto_answer: bool = Field(default=True, alias="BOT_AUTO_ANSWER")
    record_prompt_uri: str | None = Field(default=None, alias="BOT_RECORD_PROMPT_URI")
    record_max_duration_seconds: int = Field(
        default=10, ge=1, le=120, alias="BOT_RECORD_MAX_DURATION_SECONDS"
    )
    record_initial_silence_seconds: int = Field(
        default=5, ge=1, le=120, alias="BOT_RECORD_INITIAL_SILENCE_SECONDS"
    )
    record_max_silence_seconds: int = Field(
        default=5, ge=1, le=120, alias="BOT_RECORD_MAX_SILENCE_SECONDS"
    )
    record_play_beep: bool = Field(default=True, alias="BOT_RECORD_PLAY_BEEP")
    record_stop_tones: CommaList = Field(default=("#",), alias="BOT_RECORD_STOP_TONES")
    thank_you_prompt_uri: str | None = Field(default=None, alias="BOT_THANK_YOU_PROMPT_URI")
    hang_up_after_recording: bool = Field(default=True, alias="BOT_HANG_UP_AFTER_RECORDING")
    # Prompts: unset = the shipped prompt (CALLBACK_BASE_URL/api/prompts/...), "none" = no prompt.
    reprompt_uri: str | None = Field(default=None, alias="BOT_REPROMPT_URI")
    record_attempts: int = Field(default=2, ge=1, le=5, alias="BOT_RECORD_ATTEMPTS")
    hang_up_wait_seconds: float = Field(default=60, ge=0, le=600, alias="BOT_HANG_UP_WAIT_SECONDS")
    confirm_recording: bool = Field(default=False, alias="BOT_CONFIRM_RECORDING")
    confirm_prompt_uri: str | None = Field(default=None, alias="BOT_CONFIRM_PROMPT_URI")
    confirm_timeout_seconds: int = Field(
        default=5, ge=1, le=19, alias="BOT_CONFIRM_TIMEOUT_SECONDS"
    )

    # --- Download ---
    allow_insecure_recording_urls: bool = Field(
        default=False, alias="ALLOW_INSECURE_RECORDING_URLS"
    )
    recording_allowed_host_suffixes: CommaList = Field(
        default=(), alias="RECORDING_ALLOWED_HOST_SUFFIXES"
    )
    recording_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1, alias="RECORDING_MAX_BYTES")

    # --- Retention ---
    recording_retention_minutes: float = Field(
        default=60, gt=0, alias="RECORDING_RETENTION_MINUTES"
    )
    # full: ids, display names, numbers; masked: a number's last 4 digits, ids without names;
    # none: no caller identity at all (and no erasure by caller: nothing finds the calls).
    caller_identity: CallerIdentityPrivacy = Field(default="full", alias="CALLER_IDENTITY")
    cleanup_schedule: str = Field(default=DEFAULT_CLEANUP_SCHEDULE, alias="CLEANUP_SCHEDULE")
    ledger_retention_days: float = Field(default=7, gt=0, alias="LEDGER_RETENTION_DAYS")
    poison_message_max_age_minutes: float = Field(
        default=5, gt=0, alias="POISON_MESSAGE_MAX_AGE_MINUTES"
    )
    abandon_running_after_minutes: float = Field(
        default=10, gt=0, alias="ABANDON_RUNNING_AFTER_MINUTES"
    )
    status_url_ttl_minutes: float = Field(default=5, gt=0, le=60, alias="STATUS_URL_TTL_MINUTES")

    # --- Transcription (opt-in; docs/transcription.md) ---
    transcription_enabled: bool = Field(default=False, alias="TRANSCRIPTION_ENABLED")
    # The Speech resource's custom-subdomain endpoint (Entra tokens need one).
    transcription_endpoint: str | None = Field(default=None, alias="TRANSCRIPTION_ENDPOINT")
    # Candidate locales; none means the service identifies the language itself.
    transcription_locales: CommaList = Field(default=(), alias="TRANSCRIPTION_LOCALES")
    transcription_keep_audio: bool = Field(default=True, alias="TRANSCRIPTION_KEEP_AUDIO")

    _split_lists = field_validator(
        "inbound_allowed_issuers",
        "inbound_allowed_tenants",
        "record_stop_tones",
        "recording_allowed_host_suffixes",
        "transcription_locales",
        mode="before",
    )(_split_commas)

    @field_validator("transcription_locales")
    @classmethod
    def _locales_look_like_locales(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for locale in value:
            if not _LOCALE.fullmatch(locale):
                raise ValueError(f"{locale!r} is not a locale such as en-US")
        return value

    @field_validator(
        "graph_base_url",
        "inbound_openid_configuration_url",
        "callback_base_url",
        "transcription_endpoint",
    )
    @classmethod
    def _must_be_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator(
        "record_prompt_uri", "reprompt_uri", "thank_you_prompt_uri", "confirm_prompt_uri"
    )
    @classmethod
    def _prompt_url_or_none(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() == "none":
            return value
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL of a WAV file, or none")
        return value

    @model_validator(mode="after")
    def _storage_is_configured(self) -> Settings:
        if self.storage_connection_string is None and not (
            self.storage_queue_service_uri
            and self.storage_blob_service_uri
            and self.storage_table_service_uri
        ):
            raise ValueError(
                "AzureWebJobsStorage: set a connection string, or identity-based "
                "AzureWebJobsStorage__queueServiceUri, __blobServiceUri and __tableServiceUri"
            )
        mode = self.graph_credential_mode
        if mode in ("federated", "localAppRegistration") and not (
            self.graph_app_client_id and self.graph_tenant_id
        ):
            raise ValueError(
                f"GRAPH_CREDENTIAL_MODE={mode} needs GRAPH_APP_CLIENT_ID and GRAPH_TENANT_ID"
            )
        if mode == "localAppRegistration":
            if self.running_in_azure:
                raise ValueError(
                    "GRAPH_CREDENTIAL_MODE=localAppRegistration is for a developer's machine and "
                    "the app runs in Azure (WEBSITE_INSTANCE_ID/WEBSITE_SITE_NAME are set): use "
                    "federated"
                )
            if bool(self.graph_client_secret) == bool(self.graph_client_certificate_path):
                raise ValueError(
                    "GRAPH_CREDENTIAL_MODE=localAppRegistration needs exactly one of "
                    "GRAPH_CLIENT_SECRET and GRAPH_CLIENT_CERTIFICATE_PATH"
                )
        elif self.graph_client_secret or self.graph_client_certificate_path:
            raise ValueError(
                "GRAPH_CLIENT_SECRET/GRAPH_CLIENT_CERTIFICATE_PATH are only read in "
                "GRAPH_CREDENTIAL_MODE=localAppRegistration: remove them"
            )
        if self.graph_authority_ca_file and self.running_in_azure:
            raise ValueError("GRAPH_AUTHORITY_CA_FILE is for the local simulator only: remove it")
        if self.transcription_enabled:
            self._check_transcription_endpoint()
        return self

    def _check_transcription_endpoint(self) -> None:
        endpoint = self.transcription_endpoint
        if not endpoint:
            raise ValueError(
                "TRANSCRIPTION_ENABLED=true needs TRANSCRIPTION_ENDPOINT (the Speech resource's "
                "https://<custom-subdomain>.cognitiveservices.azure.com endpoint)"
            )
        parts = urlsplit(endpoint)
        insecure_allowed = self.allow_insecure_recording_urls and not self.running_in_azure
        if parts.scheme != "https" and not (parts.scheme == "http" and insecure_allowed):
            raise ValueError(
                "TRANSCRIPTION_ENDPOINT must be an https URL (http only with "
                "ALLOW_INSECURE_RECORDING_URLS=true, for the local simulator)"
            )
        if not parts.hostname or _REGIONAL_SPEECH_HOST.search(parts.hostname):
            raise ValueError(
                "TRANSCRIPTION_ENDPOINT must be the resource's custom-subdomain endpoint: "
                "regional endpoints do not accept Microsoft Entra tokens"
            )
        if parts.query or parts.fragment:
            raise ValueError("TRANSCRIPTION_ENDPOINT must not carry a query or fragment")

    @field_validator("graph_credential_mode", mode="before")
    @classmethod
    def _no_developer_mode(cls, value: object) -> object:
        if value == "developer":
            raise ValueError(
                "developer was removed: Graph's calls API takes application tokens of the bot's "
                "own app registration only; use localAppRegistration on your machine"
            )
        return value

    @property
    def running_in_azure(self) -> bool:
        return bool(self.website_instance_id or self.website_site_name)

    @property
    def uses_identity_based_storage(self) -> bool:
        return self.storage_connection_string is None

    @property
    def bot_flow_enabled(self) -> bool:
        """The bot answers and records calls (it needs the URL Graph calls back)."""
        return bool(self.auto_answer and self.callback_base_url)

    # --- Management API: Entra ID tokens with app roles, audit trail (docs/security.md) ---
    # The tenant whose Entra ID tokens the management routes accept (default GRAPH_TENANT_ID).
    management_tenant_id: str | None = Field(default=None, alias="MANAGEMENT_TENANT_ID")
    # Where the tenant's signing keys are published; unset = Entra's v2.0 OpenID configuration
    # of that tenant. The local simulator serves one on 127.0.0.1.
    management_openid_configuration_url: str | None = Field(
        default=None, alias="MANAGEMENT_OPENID_CONFIGURATION_URL"
    )
    # Development only (the local host, the simulator): the management routes take a function
    # key, checked by the host. Read again at indexing, where it picks the routes' auth level.
    management_function_keys: bool = Field(default=False, alias="MANAGEMENT_FUNCTION_KEYS")
    # How long audit rows stay: longer than the ledger rows they describe.
    audit_retention_days: float = Field(default=90, gt=0, alias="AUDIT_RETENTION_DAYS")
    # --- Telemetry (docs/operations.md) ---
    # The share of recordings whose whole trace is kept, decided once per trace by its id
    # (shared.telemetry reads it at start-up, before the settings are loaded).
    telemetry_sampling_ratio: float = Field(
        default=1.0, ge=0, le=1, allow_inf_nan=False, alias="TELEMETRY_SAMPLING_RATIO"
    )

    # --- Transcription answers (issue 25; docs/transcription.md) ---
    # The most of Speech's answer that is read, and of the transcript stored from it (and read
    # back by the status API): past it the transcription fails, recorded.
    transcription_max_response_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024 * 1024,
        alias="TRANSCRIPTION_MAX_RESPONSE_BYTES",
    )

    @field_validator("management_openid_configuration_url")
    @classmethod
    def _management_keys_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _audit_outlives_the_ledger(self) -> Settings:
        if self.audit_retention_days < self.ledger_retention_days:
            raise ValueError(
                "AUDIT_RETENTION_DAYS must be at least LEDGER_RETENTION_DAYS: the audit of an "
                "operation outlives its ledger row"
            )
        return self

    @property
    def management_tenant(self) -> str | None:
        """The tenant whose tokens the management API accepts (None: tokens not configured)."""
        return self.management_tenant_id or self.graph_tenant_id

    @property
    def management_keys_url(self) -> str | None:
        """The OpenID configuration that names the management tokens' signing keys."""
        if self.management_openid_configuration_url:
            return self.management_openid_configuration_url
        tenant = self.management_tenant
        if tenant is None:
            return None
        return f"https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"

    # --- Chat messages (Bot Connector -> POST /api/messages; issue 29) ---
    # Where Bot Framework publishes the keys that sign the activities it posts to the bot.
    bot_framework_openid_configuration_url: str = Field(
        default="https://login.botframework.com/v1/.well-known/openidconfiguration",
        alias="BOT_FRAMEWORK_OPENID_CONFIGURATION_URL",
    )

    @field_validator("bot_framework_openid_configuration_url")
    @classmethod
    def _bot_framework_url_is_http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL")
        return value

    # --- Recording lifecycle events: CloudEvents through Event Grid (docs/events.md) ---
    # The Event Grid custom topic's endpoint (https://<topic>.<region>-1.eventgrid.azure.net/
    # api/events); unset: no events. The app publishes with its managed identity (no key).
    events_endpoint: str | None = Field(default=None, alias="EVENTS_ENDPOINT")
    # Reverse-DNS prefix of every event type: <prefix>.recording.<step>.v1.
    events_type_prefix: str = Field(
        default="org.example.callrecording",
        alias="EVENTS_TYPE_PREFIX",
        pattern=r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$",
    )
    # The events' source (a URI naming the deployed app); unset: CALLBACK_BASE_URL, else
    # the Function App's default host name, else urn:recording-bot:local.
    events_source: str | None = Field(default=None, alias="EVENTS_SOURCE")
    # An event still owed this long after its step's write is re-sent by the sweep (the
    # instance that wrote the step stopped, or its publish and queue send both failed).
    events_redrive_after_minutes: float = Field(
        default=5, gt=0, le=1440, alias="EVENTS_REDRIVE_AFTER_MINUTES"
    )
    # One publish's deadline; past it the event goes to the recording-events queue.
    events_publish_timeout_seconds: float = Field(
        default=10, gt=0, le=60, alias="EVENTS_PUBLISH_TIMEOUT_SECONDS"
    )

    @property
    def events_enabled(self) -> bool:
        return bool(self.events_endpoint)

    @property
    def event_source(self) -> str:
        """The events' ``source``: the deployed app."""
        if self.events_source:
            return self.events_source
        if self.callback_base_url:
            return self.callback_base_url.rstrip("/")
        if self.website_site_name:
            return f"https://{self.website_site_name}.azurewebsites.net"
        return "urn:recording-bot:local"

    @field_validator("events_endpoint")
    @classmethod
    def _events_endpoint_https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(
                "must be the topic's https endpoint without a query (bearer tokens only go "
                "over TLS; the local simulator serves one too)"
            )
        return value
