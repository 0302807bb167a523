"""What each adapter operation is allowed to do in Azure: the ARM actions (control plane) and data
actions (data plane) it needs, so that the roles in infra/ can be checked against the code.

Plain data, no SDK import. tests/test_permissions.py keeps it honest both ways: every public method
of the adapter classes below must have an entry here (a new method without one fails, saying to add
it), and every action listed must be granted to the app's identity by a role that infra/ assigns:
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

AML = "Microsoft.MachineLearningServices/workspaces"
TABLES = "Microsoft.Storage/storageAccounts/tableServices/tables"
BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers"
TOPICS = "Microsoft.EventGrid/topics"

SOURCES = {
    "aml-operations": "https://learn.microsoft.com/azure/role-based-access-control/permissions/ai-machine-learning",
    "aml-manage-roles": "https://learn.microsoft.com/azure/machine-learning/how-to-assign-roles#common-scenarios",
    "storage-operations": "https://learn.microsoft.com/azure/role-based-access-control/permissions/storage",
    "builtin-roles": "https://learn.microsoft.com/azure/role-based-access-control/built-in-roles",
}

_WORKSPACE = [f"{AML}/read"]  # MLClient reads the workspace (its id, region, MLflow tracking URI)
# "Submitting any type of run (V2)" (Manage roles) without its wildcards: jobs, the artifacts and
# environment builds a submission triggers, and the reads of what the job references.
_SUBMIT_JOB = [
    f"{AML}/jobs/read",
    f"{AML}/jobs/write",
    f"{AML}/metadata/artifacts/write",
    f"{AML}/environments/build/action",
    f"{AML}/environments/readSecrets/action",
    f"{AML}/environments/read",
    f"{AML}/environments/versions/read",
    f"{AML}/codes/read",
    f"{AML}/codes/versions/read",
    f"{AML}/computes/read",
]
_COMPONENTS = [f"{AML}/components/read", f"{AML}/components/versions/read"]  # components.get(name, version|label)
_DATA = [f"{AML}/data/read", f"{AML}/data/versions/read", f"{AML}/datastores/read"]  # the data assets a job reads
_MODELS_READ = [f"{AML}/models/read", f"{AML}/models/versions/read"]  # models.get, models.list
_MODELS_WRITE = [f"{AML}/models/write", f"{AML}/models/versions/write"]  # models.create_or_update
# online_endpoints.get: the endpoint, then its deployments listed (azure-ai-ml's OnlineEndpointOperations.get fills
# the traffic map with every deployment, zero for those without traffic)
_ENDPOINT_READ = [f"{AML}/onlineEndpoints/read", f"{AML}/onlineEndpoints/deployments/read"]
_ENDPOINT_WRITE = [  # online_endpoints.begin_create_or_update (traffic), and its poller
    f"{AML}/onlineEndpoints/write",
    f"{AML}/onlineendpoints/operationsstatus/read",
    f"{AML}/onlineendpoints/operationresults/read",
]
# A deployment with a data collector (v2 model monitoring): the adapter reads the live deployment's
# collection assets (data.get), and azure-ai-ml registers a data-asset version per collection while
# it creates the deployment (_online_deployment_operations.py, _register_collection_data_assets:
# data.create_or_update, a PUT of data/<name>/versions/<version>).
_COLLECTOR_DATA = [f"{AML}/data/versions/read", f"{AML}/data/versions/write"]
_DEPLOYMENT_READ = [f"{AML}/onlineEndpoints/deployments/read"]  # online_deployments.get
_DEPLOYMENT_WRITE = [  # online_deployments.begin_create_or_update, and its poller
    f"{AML}/onlineEndpoints/deployments/write",
    f"{AML}/onlineendpoints/deployments/operationsstatus/read",
    f"{AML}/onlineendpoints/deployments/operationresults/read",
]
_BATCH_READ = [
    f"{AML}/batchEndpoints/read",
    f"{AML}/batchEndpoints/deployments/read",
]  # batch_endpoints/_deployments.get
# MLflow's REST API on the tracking URI ("MLflow operations", Manage roles): runs of V2 jobs are
# jobs; runs/get and runs/search read experiments and their runs.
_MLFLOW_READ = [f"{AML}/jobs/read", f"{AML}/experiments/read", f"{AML}/experiments/runs/read"]
# An Azure ML registry (a champion served from it, a promoted version shared into it): registries/read to discover
# it (MLClient(registry_name=...)), its assets to read or write model versions; granted on the registry alone by
# the custom role of infra/modules/registry-access.bicep (reads: a downstream environment) or
# registry-publisher.bicep (and writes: an upstream one), not by the workspace role.
REGISTRIES = "Microsoft.MachineLearningServices/registries"
_REGISTRY_READ = [f"{REGISTRIES}/read", f"{REGISTRIES}/assets/read"]
_REGISTRY_WRITE = [f"{REGISTRIES}/assets/write"]
# Invoking a batch endpoint "needs ... Lists datastore secrets" (Azure ML docs, "Authorization on batch endpoints"):
# granted by a role of its own on the datastore of the comparison's data (infra's batchDatastoreName), not by the
# workspace role, which would give every datastore's key or SAS.
ON_THE_DATASTORE = (f"{AML}/datastores/listsecrets/action",)

_LOGS_QUERY = [
    "Microsoft.OperationalInsights/workspaces/read",
    "Microsoft.OperationalInsights/workspaces/query/read",
    "Microsoft.OperationalInsights/workspaces/query/AmlOnlineEndpointTrafficLog/read",
]

OPERATIONS: dict[str, list[str]] = {
    # function_app/adapters/azureml/ (AzureMLActions: each method is its port module's)
    "AzureMLActions.from_settings": [],  # builds nothing until the first action
    "AzureMLActions.ml": [],  # the lazily built MLClient itself
    # the data versions a job reads, which Azure ML checks inside the submission (pinned before: latest_data below)
    "AzureMLActions.submit_retrain": _WORKSPACE + _SUBMIT_JOB + _COMPONENTS + _DATA,
    # jobs.get: a job's status, and a resumed retrain's job, adopted before its checks when it is its decision's
    **{f"AzureMLActions.{op}": [f"{AML}/jobs/read"] for op in ("job_status", "find_retrain")},
    # who created a run (approvals' four eyes): run history's run, read as the SDK reads a pipeline step
    "AzureMLActions.run_creator": [*_WORKSPACE, f"{AML}/experiments/runs/read"],
    # ... and a data asset version (a new version's retrain): its systemData, as data.get reads it
    "AzureMLActions.data_creator": [f"{AML}/data/versions/read"],
    # ... and which version a retrain's azureml:<name>@latest input is pinned to (handlers/pins.py): data.get with
    # label latest, the asset's container (its latestVersion), then that version
    "AzureMLActions.latest_data": [f"{AML}/data/read", f"{AML}/data/versions/read"],
    # a retrain's checks before it is submitted (lineage.py): a breach's run read back (jobs.get, a step and the
    # pipeline runs above it from run history: jobs/read, experiments/runs/read), the monitor run's steps through MLflow
    # (runs/get, runs/search), the champion the policy's endpoint serves (online_endpoints.get for its traffic,
    # online_deployments.get of the live deployment: freshness.py, as the gate reads it), the model's versions
    # (models.get, models.list), the champion's job (jobs.get) and
    # each data asset's latest version (data.get with label latest: the container, then the version); a
    # champion served from the policy's registry is read there (registries/read, registries/assets/read:
    # infra/modules/registry-access.bicep's role, on the registry only)
    "AzureMLActions.retrain_facts": [
        *_WORKSPACE,
        *_REGISTRY_READ,
        *_ENDPOINT_READ,
        *_DEPLOYMENT_READ,
        *_MLFLOW_READ,
        *_MODELS_READ,
        f"{AML}/data/read",
        f"{AML}/data/versions/read",
    ],
    # the facts the gate judges: the champion and the candidate (endpoint, live deployment, model
    # versions, the version's run; a champion served from the policy's registry, or a candidate picked up from it,
    # read on the registry)
    "AzureMLActions.candidate_facts": [
        *_WORKSPACE,
        *_REGISTRY_READ,
        *_ENDPOINT_READ,
        *_DEPLOYMENT_READ,
        *_MODELS_READ,
        *_MLFLOW_READ,  # the gate's MLflow metrics (runs/get, runs/search), a step's run in run history
    ],
    # registering the candidate (models.create_or_update lists the model's versions first), and the new deployment
    # copying the live one's environment and code (online_deployments.begin_create_or_update reads the endpoint);
    # a version picked up from the policy's registry is deployed by its registry id, which Azure ML reads on the
    # registry as the caller (docs/azure-behaviour.md, "Registry models in online deployments")
    "AzureMLActions.start_deploy": [
        *_WORKSPACE,
        f"{REGISTRIES}/assets/read",
        *_ENDPOINT_READ,
        *_DEPLOYMENT_READ,
        *_MODELS_READ,
        *_MODELS_WRITE,
        *_DEPLOYMENT_WRITE,
        *_COLLECTOR_DATA,
        f"{AML}/environments/read",
        f"{AML}/environments/versions/read",
        f"{AML}/codes/versions/read",
    ],
    "AzureMLActions.deployment_state": _DEPLOYMENT_READ,
    "AzureMLActions.endpoint_traffic": _ENDPOINT_READ,
    # online_endpoints.begin_create_or_update reads the workspace too (its region)
    "AzureMLActions.set_traffic": _WORKSPACE + _ENDPOINT_READ + _ENDPOINT_WRITE,
    "AzureMLActions.roles_settling": [],  # a clock read
    "AzureMLActions.tracking_uri": _WORKSPACE,  # workspaces.get: the MLflow tracking URI
    # model monitors follow a promotion: the schedules that target a deployment, and their new target
    "AzureMLActions.monitors_targeting": [f"{AML}/schedules/read"],
    # (schedules.begin_create_or_update of a monitor reads the deployment it targets)
    "AzureMLActions.retarget_monitor": [*_DEPLOYMENT_READ, f"{AML}/schedules/read", f"{AML}/schedules/write"],
    # a smoke test: the endpoint's scoring URI and auth mode, then the deployment invoked by name with a
    # Microsoft Entra token for https://ml.azure.com (a "data plane" action that roles grant under actions:
    # AzureML Data Scientist's workspaces/*/action, the docs' custom scoring role's onlineEndpoints/*/action)
    "AzureMLActions.score": [*_ENDPOINT_READ, f"{AML}/onlineEndpoints/score/action"],
    # the smoke test's sample requests in a data asset: data.get and datastores.get (no secrets), then the file
    # read from the datastore's storage account with the service's identity (Storage Blob Data Reader)
    "AzureMLActions.samples": [f"{AML}/data/versions/read", f"{AML}/datastores/read", f"{BLOBS}/blobs/read"],
    # an upstream environment's promotion shared into its registry: the promoted deployment's version, tagged
    # with its lineage, and the workspace's id; on the registry (registries/read, registries/assets/read and
    # write) the custom role of infra/modules/registry-publisher.bicep, assigned there
    "AzureMLActions.share_promoted": [
        *_WORKSPACE,
        *_DEPLOYMENT_READ,
        *_MODELS_READ,
        *_MODELS_WRITE,
        *_REGISTRY_READ,
        *_REGISTRY_WRITE,
    ],
    # the reconciler's freshness look (handlers/watcher.py): the champion's model version and its creation time
    # (retrain.max_age; a version served from the policy's registry is read on the registry, as above), and the
    # versions of the data assets retrain.on.data.assets names (data.list)
    "AzureMLActions.champion": [*_ENDPOINT_READ, *_DEPLOYMENT_READ, *_MODELS_READ, *_REGISTRY_READ],
    "AzureMLActions.data_versions": [f"{AML}/data/versions/read"],  # data.list(name): the versions, not the container
    # a downstream environment's poll of its registry (handlers/pickup.py): models.list of the registry's client,
    # on the registry only (registries/read, registries/assets/read: infra/modules/registry-access.bicep's role)
    "AzureMLActions.registry_versions": _REGISTRY_READ,
    # retiring demoted deployments
    "AzureMLActions.list_deployments": [*_ENDPOINT_READ, *_DEPLOYMENT_READ],
    "AzureMLActions.delete_deployment": [f"{AML}/onlineEndpoints/deployments/delete"],  # begin_delete, not waited for
    # function_app/adapters/azureml/batch.py (AzureMLBatch: the Deployments port of batch endpoints)
    "AzureMLBatch.candidate_facts": [*_WORKSPACE, *_BATCH_READ, *_MODELS_READ, *_MLFLOW_READ],
    "AzureMLBatch.start_deploy": [  # batch_deployments.begin_create_or_update: it reads the endpoint, resolves
        *_WORKSPACE,  # the assets the copied default deployment names, and the workspace's region; registering
        *_BATCH_READ,  # the candidate lists the model's versions first (models.create_or_update)
        *_MODELS_READ,
        *_MODELS_WRITE,
        f"{AML}/batchEndpoints/deployments/write",
        f"{AML}/environments/read",
        f"{AML}/environments/versions/read",
        f"{AML}/codes/versions/read",
        f"{AML}/computes/read",
    ],
    "AzureMLBatch.deployment_state": [f"{AML}/batchEndpoints/deployments/read"],  # batch_deployments.get
    "AzureMLBatch.endpoint_traffic": [f"{AML}/batchEndpoints/read"],  # batch_endpoints.get: its default
    # defaults.deployment_name (batch_endpoints.begin_create_or_update reads the workspace too: its region)
    "AzureMLBatch.set_traffic": [*_WORKSPACE, f"{AML}/batchEndpoints/read", f"{AML}/batchEndpoints/write"],
    "AzureMLBatch.list_deployments": _BATCH_READ,
    "AzureMLBatch.delete_deployment": [f"{AML}/batchEndpoints/deployments/delete"],  # begin_delete, not waited for
    "AzureMLBatch.monitors_targeting": [],  # none: model monitors target online deployments
    "AzureMLBatch.retarget_monitor": [],
    "AzureMLBatch.share_promoted": [],  # refused: registries for batch models are not built (nothing is asked)
    # function_app/adapters/azureml/batch_jobs.py: a batch candidate's comparison jobs (batch_endpoint.compare).
    # The job looked up by name (adopted), the data asset's type, then batch_endpoints.invoke: it reads the
    # endpoint and lists its deployments, resolves the data asset, and posts to the scoring URI with a token for
    # https://ml.azure.com, which creates the job as the service ("Authorization on batch endpoints": create jobs
    # in batch endpoints and deployments; the docs' custom role there lists more, datastore secrets among them).
    # A job Azure did not give the name asked for is found in its experiment through MLflow (get-by-name, search).
    "AzureMLActions.invoke_batch": [
        *_BATCH_READ,
        *_DATA,
        *_MLFLOW_READ,
        *ON_THE_DATASTORE,
        f"{AML}/batchEndpoints/jobs/write",
        f"{AML}/batchEndpoints/deployments/jobs/write",
    ],
    "AzureMLActions.batch_run": [f"{AML}/jobs/read", *_MLFLOW_READ],  # jobs.get, then the step's MLflow run
    # a comparison's job still running when its rollout ends without a verdict: jobs.begin_cancel (POST .../cancel)
    "AzureMLActions.cancel_batch": [f"{AML}/jobs/read", f"{AML}/jobs/cancel/action"],
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
