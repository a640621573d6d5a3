"""Private networking (vnetEnabled), checked on the parsed templates.

The option must do what an enterprise's Azure Policy asks ("storage accounts should disable
public network access") without cutting Graph off from the calling webhook: the app's outbound
goes through a delegated subnet, storage (and Speech) are reached through private endpoints with
their private DNS zones, and the app's inbound stays public.
"""

from __future__ import annotations

import json
from typing import Any

from tests.infra.test_bicep import (
    INFRA,
    bicepparam,
    body,
    condition,
    dotted,
    main,
    module_calls,
    one_module,
    one_resource,
    parse,
    resources,
)

STORAGE_GROUPS = ["blob", "queue", "table"]


def _conditional(node: Any) -> dict[str, Any]:
    operator = node["operator"]
    assert operator["type"] == "conditional", node
    return operator["operands"]  # type: ignore[no-any-return]


def test_vnet_is_off_by_default_and_read_from_vnet_enabled() -> None:
    spec = main()["parameters"]["vnetEnabled"]
    assert spec["default"] is False
    assert bicepparam()["vnetEnabled"] == "bool(readEnvironmentVariable('VNET_ENABLED', 'false'))"
    assert condition(one_module("modules/network.bicep")) == "vnetEnabled"


def test_the_app_subnet_is_delegated_to_flex_consumption_and_endpoints_have_their_own() -> None:
    doc = parse("modules/network.bicep")
    _, vnet = one_resource(doc, "Microsoft.Network/virtualNetworks")
    subnets = {
        subnet["name"]: subnet["properties"] for subnet in body(vnet)["properties"]["subnets"]
    }
    names = {name: doc["variables"][name]["value"] for name in subnets}
    app = subnets["appSubnetName"]
    (delegation,) = app["delegations"]
    assert delegation["properties"]["serviceName"] == "Microsoft.App/environments"
    endpoints = subnets["privateEndpointSubnetName"]
    assert "delegations" not in endpoints, "private endpoints cannot live in a delegated subnet"
    assert endpoints["privateEndpointNetworkPolicies"] == "Disabled"
    outputs = doc["outputs"]
    assert outputs["appSubnetId"]["value"] == "${vnet.id}/subnets/${appSubnetName}"
    assert outputs["privateEndpointSubnetId"]["value"] == (
        "${vnet.id}/subnets/${privateEndpointSubnetName}"
    )
    assert set(names.values()) == {"app", "private-endpoints"}


def test_private_dns_zones_are_global_and_linked_to_the_network() -> None:
    doc = parse("modules/network.bicep")
    _, zones = one_resource(doc, "Microsoft.Network/privateDnsZones")
    assert zones["config"]["loop_type"]["detail"]["array_name"] == "privateDnsZoneNames"
    assert body(zones)["location"] == "global"
    _, links = one_resource(doc, "Microsoft.Network/privateDnsZones/virtualNetworkLinks")
    link = body(links)
    assert link["location"] == "global"
    assert link["properties"]["registrationEnabled"] is False
    assert dotted(link["properties"]["virtualNetwork"]["id"]) == "vnet.id"


def test_main_names_the_zone_of_each_private_link_service() -> None:
    variables = {name: spec["value"] for name, spec in main()["variables"].items()}
    for group in STORAGE_GROUPS:
        assert variables[f"{group}PrivateDnsZoneName"] == (
            f"privatelink.{group}.${{environment().suffixes.storage}}"
        )
    assert variables["speechPrivateDnsZoneName"] == "privatelink.cognitiveservices.azure.com"
    links = variables["storagePrivateLinks"]
    assert [link["groupId"] for link in links] == STORAGE_GROUPS
    assert [link["privateDnsZoneName"] for link in links] == [
        f"{group}PrivateDnsZoneName" for group in STORAGE_GROUPS
    ]
    assert variables["storagePrivateDnsZoneNames"] == [
        f"{group}PrivateDnsZoneName" for group in STORAGE_GROUPS
    ]
    assert variables["eventsPrivateDnsZoneName"] == "privatelink.eventgrid.azure.net"
    # The storage zones always; Speech's only when Speech is deployed, the topic's only when the
    # events topic is.
    zones = variables["privateDnsZoneNames"]["function"]
    assert zones["type"] == "concat"
    assert list(zones["parameters"].values()) == [
        "storagePrivateDnsZoneNames",
        "speechPrivateDnsZoneNames",
        "eventsPrivateDnsZoneNames",
    ]
    optional = [variables[f"{kind}PrivateDnsZoneNames"] for kind in ("speech", "events")]
    assert [_conditional(value) for value in optional] == [
        {
            "condition": "transcription",
            "true_value": ["speechPrivateDnsZoneName"],
            "false_value": [],
        },
        {"condition": "events", "true_value": ["eventsPrivateDnsZoneName"], "false_value": []},
    ]
    passed = body(one_module("modules/network.bicep"))["params"]
    assert passed["privateDnsZoneNames"] == "privateDnsZoneNames"


