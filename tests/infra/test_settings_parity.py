"""Every setting the app reads is a deployment choice with a parameter, or says why not.

The Function App's ``appsettings`` resource replaces the whole set on every ``azd provision``: a
setting changed only in the portal silently disappears. So each field of the settings model
(``shared/settings_model.py``) either has a ``main.bicep`` parameter, with the code's default,
bounds the code accepts, and an ``azd env set`` name in ``main.bicepparam``, or is listed below
with the reason the deployment sets it itself or never sets it. A setting added to the model
without either fails here with the exact lines to add.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared.settings import Settings
from tests.infra.test_bicep import (
    HOST_SETTINGS,
    _app_settings,
    _trace_to_main_default,
    bicepparam,
    body,
    decorator,
    main,
    one_module,
    parse,
)

# Set by the template from what it deploys, not a choice: alias -> reason.
SET_BY_THE_TEMPLATE = {
    "BOT_APP_ID": "the bot's app registration, created or given (botAppId)",
    "AZURE_CLIENT_ID": "the managed identity's client id",
    "GRAPH_CREDENTIAL_MODE": "always federated in Azure (the managed identity asserts the bot app)",
    "GRAPH_APP_CLIENT_ID": "the bot's app registration",
    "GRAPH_TENANT_ID": "the deploying tenant",
    "CALLBACK_BASE_URL": "the Function App's own https host name",
    "ALLOW_INSECURE_RECORDING_URLS": "always false in Azure",
    "TRANSCRIPTION_ENABLED": "true exactly when the Speech account is deployed (transcription)",
    "TRANSCRIPTION_ENDPOINT": "the deployed Speech account's custom-subdomain endpoint",
    "MANAGEMENT_TENANT_ID": "the deploying tenant: the management API takes its Entra ID tokens",
    "EVENTS_ENDPOINT": "the deployed Event Grid topic's endpoint (events), else unset",
}
# Never set in Azure: alias -> reason.
NOT_SET_IN_AZURE = {
    "AzureWebJobsStorage": "a connection string holds a key; Azure uses identity-based storage",
    "GRAPH_CLIENT_SECRET": "localAppRegistration only, refused in Azure",
    "GRAPH_CLIENT_CERTIFICATE_PATH": "localAppRegistration only, refused in Azure",
    "GRAPH_CLIENT_CERTIFICATE_PASSWORD": "localAppRegistration only, refused in Azure",
    "GRAPH_AUTHORITY_CA_FILE": "the local simulator only, refused in Azure",
    "MANAGEMENT_OPENID_CONFIGURATION_URL": "the local simulator only; in Azure the tenant's Entra ID configuration",
    "BOT_FRAMEWORK_OPENID_CONFIGURATION_URL": "the local simulator only; in Azure Bot Framework's published keys",
    "WEBSITE_INSTANCE_ID": "set by the platform",
    "WEBSITE_SITE_NAME": "set by the platform",
    "EVENTS_SOURCE": "defaults to CALLBACK_BASE_URL, the Function App's own https URL",
}
# Settings Azure's own defaults differ from the code's on purpose: alias -> reason.
DIFFERENT_DEFAULT = {
    "INBOUND_ALLOWED_TENANTS": "the deploying tenant, not any tenant (test_bicep checks it)",
}
# Bounded in the code but not expressible as @minValue/@maxValue: alias -> reason.
BOUNDED_BY_THE_APP_ONLY = {
    "TELEMETRY_SAMPLING_RATIO": "a decimal (Bicep has none, so a string); the app refuses a value "
    "outside 0–1 with one 'Invalid app settings' line",
}


def _fields() -> dict[str, FieldInfo]:
    return {field.alias: field for field in Settings.model_fields.values() if field.alias}


def _settings_values() -> dict[str, Any]:
    return {
        name: value
        for key, obj in _app_settings().items()
        if key != "hostSettings"
        for name, value in obj.items()
    }


def _camel(alias: str) -> str:
    words = alias.lower().split("_")
    return words[0] + "".join(word.title() for word in words[1:])


def _bicep_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value))
    if isinstance(value, tuple):
        return "[\n  " + "\n  ".join(f"'{item}'" for item in value) + "\n]" if value else "[]"
    return f"'{value or ''}'"


def _bicep_type(field: FieldInfo) -> str:
    default = field.default
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int | float):
        return "int"
    if isinstance(default, tuple):
        return "array"
    return "string"


def _value_expression(alias: str, field: FieldInfo) -> str:
    name = _camel(alias)
    kind = _bicep_type(field)
    if kind == "array":
        return f"join({name}, ',')"
    if kind in ("bool", "int"):
        return f"string({name})"
    return name


def _what_to_add(alias: str, field: FieldInfo) -> str:
    name = _camel(alias)
    kind = _bicep_type(field)
    default = None if field.default is PydanticUndefined else field.default
    env_default = ",".join(default) if isinstance(default, tuple) else _bicep_literal(default)
    env_default = env_default.strip("'")
    reader = {
        "bool": f"bool(readEnvironmentVariable('{alias}', '{env_default}'))",
        "int": f"int(readEnvironmentVariable('{alias}', '{env_default}'))",
        "array": f"split(readEnvironmentVariable('{alias}', '{env_default}'), ',')",
        "string": f"readEnvironmentVariable('{alias}', '{env_default}')",
    }[kind]
    return (
        f"{alias} (Settings.{field_name(alias)}, default {default!r}) has no Bicep parameter; "
        "a reprovision would drop any value set in the portal. Add:\n"
        f"  infra/main.bicep:          @description('{alias}: ...')\n"
        f"                             param {name} {kind} = {_bicep_literal(default)}\n"
        f"                             (and the module call: {name}: {name})\n"
        f"  infra/modules/functionapp.bicep: param {name} {kind}, and in appSettings "
        f"{alias}: {_value_expression(alias, field)}\n"
        f"  infra/main.bicepparam:     // {alias}: <what it means>\n"
        f"                             param {name} = {reader}\n"
        "  plus @minValue/@maxValue matching the field's bounds; or, if it is no deployment "
        "choice, list it in SET_BY_THE_TEMPLATE or NOT_SET_IN_AZURE in "
        "tests/infra/test_settings_parity.py with the reason."
    )


def field_name(alias: str) -> str:
    return next(name for name, field in Settings.model_fields.items() if field.alias == alias)


def _choices() -> dict[str, FieldInfo]:
    """Settings that are deployment choices: every field not explained away above."""
    skipped = set(SET_BY_THE_TEMPLATE) | set(NOT_SET_IN_AZURE) | HOST_SETTINGS
    return {alias: field for alias, field in _fields().items() if alias not in skipped}


def test_the_exemption_lists_name_real_settings() -> None:
    known = set(_fields())
    for listed in (
        SET_BY_THE_TEMPLATE,
        NOT_SET_IN_AZURE,
        DIFFERENT_DEFAULT,
        BOUNDED_BY_THE_APP_ONLY,
    ):
        assert set(listed) <= known, set(listed) - known
    # What the template sets itself, it really sets.
    settings = _settings_values()
    for alias in SET_BY_THE_TEMPLATE:
        assert alias in settings, f"{alias} is listed as set by the template, which does not set it"
    for alias in NOT_SET_IN_AZURE:
        assert alias not in settings, f"{alias} must not be set in Azure"


def test_every_setting_the_app_reads_has_a_parameter_with_the_codes_default() -> None:
    settings = _settings_values()
    problems = []
    for alias, field in _choices().items():
        traced = _trace_to_main_default(settings[alias]) if alias in settings else None
        if traced is None:
            problems.append(_what_to_add(alias, field))
            continue
        if alias in DIFFERENT_DEFAULT:
            continue
        _, bicep_default = traced
        expected = field.default
        if isinstance(expected, tuple):
            ok = tuple(bicep_default) == expected
        elif expected is None:
            ok = bicep_default == ""
        elif isinstance(expected, bool):
            ok = bicep_default is expected
        elif isinstance(expected, int | float):
            ok = float(bicep_default) == float(expected)
        else:
            ok = bicep_default == expected
        if not ok:
            problems.append(
                f"{alias}: main.bicep's default {bicep_default!r} differs from the code's "
                f"{expected!r}; make them equal"
            )
    assert not problems, "\n\n".join(problems)


def _bounds(field: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = float(typing.cast(float, item.ge))
        elif isinstance(item, annotated_types.Gt):
            low = float(typing.cast(float, item.gt)) + 1e-9
        elif isinstance(item, annotated_types.Le):
            high = float(typing.cast(float, item.le))
    return low, high


def test_every_value_the_template_accepts_the_code_accepts() -> None:
    """A bound missing in Bicep lets `azd provision` set a value the app then refuses."""
    settings = _settings_values()
    problems = []
    module = body(one_module("modules/functionapp.bicep"))["params"]
    for alias, field in _choices().items():
        low, high = _bounds(field)
        if (low is None and high is None) or alias in BOUNDED_BY_THE_APP_ONLY:
            continue
        expression = settings[alias]
        name = expression["function"]["parameters"]["value_to_convert"]
        spec = main()["parameters"][module[name]]
        kinds = {item["type"]: item["argument"] for item in spec["decorators"]}
        if low is not None and ("min_value" not in kinds or kinds["min_value"] < low):
            problems.append(f"{module[name]}: add @minValue({int(low + 0.5)}) for {alias}")
        if high is not None and ("max_value" not in kinds or kinds["max_value"] > high):
            problems.append(f"{module[name]}: add @maxValue({int(high)}) for {alias}")
    assert not problems, problems


def test_each_choice_is_changed_with_azd_env_set_of_its_own_name() -> None:
    """``azd env set BOT_RECORD_ATTEMPTS 3 && azd provision``: the env name is the setting's."""
    assigned = bicepparam()
    module = body(one_module("modules/functionapp.bicep"))["params"]
    settings = _settings_values()
    missing = []
    for alias in _choices():
        if alias in DIFFERENT_DEFAULT or alias in ("INBOUND_OPENID_CONFIGURATION_URL",):
            continue
        expression = settings[alias]
        inner = (
            expression.get("function", {}).get("parameters", {})
            if isinstance(expression, dict)
            else {}
        )
        name = inner.get("value_to_convert") or inner.get("input_array") or expression
        parameter = module[name]
        if (
            parameter not in assigned
            or f"readEnvironmentVariable('{alias}'" not in assigned[parameter]
        ):
            missing.append(f"{parameter} = ...readEnvironmentVariable('{alias}', <default>)")
    # Lists and URLs whose environment form would be ambiguous stay literal in main.bicepparam.
    allowed_literal = {
        "inboundAllowedIssuers = ...readEnvironmentVariable('INBOUND_ALLOWED_ISSUERS', <default>)",
        "graphBaseUrl = ...readEnvironmentVariable('GRAPH_BASE_URL', <default>)",
        "recordingAllowedHostSuffixes = ...readEnvironmentVariable("
        "'RECORDING_ALLOWED_HOST_SUFFIXES', <default>)",
        "transcriptionLocales = ...readEnvironmentVariable('TRANSCRIPTION_LOCALES', <default>)",
        "transcriptionKeepAudio = ...readEnvironmentVariable('TRANSCRIPTION_KEEP_AUDIO', <default>)",
    }
    assert set(missing) <= allowed_literal, sorted(set(missing) - allowed_literal)


