"""Who may do what in the test world, read from ``infra/``: the role assignments ``azd up`` would
create, resolved to concrete scopes, as Azure RBAC evaluates them.

The fakes (ARM with MLflow, the metrics batch endpoint, the notification topic) ask a
:class:`tests.rbac_model.Principal` (how Azure RBAC evaluates a grant: tests/rbac_model.py) whether the caller may perform an action at a scope, and refuse as Azure does
when it may not. What the principal holds comes from the Bicep itself, so a wrong role, a missing
action or a scope one level too narrow in ``infra/`` fails the tests that exercise it:

- every ``Microsoft.Authorization/roleAssignments`` in ``infra/main.bicep`` and the modules it
  deploys, with its principal (the module parameter it names: ``appPrincipalId`` is the function
  app's identity) and its role (the custom workspace role's ``actions`` as written in
  ``infra/modules/workspace-access.bicep``, or a built-in role by its definition id);
- its scope: the resource named by its ``scope:`` (an ``existing`` or created resource of the
  module), or with none, the scope the module is deployed at (``rg``, ``resourceGroup(sub, rg)``,
  ``subscription(sub)``), resolved with the world's :class:`Topology` (its subscriptions, resource
  groups and resource names). A module deployed at the wrong resource group therefore grants on a
  scope the fakes' requests never fall under.

A custom role can only be assigned within its ``assignableScopes`` (checked when the model is built:
Azure refuses such an assignment).

Not modelled: deny assignments, conditions, PIM, and the propagation delay of a new assignment
(the adapters' handling of that delay is tested on its own). ARM's long-running-operation status
URLs are not role-checked here: ARM answers them to the caller that started the operation, and a
resource-group-scoped role can poll a subscription-level operation URL in Azure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from function_app.adapters.permissions import BUILTIN_ROLES, BuiltinRole
from tests.bicep import bicep
from tests.rbac_model import Grant, Principal, under

APP = "appPrincipalId"  # the module parameter every assignment to the function app's identity names

# Built-in roles infra/ assigns to identities other than the app's, or that the app's adapters do not
# need (so they are not in function_app.adapters.permissions.BUILTIN_ROLES), as Microsoft's built-in
# roles reference lists them.
_OTHER_BUILTINS: dict[str, BuiltinRole] = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": BuiltinRole(
        "Storage Blob Data Contributor",
        actions=(
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ),
        data_actions=(
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        ),
    ),
    "3913510d-42f4-4e42-8a64-420c390055eb": BuiltinRole(
        "Monitoring Metrics Publisher",
        actions=(
            "Microsoft.Insights/Register/Action",
            "Microsoft.Support/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ),
        data_actions=("Microsoft.Insights/Metrics/Write", "Microsoft.Insights/Telemetry/Write"),
    ),
}
ROLES: dict[str, BuiltinRole] = {**BUILTIN_ROLES, **_OTHER_BUILTINS}


@dataclass(frozen=True)
class Topology:
    """Where ``azd up`` put things in a test world: the parameter values the scopes use and the names
    of the resources the role assignments are scoped to (by resource type)."""

    subscription: str  # the deployment's (the app's) subscription
    resource_group: str  # the app's resource group (``rg`` in main.bicep)
    parameters: Mapping[str, str] = field(default_factory=dict)  # mlSubscriptionId, mlWorkspaceResourceGroup, ...
    names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # resource type -> names, parent first
    conditions: Mapping[str, bool] = field(default_factory=dict)  # bool parameters of module conditions

    def name_of(self, rtype: str) -> tuple[str, ...]:
        try:
            return self.names[rtype]
        except KeyError:
            raise AssertionError(
                f"the test world names no {rtype}: add it to Topology.names (a role assignment in infra/ is scoped to one)"
            ) from None


@dataclass(frozen=True)
class _Scope:
    subscription: str
    resource_group: str | None


def _param(value: Any, topology: Topology, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, str):
        if value in topology.parameters:
            return topology.parameters[value]
        raise AssertionError(f"the test world has no value for the parameter {value!r}: add it to Topology.parameters")
    raise AssertionError(f"a module scope the permission model cannot read: {value!r}")


def _module_scope(config: Mapping[str, Any], topology: Topology) -> _Scope:
    scope = config.get("scope")
    home = _Scope(topology.subscription, topology.resource_group)
    if scope is None:
        return _Scope(topology.subscription, None)  # main.bicep's targetScope is the subscription
    if scope == "rg":
        return home
    function = scope.get("function", {}) if isinstance(scope, dict) else {}
    params = function.get("parameters", {})
    if function.get("type") == "resource_group":
        sub = _param(params.get("subscription_id"), topology, topology.subscription)
        return _Scope(sub, _param(params.get("resource_group_name"), topology, topology.resource_group))
    if function.get("type") == "subscription":
        return _Scope(_param(params.get("subscription_id"), topology, topology.subscription), None)
    raise AssertionError(f"a module scope the permission model cannot read: {scope!r}")


def _condition(value: Any, topology: Topology) -> bool:
    """A module's ``if (...)``: a bool parameter or its negation; anything else counts as deployed."""
    if isinstance(value, str):
        return topology.conditions.get(value, True)
    operator = value.get("operator", {}) if isinstance(value, dict) else {}
    if operator.get("type") == "not" and isinstance(operator["operands"].get("bool_value"), str):
        return not topology.conditions.get(operator["operands"]["bool_value"], False)
    return True


