"""Infra and code agree: the settings the code reads, the events it handles, the function Event Grid calls.

The Bicep is read with pycep (the parser checkov uses), so these tests see the same structure the
scanner does. They run offline; `make check-infra` scans the same files with checkov.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app.settings import SETTINGS
from handlers import envelopes, signals
from tests.bicep import INFRA, bicep
from tests.conftest import REPO, SAMPLE_EVENTS

RUN_STATUS = "Microsoft.MachineLearningServices.RunStatusChanged"
# App settings that Flex Consumption replaces with functionAppConfig (or that would bring a key back).
FLEX_REJECTS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "AzureWebJobsStorage",
}


def variable(relative: str, name: str) -> Any:
    return bicep(relative)["variables"][name]["value"]


def app_setting_names() -> set[str]:
    """Names of every app setting the Bicep gives the function app."""
    main_settings = variable("main.bicep", "appSettings")
    host_settings = variable("modules/functionapp.bicep", "hostSettings")
    return {name.strip("'") for name in set(main_settings) | set(host_settings)}  # pycep keeps a quoted key's quotes


def event_subscriptions() -> list[dict[str, Any]]:
    subs: list[dict[str, Any]] = variable("modules/events.bicep", "eventSubscriptions")
    return subs


def registered_event_grid_functions() -> list[str]:
    """Event Grid trigger functions of the app, found the way the worker finds them: import main.

    In a fresh interpreter from the repo root, as the worker does: FunctionApp.get_functions() may
    run only once per app, and other tests (the local host) have already run it in this process.
    """
    code = (
        "import importlib, json\n"
        "main = importlib.import_module('main')\n"
        "print(json.dumps([f.get_function_name() for f in main.app.get_functions()\n"
        "    if 'eventGridTrigger' in {json.loads(b)['type'] for b in f.get_raw_bindings()}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    names: list[str] = json.loads(done.stdout)
    return names


def binding_settings() -> set[str]:
    """App settings the app's bindings name as %NAME% (e.g. the reconciler's schedule), found by indexing main."""
    code = (
        "import importlib, json\n"
        "main = importlib.import_module('main')\n"
        "print(json.dumps([b for f in main.app.get_functions() for b in f.get_raw_bindings()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return {name for raw in json.loads(done.stdout) for name in re.findall(r"%([A-Za-z0-9_]+)%", raw)}


def test_every_setting_a_binding_names_is_a_setting_infra_and_local_settings_give() -> None:
    named = binding_settings()
    assert "RETRAIN_RECONCILE_SCHEDULE" in named
    local = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    azure = {s.name for s in SETTINGS if s.azure}
    assert sorted(named - azure) == [] and sorted(named - app_setting_names()) == []
    assert sorted(named - set(local)) == []


def test_every_setting_azure_needs_is_an_app_setting_in_the_bicep() -> None:
    missing = sorted(s.name for s in SETTINGS if s.azure and s.name not in app_setting_names())
    assert missing == [], f"add these to appSettings in infra/main.bicep: {missing}"


def test_the_bicep_sets_no_service_setting_the_code_does_not_read() -> None:
    known = {s.name for s in SETTINGS}
    ours = {n for n in app_setting_names() if n.startswith(("RETRAIN_", "AZUREML_"))}
    assert sorted(ours - known) == [], "a RETRAIN_/AZUREML_ app setting that SETTINGS does not list is a typo"


def test_the_service_settings_reach_the_function_app() -> None:
    """main.bicep's appSettings go to the module, which merges them over the host settings into the site."""
    assert bicep("main.bicep")["modules"]["functionApp"]["config"]["params"]["appSettings"] == "appSettings"
    merged = variable("modules/functionapp.bicep", "settings")["function"]
    assert merged["type"] == "union"
    assert list(merged["parameters"].values()) == ["hostSettings", "appSettings"]
    site = bicep("modules/functionapp.bicep")["resources"]["functionApp"]["config"]
    loop = site["properties"]["siteConfig"]["appSettings"]["loop_type"]
    assert loop["detail"]["object_name"] == "settings"