def test_the_failure_message_names_what_to_add() -> None:
    """What a merge that adds a setting without a parameter would read."""
    field = _fields()["BOT_RECORD_ATTEMPTS"]
    message = _what_to_add("BOT_RECORD_ATTEMPTS", field)
    assert "param botRecordAttempts int = 2" in message
    assert "BOT_RECORD_ATTEMPTS: string(botRecordAttempts)" in message
    assert "int(readEnvironmentVariable('BOT_RECORD_ATTEMPTS', '2'))" in message
    assert "infra/modules/functionapp.bicep" in message
    stop_tones = _what_to_add("BOT_RECORD_STOP_TONES", _fields()["BOT_RECORD_STOP_TONES"])
    assert "join(botRecordStopTones, ',')" in stop_tones
    assert re.search(r"param botRecordStopTones array = \[\s+'#'\s+\]", stop_tones)
    # The module declares every parameter it is passed (the compiler would say so).
    assert set(body(one_module("modules/functionapp.bicep"))["params"]) <= set(
        parse("modules/functionapp.bicep")["parameters"]
    )


def test_python_version_is_a_parameter_the_makefile_can_test() -> None:
    """The runtime Azure runs is one the suite runs on (Makefile SUPPORTED_PYTHONS)."""
    from tests.infra.test_bicep import ROOT

    spec = main()["parameters"]["pythonVersion"]
    assert decorator(spec, "allowed") == ["3.11", "3.12", "3.13"]
    makefile = (ROOT / "Makefile").read_text()
    (supported,) = re.findall(r"^SUPPORTED_PYTHONS := (.+)$", makefile, re.MULTILINE)
    assert f"python{spec['default']}" in supported.split(), (spec["default"], supported)
    assert "pythonVersion" not in bicepparam(), "one default: main.bicep's"
