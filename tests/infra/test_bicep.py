"""Structural checks of infra/ (the Bicep compiler cannot run here).

Every ``.bicep`` file is parsed with pycep-parser; the tests then assert on the parsed structure:
the resources and security properties the app relies on, the bot's keyless identity and its Graph
grant, and that every app setting the Function App gets is one the code reads
(``shared.settings.Settings`` aliases), with the same defaults unless the deployment has a reason
to differ (the tenant allow-list, the credential mode).
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser
from pydantic_core import PydanticUndefined

from shared.queues import DOWNLOAD_QUEUE
from shared.settings import Settings
from shared.storage import OPERATIONS_TABLE, RECORDINGS_CONTAINER

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

ROLE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
ROLE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
ROLE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
ROLE_MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
GRAPH_EXTENSION_MODULES = {"graph-permissions.bicep", "bot-identity.bicep"}

# Settings read by the Functions host or the platform, not by shared.settings.Settings.
HOST_SETTINGS = {
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_ENABLE_OPENTELEMETRY",
}
# Not allowed: a connection string with a key, or settings Flex Consumption rejects.
FORBIDDEN_SETTINGS = {
    "AzureWebJobsStorage",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}
SECRET_MARKERS = (
    "AccountKey=",
    "SharedAccessSignature",
    "sig=",
    "listKeys",
    "listkeys",
    "Password",
)

# App settings whose Bicep default must be checked against Settings (the test fails if one of
# them is no longer traced to a main.bicep parameter default). Deliberately different in Azure:
# INBOUND_ALLOWED_TENANTS (the deploying tenant, not any) and GRAPH_CREDENTIAL_MODE (federated).
DEFAULT_CHECKED = {
    "INBOUND_OPENID_CONFIGURATION_URL",
    "INBOUND_ALLOWED_ISSUERS",
    "GRAPH_BASE_URL",
    "BOT_AUTO_ANSWER",
    "BOT_RECORD_MAX_DURATION_SECONDS",
    "BOT_RECORD_PROMPT_URI",
    "RECORDING_RETENTION_MINUTES",
    "CALLER_IDENTITY",
    "CLEANUP_SCHEDULE",
    "LEDGER_RETENTION_DAYS",
    "POISON_MESSAGE_MAX_AGE_MINUTES",
    "RECORDING_MAX_BYTES",
    "RECORDING_ALLOWED_HOST_SUFFIXES",
    "TELEMETRY_SAMPLING_RATIO",
    "TRANSCRIPTION_LOCALES",
    "TRANSCRIPTION_KEEP_AUDIO",
    "MANAGEMENT_FUNCTION_KEYS",
    "AUDIT_RETENTION_DAYS",
    "BOT_RECORD_INITIAL_SILENCE_SECONDS",
    "BOT_RECORD_MAX_SILENCE_SECONDS",
    "BOT_RECORD_PLAY_BEEP",
    "BOT_RECORD_STOP_TONES",
    "BOT_REPROMPT_URI",
    "BOT_THANK_YOU_PROMPT_URI",
    "BOT_RECORD_ATTEMPTS",
    "BOT_HANG_UP_AFTER_RECORDING",
    "BOT_HANG_UP_WAIT_SECONDS",
    "BOT_CONFIRM_RECORDING",
    "BOT_CONFIRM_PROMPT_URI",
    "BOT_CONFIRM_TIMEOUT_SECONDS",
    "ABANDON_RUNNING_AFTER_MINUTES",
    "EVENTS_TYPE_PREFIX",
    "EVENTS_REDRIVE_AFTER_MINUTES",
    "EVENTS_PUBLISH_TIMEOUT_SECONDS",
    "STATUS_URL_TTL_MINUTES",
    "TRANSCRIPTION_MAX_RESPONSE_BYTES",
}


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


@functools.cache
def parse(relative: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=INFRA / relative)  # type: ignore[return-value]


def main() -> dict[str, Any]:
    return parse("main.bicep")


def body(element: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource or module, whether plain, conditional or a loop."""
    config: dict[str, Any] = element["config"]
    if "condition" in config and isinstance(config.get("config"), dict):
        return config["config"]  # type: ignore[no-any-return]
    return config


def condition(element: dict[str, Any]) -> Any:
    config = element["config"]
    return config.get("condition") if "config" in config else None


