"""Settings: defaults from the contract, and errors that name the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def minimal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        alias = Settings.model_fields[name].alias
        if alias:
            monkeypatch.delenv(alias, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("BOT_APP_ID", "bot")


@pytest.mark.usefixtures("minimal_env")
def test_contract_defaults() -> None:
    settings = load_settings()
    assert settings.inbound_openid_configuration_url == (
        "https://api.aps.skype.com/v1/.well-known/OpenIdConfiguration"
    )
    assert settings.inbound_allowed_issuers == (
        "https://graph.microsoft.com",
        "https://api.botframework.com",
    )
    assert settings.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert settings.recording_retention_minutes == 60
    assert settings.allow_insecure_recording_urls is False
    assert settings.cleanup_schedule == "0 */5 * * * *"


@pytest.mark.usefixtures("minimal_env")
def test_missing_bot_app_id_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOT_APP_ID")
    with pytest.raises(SettingsError, match="BOT_APP_ID"):
        load_settings()


@pytest.mark.usefixtures("minimal_env")
@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RECORDING_RETENTION_MINUTES", "soon", "RECORDING_RETENTION_MINUTES"),
        ("RECORDING_RETENTION_MINUTES", "-1", "greater than 0"),
        ("ALLOW_INSECURE_RECORDING_URLS", "perhaps", "ALLOW_INSECURE_RECORDING_URLS"),
        ("GRAPH_BASE_URL", "graph.microsoft.com", "absolute http"),
        ("BOT_RECORD_MAX_DURATION_SECONDS", "121", "BOT_RECORD_MAX_DURATION_SECONDS"),
        ("GRAPH_CREDENTIAL_MODE", "password", "GRAPH_CREDENTIAL_MODE"),
    ],
)
def test_malformed_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=expected) as caught:
        load_settings()
    assert name in str(caught.value)


@pytest.mark.usefixtures("minimal_env")
def test_storage_must_be_configured_one_way_or_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage")
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        load_settings()
    for kind in ("queue", "blob", "table"):
        monkeypatch.setenv(
            f"AzureWebJobsStorage__{kind}ServiceUri", f"https://acct.{kind}.core.windows.net"
        )
    assert load_settings().uses_identity_based_storage


@pytest.mark.usefixtures("minimal_env")
def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOUND_ALLOWED_TENANTS", " t1, t2 ,,")
    monkeypatch.setenv("INBOUND_ALLOWED_ISSUERS", "https://api.botframework.com")
    settings = load_settings()
    assert settings.inbound_allowed_tenants == ("t1", "t2")
    assert settings.inbound_allowed_issuers == ("https://api.botframework.com",)


def test_example_settings_file_lists_every_setting_and_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    aliases = {field.alias for field in Settings.model_fields.values()}
    storage_identity = {a for a in aliases if a and a.startswith("AzureWebJobsStorage__")}
    set_by_the_host = {"WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME"}
    assert aliases - storage_identity - set_by_the_host <= set(values), (
        "every app setting appears in the example"
    )
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.managed_identity_client_id is None  # "" means unset
    assert settings.allow_insecure_recording_urls is True


# --- the bot's credential on a developer's machine ------------------------------------------------

LOCAL_APP = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "BOT_APP_ID": "11111111-2222-3333-4444-555555555555",
    "GRAPH_CREDENTIAL_MODE": "localAppRegistration",
    "GRAPH_APP_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "GRAPH_TENANT_ID": "00000000-0000-0000-0000-00000000cafe",
}


def _load(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    for name in ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_local_app_registration_reads_a_secret_it_never_shows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _load(monkeypatch, {**LOCAL_APP, "GRAPH_CLIENT_SECRET": "s3cr3t-value"})
    assert settings.graph_client_secret is not None
    assert settings.graph_client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.model_dump())


@pytest.mark.parametrize("marker", ["WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME"])
def test_local_app_registration_is_refused_in_azure(
    monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        _load(monkeypatch, {**LOCAL_APP, "GRAPH_CLIENT_SECRET": "s3cr3t-value", marker: "x"})
    assert "localAppRegistration" in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)


@pytest.mark.parametrize(
    "extra",
    [{}, {"GRAPH_CLIENT_SECRET": "a", "GRAPH_CLIENT_CERTIFICATE_PATH": "certs/bot.pem"}],
)
def test_local_app_registration_needs_exactly_one_secret_or_certificate(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]
) -> None:
    with pytest.raises(SettingsError, match="exactly one of"):
        _load(monkeypatch, {**LOCAL_APP, **extra})


def test_a_secret_outside_local_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {**LOCAL_APP, "GRAPH_CREDENTIAL_MODE": "federated", "GRAPH_CLIENT_SECRET": "x"}
    with pytest.raises(SettingsError, match="only read in"):
        _load(monkeypatch, values)


def test_the_old_developer_mode_says_what_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="localAppRegistration"):
        _load(monkeypatch, {**LOCAL_APP, "GRAPH_CREDENTIAL_MODE": "developer"})


def test_the_simulator_ca_is_refused_in_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "BOT_APP_ID": "b",
        "GRAPH_AUTHORITY_CA_FILE": "certs/ca.pem",
        "WEBSITE_SITE_NAME": "func-abc",
    }
    with pytest.raises(SettingsError, match="GRAPH_AUTHORITY_CA_FILE"):
        _load(monkeypatch, values)
