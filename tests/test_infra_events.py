"""Infra and code agree on the events and the resources around them: the event types the subscriptions
deliver and their filters, the function Event Grid calls, dead letters, the role assignments, names per
environment, the topics' identities, alerts, the traffic log and the notification topic.

The Bicep is read with pycep (the parser checkov uses), so these tests see the same structure the
scanner does. They run offline; `make check-infra` scans the same files with checkov.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from function_app.settings import SETTINGS
from handlers import envelopes, signals
from tests.bicep import INFRA, app_functions, bicep, modules, variable
from tests.conftest import REPO, SAMPLE_EVENTS

RUN_STATUS = "Microsoft.MachineLearningServices.RunStatusChanged"


def event_subscriptions() -> list[dict[str, Any]]:
    subs: list[dict[str, Any]] = variable("modules/events.bicep", "eventSubscriptions")
    return subs


def registered_event_grid_functions() -> list[str]:
    """Event Grid trigger functions of the app, found the way the worker finds them (:func:`app_functions`)."""
    return [
        name for name, bindings in app_functions().items() if any(b["type"] == "eventGridTrigger" for b in bindings)
    ]


def test_the_subscriptions_deliver_exactly_the_event_types_the_code_handles() -> None:
    delivered = {t for sub in event_subscriptions() for t in sub["includedEventTypes"]}
    assert delivered == set(signals.ML_EVENT_TYPES)


def test_only_run_status_changes_are_filtered_and_each_filter_is_one_thing_the_code_acts_on() -> None:
    """Advanced filters are ANDed across all types of a subscription: only RunStatusChanged ones have any."""
    filtered = [sub for sub in event_subscriptions() if sub["advancedFilters"]]
    assert all(sub["includedEventTypes"] == [RUN_STATUS] for sub in filtered)
    assert all(len(sub["advancedFilters"]) == 1 for sub in filtered)
    by_operator = {sub["advancedFilters"][0]["operatorType"]: sub["advancedFilters"][0] for sub in filtered}
    assert set(by_operator) == {"IsNotNull", "StringIn"}
    failed = by_operator["StringIn"]
    assert {v.lower() for v in failed["values"]} == set(signals.FAILED_STATUSES)  # values: case-insensitive


def _payload_keys(value: Any, prefix: str = "") -> set[str]:
    """Every key path of an event payload, e.g. data.runTags.<tag>, in the payload's casing."""
    if not isinstance(value, dict):
        return set()
    paths = set()
    for key, item in value.items():
        path = f"{prefix}{key}"
        paths |= {path} | _payload_keys(item, f"{path}.")
    return paths


def test_filter_keys_are_written_exactly_as_the_run_status_payload_spells_them() -> None:
    """Event Grid does not document whether filter keys are case-sensitive: the keys must be the
    payload's own, letter for letter. Microsoft's published RunStatusChanged sample spells the
    run's data data.runTags and data.runStatus; the breach tag is a key inside runTags."""
    published = json.loads(
        (SAMPLE_EVENTS / "Microsoft.MachineLearningServices.RunStatusChanged.eventgrid.json").read_text(
            encoding="utf-8"
        )
    )
    keys = set().union(*(_payload_keys({"data": e["data"]}) for e in published))
    assert {"data.runTags", "data.runStatus"} <= keys
    breach = json.loads((REPO / "examples" / "events" / "monitor-breach.cloudevents.json").read_text(encoding="utf-8"))
    keys |= set().union(*(_payload_keys({"data": e["data"]}) for e in breach))
    assert f"data.runTags.{envelopes.MONITOR_BREACH_TAG}" in keys
    filters = {f["operatorType"]: f["key"] for sub in event_subscriptions() for f in sub["advancedFilters"]}
    assert filters == {"IsNotNull": f"data.runTags.{envelopes.MONITOR_BREACH_TAG}", "StringIn": "data.runStatus"}
    assert set(filters.values()) <= keys