def test_app_settings_are_what_flex_consumption_and_identity_based_storage_expect() -> None:
    names = app_setting_names()
    assert sorted(names & FLEX_REJECTS) == []
    host = variable("modules/functionapp.bicep", "hostSettings")
    assert host["AzureWebJobsStorage__credential"] == "managedidentity"
    assert {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__clientId"} <= set(host)
    assert host["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    local = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    assert host["PYTHON_SCRIPT_FILE_NAME"] == local["PYTHON_SCRIPT_FILE_NAME"] == "main.py"
    site = bicep("modules/functionapp.bicep")["resources"]["functionApp"]["config"]
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert bicep("modules/functionapp.bicep")["parameters"]["pythonVersion"]["default"] == "3.11"


def test_the_service_runs_against_azure_in_azure() -> None:
    settings = variable("main.bicep", "appSettings")
    assert settings["RETRAIN_LEDGER"] == "table"
    assert settings["RETRAIN_BACKEND"] == "retrainBackend"
    assert bicep("main.bicep")["parameters"]["retrainBackend"]["default"] == "azureml"
    assert bicep("main.bicep")["parameters"]["policyPath"]["default"] == "policy.yaml"


def test_the_event_grid_webhook_route_is_disabled_in_azure_unless_enabled() -> None:
    """The subscriptions use the trigger; POST /api/events is off through the host's
    AzureWebJobs.<function>.Disabled setting, keyed by the function name the app registers."""
    code = (
        "import importlib, json\n"
        "main = importlib.import_module('main')\n"
        "print(json.dumps({f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()]\n"
        "    for f in main.app.get_functions()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    functions = json.loads(done.stdout)
    routes = {b.get("route"): name for name, bindings in functions.items() for b in bindings if b.get("route")}
    settings = {name.strip("'"): value for name, value in variable("main.bicep", "appSettings").items()}
    webhook = routes["events"]
    assert settings[f"AzureWebJobs.{webhook}.Disabled"] == {
        "operator": {"type": "conditional", "operands": {"condition": "enableEventsWebhook", "true_value": "false", "false_value": "true"}}
    }  # fmt: skip
    assert bicep("main.bicep")["parameters"]["enableEventsWebhook"]["default"] is False
    # Action groups post to /api/alerts: that one stays enabled.
    assert not any(k.startswith("AzureWebJobs.") and k != f"AzureWebJobs.{webhook}.Disabled" for k in settings)
    assert "alerts" in routes


def test_location_is_limited_to_regions_that_offer_flex_consumption() -> None:
    location = bicep("main.bicep")["parameters"]["location"]
    allowed = next(d["argument"] for d in location["decorators"] if d["type"] == "allowed")
    assert {"swedencentral", "eastus", "westeurope", "uksouth", "australiaeast"} <= set(allowed)
    # Regions without Flex Consumption in Microsoft's template list, and its canary region.
    assert not {"westindia", "eastus2euap", "chinaeast2", "brazilsoutheast"} & set(allowed)
    assert len(allowed) == len(set(allowed)) and allowed == sorted(allowed)


def test_every_setting_is_in_the_local_settings_example() -> None:
    values = json.loads((REPO / "local.settings.json.example").read_text(encoding="utf-8"))["Values"]
    missing = sorted(s.name for s in SETTINGS if s.name not in values)
    assert missing == [], f"add these to local.settings.json.example: {missing}"


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


def test_azd_deploys_to_the_app_bicep_tags_and_main_parameters_are_all_supplied() -> None:
    project = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))
    (service_name, service), *others = project["services"].items()
    assert others == []
    assert service == {"project": ".", "language": "python", "host": "function"}
    assert variable("main.bicep", "serviceName") == service_name
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = bicep("main.bicep")["parameters"]
    assert set(supplied) <= set(declared)
    required = {name for name, p in declared.items() if p["default"] is None}
    assert required <= set(supplied)


@pytest.mark.parametrize("path", ["host.json", "main.py", "requirements.txt"])
def test_the_function_package_keeps_what_the_worker_needs(path: str) -> None:
    ignored = [
        line.strip() for line in (REPO / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert (REPO / path).is_file()
    assert path not in ignored


def test_host_json_loads_the_extension_bundle_flex_consumption_requires() -> None:
    host = json.loads((REPO / "host.json").read_text(encoding="utf-8"))
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")


def modules(relative: str = "main.bicep") -> dict[str, dict[str, Any]]:
    """Each module's configuration (a conditional module's own, under its condition)."""
    found = {}
    for name, module in bicep(relative)["modules"].items():
        config = module["config"]
        found[name] = config["config"] if "condition" in config else config
    return found


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


EMPTY_CLIENT_ID = {"function": {"type": "empty", "parameters": {"item_to_test": "authClientId"}}}


def test_sign_in_is_an_azd_parameter_that_every_provision_writes_and_the_app_setting_follows() -> None:
    """App settings are replaced whole on every provision: a sign-in set up by hand, and the
    RETRAIN_APP_SERVICE_AUTH=true beside it, were lost on the next one. Both follow authClientId."""
    from function_app.settings import _bool

    settings = variable("main.bicep", "appSettings")
    assert settings["RETRAIN_APP_SERVICE_AUTH"] == {
        "operator": {
            "type": "conditional",
            "operands": {"condition": EMPTY_CLIENT_ID, "true_value": "false", "false_value": "true"},
        }
    }
    assert (_bool("true"), _bool("false")) == (True, False)  # what the code makes of the two values
    assert settings["RETRAIN_OPERATOR_ROLE"] == "operatorRole"
    declared = bicep("main.bicep")["parameters"]
    assert declared["authClientId"]["default"] == "" and declared["operatorRole"]["default"] == "Retrain.Operator"
    supplied = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert supplied["authClientId"]["value"] == "${RETRAIN_AUTH_CLIENT_ID=}"
    assert supplied["authIssuer"]["value"] == "${RETRAIN_AUTH_ISSUER=}"
    assert supplied["operatorRole"]["value"] == "${RETRAIN_OPERATOR_ROLE=Retrain.Operator}"
    params = modules()["functionApp"]["params"]
    assert (params["authClientId"], params["authIssuer"]) == ("authClientId", "authIssuer")

    module = bicep("modules/functionapp.bicep")
    assert module["variables"]["signIn"]["value"] == {
        "operator": {"type": "not", "operands": {"bool_value": EMPTY_CLIENT_ID}}
    }
    auth = module["resources"]["authSettings"]
    assert auth["type"] == "Microsoft.Web/sites/config" and "condition" not in auth["config"]  # written even when off
    config = auth["config"]
    assert (config["parent"], config["name"]) == ("functionApp", "authsettingsV2")
    properties = config["properties"]
    assert properties["platform"] == {"enabled": "signIn"}
    # Event Grid, action groups and /api/health call without a token; the app refuses manual
    # requests without a principal holding the role, from the headers App Service sets.
    assert properties["globalValidation"] == {
        "requireAuthentication": False,
        "unauthenticatedClientAction": "AllowAnonymous",
    }
    entra = properties["identityProviders"]["azureActiveDirectory"]["operator"]["operands"]
    assert entra["condition"] == "signIn" and entra["false_value"] == {"enabled": False}
    assert entra["true_value"]["registration"] == {"clientId": "authClientId", "openIdIssuer": "issuer"}
    assert "api://${authClientId}" in entra["true_value"]["validation"]["allowedAudiences"]


def test_the_sign_in_configuration_holds_no_secret_and_names_no_secret_setting() -> None:
    text = (INFRA / "modules" / "functionapp.bicep").read_text(encoding="utf-8")
    assert "clientSecret" not in json.dumps(bicep("modules/functionapp.bicep")["resources"]["authSettings"])
    assert "clientSecret" not in text and "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET" not in json.dumps(
        variable("main.bicep", "appSettings")
    )


def test_the_job_name_key_is_a_secure_parameter_the_hook_generates_and_the_app_setting_carries() -> None:
    """RETRAIN_JOB_NAME_KEY (job names no workspace user can predict): generated by preprovision into
    the azd environment, passed through main.parameters.json to a @secure() parameter, set as the app
    setting, and never shown in the deployment history (the module's settings parameter is secure)."""
    param = bicep("main.bicep")["parameters"]["jobNameKey"]
    kinds = {d["type"]: d.get("argument") for d in param["decorators"]}
    assert "secure" in kinds and kinds["min_length"] == 32 and param["default"] is None
    assert variable("main.bicep", "appSettings")["RETRAIN_JOB_NAME_KEY"] == "jobNameKey"
    parameters = json.loads((REPO / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["jobNameKey"] == {"value": "${RETRAIN_JOB_NAME_KEY}"}
    module = bicep("modules/functionapp.bicep")["parameters"]["appSettings"]
    assert any(d["type"] == "secure" for d in module["decorators"])
    for hook in ("preprovision.sh", "preprovision.ps1"):
        text = (REPO / "infra" / "hooks" / hook).read_text(encoding="utf-8")
        assert "RETRAIN_JOB_NAME_KEY" in text and "token_hex(32)" in text, hook
    setting = next(s for s in SETTINGS if s.name == "RETRAIN_JOB_NAME_KEY")
    assert setting.azure and setting.default is None
