"""The management API in infra/: the bot app's roles (the code's), its identifier URI, the
optional role assignment, and the settings that keep function keys off in Azure."""

from __future__ import annotations

from typing import Any

from shared.auth.management import Role
from tests.infra.test_bicep import (
    _app_settings,
    body,
    condition,
    decorator,
    dotted,
    main,
    one_module,
    parse,
    resources,
)

ROLE_VALUES = sorted(role.value for role in Role)


def _bot_identity() -> dict[str, Any]:
    return parse("modules/bot-identity.bicep")


def test_the_app_registration_exposes_the_codes_roles_to_users_and_identities() -> None:
    doc = _bot_identity()
    variables = {name: spec["value"] for name, spec in doc["variables"].items()}
    assert sorted(k.strip("'") for k in variables["managementRoleDescriptions"]) == ROLE_VALUES
    roles = variables["managementRoles"]
    assert roles["loop_type"]["detail"]["array_name"]["function"] == {
        "type": "items",
        "parameters": {"arg_1": "managementRoleDescriptions"},
    }
    role = roles["config"]
    # A stable id per app and role value: redeployments update the role, never replace it.
    assert role["id"]["function"]["type"] == "guid"
    assert role["id"]["function"]["parameters"]["base_string"] == "uniqueName"
    assert dotted(role["value"]) == "role.key"
    assert set(role["allowedMemberTypes"]) == {"User", "Application"}
    assert role["isEnabled"] is True
    app = body(resources(doc, "Microsoft.Graph/applications")["botApp"])
    assert app["appRoles"] == "managementRoles"
    assert app["api"] == "managementApi"


def test_the_second_declaration_sets_the_identifier_uri_and_repeats_the_first() -> None:
    apps = resources(_bot_identity(), "Microsoft.Graph/applications")
    first, second = body(apps["botApp"]), body(apps["botAppIdentifierUri"])
    assert second["identifierUris"] == ["api://${botApp.appId}"]
    for name in ("uniqueName", "displayName", "signInAudience", "appRoles", "api"):
        assert second[name] == first[name], name
    output = _bot_identity()["outputs"]["identifierUri"]["value"]["operator"]["operands"]
    assert output["operand_1"] == "botAppIdentifierUri"


def test_azure_cli_may_ask_for_a_users_token_and_tokens_are_v2() -> None:
    variables = {n: s["value"] for n, s in _bot_identity()["variables"].items()}
    api = variables["managementApi"]
    assert api["requestedAccessTokenVersion"] == 2
    (scope,) = api["oauth2PermissionScopes"]
    assert scope["value"] == "user_impersonation"
    (preauthorized,) = api["preAuthorizedApplications"]
    assert variables[preauthorized["appId"]] == "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
    assert preauthorized["delegatedPermissionIds"] == [scope["id"]]


def test_one_role_is_assigned_to_one_principal_only_on_request() -> None:
    doc = _bot_identity()
    (name,) = resources(doc, "Microsoft.Graph/appRoleAssignedTo")
    assignment = resources(doc, "Microsoft.Graph/appRoleAssignedTo")[name]
    assert condition(assignment) == {
        "operator": {
            "type": "not",
            "operands": {
                "bool_value": {
                    "function": {
                        "type": "empty",
                        "parameters": {"item_to_test": "managementRoleAssigneePrincipalId"},
                    }
                }
            },
        }
    }
    grant = body(assignment)
    assert grant["principalId"] == "managementRoleAssigneePrincipalId"
    assert dotted(grant["resourceId"]) == "botServicePrincipal.id"
    assert grant["appRoleId"]["function"]["parameters"] == {
        "base_string": "uniqueName",
        "extra_string_1": "managementRoleAssigned",
    }
    for doc_ in (doc, main()):
        allowed = decorator(doc_["parameters"]["managementRoleAssigned"], "allowed")
        assert sorted(allowed) == ROLE_VALUES
    params = body(one_module("modules/bot-identity.bicep"))["params"]
    assert params["managementRoleAssigneePrincipalId"] == "managementRoleAssigneePrincipalId"
    assert main()["parameters"]["managementRoleAssigneePrincipalId"]["default"] == ""


def test_function_keys_are_off_in_azure_and_tokens_come_from_the_deploying_tenant() -> None:
    settings = {k: v for obj in _app_settings().values() for k, v in obj.items()}
    tenant = settings["MANAGEMENT_TENANT_ID"]["operator"]["operands"]
    assert tenant == {"operand_1": {"function": {"type": "tenant"}}, "operand_2": "tenantId"}
    assert main()["parameters"]["managementFunctionKeys"]["default"] is False
    assert "MANAGEMENT_OPENID_CONFIGURATION_URL" not in settings  # Entra's, from the tenant
    assert main()["outputs"]["MANAGEMENT_API_RESOURCE"]["value"] == "api://${effectiveBotAppId}"