def test_the_subscriptions_call_the_event_grid_function_the_app_registers() -> None:
    assert registered_event_grid_functions() == [variable("main.bicep", "eventGridFunctionName")]
    params = bicep("main.bicep")["modules"]["events"]["config"]["params"]
    assert params["functionName"] == "eventGridFunctionName"
    resource = bicep("modules/events.bicep")["resources"]["subscriptions"]["config"]
    assert resource["loop_type"]["detail"]["array_name"] == "eventSubscriptions"
    destination = resource["config"]["properties"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == "${functionAppId}/functions/${functionName}"
    assert destination["properties"]["maxEventsPerBatch"] == 1


def test_undeliverable_events_are_retried_for_a_day_then_dead_lettered_where_the_code_replays_them() -> None:
    properties = bicep("modules/events.bicep")["resources"]["subscriptions"]["config"]["config"]["properties"]
    assert properties["retryPolicy"]["eventTimeToLiveInMinutes"] == 1440
    assert properties["retryPolicy"]["maxDeliveryAttempts"] == "maxDeliveryAttempts"
    dead_letter = properties["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["properties"]["blobContainerName"] == "deadLetterContainerName"
    container = variable("main.bicep", "deadLetterContainerName")
    default = next(s.default for s in SETTINGS if s.name == "RETRAIN_DEADLETTER_CONTAINER")
    assert container == default
    assert variable("main.bicep", "appSettings")["RETRAIN_DEADLETTER_CONTAINER"] == "deadLetterContainerName"


def _role_assignments() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in sorted(INFRA.rglob("*.bicep")):
        parsed = bicep(str(path.relative_to(INFRA)))
        for name, resource in parsed.get("resources", {}).items():
            if resource["type"] == "Microsoft.Authorization/roleAssignments":
                found.append((path, name, resource["config"].get("config", resource["config"])))  # `if (...)`: inside
    return found


@pytest.mark.slow  # parses every Bicep module (pycep): tens of seconds
def test_role_assignments_are_deterministic_and_to_service_principals() -> None:
    assignments = _role_assignments()
    # 7, EventGrid Data Sender on the notification topic, the registry's reader and publisher, the smoke
    # requests' reader, the batch comparison's datastore secrets
    assert len(assignments) == 12
    for path, name, config in assignments:
        guid = config["name"]["function"]
        assert guid["type"] == "guid", f"{path.name}: {name}"
        base = guid["parameters"]["base_string"]
        if "scope" in config:
            assert base["operator"]["operands"] == {"operand_1": config["scope"], "operand_2": "id"}, (
                f"{path.name}: {name}: guid(scope.id, ...)"
            )
        else:  # assigned at the scope the module is deployed to: a subscription (targetScope)
            assert bicep(str(path.relative_to(INFRA)))["globals"]["scope"]["value"] == "subscription"
            assert base["function"] == {
                "type": "subscription",
                "parameters": {"subscription_id": None},
                "property_name": "id",
            }, f"{path.name}: {name}: guid(subscription().id, ...)"
        assert guid["parameters"]["extra_string_1"] == config["properties"]["principalId"], f"{path.name}: {name}"
        assert guid["parameters"]["extra_string_2"] == config["properties"]["roleDefinitionId"], f"{path.name}: {name}"
        assert config["properties"]["principalType"] == "ServicePrincipal", f"{path.name}: {name}"


def test_every_role_assignment_says_why() -> None:
    undocumented = []
    for path, name, _ in _role_assignments():
        lines = path.read_text(encoding="utf-8").splitlines()
        at = next(i for i, line in enumerate(lines) if re.match(rf"resource {name} 'Microsoft.Authorization/", line))
        if not lines[at - 1].lstrip().startswith("//"):
            undocumented.append(f"{path.name}: {name}")
    assert undocumented == []


def _symbol(expression: Any) -> Any:
    """The symbol an expression like ``topicIdentity.outputs.id`` starts from ('topicIdentity')."""
    while isinstance(expression, dict) and expression.get("operator", {}).get("type") == "property_accessor":
        expression = expression["operator"]["operands"]["operand_1"]
    return expression


def _mentions_token(value: Any) -> bool:
    return "resourceToken" in json.dumps(value) or "nameToken" in json.dumps(value)


def test_every_name_outside_the_service_resource_group_carries_the_environment_token() -> None:
    """A second azd environment on the same workspace must create its own subscriptions, role,
    diagnostic settings and nested deployments, never re-target the first one's."""
    main = modules()
    outside = {name: config for name, config in main.items() if config["scope"] != "rg"}
    assert set(outside) >= {"workspaceAccess", "events", "healthLogsAccessExternal", "trafficLogs"}
    for name, config in outside.items():
        assert _mentions_token(config["name"]), f"main.bicep: module {name}: its deployment name needs the token"
    # Inside the modules deployed there: the subscription names, the custom role, the setting name.
    assert all(sub["name"].startswith("${prefix}-") for sub in event_subscriptions())
    assert variable("modules/events.bicep", "prefix") == "retrain-${nameToken}"
    assert main["events"]["params"]["nameToken"] == "resourceToken"
    role = bicep("modules/workspace-access.bicep")["resources"]["serviceRole"]["config"]["config"]
    assert role["name"] == "customRoleName" and "nameToken" in role["properties"]["roleName"]
    assert _mentions_token(variable("modules/workspace-access.bicep", "customRoleName"))
    assert main["workspaceAccess"]["params"]["nameToken"] == "resourceToken"
    assert _mentions_token(main["trafficLogs"]["params"]["settingName"])


def test_the_topic_dead_letters_as_its_system_identity_which_holds_only_each_container_role() -> None:
    """A system topic holds one system-assigned and at most two user-assigned identities: one
    user-assigned identity per environment would stop the third environment on a workspace."""
    main = modules()
    assert "topicIdentity" not in main
    assert not any("topicIdentity" in json.dumps(c["params"]) for c in main.values())
    assert [k for k, v in main["events"]["params"].items() if _symbol(v) == "identity"] == []
    # Every role assignment to the topic's principal: one, on the dead-letter container.
    topic_principals = [
        (path.name, name, config)
        for path, name, config in _role_assignments()
        if config["properties"]["principalId"] == "topicPrincipalId"
    ]
    assert [(p, n, c["scope"]) for p, n, c in topic_principals] == [
        ("deadletter-access.bicep", "topicDeadLetterWriter", "deadLetterContainer")
    ]
    (writer,) = topic_principals
    role = bicep("modules/deadletter-access.bicep")["variables"]["storageBlobDataContributor"]
    assert "ba92f5b4-2d11-453d-a403-e96b0029c9fe" in json.dumps(role)  # Storage Blob Data Contributor
    assert writer[2]["properties"]["roleDefinitionId"] == "storageBlobDataContributor"
    access = main["deadLetterAccess"]
    assert access["scope"] == "rg"  # this environment's own storage account and container
    assert "systemTopicPrincipalId" in json.dumps(access["params"]["topicPrincipalId"])
    assert _symbol(access["params"]["topicPrincipalId"]) == "events"
    assert "deadLetterContainerName" in json.dumps(access["params"]["deadLetterContainerName"])
    assert _symbol(main["storageAccess"]["params"]["appPrincipalId"]) == "identity"
    assert set(main["storageAccess"]["params"]) == {"storageAccountName", "appPrincipalId"}
    output = bicep("modules/events.bicep")["outputs"]["systemTopicPrincipalId"]["value"]
    assert "systemTopic" in json.dumps(output) and "principalId" in json.dumps(output)


def test_the_topic_gets_its_system_identity_and_keeps_exactly_the_user_assigned_ones_it_had() -> None:
    """The deployment adds no user-assigned identity, so any number of environments fit on one
    topic, including one that already carries two of another team's (tests/fake_azcli.py's
    `azd provision` PUTs the topic's identity exactly this way, and checks Event Grid's limits)."""
    topic = bicep("modules/events.bicep")["resources"]["systemTopic"]["config"]
    assert topic["tags"] == {
        "operator": {"type": "property_accessor", "operands": {"operand_1": "topicState", "operand_2": "tags"}}
    }
    assert topic["identity"] == "topicIdentity"
    assert variable("modules/events.bicep", "keptUserAssigned") == {
        "operator": {
            "type": "property_accessor",
            "operands": {"operand_1": "topicState", "operand_2": "userAssignedIdentities"},
        }
    }
    identity = variable("modules/events.bicep", "topicIdentity")["operator"]
    assert identity["type"] == "conditional"
    operands = identity["operands"]
    assert "keptUserAssigned" in json.dumps(operands["condition"]) and "empty" in json.dumps(operands["condition"])
    assert operands["true_value"] == {"type": "SystemAssigned"}
    assert operands["false_value"] == {
        "type": "SystemAssigned, UserAssigned",
        "userAssignedIdentities": "keptUserAssigned",
    }
    params = bicep("main.bicep")["modules"]["events"]["config"]["params"]
    assert params["existingTopicState"] == "systemTopicState"
    assert "topicIdentityId" not in bicep("modules/events.bicep")["parameters"]


def test_lost_events_and_failed_invocations_alert_an_action_group() -> None:
    alerts = bicep("modules/alerts.bicep")["resources"]
    by_metric = {}
    for name in ("deadLettered", "deliveryFailed", "deadLetterFailed"):
        config = alerts[name]["config"]
        assert config["loop_type"]["detail"]["array_name"] == "subscriptionNames"
        (criterion,) = config["config"]["properties"]["criteria"]["allOf"]
        assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
        assert criterion["dimensions"][0] == {
            "name": "EventSubscriptionName",
            "operator": "Include",
            "values": ["name"],
        }
        assert config["config"]["properties"]["scopes"] == ["systemTopicId"]
        by_metric[criterion["metricName"]] = criterion
    assert set(by_metric) == {"DeadLetteredCount", "DeliveryAttemptFailCount", "DroppedEventCount"}
    # Dead-lettering itself failing: DeadLetteredCount stays 0, only DroppedEventCount counts it.
    assert by_metric["DroppedEventCount"]["dimensions"][1:] == [
        {"name": "DropReason", "operator": "Include", "values": ["*"]}
    ]
    assert by_metric["DroppedEventCount"]["timeAggregation"] == "Total"
    assert all(c["operator"] == "GreaterThan" and c["threshold"] == 0 for c in by_metric.values())
    failures = alerts["functionFailures"]["config"]["properties"]
    assert failures["criteria"]["allOf"][0]["metricName"] == "requests/failed"
    assert failures["scopes"] == ["applicationInsightsId"]
    group = alerts["actionGroup"]["config"]["properties"]
    assert "alertEmail" in json.dumps(group["emailReceivers"])
    params = bicep("main.bicep")["modules"]["alerts"]["config"]["params"]
    assert _symbol(params["subscriptionNames"]) == "events" and "subscriptionNames" in json.dumps(
        params["subscriptionNames"]
    )
    assert params["alertEmail"] == "alertEmail"
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert supplied["alertEmail"]["value"] == "${RETRAIN_ALERT_EMAIL=}"


def test_every_metric_alert_criterion_skips_metric_validation() -> None:
    """The alerts are created with the topic, its subscriptions and the component, which have
    emitted no metric yet: Azure Monitor's validation of a metric without data can refuse the rule."""
    criteria = []
    for path in sorted(INFRA.rglob("*.bicep")):
        for name, resource in bicep(str(path.relative_to(INFRA))).get("resources", {}).items():
            if resource["type"] == "Microsoft.Insights/metricAlerts":
                config = resource["config"]
                config = config.get("config", config) if "loop_type" in config else config
                for criterion in config["properties"]["criteria"]["allOf"]:
                    criteria.append((path.name, name, criterion.get("skipMetricValidation")))
    assert len(criteria) == 4
    assert [c for c in criteria if c[2] is not True] == []


def test_the_traffic_log_goes_from_each_named_endpoint_to_the_health_workspace() -> None:
    module = bicep("modules/traffic-logs.bicep")["resources"]
    setting = module["trafficLog"]["config"]
    assert setting["loop_type"]["detail"]["array_name"] == "endpointNames"
    assert setting["config"]["properties"]["logs"] == [{"category": "AmlOnlineEndpointTrafficLog", "enabled": True}]
    # The code queries the resource-specific table, which only a Dedicated destination fills.
    assert setting["config"]["properties"]["logAnalyticsDestinationType"] == "Dedicated"
    query = (REPO / "function_app" / "adapters" / "monitor_health.py").read_text(encoding="utf-8")
    assert "= AmlOnlineEndpointTrafficLog" in query and "AzureDiagnostics" not in query
    assert module["endpoints"]["type"] == "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
    params = modules()["trafficLogs"]["params"]
    assert params["logAnalyticsWorkspaceId"] == "healthWorkspaceId"
    assert variable("main.bicep", "appSettings")["RETRAIN_LOG_ANALYTICS_WORKSPACE_ID"] == "healthWorkspaceId"


def test_the_notification_topic_takes_cloudevents_with_entra_id_only_from_the_app() -> None:
    module = bicep("modules/notifications.bicep")
    topic = module["resources"]["topic"]
    assert topic["type"] == "Microsoft.EventGrid/topics"
    assert topic["config"]["properties"]["inputSchema"] == "CloudEventSchemaV1_0"
    assert topic["config"]["properties"]["disableLocalAuth"] is True
    sender = module["resources"]["appSender"]["config"]
    assert sender["scope"] == "topic" and sender["properties"]["principalId"] == "appPrincipalId"
    role = module["variables"]["eventGridDataSender"]["value"]["function"]["parameters"]["resource_name_1"]
    assert role == "d5a91429-5739-47e2-a06b-3470a27159e7"
    call = bicep("main.bicep")["modules"]["notifications"]["config"]
    assert "resourceToken" in json.dumps(call["params"]["name"])  # named per environment, like the others
    setting = json.dumps(variable("main.bicep", "appSettings")["RETRAIN_NOTIFY_TOPIC_ENDPOINT"])
    assert '"notifications"' in setting and '"endpoint"' in setting  # notifications.outputs.endpoint