def test_a_private_endpoint_per_storage_service_and_for_speech_only_when_on() -> None:
    calls = module_calls(main(), "modules/private-endpoint.bicep")
    assert set(calls) == {
        "storagePrivateEndpoints",
        "speechPrivateEndpoint",
        "eventsPrivateEndpoint",
    }
    storage_loop = calls["storagePrivateEndpoints"]["config"]["loop_type"]["detail"]
    assert storage_loop["item_name"] == "link"
    # No endpoint at all without private networking: the loop runs over an empty list.
    over = _conditional(storage_loop["array_name"])
    assert over == {
        "condition": "vnetEnabled",
        "true_value": "storagePrivateLinks",
        "false_value": [],
    }
    storage = body(calls["storagePrivateEndpoints"])["params"]
    assert dotted(storage["targetId"]) == "storage.outputs.id"
    assert dotted(storage["groupId"]) == "link.groupId"
    assert dotted(storage["privateDnsZoneName"]) == "link.privateDnsZoneName"
    assert dotted(storage["subnetId"]) == "network.outputs.privateEndpointSubnetId"

    speech_call = calls["speechPrivateEndpoint"]
    test = condition(speech_call)["operator"]
    assert test["type"] == "and"
    assert set(test["operands"].values()) == {"vnetEnabled", "transcription"}
    speech = body(speech_call)["params"]
    assert dotted(speech["targetId"]) == "speech.outputs.id"
    assert speech["groupId"] == "account"
    assert speech["privateDnsZoneName"] == "speechPrivateDnsZoneName"
    assert dotted(parse("modules/speech.bicep")["outputs"]["id"]["value"]) == "account.id"

    events_call = calls["eventsPrivateEndpoint"]
    test = condition(events_call)["operator"]
    assert test["type"] == "and"
    assert set(test["operands"].values()) == {"vnetEnabled", "events"}
    events = body(events_call)["params"]
    assert dotted(events["targetId"]) == "eventsTopic.outputs.id"
    assert events["groupId"] == "topic"
    assert events["privateDnsZoneName"] == "eventsPrivateDnsZoneName"


def test_the_events_topic_is_private_exactly_when_networking_is() -> None:
    passed = body(one_module("modules/events.bicep"))["params"]
    assert passed["publicNetworkAccess"] == {
        "operator": {"type": "not", "operands": {"operand": "vnetEnabled"}}
    } or "vnetEnabled" in str(passed["publicNetworkAccess"])
    doc = parse("modules/events.bicep")
    _, topic = one_resource(doc, "Microsoft.EventGrid/topics")
    access = body(topic)["properties"]["publicNetworkAccess"]
    assert _conditional(access) == {
        "condition": "publicNetworkAccess",
        "true_value": "Enabled",
        "false_value": "Disabled",
    }


