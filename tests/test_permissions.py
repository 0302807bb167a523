"""The roles infra/ gives the app's identity grant what the adapters do, and no more than that.

function_app/adapters/permissions.py lists, per adapter operation, the Azure actions it needs. Here:
every public method of the adapters has an entry; every Azure ML action is granted by the custom
workspace role in infra/modules/workspace-access.bicep (named exactly: no wildcards there); every
other action by a built-in role that infra/ assigns to the app's identity; and the custom role
grants nothing on the deny list (keys, secrets, workspace or compute changes, deleting endpoints,
models or jobs).
"""

from __future__ import annotations

import inspect

import pytest

from function_app.adapters import permissions
from function_app.adapters.azureml import AzureMLActions
from function_app.adapters.azureml.batch import AzureMLBatch
from function_app.adapters.blob_deadletters import BlobDeadLetterStore
from function_app.adapters.monitor_guards import MonitorGuards
from function_app.adapters.monitor_health import MonitorHealth, NoHealthData
from function_app.adapters.monitor_metrics import MonitorMetrics
from function_app.adapters.notifier import EventGridNotifier
from function_app.adapters.table_ledger import TableLedger
from tests import rbac
from tests.azure_world import RG, SUB, WS
from tests.bicep import INFRA, bicep
from tests.fake_metrics import MONITORING_READER

ADAPTERS = [
    AzureMLActions,
    AzureMLBatch,
    MonitorHealth,
    MonitorGuards,
    NoHealthData,
    MonitorMetrics,
    TableLedger,
    BlobDeadLetterStore,
    EventGridNotifier,
]


def public_operations(cls: type) -> set[str]:
    """Public methods, class methods and properties the class defines (not plain attributes like ``name``),
    itself or in a class of the app it is made of (the Table ledger's parts: events, models, ...)."""
    found = set()
    for part in cls.__mro__:
        if part is not cls and not part.__module__.startswith("function_app."):
            continue
        for name, member in vars(part).items():
            if name.startswith("_"):
                continue
            if isinstance(member, (staticmethod, classmethod, property)) or inspect.isfunction(member):
                found.add(f"{cls.__name__}.{name}")
    return found


def custom_role_actions() -> list[str]:
    role = bicep("modules/workspace-access.bicep")["resources"]["serviceRole"]["config"]
    assert role["condition"] == "useCustomRole"
    (permission,) = role["config"]["properties"]["permissions"]
    assert permission["notActions"] == []
    assert "dataActions" not in permission  # an unknown data action would fail the role's deployment
    actions: list[str] = permission["actions"]
    return actions


def test_the_scoring_action_is_granted_as_an_action_at_the_endpoints() -> None:
    """``onlineEndpoints/score/action`` is what invoking an ``aad_token`` endpoint needs; Azure ML
    calls it a data plane action, yet roles grant it under ``actions`` (AzureML Data Scientist's
    ``workspaces/*/action``; the docs' custom scoring role's ``onlineEndpoints/*/action``)."""
    app = rbac.app(SUB, RG, WS)
    endpoint = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/{permissions.AML}/{WS}/onlineEndpoints/e"
    assert app.allows(f"{permissions.AML}/onlineEndpoints/score/action", endpoint)


def assigned_builtin_roles() -> dict[str, set[str]]:
    """Built-in role definition ids that infra/ assigns, each with the principal parameters it goes to."""
    assigned: dict[str, set[str]] = {}
    for path in sorted(INFRA.rglob("*.bicep")):
        parsed = bicep(str(path.relative_to(INFRA)))
        role_ids = {}
        for name, var in parsed.get("variables", {}).items():
            function = var["value"].get("function", {}) if isinstance(var["value"], dict) else {}
            params = function.get("parameters", {})
            if function.get("type") == "subscription_resource_id" and "roleDefinitions" in params["resource_type"]:
                role_ids[name] = params["resource_name_1"]
        for resource in parsed.get("resources", {}).values():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            props = resource["config"].get("config", resource["config"])["properties"]  # an `if (...)` wraps it
            guid = role_ids.get(props["roleDefinitionId"])
            if guid:
                assigned.setdefault(guid, set()).add(props["principalId"])
    return assigned


def test_every_public_adapter_method_says_what_it_may_do_in_azure() -> None:
    operations = set().union(*(public_operations(cls) for cls in ADAPTERS))
    missing = sorted(operations - set(permissions.OPERATIONS))
    assert missing == [], (
        "add these to OPERATIONS in function_app/adapters/permissions.py (the Azure ML adapter's in "
        f"permissions_azureml.py) with the Azure actions they need "
        f"(and grant them in infra/modules/workspace-access.bicep if they are Azure ML actions): {missing}"
    )


