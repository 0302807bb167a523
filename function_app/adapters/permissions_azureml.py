"""The Azure ML entries of :data:`function_app.adapters.permissions.OPERATIONS`: what each operation of the Azure ML
adapter (``AzureMLActions``: each method is its port module's, function_app/adapters/azureml/; ``AzureMLBatch``: the
Deployments port of batch endpoints) is allowed to do in the workspace and the registries, as
:mod:`function_app.adapters.permissions` explains (its sources, how tests/test_permissions.py and
tests/test_permission_entries.py keep each entry honest). Plain data, no SDK import.
"""

from __future__ import annotations

AML = "Microsoft.MachineLearningServices/workspaces"
BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers"

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


AZUREML: dict[str, list[str]] = {
    # function_app/adapters/azureml/ (AzureMLActions: each method is its port module's)
    "AzureMLActions.from_settings": [],  # builds nothing until the first action
    "AzureMLActions.ml": [],  # the lazily built MLClient itself
    # the data and model versions a job reads, which Azure ML checks inside the submission (pinned before:
    # latest_data, latest_model below)
    "AzureMLActions.submit_retrain": _WORKSPACE + _SUBMIT_JOB + _COMPONENTS + _DATA + _MODELS_READ,
    # jobs.get: a job's status, and a resumed retrain's job, adopted before its checks when it is its decision's
    **{f"AzureMLActions.{op}": [f"{AML}/jobs/read"] for op in ("job_status", "find_retrain")},
    # who created a run (approvals' four eyes): run history's run, read as the SDK reads a pipeline step
    "AzureMLActions.run_creator": [*_WORKSPACE, f"{AML}/experiments/runs/read"],
    # ... and a data asset version (a new version's retrain): its systemData, as data.get reads it
    "AzureMLActions.data_creator": [f"{AML}/data/versions/read"],
    # ... and a model version a retrain's azureml:<model>@latest input was pinned to: its systemData, models.get
    "AzureMLActions.model_creator": [f"{AML}/models/versions/read"],
    # ... and which version a retrain's azureml:<name>@latest input is pinned to (handlers/pins.py): data.get with
    # label latest, the asset's container (its latestVersion), then that version
    "AzureMLActions.latest_data": [f"{AML}/data/read", f"{AML}/data/versions/read"],
    # ... and a model input's: models.get with label latest lists the model's versions, newest created first, one
    # ($orderBy=createdtime desc, $top=1): no container is read
    "AzureMLActions.latest_model": [f"{AML}/models/versions/read"],
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
    # read on the registry); and a resumed deploy's candidate deployment (online_deployments.get), adopted before
    # its gate when it is its decision's, which those facts' candidate version tells
    **{
        f"AzureMLActions.{op}": [
            *_WORKSPACE,
            *_REGISTRY_READ,
            *_ENDPOINT_READ,
            *_DEPLOYMENT_READ,
            *_MODELS_READ,
            *_MLFLOW_READ,  # the gate's MLflow metrics (runs/get, runs/search), a step's run in run history
        ]
        for op in ("candidate_facts", "find_deploy")
    },
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
    # (find_deploy: a resumed deploy's batch deployment, batch_deployments.get, and the candidate as these facts read it)
    **{
        f"AzureMLBatch.{op}": [*_WORKSPACE, *_BATCH_READ, *_MODELS_READ, *_MLFLOW_READ]
        for op in ("candidate_facts", "find_deploy")
    },
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
}