def _resource_id(scope: _Scope, rtype: str, names: tuple[str, ...]) -> str:
    provider, *types = rtype.split("/")
    assert len(types) == len(names), f"{rtype} needs {len(types)} names, the world gives {names}"
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    assert scope.resource_group, f"{rtype} deployed at a subscription: not modelled"
    return f"/subscriptions/{scope.subscription}/resourceGroups/{scope.resource_group}/providers/{provider}/{path}"


def _role(module: Mapping[str, Any], ref: str, source: str) -> tuple[str, BuiltinRole, tuple[Any, ...]]:
    """The role a ``roleDefinitionId`` names: (its name, its permissions, assignable scopes of a custom role)."""
    variables = module.get("variables", {})
    value = variables[ref]["value"] if ref in variables else ref
    # var workspaceRoleId = useCustomRole ? <custom> : <built-in>: the deployed default is the custom role
    operator = value.get("operator", {}) if isinstance(value, dict) else {}
    if operator.get("type") == "conditional":
        value = operator["operands"]["true_value"]
    if isinstance(value, str) and value in variables:
        value = variables[value]["value"]
    function = value.get("function", {}) if isinstance(value, dict) else {}
    if function.get("type") != "subscription_resource_id":
        raise AssertionError(f"{source}: a roleDefinitionId the permission model cannot read: {value!r}")
    name = function["parameters"]["resource_name_1"]
    if name in ROLES:
        return ROLES[name].name, ROLES[name], ()
    for resource in module.get("resources", {}).values():
        if resource["type"] == "Microsoft.Authorization/roleDefinitions" and _resource_config(resource)["name"] == name:
            props = _resource_config(resource)["properties"]
            (permission,) = props["permissions"]
            role = BuiltinRole(
                "custom workspace role",
                actions=tuple(permission["actions"]),
                data_actions=tuple(permission.get("dataActions", ())),
            )
            assert permission.get("notActions", []) == [], f"{source}: notActions are not modelled"
            return role.name, role, tuple(props["assignableScopes"])
    raise AssertionError(
        f"{source}: role definition {name} is neither the custom role nor a built-in role this model knows: "
        "add it to function_app/adapters/permissions.py BUILTIN_ROLES with its actions from Microsoft's built-in roles reference"
    )


