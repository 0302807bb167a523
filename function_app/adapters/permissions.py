"""What each adapter operation is allowed to do in Azure: the ARM actions (control plane) and data
actions (data plane) it needs, so that the roles in infra/ can be checked against the code.

Plain data, no SDK import. tests/test_permissions.py keeps it honest both ways: every public method
of the adapter classes below must have an entry here (the Azure ML adapter's in
function_app/adapters/permissions_azureml.py; a new method without one fails, saying to add it), and every action listed must be granted to the app's identity by a role that infra/ assigns:
the custom workspace role (infra/modules/workspace-access.bicep, which must grant none of
:data:`NEVER_GRANTED`) or one of the built-in roles in :data:`BUILTIN_ROLES`.

Action names come from Microsoft's list of resource provider operations ("Azure permissions for
AI + machine learning", "... for Storage", "... for Monitor"), and which operation needs which
from the Azure ML "Manage roles" page (common scenarios: "Submitting any type of run (V2)",
"Create/manage online endpoints and deployments", "MLflow operations") and the SDK call the
adapter makes (noted per entry). Entries marked planned are operations later issues add
(:data:`PLANNED`); they are granted now so that adding the code needs no infra change.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from function_app.adapters.permissions_azureml import AML, AZUREML, BLOBS, ON_THE_DATASTORE, REGISTRIES

__all__ = [  # the Azure ML names are read from here too (permissions.AML, .REGISTRIES, .ON_THE_DATASTORE)
    "AML",
    "BLOBS",
    "BUILTIN_ROLES",
    "NEVER_GRANTED",
    "ON_THE_DATASTORE",
    "OPERATIONS",
    "PLANNED",
    "REGISTRIES",
    "SOURCES",
    "TABLES",
    "TOPICS",
    "BuiltinRole",
    "matches",
]

TABLES = "Microsoft.Storage/storageAccounts/tableServices/tables"
TOPICS = "Microsoft.EventGrid/topics"

SOURCES = {
    "aml-operations": "https://learn.microsoft.com/azure/role-based-access-control/permissions/ai-machine-learning",
    "aml-manage-roles": "https://learn.microsoft.com/azure/machine-learning/how-to-assign-roles#common-scenarios",
    "storage-operations": "https://learn.microsoft.com/azure/role-based-access-control/permissions/storage",
    "builtin-roles": "https://learn.microsoft.com/azure/role-based-access-control/built-in-roles",
}

_LOGS_QUERY = [
    "Microsoft.OperationalInsights/workspaces/read",
    "Microsoft.OperationalInsights/workspaces/query/read",
    "Microsoft.OperationalInsights/workspaces/query/AmlOnlineEndpointTrafficLog/read",
]

OPERATIONS: dict[str, list[str]] = {
    **AZUREML,  # function_app/adapters/azureml/ (function_app/adapters/permissions_azureml.py)
    # function_app/adapters/monitor_health.py: LogsQueryClient.query_resource / query_workspace
    "MonitorHealth.from_settings": [],
    "MonitorHealth.client": [],
    "MonitorHealth.read": _LOGS_QUERY,
    # a query guard's KQL (deploy.rollout.guards.queries): any table of the workspace the policy names, or
    # of a workspace-based Application Insights component
    "MonitorGuards.from_settings": [],
    "MonitorGuards.value": [
        "Microsoft.OperationalInsights/workspaces/read",
        "Microsoft.OperationalInsights/workspaces/query/read",
        "Microsoft.OperationalInsights/workspaces/query/*/read",
        "Microsoft.Insights/components/query/read",
    ],
    "NoHealthData.read": [],
    # function_app/adapters/monitor_metrics.py: the platform-metrics health source (MetricsClient)
    "MonitorMetrics.build": [],
    "MonitorMetrics.client": [],
    "MonitorMetrics.from_settings": [],
    "MonitorMetrics.resource_id": [],
    "MonitorMetrics.read": ["Microsoft.Insights/metrics/read"],  # metrics:getBatch (no metric definitions read)
    # function_app/adapters/table_ledger.py (azure-data-tables)
    "TableLedger.from_connection_string": [],
    "TableLedger.from_settings": [],
    "TableLedger.create_tables": [f"{TABLES}/read", f"{TABLES}/write"],
    "TableLedger.claim_event": [
        f"{TABLES}/entities/read",
        f"{TABLES}/entities/add/action",
        f"{TABLES}/entities/update/action",
        f"{TABLES}/entities/write",
    ],
    "TableLedger.abandon_event": [f"{TABLES}/entities/read", f"{TABLES}/entities/delete"],
    "TableLedger.finish_event": [f"{TABLES}/entities/update/action", f"{TABLES}/entities/write"],
    "TableLedger.event_status": [f"{TABLES}/entities/read"],
    "TableLedger.event_claim": [f"{TABLES}/entities/read"],
    "TableLedger.recorded_events": [f"{TABLES}/entities/read"],
    "TableLedger.adopt": [f"{TABLES}/entities/read", f"{TABLES}/entities/add/action"],  # the directory: list, insert
    "TableLedger.get_model": [f"{TABLES}/entities/read"],
    "TableLedger.list_models": [f"{TABLES}/entities/read"],
    "TableLedger.update_model": [
        f"{TABLES}/entities/read",
        f"{TABLES}/entities/add/action",
        f"{TABLES}/entities/update/action",
        f"{TABLES}/entities/write",
    ],
    # a record (with its notification, and the slot it takes or settles): read on a conflict, and the
    # rows of the layout before deleted when it is written anew
    **{
        f"TableLedger.{name}": [
            f"{TABLES}/entities/read",
            f"{TABLES}/entities/add/action",
            f"{TABLES}/entities/update/action",
            f"{TABLES}/entities/write",
            f"{TABLES}/entities/delete",
        ]
        for name in ("put_decision", "reserve", "record_and_update")
    },
    "TableLedger.sends_own": [],
    "TableLedger.get_decision": [f"{TABLES}/entities/read"],
    "TableLedger.decisions": [f"{TABLES}/entities/read"],
    "TableLedger.model_history": [f"{TABLES}/entities/read"],
    "TableLedger.purge": [f"{TABLES}/entities/read", f"{TABLES}/entities/delete"],
    "TableLedger.pending_notifications": [f"{TABLES}/entities/read"],
    "TableLedger.claim_notifications": [
        f"{TABLES}/entities/read",
        f"{TABLES}/entities/update/action",
        f"{TABLES}/entities/write",
    ],
    "TableLedger.claim_own_notifications": [f"{TABLES}/entities/update/action", f"{TABLES}/entities/write"],
    "TableLedger.mark_notified": [
        f"{TABLES}/entities/read",
        f"{TABLES}/entities/update/action",
        f"{TABLES}/entities/write",
    ],
    "TableLedger.fail_notification": [
        f"{TABLES}/entities/read",
        f"{TABLES}/entities/update/action",
        f"{TABLES}/entities/write",
    ],
    "TableLedger.notifications": [f"{TABLES}/entities/read"],
    # function_app/adapters/notifier.py (azure-eventgrid): EventGridPublisherClient.send with Entra ID
    "EventGridNotifier.build": [],
    "EventGridNotifier.from_settings": [],
    "EventGridNotifier.publish": [f"{TOPICS}/events/send/action"],
    # function_app/adapters/blob_deadletters.py (azure-storage-blob)
    "BlobDeadLetterStore.from_settings": [],
    "BlobDeadLetterStore.pending": [f"{BLOBS}/blobs/read"],
    "BlobDeadLetterStore.read": [f"{BLOBS}/blobs/read"],
    "BlobDeadLetterStore.mark_replayed": [f"{BLOBS}/blobs/read", f"{BLOBS}/blobs/write"],
}

# Operations that later issues add; each is granted already. Remove a name from here when its
# method exists: the test then checks it like any other.
PLANNED: frozenset[str] = frozenset()

# What the service must never be able to do through its workspace role (datastore secrets are granted on the
# one datastore a batch comparison reads, ON_THE_DATASTORE, and nowhere else).
NEVER_GRANTED = (
    f"{AML}/listKeys/action",
    f"{AML}/listStorageAccountKeys/action",
    f"{AML}/connections/listsecrets/action",
    f"{AML}/onlineEndpoints/listKeys/action",
    f"{AML}/onlineEndpoints/token/action",
    f"{AML}/datastores/listsecrets/action",
    f"{AML}/delete",
    f"{AML}/write",
    f"{AML}/computes/write",
    f"{AML}/computes/delete",
    f"{AML}/onlineEndpoints/delete",
    f"{AML}/models/delete",
    f"{AML}/models/versions/delete",
    f"{AML}/jobs/delete",
)


@dataclass(frozen=True)
class BuiltinRole:
    """A built-in role as Microsoft's built-in roles reference lists it (``*`` as Azure RBAC matches it)."""

    name: str
    actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()