def resources(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {
        name: res
        for name, res in doc.get("resources", {}).items()
        if res["type"].lower() == type_.lower()
    }


def one_resource(doc: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    found = resources(doc, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def module_calls(doc: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {
        name: mod for name, mod in doc.get("modules", {}).items() if mod["detail"]["path"] == path
    }


def one_module(path: str) -> dict[str, Any]:
    calls = module_calls(main(), path)
    assert len(calls) == 1, f"main.bicep should call {path} once, calls: {sorted(calls)}"
    return next(iter(calls.values()))


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def functions_in(node: Any, name: str) -> list[dict[str, Any]]:
    return [
        item["function"]
        for item in walk(node)
        if isinstance(item, dict)
        and isinstance(item.get("function"), dict)
        and item["function"].get("type") == name
    ]


def lookup(obj: dict[str, Any], key: str) -> Any:
    """Case-insensitive key lookup (ARM property names are case-insensitive)."""
    matches = [value for name, value in obj.items() if name.lower() == key.lower()]
    assert matches, f"{key} missing in {sorted(obj)}"
    return matches[0]


def not_empty(name: str) -> dict[str, Any]:
    """The parsed form of ``!empty(name)``."""
    return {
        "operator": {
            "type": "not",
            "operands": {
                "bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": name}}}
            },
        }
    }


def role_definition(node: Any) -> Any:
    """The role id X of ``subscriptionResourceId('Microsoft.Authorization/roleDefinitions', X)``."""
    (call,) = functions_in(node, "subscription_resource_id")
    assert node == {"function": call}, f"a role definition id is that call alone: {node}"
    arguments = call["parameters"]
    assert arguments["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    assert arguments["resource_name_2"] is None
    assert arguments["subscription_id"] is None
    return arguments["resource_name_1"]


@functools.cache
def bicepparam() -> dict[str, str]:
    """main.bicepparam's assignments: parameter name to its expression, comments left out.

    pycep cannot parse a .bicepparam file; an assignment is ``param name = expression`` on one
    line, or over several lines until its brackets close.
    """
    assigned: dict[str, str] = {}
    lines = iter((INFRA / "main.bicepparam").read_text().splitlines())
    for line in lines:
        match = re.fullmatch(r"param (\w+) = (.+)", line.split(" //", 1)[0].strip())
        if not match:
            continue
        expression = match.group(2)
        while expression.count("[") > expression.count("]"):
            expression += " " + next(lines).strip()
        assigned[match.group(1)] = expression
    return assigned


def has_default(spec: dict[str, Any]) -> bool:
    """pycep gives every parameter a ``default`` key: None when the Bicep has none."""
    return spec.get("default") is not None


def settings_field(alias: str) -> Any:
    for field in Settings.model_fields.values():
        if field.alias == alias:
            return field
    return None


SETTINGS_ALIASES = {field.alias for field in Settings.model_fields.values() if field.alias}


# ------------------------------------------------------------------------------------------------
# Files parse and hang together
# ------------------------------------------------------------------------------------------------


def test_every_module_is_wired_and_every_reference_resolves() -> None:
    """No orphaned module file (it would never deploy) and no module path that does not exist."""
    referenced: set[pathlib.Path] = set()
    for path in BICEP_FILES:
        for name, mod in parse(path.relative_to(INFRA).as_posix()).get("modules", {}).items():
            target = mod["detail"]["path"]
            resolved = (path.parent / target).resolve()
            assert resolved.is_file(), f"{path.name}: module {name} references missing {target}"
            referenced.add(resolved)
    orphans = [
        path.relative_to(INFRA).as_posix()
        for path in BICEP_FILES
        if path.name != "main.bicep" and path.resolve() not in referenced
    ]
    assert orphans == []
    assert referenced, "main.bicep wires no module"
    assert (INFRA / "main.bicepparam").is_file()
    assert (INFRA / "bicepconfig.json").is_file()


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    doc = parse(path.relative_to(INFRA).as_posix())
    assert doc.get("resources") or doc.get("modules"), f"{path.name} declares nothing"


def test_module_calls_match_module_parameters() -> None:
    """What the compiler would reject: unknown module params, missing required ones."""
    checked = 0
    for name, mod in main()["modules"].items():
        path = mod["detail"]["path"]
        target = INFRA / path
        assert target.is_file(), f"module {name}: {path} does not exist"
        declared = parse(path).get("parameters", {})
        passed = body(mod).get("params", {})
        unknown = set(passed) - set(declared)
        assert not unknown, f"module {name} passes undeclared params {sorted(unknown)}"
        required = {p for p, spec in declared.items() if not has_default(spec)}
        missing = required - set(passed)
        assert not missing, f"module {name} misses required params {sorted(missing)}"
        checked += 1
    assert checked >= 9


def test_bicepparam_assigns_only_declared_parameters_and_explains_each() -> None:
    declared = main()["parameters"]
    lines = (INFRA / "main.bicepparam").read_text().splitlines()
    assert lines[next(i for i, line in enumerate(lines) if line.strip())].startswith("//")
    assert any(line.strip() == "using './main.bicep'" for line in lines)
    assigned = []
    for index, line in enumerate(lines):
        match = re.match(r"param (\w+) =", line)
        if not match:
            continue
        assigned.append(match.group(1))
        assert lines[index - 1].lstrip().startswith("//"), f"{match.group(1)} is not explained"
    assert set(assigned) <= set(declared), set(assigned) - set(declared)
    without_default = {name for name, spec in declared.items() if not has_default(spec)}
    assert {"environmentName", "location"} <= without_default
    assert without_default <= set(assigned)
    # The one parameter left out (location) is still explained.
    for name in set(declared) - set(assigned):
        assert re.search(rf"//\s*{name}\b", "\n".join(lines)), f"{name} is not explained"


def test_every_main_parameter_has_a_description() -> None:
    for name, spec in main()["parameters"].items():
        kinds = {decorator["type"] for decorator in spec["decorators"]}
        assert "description" in kinds, name


def test_resource_names_come_from_a_resource_token() -> None:
    token = main()["variables"]["resourceToken"]["value"]
    # toLower(uniqueString(subscription().id, environmentName, location))
    assert token["function"]["type"] == "to_lower"
    unique = token["function"]["parameters"]["string_to_change"]["function"]
    assert unique["type"] == "unique_string"
    assert [dotted(argument) for argument in unique["parameters"].values()] == [
        "subscription().id",
        "environmentName",
        "location",
    ]
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    names = [
        body(mod)["params"]["name"]
        for mod in main()["modules"].values()
        if "name" in body(mod).get("params", {})
    ]
    assert names
    for name in names:
        if name == "functionAppName":
            name = main()["variables"]["functionAppName"]["value"]
        assert name.startswith("${abbrs."), name
        assert name.endswith("${resourceToken}"), name
        key = name[len("${abbrs.") : name.index("}")]
        assert key in abbreviations, key
    _, group = one_resource(main(), "Microsoft.Resources/resourceGroups")
    default_name = body(group)["name"]["operator"]["operands"]["true_value"]
    assert default_name == "${abbrs.resourcesResourceGroups}${environmentName}"
    assert abbreviations["resourcesResourceGroups"] == "rg-"


def is_tenant_id(node: Any) -> bool:
    """``tenant().tenantId``."""
    operator = node.get("operator", {}) if isinstance(node, dict) else {}
    operands = operator.get("operands", {})
    return (
        operator.get("type") == "property_accessor"
        and operands.get("operand_1") == {"function": {"type": "tenant"}}
        and operands.get("operand_2") == "tenantId"
    )


def decorator(spec: dict[str, Any], kind: str) -> Any:
    found = [d["argument"] for d in spec["decorators"] if d["type"] == kind]
    assert found, f"no @{kind} on {spec}"
    return found[0]


# ------------------------------------------------------------------------------------------------
# Subscription scope, region, azd
# ------------------------------------------------------------------------------------------------


def test_main_deploys_at_subscription_scope_into_a_resource_group_it_creates() -> None:
    assert main()["globals"]["scope"] == {"value": "subscription"}
    group_name, group = one_resource(main(), "Microsoft.Resources/resourceGroups")
    assert body(group)["location"] == "location"
    assert body(group)["tags"] == "tags"
    # Every resource lives in the group: main declares nothing else, each module targets the group.
    assert set(main()["resources"]) == {group_name}
    scopes = {name: body(mod).get("scope") for name, mod in main()["modules"].items()}
    assert len(scopes) >= 9
    assert set(scopes.values()) == {group_name}, scopes
    assert main()["parameters"]["resourceGroupName"]["default"] == ""
    assert main()["outputs"]["AZURE_RESOURCE_GROUP"]["value"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {"operand_1": group_name, "operand_2": "name"},
        }
    }


def test_location_is_limited_to_flex_consumption_regions() -> None:
    spec = main()["parameters"]["location"]
    allowed = decorator(spec, "allowed")
    assert len(allowed) == len(set(allowed)) >= 20
    assert {"swedencentral", "eastus", "westeurope", "australiaeast"} <= set(allowed)
    # Regions without Flex Consumption (e.g. westindia) and early-access rings stay out.
    assert "westindia" not in allowed
    assert not [region for region in allowed if region.endswith("euap")]
    assert all(re.fullmatch(r"[a-z0-9]+", region) for region in allowed)
    assert not has_default(spec), "azd asks for the region; no silent default"
    assert decorator(spec, "metadata") == {"azd": {"type": "location"}}
    assert bicepparam()["location"] == "readEnvironmentVariable('AZURE_LOCATION')"


def test_azd_minimum_version_covers_the_graph_extension() -> None:
    config = _simple_yaml((ROOT / "azure.yaml").read_text())
    required = config["requiredVersions"]["azd"].strip("'\"")
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", required)
    assert match, required
    # azd 1.17.0 is the first to bundle Bicep 0.36.1, the Graph Bicep extension's minimum;
    # 1.17.1 sets AZURE_PRINCIPAL_TYPE, which main.bicepparam reads.
    assert tuple(int(part) for part in match.groups()) >= (1, 17, 1)
    reference = json.loads((INFRA / "bicepconfig.json").read_text())["extensions"]
    assert reference["microsoftGraphV1"].endswith("/v1.0:1.0.0")


# ------------------------------------------------------------------------------------------------
# Identity and storage
# ------------------------------------------------------------------------------------------------


def test_user_assigned_identity() -> None:
    doc = parse("modules/identity.bicep")
    one_resource(doc, "Microsoft.ManagedIdentity/userAssignedIdentities")
    assert {"id", "clientId", "principalId"} <= set(doc["outputs"])


def test_storage_account_is_identity_only() -> None:
    doc = parse("modules/storage.bicep")
    _, account = one_resource(doc, "Microsoft.Storage/storageAccounts")
    props = body(account)["properties"]
    assert lookup(props, "allowSharedKeyAccess") is False
    assert lookup(props, "allowBlobPublicAccess") is False
    assert lookup(props, "minimumTlsVersion") == "TLS1_2"
    assert lookup(props, "supportsHttpsTrafficOnly") is True
    assert lookup(props, "defaultToOAuthAuthentication") is True
    sku_param = doc["parameters"][body(account)["sku"]["name"]]
    allowed = next(d["argument"] for d in sku_param["decorators"] if d["type"] == "allowed")
    assert all("GRS" not in sku for sku in allowed), "no geo-replication of call media"


def test_storage_account_sets_no_create_only_properties() -> None:
    """A redeployment over an account made without them would fail; the defaults encrypt."""
    doc = parse("modules/storage.bicep")
    _, account = one_resource(doc, "Microsoft.Storage/storageAccounts")
    set_here = {
        key.lower() for item in walk(body(account)) if isinstance(item, dict) for key in item
    }
    for create_only in (
        "requireInfrastructureEncryption",
        "keyType",
        "isHnsEnabled",
        "isSftpEnabled",
    ):
        assert create_only.lower() not in set_here, create_only


def test_blob_soft_delete_is_off() -> None:
    doc = parse("modules/storage.bicep")
    _, service = one_resource(doc, "Microsoft.Storage/storageAccounts/blobServices")
    props = body(service)["properties"]
    assert props["deleteRetentionPolicy"]["enabled"] is False
    assert props["containerDeleteRetentionPolicy"]["enabled"] is False
    assert props["isVersioningEnabled"] is False


def test_contract_names_match_the_code() -> None:
    variables = main()["variables"]
    assert variables["recordingsContainerName"]["value"] == RECORDINGS_CONTAINER
    assert variables["downloadQueueName"]["value"] == DOWNLOAD_QUEUE
    assert variables["ledgerTableName"]["value"] == OPERATIONS_TABLE
    params = body(one_module("modules/storage.bicep"))["params"]
    for name in ("recordingsContainerName", "downloadQueueName", "ledgerTableName"):
        assert params[name] == name


def test_storage_queues_containers_and_table() -> None:
    doc = parse("modules/storage.bicep")
    queues = resources(doc, "Microsoft.Storage/storageAccounts/queueServices/queues")
    assert sorted(body(q)["name"] for q in queues.values()) == sorted(
        ["downloadQueueName", "${downloadQueueName}-poison"]
    )
    containers = resources(doc, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert sorted(body(c)["name"] for c in containers.values()) == sorted(
        ["recordingsContainerName", "deploymentContainerName"]
    )
    for container in containers.values():
        assert body(container)["properties"]["publicAccess"] == "None"
    tables = resources(doc, "Microsoft.Storage/storageAccounts/tableServices/tables")
    assert [body(t)["name"] for t in tables.values()] == ["ledgerTableName"]


def test_lifecycle_rule_is_a_day_granular_backstop_for_recordings() -> None:
    doc = parse("modules/storage.bicep")
    _, policy = one_resource(doc, "Microsoft.Storage/storageAccounts/managementPolicies")
    rules = body(policy)["properties"]["policy"]["rules"]
    assert len(rules) == 1
    definition = rules[0]["definition"]
    assert rules[0]["enabled"] is True
    assert definition["filters"]["prefixMatch"] == ["${recordingsContainerName}/"]
    delete = definition["actions"]["baseBlob"]["delete"]
    assert delete == {"daysAfterCreationGreaterThan": "recordingBackstopDays"}
    main_params = main()["parameters"]
    passed = body(one_module("modules/storage.bicep"))["params"]["recordingBackstopDays"]
    assert passed == "recordingBackstopDays"
    backstop_days = main_params["recordingBackstopDays"]["default"]
    assert backstop_days == 1
    retention_minutes = main_params["recordingRetentionMinutes"]["default"]
    assert backstop_days * 24 * 60 >= retention_minutes, "backstop must not cut retention short"


def test_storage_roles_for_the_identity_and_optional_deployer() -> None:
    doc = parse("modules/storage-roles.bicep")
    assert set(doc["variables"]["roleDefinitionIds"]["value"]) == {
        ROLE_BLOB_DATA_OWNER,
        ROLE_QUEUE_DATA_CONTRIBUTOR,
        ROLE_TABLE_DATA_CONTRIBUTOR,
    }
    _, assignment = one_resource(doc, "Microsoft.Authorization/roleAssignments")
    loop = assignment["config"]["loop_type"]["detail"]
    assert loop == {"item_name": "roleId", "array_name": "roleDefinitionIds"}
    inner = assignment["config"]["config"]
    assert inner["scope"] == "account"
    assert inner["properties"]["principalId"] == "principalId"
    assert role_definition(inner["properties"]["roleDefinitionId"]) == "roleId"
    calls = module_calls(main(), "modules/storage-roles.bicep")
    by_principal = {dotted(body(c)["params"]["principalId"]): c for c in calls.values()}
    identity_call = by_principal["identity.outputs.principalId"]
    assert body(identity_call)["params"]["principalType"] == "ServicePrincipal"
    assert condition(identity_call) is None
    deployer_call = by_principal["principalId"]
    assert condition(deployer_call) == not_empty("principalId"), "deployer roles are optional"
    assert main()["parameters"]["principalId"]["default"] == ""


def dotted(node: Any) -> str | None:
    """``a.b.c`` for a property-accessor chain (pycep nests them either way), else None.

    A call without arguments reads ``name()`` (pycep's snake_case name): ``subscription().id``.
    """
    if isinstance(node, str):
        return node
    function = node.get("function") if isinstance(node, dict) else None
    if isinstance(function, dict) and not any((function.get("parameters") or {}).values()):
        return f"{function['type']}()"
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        left, right = dotted(operands["operand_1"]), dotted(operands["operand_2"])
        if left is not None and right is not None:
            return f"{left}.{right}"
    return None


# ------------------------------------------------------------------------------------------------
# Monitoring
# ------------------------------------------------------------------------------------------------


def test_application_insights_local_auth_disabled_and_metrics_publisher() -> None:
    doc = parse("modules/monitoring.bicep")
    name, insights = one_resource(doc, "Microsoft.Insights/components")
    props = body(insights)["properties"]
    assert lookup(props, "DisableLocalAuth") is True
    workspace_name, _ = one_resource(doc, "Microsoft.OperationalInsights/workspaces")
    assert dotted(lookup(props, "WorkspaceResourceId")) == f"{workspace_name}.id"
    assert doc["variables"]["metricsPublisherRoleId"]["value"] == ROLE_MONITORING_METRICS_PUBLISHER
    roles = resources(doc, "Microsoft.Authorization/roleAssignments")
    by_principal = {body(r)["properties"]["principalId"]: r for r in roles.values()}
    assert set(by_principal) == {"publisherPrincipalId", "deployerPrincipalId"}
    for role in by_principal.values():
        assert body(role)["scope"] == name
        assert role_definition(body(role)["properties"]["roleDefinitionId"]) == (
            "metricsPublisherRoleId"
        )
    # The app's identity always; the deployer (azd's AZURE_PRINCIPAL_ID) when given.
    assert condition(by_principal["publisherPrincipalId"]) is None
    deployer = by_principal["deployerPrincipalId"]
    assert condition(deployer) == not_empty("deployerPrincipalId")
    assert body(deployer)["properties"]["principalType"] == "deployerPrincipalType"
    passed = body(one_module("modules/monitoring.bicep"))["params"]
    assert dotted(passed["publisherPrincipalId"]) == "identity.outputs.principalId"
    assert passed["deployerPrincipalId"] == "principalId"
    assert passed["deployerPrincipalType"] == "principalType"


# ------------------------------------------------------------------------------------------------
# Function App
# ------------------------------------------------------------------------------------------------


def test_flex_consumption_plan() -> None:
    doc = parse("modules/functionapp.bicep")
    _, plan = one_resource(doc, "Microsoft.Web/serverfarms")
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert body(plan)["properties"]["reserved"] is True


def test_function_app_site() -> None:
    doc = parse("modules/functionapp.bicep")
    _, site = one_resource(doc, "Microsoft.Web/sites")
    config = body(site)
    assert config["kind"] == "functionapp,linux"
    assert config["identity"]["type"] == "UserAssigned"
    assert list(config["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    # union(tags, {'azd-service-name': azdServiceName}): azd finds the app by that tag.
    (tags,) = functions_in(config["tags"], "union")
    assert list(tags["parameters"].values()) == ["tags", {"'azd-service-name'": "azdServiceName"}]
    props = config["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    app_config = props["functionAppConfig"]
    assert app_config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert body(one_module("modules/functionapp.bicep"))["params"]["pythonVersion"] == (
        "pythonVersion"
    )
    storage = app_config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    assert app_config["scaleAndConcurrency"] == {
        "maximumInstanceCount": "maximumInstanceCount",
        "instanceMemoryMB": "instanceMemoryMB",
        "alwaysReady": "alwaysReady",
    }
    defaults = main()["parameters"]
    assert defaults["maximumInstanceCount"]["default"] == 100
    assert defaults["instanceMemoryMB"]["default"] == 2048
    assert body(one_module("modules/functionapp.bicep"))["params"]["azdServiceName"] == "api"


def _always_ready_entry(variable: str) -> tuple[str, dict[str, Any]]:
    """(count parameter, entry) of one conditional always-ready entry of functionapp.bicep."""
    doc = parse("modules/functionapp.bicep")
    conditional = doc["variables"][variable]["value"]["operator"]
    assert conditional["type"] == "conditional"
    operands = conditional["operands"]
    test = operands["condition"]["operator"]
    assert test["type"] == "greater_than"
    assert test["operands"]["operand_2"] == 0
    assert operands["false_value"] == [], "a count of 0 leaves the entry out"
    (entry,) = operands["true_value"]
    assert entry["instanceCount"] == test["operands"]["operand_1"]
    return test["operands"]["operand_1"], entry


def test_always_ready_instances_for_the_webhook_and_the_download_worker() -> None:
    doc = parse("modules/functionapp.bicep")
    combined = doc["variables"]["alwaysReady"]["value"]["function"]
    assert combined["type"] == "concat"
    assert list(combined["parameters"].values()) == ["alwaysReadyHttp", "alwaysReadyDownload"]

    http_count, http = _always_ready_entry("alwaysReadyHttp")
    assert http["name"] == "http"
    download_count, download = _always_ready_entry("alwaysReadyDownload")
    assert download["name"] == "function:${downloadFunctionName}"

    # The name is a function the app registers, and it is the queue-triggered download worker
    # (HTTP functions share the http group; other triggers scale per function).
    from tests.support.functions import registered_functions

    # The programming model indexes the app once per process: go through the suite's one index.
    triggers = {name: f.get_trigger().type for name, f in registered_functions().items()}
    download_function = doc["variables"]["downloadFunctionName"]["value"]
    assert triggers.get(download_function) == "queueTrigger", triggers
    assert triggers.get("notifications") == "httpTrigger", "the webhook is in the http group"

    # Defaults 1, 0 allowed, passed through from main.bicep.
    passed = body(one_module("modules/functionapp.bicep"))["params"]
    for count in (http_count, download_count):
        assert passed[count] == count
        main_spec = main()["parameters"][count]
        assert main_spec["default"] == 1, count
        assert decorator(main_spec, "min_value") == 0, count
        assert decorator(doc["parameters"][count], "min_value") == 0, count
        assert re.fullmatch(r"int\(readEnvironmentVariable\('\w+', '1'\)\)", bicepparam()[count])


def test_basic_publishing_credentials_disabled() -> None:
    doc = parse("modules/functionapp.bicep")
    policies = resources(doc, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(body(p)["name"] for p in policies.values()) == ["ftp", "scm"]
    for policy in policies.values():
        assert body(policy)["properties"] == {"allow": False}


def _app_settings() -> dict[str, dict[str, Any]]:
    """Setting objects by variable name, checked to be exactly what the config resource sets."""
    doc = parse("modules/functionapp.bicep")
    configs = resources(doc, "Microsoft.Web/sites/config")
    assert [body(c)["name"] for c in configs.values()] == ["appsettings"]
    properties = body(next(iter(configs.values())))["properties"]
    unions = functions_in(properties, "union")
    assert unions, "appsettings are a union of named setting objects"
    referenced = {
        item
        for item in walk(unions[0]["parameters"])
        if isinstance(item, str) and item in doc["variables"]
    }
    objects = {name: doc["variables"][name]["value"] for name in referenced}
    assert "hostSettings" in objects
    assert "appSettings" in objects
    # Nothing else is merged in: no object literal with setting names inside the union itself.
    for item in walk(unions[0]["parameters"]):
        if isinstance(item, dict):
            inline = [key for key in item if re.match(r"^([A-Z][A-Z0-9]*_|AzureWebJobs)", key)]
            assert not inline, f"settings merged outside the named objects: {inline}"
    for name, value in objects.items():
        assert isinstance(value, dict), f"{name} must be a literal object"
        assert value, f"{name} is empty"
    return objects


def test_no_app_setting_holds_a_key_or_secret() -> None:
    settings = {k: v for obj in _app_settings().values() for k, v in obj.items()}
    assert not set(settings) & FORBIDDEN_SETTINGS
    for name, value in settings.items():
        rendered = json.dumps(value)
        for marker in SECRET_MARKERS:
            assert marker not in rendered, f"{name} looks like a secret: {rendered}"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert (
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        == "ClientId=${identityClientId};Authorization=AAD"
    )
    for kind in ("blob", "queue", "table"):
        assert (
            settings[f"AzureWebJobsStorage__{kind}ServiceUri"] == f"storage{kind.title()}Endpoint"
        )
    assert settings["ALLOW_INSECURE_RECORDING_URLS"] == "false"


def test_no_secret_anywhere_in_infra() -> None:
    for path in BICEP_FILES:
        doc = parse(path.relative_to(INFRA).as_posix())
        rendered = json.dumps(doc)
        assert "listKeys" not in rendered, path.name
        assert "list_keys" not in rendered, path.name
        assert "AccountKey" not in rendered, path.name
        for name, spec in doc.get("outputs", {}).items():
            assert "key" not in name.lower(), name
            assert "secret" not in name.lower(), name
            assert "InstrumentationKey" not in json.dumps(spec), name


def test_every_app_setting_is_a_host_setting_or_a_settings_alias() -> None:
    objects = _app_settings()
    assert set(objects["hostSettings"]) == HOST_SETTINGS
    app_names = {name for key, obj in objects.items() if key != "hostSettings" for name in obj}
    unknown = app_names - SETTINGS_ALIASES
    assert not unknown, f"settings the code does not read: {sorted(unknown)}"
    assert {"BOT_APP_ID", "RECORDING_RETENTION_MINUTES", "GRAPH_CREDENTIAL_MODE"} <= app_names
    # Federated mode supplies the app registration and tenant the code needs in that mode.
    assert set(objects["federatedSettings"]) == {"GRAPH_APP_CLIENT_ID", "GRAPH_TENANT_ID"}


def _trace_to_main_default(value: Any) -> tuple[str, Any] | None:
    """(conversion, main.bicep default) for a setting fed by a main.bicep parameter."""
    conversion = "none"
    if isinstance(value, dict) and "function" in value:
        function = value["function"]
        conversion = function["type"]
        if conversion == "join":
            assert function["parameters"]["delimiter"] == ","
            value = function["parameters"]["input_array"]
        elif conversion == "string":
            value = function["parameters"]["value_to_convert"]
        else:
            return None
    module_params = parse("modules/functionapp.bicep")["parameters"]
    if not isinstance(value, str) or value not in module_params:
        return None
    passed = body(one_module("modules/functionapp.bicep"))["params"][value]
    main_params = main()["parameters"]
    if not isinstance(passed, str) or passed not in main_params:
        return None
    spec = main_params[passed]
    assert has_default(spec), f"{passed} has no default in main.bicep"
    return conversion, spec["default"]


def test_app_setting_defaults_match_settings() -> None:
    objects = _app_settings()
    checked = set()
    for key, obj in objects.items():
        if key == "hostSettings":
            continue
        for name, value in obj.items():
            if name == "INBOUND_ALLOWED_TENANTS":
                continue  # the deploying tenant in Azure: see the allow-list test below
            traced = _trace_to_main_default(value)
            if traced is None:
                continue
            conversion, bicep_default = traced
            expected = settings_field(name).default
            if expected is PydanticUndefined:
                continue
            if conversion == "join":
                assert tuple(bicep_default) == tuple(expected), name
            elif expected is None:
                assert bicep_default == "", f"{name}: optional settings default to '' (unset)"
            elif isinstance(expected, bool):
                assert bicep_default is expected, name
            elif isinstance(expected, int | float):
                assert float(bicep_default) == float(expected), name
            else:
                assert bicep_default == expected, name
            checked.add(name)
    assert checked == DEFAULT_CHECKED


def test_graph_credential_mode_is_federated_for_the_bots_app_registration() -> None:
    settings = {k: v for obj in _app_settings().values() for k, v in obj.items()}
    accepted = set(typing.get_args(settings_field("GRAPH_CREDENTIAL_MODE").annotation))
    assert settings["GRAPH_CREDENTIAL_MODE"] == "federated"
    assert "federated" in accepted
    # The managed identity (AZURE_CLIENT_ID) asserts a token for the bot's app registration.
    assert settings["GRAPH_APP_CLIENT_ID"] == "botAppId"
    assert settings["BOT_APP_ID"] == "botAppId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert is_tenant_id(settings["GRAPH_TENANT_ID"])
    # No other mode can be chosen in Azure: no parameter, and never developer credentials.
    for doc in (main(), parse("modules/functionapp.bicep")):
        assert "graphCredentialMode" not in doc["parameters"]
    assert "developer" not in json.dumps(_app_settings())


def test_tenant_allow_list_defaults_to_the_deploying_tenant() -> None:
    settings = {k: v for obj in _app_settings().values() for k, v in obj.items()}
    joined = settings["INBOUND_ALLOWED_TENANTS"]["function"]
    assert joined["type"] == "join"
    assert joined["parameters"]["input_array"] == "inboundAllowedTenants"
    passed = body(one_module("modules/functionapp.bicep"))["params"]["inboundAllowedTenants"]
    assert passed == "inboundAllowedTenants"
    spec = main()["parameters"]["inboundAllowedTenants"]
    (default,) = spec["default"]
    assert is_tenant_id(default)
    # Never empty (the code reads empty as "any tenant"): other tenants are listed explicitly.
    assert decorator(spec, "min_length") == 1
    assert (
        decorator(
            parse("modules/functionapp.bicep")["parameters"]["inboundAllowedTenants"], "min_length"
        )
        == 1
    )
    assert "inboundAllowedTenants" not in bicepparam()


def test_numeric_setting_bounds_match_settings() -> None:
    spec = main()["parameters"]["botRecordMaxDurationSeconds"]
    bounds = {d["type"]: d["argument"] for d in spec["decorators"]}
    assert bounds["min_value"] == 1
    assert bounds["max_value"] == 120


# ------------------------------------------------------------------------------------------------
# Microsoft Graph permission
# ------------------------------------------------------------------------------------------------


def test_graph_extension_is_configured() -> None:
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    reference = config["extensions"]["microsoftGraphV1"]
    assert reference.startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")
    # Only the two Graph modules talk to Graph; the others must compile without the extension.
    for path in BICEP_FILES:
        doc = parse(path.relative_to(INFRA).as_posix())
        if path.name in GRAPH_EXTENSION_MODULES:
            assert "microsoftGraphV1" in doc["extensions"], path.name
        else:
            assert not doc.get("extensions"), path.name
            assert "Microsoft.Graph" not in json.dumps(doc.get("resources", {})), path.name


def test_bot_app_registration_trusts_the_managed_identity_and_has_no_secret() -> None:
    doc = parse("modules/bot-identity.bicep")
    # Two declarations of the one app: the second sets identifierUris once the app id exists
    # (tests/infra/test_management_api.py checks that it repeats the first).
    apps = resources(doc, "Microsoft.Graph/applications")
    assert set(apps) == {"botApp", "botAppIdentifierUri"}
    app_name, app = "botApp", apps["botApp"]
    config = body(app)
    assert config["uniqueName"] == "uniqueName"
    assert config["displayName"] == "displayName"
    assert config["signInAudience"] == "AzureADMyOrg", "single tenant"
    rendered = json.dumps(apps)
    for credential in ("passwordCredentials", "keyCredentials"):
        assert credential not in rendered, "no secret or certificate on the bot's app"

    # The federated credential is a child of the application.
    children = {
        name: res
        for name, res in doc["resources"].items()
        if res["type"].startswith("Microsoft.Graph/applications/federatedIdentityCredentials")
    }
    assert list(children) == [f"{app_name}__managedIdentityCredential"]
    credential = body(next(iter(children.values())))
    assert credential["name"] == f"${{{app_name}.uniqueName}}/function-app-managed-identity"
    assert credential["subject"] == "managedIdentityPrincipalId"
    variables = {name: spec["value"] for name, spec in doc["variables"].items()}
    assert [variables[a] for a in credential["audiences"]] == [TOKEN_EXCHANGE_AUDIENCE]
    assert variables[credential["issuer"]] == (
        "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    )

    # Its service principal (the Azure Bot and the Graph grant need one).
    principals = resources(doc, "Microsoft.Graph/servicePrincipals")
    ((sp_name, sp),) = [(n, r) for n, r in principals.items() if not r["existing"]]
    assert dotted(body(sp)["appId"]) == f"{app_name}.appId"
    assert dotted(doc["outputs"]["appId"]["value"]) == f"{app_name}.appId"
    assert dotted(doc["outputs"]["servicePrincipalId"]["value"]) == f"{sp_name}.id"

    # It declares the Graph roles it needs, looked up by value, so an administrator who grants
    # them later has the app's "Grant admin consent" (or az ad app permission admin-consent).
    (graph_name,) = [n for n, r in principals.items() if r["existing"]]
    assert doc["variables"][body(principals[graph_name])["appId"]]["value"] == GRAPH_APP_ID
    (required,) = config["requiredResourceAccess"]
    assert required["resourceAppId"] == "graphAppId"
    (combined,) = functions_in(required["resourceAccess"], "concat")
    assert list(combined["parameters"].values()) == ["accessMedia", "joinGroupCall"]
    (access_media,) = variables["accessMedia"]
    assert access_media["type"] == "Role"
    assert _looks_up_by_value(access_media["id"], graph_name, "Calls.AccessMedia.All")
    join = doc["variables"]["joinGroupCall"]["value"]["operator"]["operands"]
    assert join["condition"] == "requestJoinGroupCall"
    assert join["false_value"] == []
    assert _looks_up_by_value(join["true_value"][0]["id"], graph_name, "Calls.JoinGroupCall.All")

    # main.bicep: created unless an existing app registration is given, trusting the app's identity.
    call = one_module("modules/bot-identity.bicep")
    assert condition(call) == {
        "function": {"type": "empty", "parameters": {"item_to_test": "botAppId"}}
    }
    params = body(call)["params"]
    assert dotted(params["managedIdentityPrincipalId"]) == "identity.outputs.principalId"
    assert params["uniqueName"].endswith("${resourceToken}")
    assert params["requestJoinGroupCall"] == "grantJoinGroupCall"
    assert main()["parameters"]["botAppId"]["default"] == ""


def _created_or_given(variable: str) -> tuple[str | None, Any]:
    """(created value, given value) of a main.bicep ``empty(botAppId) ? created : given``."""
    operands = main()["variables"][variable]["value"]["operator"]["operands"]
    assert operands["condition"] == {
        "function": {"type": "empty", "parameters": {"item_to_test": "botAppId"}}
    }
    return dotted(operands["true_value"]), operands["false_value"]


def test_the_created_app_is_the_bot_everywhere() -> None:
    assert _created_or_given("effectiveBotAppId") == ("botIdentity.outputs.appId", "botAppId")
    function_app_params = body(one_module("modules/functionapp.bicep"))["params"]
    assert function_app_params["botAppId"] == "effectiveBotAppId"
    assert body(one_module("modules/bot.bicep"))["params"]["msaAppId"] == "effectiveBotAppId"
    assert main()["outputs"]["BOT_APP_ID"]["value"] == "effectiveBotAppId"


def _looks_up_by_value(app_role_id: Any, graph_name: str, role_value: str) -> bool:
    """``filter(<graph>.appRoles, role => role.value == '<role_value>')[0].id``.

    pycep reads ``role.value == x`` as ``role.(value == x)``: the shape below is that reading.
    """
    by_value = {
        "type": "lambda_expression",
        "detail": {
            "var_1": "role",
            "expression": {
                "operator": {
                    "type": "property_accessor",
                    "operands": {
                        "operand_1": "role",
                        "operand_2": {
                            "operator": {
                                "type": "equals",
                                "operands": {"operand_1": "value", "operand_2": role_value},
                            }
                        },
                    },
                }
            },
        },
    }
    found = {
        "function": {
            "type": "filter",
            "parameters": {
                "input_array": {
                    "operator": {
                        "type": "property_accessor",
                        "operands": {"operand_1": graph_name, "operand_2": "appRoles"},
                    }
                },
                "expression": by_value,
            },
        }
    }
    first = {
        "operator": {"type": "index_accessor", "operands": {"operand_1": found, "operand_2": 0}}
    }
    return bool(
        app_role_id
        == {
            "operator": {
                "type": "property_accessor",
                "operands": {"operand_1": first, "operand_2": "id"},
            }
        }
    )


def test_calls_access_media_granted_by_role_value_and_join_group_call_on_request() -> None:
    doc = parse("modules/graph-permissions.bicep")
    graph_name, graph = one_resource(doc, "Microsoft.Graph/servicePrincipals")
    assert graph["existing"] is True
    app_id = body(graph)["appId"]
    assert doc["variables"][app_id]["value"] == GRAPH_APP_ID
    assignments = resources(doc, "Microsoft.Graph/appRoleAssignedTo")
    assert set(assignments) == {"accessMedia", "joinGroupCall"}
    for name, role_value in (
        ("accessMedia", "Calls.AccessMedia.All"),
        ("joinGroupCall", "Calls.JoinGroupCall.All"),
    ):
        grant = body(assignments[name])
        assert grant["principalId"] == "principalId"
        assert grant["resourceId"]["operator"]["operands"] == {
            "operand_1": graph_name,
            "operand_2": "id",
        }
        assert _looks_up_by_value(grant["appRoleId"], graph_name, role_value), name
        assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", json.dumps(grant)), "no hard-coded id"
    assert condition(assignments["accessMedia"]) is None
    assert condition(assignments["joinGroupCall"]) == "grantJoinGroupCall"


def test_main_grants_graph_roles_to_the_bots_service_principal() -> None:
    call = one_module("modules/graph-permissions.bicep")
    params = body(call)["params"]
    assert params["principalId"] == "botServicePrincipalId"
    assert _created_or_given("botServicePrincipalId") == (
        "botIdentity.outputs.servicePrincipalId",
        "graphPermissionPrincipalId",
    )
    assert params["grantJoinGroupCall"] == "grantJoinGroupCall"
    defaults = main()["parameters"]
    assert defaults["grantJoinGroupCall"]["default"] is False
    assert defaults["graphPermissionPrincipalId"]["default"] == ""
    assert condition(call) == "grantGraphPermissions"
    assert defaults["grantGraphPermissions"]["default"] is True
    # The managed identity itself gets no Graph role: it is only the app's credential.
    assert "identity.outputs" not in json.dumps(params)


# ------------------------------------------------------------------------------------------------
# Azure Bot
# ------------------------------------------------------------------------------------------------


def test_azure_bot_is_single_tenant_with_teams_calling_on_by_default() -> None:
    doc = parse("modules/bot.bicep")
    bot_name, bot = one_resource(doc, "Microsoft.BotService/botServices")
    assert body(bot)["location"] == "global"
    props = body(bot)["properties"]
    assert props["msaAppId"] == "msaAppId"
    assert props["msaAppType"] == "SingleTenant"
    assert is_tenant_id(props["msaAppTenantId"])
    assert "msaAppMSIResourceId" not in props
    assert decorator(doc["parameters"]["msaAppId"], "min_length") == 36

    # Both endpoints hang off one base: the app's host, or a dev environment's tunnel.
    base = doc["variables"]["endpointBase"]["value"]["operator"]["operands"]
    assert base["condition"] == {
        "function": {"type": "empty", "parameters": {"item_to_test": "endpointBaseUrl"}}
    }
    assert base["true_value"] == "https://${appHostName}"
    assert base["false_value"] == "endpointBaseUrl"
    assert doc["parameters"]["endpointBaseUrl"]["default"] == ""

    # The Bot Service requires an https messaging endpoint even for a calling-only bot.
    endpoint = doc["variables"][props["endpoint"]]["value"]["operator"]["operands"]
    assert endpoint["true_value"] == "${endpointBase}/api/messages"
    assert endpoint["false_value"] == "messagingEndpoint"

    _, channel = one_resource(doc, "Microsoft.BotService/botServices/channels")
    config = body(channel)
    assert config["parent"] == bot_name
    assert config["name"] == "MsTeamsChannel"
    channel_props = config["properties"]
    assert channel_props["channelName"] == "MsTeamsChannel"
    assert channel_props["properties"]["enableCalling"] is True
    assert channel_props["properties"]["isEnabled"] is True
    webhook = doc["variables"][channel_props["properties"]["callingWebhook"]]["value"]
    assert webhook == "${endpointBase}/api/calls"
    assert {"id", "callingWebhook", "messagingEndpoint"} <= set(doc["outputs"])

    call = one_module("modules/bot.bicep")
    assert condition(call) == "deployBot"
    assert main()["parameters"]["deployBot"]["default"] is True
    assert bicepparam()["deployBot"] == "bool(readEnvironmentVariable('DEPLOY_BOT', 'true'))"
    params = body(call)["params"]
    assert dotted(params["appHostName"]) == "functionApp.outputs.hostName"
    assert params["endpointBaseUrl"] == "botEndpointBaseUrl"
    assert main()["parameters"]["botMessagingEndpoint"]["default"] == ""
    assert main()["parameters"]["botEndpointBaseUrl"]["default"] == ""
    assert (
        bicepparam()["botEndpointBaseUrl"] == "readEnvironmentVariable('BOT_ENDPOINT_BASE_URL', '')"
    )


def test_no_managed_identity_bot_path_remains() -> None:
    """No Microsoft document shows a managed identity taking Teams calls as the bot."""
    templates = {
        path.name: json.dumps(parse(path.relative_to(INFRA).as_posix())) for path in BICEP_FILES
    }
    for name, rendered in {**templates, "main.bicepparam": json.dumps(bicepparam())}.items():
        assert "UserAssignedMSI" not in rendered, name
        assert "msaAppMSIResourceId" not in rendered, name
    # Nor is managedIdentity a value the Function App is given (GRAPH_CREDENTIAL_MODE or other).
    values = [item for item in walk(parse("modules/functionapp.bicep")) if isinstance(item, str)]
    assert "managedIdentity" not in values


# ------------------------------------------------------------------------------------------------
# Outputs, azd
# ------------------------------------------------------------------------------------------------


def test_outputs() -> None:
    outputs = main()["outputs"]
    assert {
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_FUNCTION_APP_HOST_NAME",
        "MANAGED_IDENTITY_CLIENT_ID",
        "AZURE_STORAGE_BLOB_ENDPOINT",
        "AZURE_STORAGE_QUEUE_ENDPOINT",
        "AZURE_STORAGE_TABLE_ENDPOINT",
        "CALLING_WEBHOOK_URL",
        "BOT_APP_ID",
        "AZURE_BOT_RESOURCE_ID",
        "AZURE_RESOURCE_GROUP",
    } <= set(outputs)
    assert dotted(outputs["MANAGED_IDENTITY_CLIENT_ID"]["value"]) == "identity.outputs.clientId"
    # The webhook the bot really calls: the app's, or a dev environment's tunnel.
    webhook = outputs["CALLING_WEBHOOK_URL"]["value"]["operator"]["operands"]
    assert webhook["condition"] == "deployBot"
    assert dotted(webhook["true_value"]) == "bot.outputs.callingWebhook"
    assert webhook["false_value"] == "https://${functionApp.outputs.hostName}/api/calls"
    # What the postprovision hook needs to hand the Graph consent to an administrator.
    assert outputs["BOT_SERVICE_PRINCIPAL_ID"]["value"] == "botServicePrincipalId"
    assert outputs["GRAPH_PERMISSIONS_GRANTED"]["value"] == "grantGraphPermissions"
    bot_id = outputs["AZURE_BOT_RESOURCE_ID"]["value"]["operator"]["operands"]
    assert bot_id["condition"] == "deployBot"
    assert dotted(bot_id["true_value"]) == "bot.outputs.id"


def _simple_yaml(text: str) -> dict[str, Any]:
    """Nested mappings of scalars (all azure.yaml uses), by indentation."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        if value.strip():
            stack[-1][1][key] = value.strip()
        else:
            child: dict[str, Any] = {}
            stack[-1][1][key] = child
            stack.append((indent, child))
    return root


def test_azure_yaml_deploys_the_api_service() -> None:
    config = _simple_yaml((ROOT / "azure.yaml").read_text())
    assert config["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert config["infra"]["path"] == "infra"
    assert config["infra"]["module"] == "main"


def test_checkov_skips_have_reasons() -> None:
    lines = (INFRA / "checkov.yaml").read_text().splitlines()
    entries = [i for i, line in enumerate(lines) if re.match(r"\s*- (CKV\w*|infra/)", line)]
    assert entries
    for index in entries:
        previous = lines[index - 1].strip()
        assert previous.startswith("#") or re.match(r"- (CKV|infra/)", previous), lines[index]
    # Only the modules checkov's parser cannot read are skipped: the two Graph modules.
    skipped_paths = {line.strip()[2:] for line in lines if re.match(r"\s*- infra/", line)}
    assert skipped_paths == {f"infra/modules/{name}" for name in GRAPH_EXTENSION_MODULES}
    requirement = (ROOT / "requirements-checkov.txt").read_text()
    assert re.search(r"^checkov==\d+\.\d+\.\d+$", requirement, re.MULTILINE)


# ------------------------------------------------------------------------------------------------
# Observability: OpenTelemetry settings, alert rules, the "calls today" workbook
# ------------------------------------------------------------------------------------------------

SHARED_SOURCE = "\n".join(path.read_text() for path in sorted((ROOT / "shared").rglob("*.py")))
ALERT_KEYS = {"answer-latency", "stored-latency", "recording-failures", "graph-tenant-errors"}


def alerts() -> dict[str, Any]:
    return parse("modules/alerts.bicep")


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["key"]: rule for rule in alerts()["variables"]["rules"]["value"]}


def kql_of(text: str) -> str:
    """A query with the module's ``${events}``/``${today}`` prefixes written out."""
    variables = alerts()["variables"]
    for name in ("today", "events"):
        text = text.replace("${" + name + "}", variables[name]["value"])
    return text


def test_worker_opentelemetry_is_on_and_the_worker_does_not_configure_the_distro() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    settings = {k: v for obj in _app_settings().values() for k, v in obj.items()}
    assert settings["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    # The worker's own distro set-up has no credential; Application Insights refuses it.
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY" not in settings
    assert (
        settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "applicationInsightsConnectionString"
    )
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"


def test_alerts_module_is_wired_to_application_insights_and_optional() -> None:
    mod = one_module("modules/alerts.bicep")
    assert condition(mod) == "deployAlerts"
    passed = body(mod)["params"]
    assert dotted(passed["applicationInsightsId"]) == "monitoring.outputs.applicationInsightsId"
    assert passed["actionGroupId"] == "alertActionGroupId"
    assert passed["nameSuffix"] == "resourceToken"
    main_params = main()["parameters"]
    assert main_params["deployAlerts"]["default"] is True
    assert main_params["alertActionGroupId"]["default"] == ""
    for name in ("answerLatencyAlertMs", "storedLatencyAlertMs", "recordingFailureAlertCount"):
        assert name in passed.values(), name
        assert has_default(main_params[name]), name
    outputs = parse("modules/monitoring.bicep")["outputs"]
    assert dotted(outputs["applicationInsightsId"]["value"]) == "appInsights.id"


def test_one_scheduled_query_rule_per_alert_each_on_application_insights() -> None:
    _, rule = one_resource(alerts(), "Microsoft.Insights/scheduledQueryRules")
    assert rule["config"]["loop_type"]["detail"] == {"item_name": "rule", "array_name": "rules"}
    config = body(rule)
    assert config["kind"] == "LogAlert"
    assert config["name"] == "alert-${rule.key}-${nameSuffix}"
    props = config["properties"]
    assert props["scopes"] == ["applicationInsightsId"]
    assert props["enabled"] is True
    assert props["autoMitigate"] is True
    assert dotted(props["actions"]["actionGroups"]) == "actionGroups"
    [criterion] = props["criteria"]["allOf"]
    assert dotted(criterion["query"]) == "rule.query"
    assert dotted(criterion["threshold"]) == "rule.threshold"
    assert set(alert_rules()) == ALERT_KEYS


def test_the_action_group_is_optional() -> None:
    doc = alerts()
    assert doc["parameters"]["actionGroupId"]["default"] == ""
    operands = doc["variables"]["actionGroups"]["value"]["operator"]["operands"]
    assert operands["condition"]["function"]["parameters"]["item_to_test"] == "actionGroupId"
    assert operands["true_value"] == []
    assert operands["false_value"] == ["actionGroupId"]


def test_every_threshold_is_a_parameter_with_a_sensible_default() -> None:
    params = alerts()["parameters"]
    rules = alert_rules()
    answer = params["answerLatencyThresholdMs"]
    # Below Graph's 15-second answer deadline, so the alert comes before calls are dropped.
    assert 0 < answer["default"] < 15000
    assert decorator(answer, "max_value") == 15000
    assert "${answerLatencyThresholdMs}" in rules["answer-latency"]["query"]
    assert params["storedLatencyThresholdMs"]["default"] > 0
    assert "${storedLatencyThresholdMs}" in rules["stored-latency"]["query"]
    assert params["failureCountThreshold"]["default"] >= 1
    assert rules["recording-failures"]["threshold"] == "failureCountThreshold"
    assert rules["recording-failures"]["operator"] == "GreaterThanOrEqual"
    assert rules["recording-failures"]["measure"] == "failures"
    assert params["graphTenantErrorThreshold"]["default"] == 1
    assert rules["graph-tenant-errors"]["threshold"] == "graphTenantErrorThreshold"
    for key, rule in rules.items():
        assert rule["severity"] in (1, 2), key
        assert f"docs/operations.md#alert-{key}" in rule["description"], key
    for name, spec in params.items():
        assert decorator(spec, "description"), name


def test_graph_tenant_errors_alert_on_7503_7504_7505() -> None:
    query = alert_rules()["graph-tenant-errors"]["query"]
    for code in ("7503", "7504", "7505"):
        assert f'"{code}"' in query
    assert "customDimensions.graph_code" in query
    # The Graph client logs Graph's error code under that name.
    from shared.graph.errors import GraphError

    assert GraphError(403, "7504", "refused").log_fields()["graph_code"] == "7504"


def test_queries_read_only_events_and_fields_the_app_writes() -> None:
    """An alert on a renamed event or field would never fire: hold the KQL to the code."""
    variables = alerts()["variables"]
    workbook = json.dumps(variables["workbookContent"]["value"])
    texts = [kql_of(rule["query"]) for rule in alert_rules().values()]
    texts.append(kql_of(workbook))
    everything = "\n".join(texts)
    events = set(re.findall(r'event\s*==\s*\\?"([^"\\]+)', everything))
    for group in re.findall(r"event in \(([^)]*)\)", everything):
        events |= set(re.findall(r'"([^"\\]+)\\?"', group))
    assert {"bot flow: answered", "recording download", "notification"} <= events
    for event in events:
        assert f'"{event}"' in SHARED_SOURCE, f"no log event {event!r} in shared/"
    fields = set(re.findall(r"customDimensions\.(\w+)", everything))
    assert {"answer_latency_ms", "latency_ms", "abandoned", "graph_code", "outcome"} <= fields
    for name in fields - {"event"}:
        assert re.search(rf'\b{name}=|"{name}"', SHARED_SOURCE), f"no field {name!r} in shared/"


def test_calls_today_workbook() -> None:
    _, workbook = one_resource(alerts(), "Microsoft.Insights/workbooks")
    config = body(workbook)
    assert config["kind"] == "shared"
    props = config["properties"]
    assert props["displayName"] == "Calls today"
    assert props["sourceId"] == "applicationInsightsId"
    assert props["serializedData"]["function"]["type"] == "string"
    assert (
        props["serializedData"]["function"]["parameters"]["value_to_convert"] == "workbookContent"
    )
    content = alerts()["variables"]["workbookContent"]["value"]
    assert content["version"] == "Notebook/1.0"
    queries = " ".join(item["content"]["query"] for item in content["items"] if item["type"] == 3)
    for word in ("answered", "recorded", "stored", "failed", "result_subcode", "percentile"):
        assert word in queries, word
    assert "startofday(now())" in kql_of(queries)


# ------------------------------------------------------------------------------------------------
# Transcription (opt-in): Azure AI Speech, keyless
# ------------------------------------------------------------------------------------------------

ROLE_COGNITIVE_SERVICES_SPEECH_USER = "f2dc8367-1007-4938-bd23-fe263f013447"


def test_speech_account_is_optional_and_off_by_default() -> None:
    mod = one_module("modules/speech.bicep")
    assert condition(mod) == "transcription"
    assert main()["parameters"]["transcription"]["default"] is False
    passed = body(mod)["params"]
    assert passed["name"] == "${abbrs.cognitiveServicesSpeech}${resourceToken}"
    assert dotted(passed["principalId"]) == "identity.outputs.principalId"


def test_speech_account_is_keyless_with_a_custom_subdomain() -> None:
    doc = parse("modules/speech.bicep")
    _, account = one_resource(doc, "Microsoft.CognitiveServices/accounts")
    config = body(account)
    assert config["kind"] in ("SpeechServices", "AIServices")
    props = config["properties"]
    assert props["disableLocalAuth"] is True
    assert props["customSubDomainName"] == "name"  # the account's own (unique) name
    assert "listKeys" not in json.dumps(doc)
    assert doc["outputs"]["endpoint"]["value"] == "https://${name}.cognitiveservices.azure.com"


def test_the_app_identity_is_speech_user_on_the_account_only() -> None:
    doc = parse("modules/speech.bicep")
    _, assignment = one_resource(doc, "Microsoft.Authorization/roleAssignments")
    config = body(assignment)
    assert config["scope"] == "account"
    props = config["properties"]
    assert props["principalId"] == "principalId"
    assert props["principalType"] == "ServicePrincipal"
    assert role_definition(props["roleDefinitionId"]) == "speechUserRoleId"
    assert doc["variables"]["speechUserRoleId"]["value"] == ROLE_COGNITIVE_SERVICES_SPEECH_USER


def test_transcription_settings_are_set_only_with_an_endpoint() -> None:
    objects = _app_settings()
    settings = objects["transcriptionSettings"]
    assert set(settings) == {
        "TRANSCRIPTION_ENABLED",
        "TRANSCRIPTION_ENDPOINT",
        "TRANSCRIPTION_LOCALES",
        "TRANSCRIPTION_KEEP_AUDIO",
    }
    assert settings["TRANSCRIPTION_ENABLED"] == "true"
    assert settings["TRANSCRIPTION_ENDPOINT"] == "transcriptionEndpoint"
    doc = parse("modules/functionapp.bicep")
    (config,) = resources(doc, "Microsoft.Web/sites/config").values()
    (merged,) = functions_in(body(config)["properties"], "union")
    only_with_an_endpoint = {
        "operator": {
            "type": "conditional",
            "operands": {
                "condition": {
                    "function": {
                        "type": "empty",
                        "parameters": {"item_to_test": "transcriptionEndpoint"},
                    }
                },
                "true_value": {},
                "false_value": "transcriptionSettings",
            },
        }
    }
    assert only_with_an_endpoint in merged["parameters"].values()
    # main.bicep: transcription ? speech.outputs.endpoint : ''
    passed = body(one_module("modules/functionapp.bicep"))["params"]
    endpoint = passed["transcriptionEndpoint"]["operator"]
    assert endpoint["type"] == "conditional"
    assert endpoint["operands"]["condition"] == "transcription"
    assert dotted(endpoint["operands"]["true_value"]) == "speech.outputs.endpoint"
    assert endpoint["operands"]["false_value"] == ""