def test_every_entry_but_the_planned_ones_is_a_method_that_exists() -> None:
    classes = {cls.__name__ for cls in ADAPTERS}
    operations = set().union(*(public_operations(cls) for cls in ADAPTERS))
    stale = sorted(
        name
        for name in permissions.OPERATIONS
        if name not in permissions.PLANNED and (name.split(".")[0] in classes) and name not in operations
    )
    assert stale == [], f"no such method any more; remove it from OPERATIONS: {stale}"
    unknown = sorted(
        n for n in permissions.OPERATIONS if n.split(".")[0] not in classes and n not in permissions.PLANNED
    )
    assert unknown == [], f"an adapter class this test does not introspect; add it to ADAPTERS: {unknown}"
    arrived = sorted(name for name in permissions.PLANNED if name in operations)
    assert arrived == [], f"these exist now: remove them from PLANNED so they are checked like the others: {arrived}"


def test_the_operations_of_the_monitoring_loop_are_granted_what_they_do() -> None:
    ops, aml = permissions.OPERATIONS, permissions.AML
    assert f"{aml}/experiments/runs/read" in ops["AzureMLActions.candidate_facts"]  # MLflow runs/get, runs/search
    assert f"{aml}/schedules/write" in ops["AzureMLActions.retarget_monitor"]
    assert f"{aml}/onlineEndpoints/deployments/delete" in ops["AzureMLActions.delete_deployment"]
    assert "Microsoft.Insights/metrics/read" in ops["MonitorMetrics.read"]


def test_the_custom_workspace_role_names_every_azure_ml_action_the_adapters_need() -> None:
    granted = {a.lower() for a in custom_role_actions()}
    needed = {
        a
        for actions in permissions.OPERATIONS.values()
        for a in actions
        if a.startswith(permissions.AML) and a not in permissions.ON_THE_DATASTORE
    }
    assert sorted(a for a in needed if a.lower() not in granted) == []


def test_the_custom_workspace_role_grants_nothing_the_adapters_do_not_use() -> None:
    needed = {a.lower() for actions in permissions.OPERATIONS.values() for a in actions}
    assert sorted(a for a in custom_role_actions() if a.lower() not in needed) == []


def registry_role_actions(module: str, resource: str) -> set[str]:
    role = bicep(module)["resources"][resource]["config"]
    (permission,) = role["properties"]["permissions"]
    assert permission["notActions"] == []
    return set(permission["actions"])


def test_the_registry_roles_grant_what_the_adapters_do_in_a_registry_and_nothing_more() -> None:
    """A downstream environment's role (registry-access.bicep) reads, an upstream one's (registry-publisher.bicep)
    reads and imports; each assigned on the registry alone (tests/rbac.py resolves the scope)."""
    reader = registry_role_actions("modules/registry-access.bicep", "readerRole")
    publisher = registry_role_actions("modules/registry-publisher.bicep", "publisherRole")
    needed = {a for actions in permissions.OPERATIONS.values() for a in actions if a.startswith(permissions.REGISTRIES)}
    assert needed == reader | publisher
    assert reader == {a for a in needed if a.endswith("/read")} and reader < publisher


def test_the_custom_workspace_role_has_no_wildcard_and_none_of_the_forbidden_actions() -> None:
    actions = custom_role_actions()
    assert [a for a in actions if "*" in a] == []
    forbidden = [
        (a, f)
        for a in actions
        for f in permissions.NEVER_GRANTED
        if permissions.matches(a, f) or a.lower() == f.lower()
    ]
    assert forbidden == []
    assert {"Microsoft.MachineLearningServices/workspaces/listStorageAccountKeys/action",
            "Microsoft.MachineLearningServices/workspaces/connections/listsecrets/action",
            "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listKeys/action",
            "Microsoft.MachineLearningServices/workspaces/delete"} <= set(permissions.NEVER_GRANTED)  # fmt: skip


def test_datastore_secrets_are_granted_on_the_batch_comparison_s_datastore_alone_by_a_role_holding_nothing_else() -> (
    None
):
    module = bicep("modules/workspace-access.bicep")["resources"]
    role = module["datastoreRole"]["config"]
    assert role["condition"]["operator"]["type"] == "not"  # only when infra names the datastore
    (permission,) = role["config"]["properties"]["permissions"]
    assert tuple(permission["actions"]) == permissions.ON_THE_DATASTORE and permission["notActions"] == []
    assignment = module["appDatastoreSecrets"]["config"]["config"]
    assert assignment["scope"] == "batchDatastore"
    assert module["batchDatastore"]["type"] == "Microsoft.MachineLearningServices/workspaces/datastores"
    app = rbac.app(SUB, RG, WS)
    datastores = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}/datastores"
    [action] = permissions.ON_THE_DATASTORE
    assert app.allows(action, f"{datastores}/{rbac.DATASTORE}")
    assert not app.allows(action, f"{datastores}/another")  # not the workspace's other datastores