# Built-in roles infra/ assigns to the app's identity (by role definition id), with their
# permissions as the built-in roles reference gives them (SOURCES["builtin-roles"]).
BUILTIN_ROLES: dict[str, BuiltinRole] = {
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": BuiltinRole(
        "Storage Table Data Contributor",
        actions=(f"{TABLES}/read", f"{TABLES}/write", f"{TABLES}/delete"),
        data_actions=(
            f"{TABLES}/entities/read",
            f"{TABLES}/entities/write",
            f"{TABLES}/entities/delete",
            f"{TABLES}/entities/add/action",
            f"{TABLES}/entities/update/action",
        ),
    ),
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": BuiltinRole(
        "Storage Blob Data Reader",
        actions=(f"{BLOBS}/read", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"),
        data_actions=(f"{BLOBS}/blobs/read",),
    ),
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": BuiltinRole(
        "Storage Blob Data Owner",
        actions=(f"{BLOBS}/*", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"),
        data_actions=(f"{BLOBS}/blobs/*",),
    ),
    "73c42c96-874c-492b-b04d-ab87d138a893": BuiltinRole(
        "Log Analytics Reader",
        actions=("*/read", "Microsoft.OperationalInsights/workspaces/search/action", "Microsoft.Support/*"),
    ),
    "d5a91429-5739-47e2-a06b-3470a27159e7": BuiltinRole(
        "EventGrid Data Sender", data_actions=(f"{TOPICS}/events/send/action",)
    ),
    "43d0d8ad-25c7-4714-9337-8ba259a9fe05": BuiltinRole(
        "Monitoring Reader", actions=("*/read", "Microsoft.OperationalInsights/workspaces/search/action")
    ),
}


def matches(granted: str, action: str) -> bool:
    """Whether the permission ``granted`` covers ``action``: ``*`` matches any characters, slashes
    included, and names are case-insensitive, as Azure RBAC matches them."""
    return fnmatch.fnmatchcase(action.lower(), granted.lower())
