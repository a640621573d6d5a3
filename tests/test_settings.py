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
    assert aliases - storage_identity <= set(values), "every app setting appears in the example"
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.managed_identity_client_id is None  # "" means unset
    assert settings.allow_insecure_recording_urls is True