def test_each_endpoint_registers_itself_in_its_zone() -> None:
    doc = parse("modules/private-endpoint.bicep")
    endpoint_name, endpoint = one_resource(doc, "Microsoft.Network/privateEndpoints")
    props = body(endpoint)["properties"]
    assert props["subnet"] == {"id": "subnetId"}
    (connection,) = props["privateLinkServiceConnections"]
    assert connection["properties"] == {"privateLinkServiceId": "targetId", "groupIds": ["groupId"]}
    _, group = one_resource(doc, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups")
    assert body(group)["parent"] == endpoint_name
    (zone,) = body(group)["properties"]["privateDnsZoneConfigs"]
    zone_id = zone["properties"]["privateDnsZoneId"]["function"]
    assert zone_id["type"] == "resource_id"
    assert list(zone_id["parameters"].values())[:2] == [
        "Microsoft.Network/privateDnsZones",
        "privateDnsZoneName",
    ]


def test_with_vnet_the_app_joins_the_subnet_and_inbound_stays_public() -> None:
    doc = parse("modules/functionapp.bicep")
    _, site = one_resource(doc, "Microsoft.Web/sites")
    props = body(site)["properties"]
    # Graph posts to /api/calls from the internet: the app's inbound never goes private.
    assert props["publicNetworkAccess"] == "Enabled"
    subnet = _conditional(props["virtualNetworkSubnetId"])
    assert subnet["true_value"] is None
    assert subnet["false_value"] == "virtualNetworkSubnetId"
    passed = body(one_module("modules/functionapp.bicep"))["params"]
    chosen = _conditional(passed["virtualNetworkSubnetId"])
    assert chosen["condition"] == "vnetEnabled"
    assert dotted(chosen["true_value"]) == "network.outputs.appSubnetId"
    assert chosen["false_value"] == ""
    # The host must not start before storage is reachable privately.
    depends = body(one_module("modules/functionapp.bicep"))["dependsOn"]
    assert "storagePrivateEndpoints" in depends


def _private_only(doc: dict[str, Any], type_: str) -> dict[str, Any]:
    _, account = one_resource(doc, type_)
    props = body(account)["properties"]
    public = _conditional(props["publicNetworkAccess"])
    assert public == {
        "condition": "privateNetworkOnly",
        "true_value": "Disabled",
        "false_value": "Enabled",
    }
    deny = _conditional(props["networkAcls"]["defaultAction"])
    assert deny == {"condition": "privateNetworkOnly", "true_value": "Deny", "false_value": "Allow"}
    assert doc["parameters"]["privateNetworkOnly"]["default"] is False
    return props  # type: ignore[no-any-return]


def test_storage_public_access_is_off_when_vnet_is_on() -> None:
    props = _private_only(parse("modules/storage.bicep"), "Microsoft.Storage/storageAccounts")
    bypass = _conditional(props["networkAcls"]["bypass"])
    assert bypass["true_value"] == "None"
    assert body(one_module("modules/storage.bicep"))["params"]["privateNetworkOnly"] == (
        "vnetEnabled"
    )


def test_speech_public_access_is_off_when_vnet_is_on() -> None:
    _private_only(parse("modules/speech.bicep"), "Microsoft.CognitiveServices/accounts")
    assert body(one_module("modules/speech.bicep"))["params"]["privateNetworkOnly"] == (
        "vnetEnabled"
    )


def test_network_resources_are_named_from_the_resource_token() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    assert abbreviations["networkVirtualNetworks"] == "vnet-"
    assert abbreviations["networkPrivateEndpoints"] == "pep-"
    assert body(one_module("modules/network.bicep"))["params"]["name"] == (
        "${abbrs.networkVirtualNetworks}${resourceToken}"
    )
    names = [
        body(call)["params"]["name"]
        for call in module_calls(main(), "modules/private-endpoint.bicep").values()
    ]
    assert sorted(names) == [
        "${abbrs.networkPrivateEndpoints}${link.groupId}-${resourceToken}",
        "${abbrs.networkPrivateEndpoints}events-${resourceToken}",
        "${abbrs.networkPrivateEndpoints}speech-${resourceToken}",
    ]


def test_no_network_resource_outside_the_two_network_modules() -> None:
    for path in ("main.bicep", "modules/storage.bicep", "modules/functionapp.bicep"):
        assert not [
            name
            for name, res in parse(path).get("resources", {}).items()
            if res["type"].startswith("Microsoft.Network/")
        ], path
    assert resources(parse("modules/network.bicep"), "Microsoft.Network/virtualNetworks")
