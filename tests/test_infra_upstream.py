"""infra/ for a downstream (prod) environment (issue 25): its Event Grid trigger subscribed to the
upstream (dev) environment's notification topic, for promotions only, in the topic's own subscription
and resource group (read from the topic id azd is given), named per environment, created only with
the other subscriptions, and granting nothing to anyone; and what an upstream (dev) deployment outputs
for the downstream policy's upstream_identity."""

from __future__ import annotations

import json
from typing import Any

from handlers.signals import UPSTREAM_PROMOTED
from tests.bicep import bicep, modules

MODULE = "modules/upstream-subscription.bicep"


def _variable(name: str) -> Any:
    return bicep("main.bicep")["variables"][name]["value"]


def _module() -> dict[str, Any]:
    found: dict[str, Any] = bicep("main.bicep")["modules"]["upstreamSubscription"]
    return found


def test_prod_subscribes_its_event_grid_function_to_the_upstream_topic_for_promotions_only() -> None:
    module = _module()
    assert module["detail"]["path"] == MODULE
    assert module["config"]["condition"] == "upstreamSubscribes"  # only with an upstream topic named
    assert "upstreamTopicId" in json.dumps(_variable("upstreamSubscribes"))
    config = module["config"]["config"]
    assert "resourceToken" in config["name"]  # a second environment's deployment record is its own
    scope = config["scope"]["function"]
    assert scope["type"] == "resource_group"  # the topic's subscription and resource group, from its id
    assert scope["parameters"] == {
        "subscription_id": "upstreamTopicSubscription",
        "resource_group_name": "upstreamTopicGroup",
    }
    assert "upstreamTopicId" in json.dumps(_variable("upstreamTopicParts"))
    assert _variable("upstreamTopicSubscription")["operator"]["operands"] == {
        "operand_1": "upstreamTopicParts",
        "operand_2": 2,
    }
    assert _variable("upstreamTopicGroup")["operator"]["operands"] == {
        "operand_1": "upstreamTopicParts",
        "operand_2": 4,
    }
    params = config["params"]
    assert params["functionName"] == "eventGridFunctionName"  # the trigger the workspace's events reach
    assert params["deployEventSubscriptions"] == "deployEventSubscriptions"  # after the code is deployed
    resource = bicep(MODULE)["resources"]["promotions"]["config"]
    assert resource["condition"] == "deployEventSubscriptions"
    properties = resource["config"]["properties"]
    assert properties["eventDeliverySchema"] == "CloudEventSchemaV1_0"  # a CloudEvents topic delivers no other
    assert properties["destination"]["endpointType"] == "AzureFunction"
    assert properties["destination"]["properties"]["resourceId"] == "${functionAppId}/functions/${functionName}"
    assert properties["filter"]["includedEventTypes"] == ["promotionType"]
    assert bicep(MODULE)["variables"]["promotionType"]["value"] == UPSTREAM_PROMOTED
    assert properties["retryPolicy"]["eventTimeToLiveInMinutes"] == 1440
    assert resource["config"]["name"].startswith("retrain-${nameToken}-")


def test_the_upstream_subscription_assigns_no_role_and_the_topic_is_only_read() -> None:
    parsed = bicep(MODULE)
    kinds = {name: (r["type"], r.get("existing")) for name, r in parsed["resources"].items()}
    assert kinds == {
        "topic": ("Microsoft.EventGrid/topics", True),
        "promotions": ("Microsoft.EventGrid/topics/eventSubscriptions", False),
    }


def test_azd_passes_the_upstream_topic_from_its_environment() -> None:
    from tests.conftest import REPO

    parameters = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert parameters["upstreamTopicId"]["value"] == "${RETRAIN_UPSTREAM_TOPIC_ID=}"


def _accessed(value: Any) -> list[str]:
    """``identity.outputs.clientId`` as its names: ['identity', 'outputs', 'clientId']."""
    operands = value["operator"]["operands"]
    first, rest = operands["operand_1"], operands["operand_2"]
    return [first, *(_accessed(rest) if isinstance(rest, dict) else [rest])]


def test_a_deployment_outputs_its_identity_s_client_and_object_ids_for_a_downstream_policy() -> None:
    """A prod policy's environment.upstream_identity is the dev service's identity, its client id and object
    id (docs/operations.md): dev's deployment outputs both, of the identity the app signs in as and whose
    roles infra/ assigns (the registry publisher's among them), so the operator copies them from it."""
    outputs = bicep("main.bicep")["outputs"]
    assert _accessed(outputs["RETRAIN_IDENTITY_CLIENT_ID"]["value"]) == ["identity", "outputs", "clientId"]
    assert _accessed(outputs["RETRAIN_IDENTITY_PRINCIPAL_ID"]["value"]) == ["identity", "outputs", "principalId"]
    assert bicep("main.bicep")["modules"]["identity"]["detail"]["path"] == "modules/identity.bicep"
    identity = bicep("modules/identity.bicep")["outputs"]
    assert _accessed(identity["clientId"]["value"]) == ["identity", "properties", "clientId"]
    assert _accessed(identity["principalId"]["value"]) == ["identity", "properties", "principalId"]
    publisher = modules()["registryPublisher"]
    assert _accessed(publisher["params"]["appPrincipalId"]) == ["identity", "outputs", "principalId"]