@pytest.mark.slow  # parses every Bicep module (pycep): tens of seconds
def test_every_other_action_is_granted_by_a_built_in_role_infra_assigns_to_the_app() -> None:
    assigned = {guid for guid, principals in assigned_builtin_roles().items() if "appPrincipalId" in principals}
    ungranted = []
    for operation, actions in permissions.OPERATIONS.items():
        for action in actions:
            if action.startswith((permissions.AML, permissions.REGISTRIES)):  # the custom roles' (tests above)
                continue
            roles = [permissions.BUILTIN_ROLES[g] for g in assigned if g in permissions.BUILTIN_ROLES]
            if not any(permissions.matches(p, action) for r in roles for p in r.actions + r.data_actions):
                ungranted.append(f"{operation}: {action}")
    assert ungranted == []


def test_the_app_holds_monitoring_reader_on_the_ml_subscription_itself_for_platform_metrics() -> None:
    """metrics:getBatch is a subscription-level API: Monitoring Reader on the workspace (or each
    endpoint) is answered 401, so infra/ assigns it at the workspace's subscription, and not on the
    workspace as well."""
    module = bicep("modules/metrics-reader.bicep")
    assert module["globals"]["scope"]["value"] == "subscription"
    resource = module["resources"]["appMetricsReader"]["config"]
    assert "scope" not in resource  # the scope the module is deployed to: the subscription
    assert resource["properties"]["principalId"] == "appPrincipalId"
    role = module["variables"][resource["properties"]["roleDefinitionId"]]
    assert role["value"]["function"]["parameters"]["resource_name_1"] == MONITORING_READER
    deployed = bicep("main.bicep")["modules"]["metricsReader"]["config"]
    assert deployed["scope"] == {
        "function": {"type": "subscription", "parameters": {"subscription_id": "mlSubscriptionId"}}
    }
    assert "identity" in str(deployed["params"]["appPrincipalId"]) and "principalId" in str(deployed["params"])
    workspace = bicep("modules/workspace-access.bicep")
    assert not [
        name
        for name, r in workspace["resources"].items()
        if r["type"] == "Microsoft.Authorization/roleAssignments"
        and MONITORING_READER
        in str(workspace["variables"].get(r["config"].get("config", r["config"])["properties"]["roleDefinitionId"], ""))
    ]
    # As the test world reads it: the app may read metrics at the subscription itself.
    reader = rbac.app(SUB, RG, WS)
    assert reader.roles_at(f"/subscriptions/{SUB}") == ["Monitoring Reader"]
    assert reader.allows("Microsoft.Insights/metrics/read", f"/subscriptions/{SUB}")


def test_the_workspace_role_falls_back_to_data_scientist_only_when_asked() -> None:
    module = bicep("modules/workspace-access.bicep")
    assert module["parameters"]["workspaceRole"]["default"] == "custom"
    choice = module["variables"]["workspaceRoleId"]["value"]["operator"]["operands"]
    assert choice["condition"] == "useCustomRole"
    assert choice["false_value"] == "azureMLDataScientist"
    scientist = module["variables"]["azureMLDataScientist"]["value"]["function"]["parameters"]
    assert scientist["resource_name_1"] == "f6c7c914-8db3-469d-8ca1-694a8f32e121"
    assignment = module["resources"]["appWorkspaceRole"]["config"]["properties"]
    assert assignment["roleDefinitionId"] == "workspaceRoleId"
    main = bicep("main.bicep")["modules"]["workspaceAccess"]["config"]["params"]
    assert main["workspaceRole"] == "workspaceRole"


@pytest.mark.parametrize(
    ("granted", "action", "expected"),
    [
        ("*/read", "Microsoft.Insights/metrics/read", True),
        ("*/read", "Microsoft.Insights/metrics/write", False),
        ("Microsoft.Storage/x/blobs/*", "microsoft.storage/x/blobs/read", True),
        ("Microsoft.Storage/x/blobs/*", "Microsoft.Storage/x/read", False),
        ("a/b/read", "a/b/read", True),
        ("a/*/read", "a/b/c/read", True),
    ],
)
def test_a_permission_matches_actions_as_azure_rbac_does(granted: str, action: str, expected: bool) -> None:
    assert permissions.matches(granted, action) is expected