def _resource_config(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    config: Mapping[str, Any] = resource["config"]
    return config["config"] if "condition" in config else config


def assignments(topology: Topology) -> list[tuple[str, Grant]]:
    """Every role assignment ``infra/`` makes, as (principal parameter, grant), resolved for ``topology``."""
    main = bicep("main.bicep")
    out: list[tuple[str, Grant]] = []
    for module in main["modules"].values():
        config = module["config"]
        if "condition" in config:
            if not _condition(config["condition"], topology):
                continue
            config = config["config"]
        path = module["detail"]["path"]
        parsed = bicep(path)
        scope = _module_scope(config, topology)
        resources = parsed.get("resources", {})
        for resource_name, resource in resources.items():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            source = f"{path}:{resource_name}"
            props = _resource_config(resource)["properties"]
            role_name, role, assignable = _role(parsed, props["roleDefinitionId"], source)
            target = _resource_config(resource).get("scope")
            if target is None:
                at = f"/subscriptions/{scope.subscription}"
                if scope.resource_group:
                    at += f"/resourceGroups/{scope.resource_group}"
            else:
                rtype = resources[target]["type"]
                at = _resource_id(scope, rtype, topology.name_of(rtype))
            for allowed in assignable:
                function = allowed.get("function", {}) if isinstance(allowed, dict) else {}
                own_group = function.get("type") == "resource_group" and not any(function["parameters"].values())
                assert own_group and scope.resource_group, (
                    f"{source}: assignableScopes the model cannot read: {allowed!r}"
                )
                home = f"/subscriptions/{scope.subscription}/resourceGroups/{scope.resource_group}"
                assert under(home, at), f"{source}: a custom role assignable at {home} is assigned at {at}"
            grant = Grant(role_name, at, role.actions, (), role.data_actions, source)
            out.append((str(props["principalId"]), grant))
    return out


def principal(topology: Topology, oid: str, parameter: str = APP, *, name: str = "the function app") -> Principal:
    """The identity whose assignments name ``parameter``, with the token object id ``oid``."""
    grants = tuple(g for p, g in assignments(topology) if p == parameter)
    return Principal(oid, name, grants)


# The workspace datastore a batch comparison's data asset is in (infra/'s batchDatastoreName).
DATASTORE = "workspaceblobstore"

# The Azure ML registry of the test world (infra/'s registryName), in a resource group of its own.
REGISTRY, REGISTRY_GROUP = "mlreg-shared", "rg-mlops-registry"

# The object id in the tokens tests.fake_http.FakeCredential hands out: the function app's identity.
APP_OID = "00000000-0000-0000-0000-0000000000aa"


def world(
    ml_subscription: str,
    ml_resource_group: str,
    workspace: str,
    *,
    subscription: str | None = None,
    resource_group: str = "rg-retrain-dev",
    storage: str = "stretraindev",
    logs: str = "log-retrain-dev",
    registry: str = REGISTRY,
    registry_resource_group: str = REGISTRY_GROUP,
    registry_subscription: str | None = None,
    registry_role: str = "downstream",
) -> Topology:
    """The topology of one environment (``azd up`` with its defaults) beside the workspace
    ``workspace`` in ``ml_resource_group``: the app's resources in ``resource_group`` of
    ``subscription`` (the workspace's, unless given), the health logs in the environment's own Log
    Analytics workspace; the registry it serves from (``registry``) in its own resource group."""
    return Topology(
        subscription or ml_subscription,
        resource_group,
        parameters={
            "mlSubscriptionId": ml_subscription,
            "mlWorkspaceResourceGroup": ml_resource_group,
            "topicResourceGroup": ml_resource_group,
            "healthWorkspaceSubscription": ml_subscription,
            "healthWorkspaceResourceGroup": ml_resource_group,
            "registrySubscription": registry_subscription or ml_subscription,
            "registryGroup": registry_resource_group,
            # a downstream environment's upstream topic (modules/upstream-subscription.bicep: no role assigned)
            "upstreamTopicSubscription": ml_subscription,
            "upstreamTopicGroup": "rg-retrain-upstream",
        },
        names={
            "Microsoft.MachineLearningServices/workspaces": (workspace,),
            "Microsoft.MachineLearningServices/workspaces/datastores": (workspace, DATASTORE),
            "Microsoft.Storage/storageAccounts": (storage,),
            "Microsoft.Storage/storageAccounts/blobServices/containers": (storage, "default", "deadletters"),
            "Microsoft.OperationalInsights/workspaces": (logs,),
            "Microsoft.Insights/components": ("appi-retrain-dev",),
            "Microsoft.EventGrid/topics": ("evgt-retrain-dev",),
            "Microsoft.MachineLearningServices/registries": (registry,),
        },
        conditions={
            "externalHealthWorkspace": False,
            "registryReads": registry_role == "downstream",
            "registryPublishes": registry_role == "upstream",
            "upstreamSubscribes": False,
            "newData": False,  # no newDataStorageAccountId: the data account's topic (it assigns the app nothing)
        },
    )


def app(ml_subscription: str, ml_resource_group: str, workspace: str, **where: Any) -> Principal:
    """The function app's identity in :func:`world`, as ``infra/`` assigns its roles."""
    return principal(world(ml_subscription, ml_resource_group, workspace, **where), APP_OID)
