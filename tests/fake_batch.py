"""Batch endpoints and their deployments in the fake ARM (:class:`tests.fake_arm.FakeArm` routes
``batchEndpoints/...`` here), answered as the REST reference describes them (Azure ML REST API,
"Batch Endpoints" and "Batch Deployments"; azure-rest-api-specs, machinelearningservices examples):

- an endpoint's ``properties.defaults.deploymentName`` is the deployment that "will end up getting
  100% traffic when the endpoint scoring URL is invoked" (BatchEndpointDefaults); a PUT of the
  endpoint that names a deployment the endpoint lacks, or one not provisioned, is refused (400; the
  wording is unverified);
- creating or updating an endpoint or a deployment, and deleting a deployment, are long-running
  operations (``Azure-AsyncOperation``), done ``durations[kind]`` seconds later on the fake clock
  whether or not anyone polls, as for online endpoints; a deployment is ``Creating`` until then;
- DELETE of a deployment answers 202 (204 when there is none); deleting the endpoint's default
  deployment is refused with 400 (unverified: Azure's exact answer is not documented; the service
  never asks for it).

Invoking ("Create jobs and input data for batch endpoints"; azure-ai-ml's ``BatchEndpointOperations.invoke``):
``POST <scoringUri>`` (``https://<endpoint>.<region>.inference.ml.azure.com/jobs``) with a Microsoft Entra
token for ``https://ml.azure.com``; "a batch deployment job is created under the identity associated with
the token", which needs, among others, the actions to "create jobs in batch inference endpoints and
deployments" ("Authorization on batch endpoints"): ``batchEndpoints/deployments/jobs/write`` at the
deployment named by the ``azureml-model-deployment`` header (``batchEndpoints/jobs/write`` at the endpoint
without one), and to "read batch endpoints/deployments" (``batchEndpoints/read``, ``.../deployments/read``). The
fake checks those, and, as the same page lists "Lists datastore secrets" among what the identity
needs to create a job (``datastores/listsecrets/action`` in its list of actions), that action at the datastore
of the input's data asset (docs/azure-behaviour.md: which scope Azure checks it at is not documented); with
:attr:`FakeBatch.checks_invoker_role`, every action of the custom role the page gives (:data:`INVOKER_ROLE`). The
body's ``properties.inputData`` holds one ``UriFile`` or ``UriFolder`` input whose ``uri`` is a data asset
version of the workspace of that type; ``properties.name`` the name the caller asks for. Whether Azure gives
the job that name is not documented, and the one public report says it does not (azure-sdk-for-python#32763,
azure-ai-ml 1.11: ``job_name`` "does nothing"): by default the job gets a name of its own
(``batchjob-<uuid>``); :attr:`FakeBatch.honours_names` is the other case, where a name taken is refused 409
(the status Azure would answer is not documented either; docs/azure-behaviour.md). The job is a pipeline job
of the experiment ``properties.properties.experimentName`` (the endpoint's name without one), created by the caller, ``Running`` until
``durations["batch-job"]`` seconds later on the fake clock, then as the deployment scores
(:meth:`FakeBatch.scores_with`: ``Completed`` by default); its step ``batchscoring`` logs the deployment's
metrics with MLflow (what a scoring script that evaluates labelled data logs).
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tests import rbac
from tests.fake_http import Answer, Refusal, Unexpected, token_audience, token_claims

if TYPE_CHECKING:
    from tests.fake_arm import FakeArm
    from tests.fake_arm_common import Call

PROVIDER = "Microsoft.MachineLearningServices"
ENDPOINT_READ = f"{PROVIDER}/workspaces/batchEndpoints/read"
DEPLOYMENT_READ = f"{PROVIDER}/workspaces/batchEndpoints/deployments/read"
JOBS_WRITE = f"{PROVIDER}/workspaces/batchEndpoints/jobs/write"
DEPLOYMENT_JOBS_WRITE = f"{PROVIDER}/workspaces/batchEndpoints/deployments/jobs/write"
DATASTORE_SECRETS = f"{PROVIDER}/workspaces/datastores/listsecrets/action"
SCORING_STEP = "batchscoring"
# The custom role Microsoft's page gives for invoking ("Authorization on batch endpoints", "Configure RBAC for batch
# endpoints invoke": "the following explicit actions granted to the identity used to invoke the endpoints"). Which of
# them Azure checks when a job is created is not documented (the page's own short list names five needs: read batch
# endpoints and deployments, create jobs, create experiments and runs, read and write data stores, list datastore
# secrets); :attr:`FakeBatch.checks_invoker_role` is the strict reading, where Azure checks them all.
INVOKER_ROLE = tuple(
    f"{PROVIDER}/workspaces/{a}"
    for a in (
        "read",
        "data/versions/write",
        "datasets/registered/read",
        "datasets/registered/write",
        "datasets/unregistered/read",
        "datasets/unregistered/write",
        "datastores/read",
        "datastores/write",
        "datastores/listsecrets/action",
        "listStorageAccountKeys/action",
        "batchEndpoints/read",
        "batchEndpoints/write",
        "batchEndpoints/deployments/read",
        "batchEndpoints/deployments/write",
        "batchEndpoints/deployments/jobs/write",
        "batchEndpoints/jobs/write",
        "computes/read",
        "computes/listKeys/action",
        "metadata/secrets/read",
        "metadata/snapshots/read",
        "metadata/artifacts/read",
        "metadata/artifacts/write",
        "experiments/read",
        "experiments/runs/submit/action",
        "experiments/runs/read",
        "experiments/runs/write",
        "metrics/resource/write",
        "modules/read",
        "models/read",
        "endpoints/pipelines/read",
        "endpoints/pipelines/write",
        "environments/read",
        "environments/write",
        "environments/build/action",
        "environments/readSecrets/action",
    )
)
INPUT_TYPES = {"UriFile": "uri_file", "UriFolder": "uri_folder"}


class FakeBatch:
    """The batch endpoints of one fake workspace (``arm`` keeps the clock, the operations, the models)."""

    def __init__(self, arm: FakeArm) -> None:
        self.arm = arm
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.scores: dict[tuple[str, str], tuple[dict[str, float], str]] = {}  # what each deployment's jobs log, end
        self.due: dict[str, tuple[float, str]] = {}  # a running job's name -> when it ends, and how
        self.invoked: list[tuple[str, str, str]] = []  # (endpoint, deployment, job) of each job started
        self.asked: dict[str, str] = {}  # each job started -> the name its caller asked for ('' for none)
        # Whether a job gets the name its caller asks for (``properties.name``): not, by default, as the one
        # public report has it (azure-sdk-for-python#32763: job_name "does nothing"); True for the other case.
        self.honours_names = False
        self.lost_answers = 0  # invocations whose job starts but whose answer is lost (a 503 in its place)
        self.canceled: list[str] = []  # the jobs canceled, in order
        # Whether an invocation is checked against every action of Microsoft's invoker role (INVOKER_ROLE, at the
        # workspace): not by default, where the needs the page names are checked, each at its resource
        self.checks_invoker_role = False

    # ------------------------------------------------------------------ seeding

    def add_endpoint(self, name: str, default: str | None = None) -> None:
        self.endpoints[name] = {
            "id": self.arm.arm_id("batchEndpoints", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/batchEndpoints",
            "location": self.arm.location,
            "kind": "Batch",
            "tags": {},
            "properties": {
                "authMode": "AADToken",
                "scoringUri": f"https://{name}.{self.arm.location}.inference.ml.azure.com/jobs",
                "defaults": {"deploymentName": default},
                "provisioningState": "Succeeded",
            },
        }

    def add_deployment(self, endpoint: str, name: str, *, model: tuple[str, str]) -> None:
        arm = self.arm
        self.deployments[(endpoint, name)] = {
            "id": arm.arm_id("batchEndpoints", endpoint, "deployments", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/batchEndpoints/deployments",
            "location": arm.location,
            "tags": {"team": "mlops"},
            "properties": {
                "model": {"referenceType": "Id", "assetId": arm.arm_id("models", model[0], "versions", model[1])},
                "codeConfiguration": {
                    "codeId": arm.arm_id("codes", "9b1e3c2a-2b7e-4a43-9d33-2d5c0c1f2a10", "versions", "1"),
                    "scoringScript": "batch_score.py",
                },
                "environmentId": arm.arm_id("environments", "sklearn-env", "versions", "7"),
                "compute": arm.arm_id("computes", "cpu-cluster"),
                "resources": {"instanceCount": 2},
                "miniBatchSize": 10,
                "maxConcurrencyPerInstance": 2,
                "outputAction": "AppendRow",
                "outputFileName": "predictions.csv",
                "errorThreshold": -1,
                "loggingLevel": "Info",
                "retrySettings": {"maxRetries": 3, "timeout": "PT30S"},
                "provisioningState": "Succeeded",
            },
        }

    def scores_with(self, endpoint: str, deployment: str, metrics: dict[str, float], status: str = "Completed") -> None:
        """The batch jobs of ``endpoint/deployment`` log ``metrics`` (their step ``batchscoring``) and end ``status``."""
        self.scores[(endpoint, deployment)] = (dict(metrics), status)

    # ------------------------------------------------------------------ reading what happened

    def default(self, endpoint: str) -> str | None:
        self.settle()
        return self.endpoints[endpoint]["properties"]["defaults"].get("deploymentName")

    def settle(self) -> None:
        """Operations whose time has come are done (the fake ARM's clock)."""
        arm = self.arm
        with arm.lock:
            for job, (done_at, status) in list(self.due.items()):
                if done_at <= arm.clock.now or arm._closed:
                    arm.set_job_status(job, status)
                    del self.due[job]
            for op in arm.operations.values():
                if not op["kind"].startswith("batch-") or op["status"] != "InProgress":
                    continue
                if op["done_at"] > arm.clock.now and not arm._closed:
                    continue
                op["status"] = "Succeeded"
                if op["kind"] == "batch-delete":
                    self.deployments.pop(op["target"], None)
                elif op["kind"] == "batch-create" and op["target"] in self.deployments:
                    self.deployments[op["target"]]["properties"]["provisioningState"] = "Succeeded"
                elif op["kind"] == "batch-update" and op["endpoint"] in self.endpoints:
                    self.endpoints[op["endpoint"]]["properties"]["provisioningState"] = "Succeeded"

    def provision(self, endpoint: str, deployment: str, state: str) -> None:
        """The deployment's provisioning ends (or goes on) in ``state``."""
        self.settle()
        self.deployments[(endpoint, deployment)]["properties"]["provisioningState"] = state
        for op in self.arm.operations.values():
            if op["target"] == (endpoint, deployment) and op["status"] == "InProgress":
                op["status"] = state

    # ------------------------------------------------------------------ invoking (the scoring URI)

    def handles(self, host: str) -> bool:
        return any(urlparse(e["properties"]["scoringUri"]).hostname == host for e in self.endpoints.values())

    def invoke(self, call: Call) -> Answer:
        """``POST <scoringUri>``: a batch job of the deployment the header names, scoring the body's input."""
        url = urlparse(call.url)
        [endpoint] = [
            n for n, e in self.endpoints.items() if urlparse(e["properties"]["scoringUri"]).hostname == url.hostname
        ]
        if call.method != "POST" or url.path != "/jobs":
            raise Unexpected(f"{call.method} {url.path} on a batch endpoint's scoring URI")
        self.settle()
        deployment = call.headers.get("azureml-model-deployment") or self.endpoints[endpoint]["properties"][
            "defaults"
        ].get("deploymentName")
        self._authorize(call, endpoint, call.headers.get("azureml-model-deployment"))
        found = self.deployments.get((endpoint, str(deployment)))
        if found is None or found["properties"]["provisioningState"] != "Succeeded":
            raise Refusal(
                404, "UserError", f"Deployment {deployment} not found or not ready on batch endpoint {endpoint}"
            )
        props = (call.body or {}).get("properties") or {}
        inputs = props.get("inputData") or {}
        if len(inputs) != 1:
            raise Refusal(400, "UserError", "A model deployment's job takes one input")
        [(key, given)] = inputs.items()
        wanted = INPUT_TYPES.get(str(given.get("jobInputType")))
        data = self.arm._resource_by_id(self.arm.data, given.get("uri"))
        if key not in INPUT_TYPES or wanted is None:
            raise Unexpected(f"input {key}: {given}")
        if data is None:
            raise Refusal(400, "UserError", f"Data asset {given.get('uri')} not found")
        if data["properties"]["dataType"] != wanted:
            raise Refusal(
                400, "UserError", f"Data asset {given.get('uri')} is a {data['properties']['dataType']}, not {wanted}"
            )
        self._may_list_secrets(call, str(data["properties"].get("dataUri") or ""))
        requested = str(props.get("name") or "")
        name = requested if requested and self.honours_names else f"batchjob-{uuid.uuid4()}"
        if name in self.arm.jobs:  # only a name the caller chose can be taken
            raise Refusal(409, "UserError", f"Job {name} already exists")
        self.asked[name] = requested
        experiment = str((props.get("properties") or {}).get("experimentName") or endpoint)
        spec = {
            "jobType": "Pipeline",
            "experimentName": experiment,
            "inputs": {},
            "outputs": {},
            "tags": {},
            "properties": {},
        }
        self.arm.jobs[name] = self.arm._job_resource(name, spec, "Running", self.arm._created_by(call))
        self.arm.log_mlflow_run(name, experiment=experiment)
        metrics, status = self.scores.get((endpoint, str(deployment)), ({}, "Completed"))
        self.arm.add_step(name, SCORING_STEP, metrics=metrics)
        self.due[name] = (self.arm.clock.now + self.arm.durations["batch-job"], status)
        self.invoked.append((endpoint, str(deployment), name))
        job = self.arm.jobs[name]
        if self.lost_answers:  # the job runs; its caller is told the service was unavailable
            self.lost_answers -= 1
            raise Refusal(503, "ServiceUnavailable", "The service is temporarily unavailable")
        return 200, {}, {"id": job["id"], "name": name, "type": job["type"], "properties": {"status": "Running"}}

    def cancel(self, call: Call, name: str) -> Answer:
        """``POST jobs/<name>/cancel`` (azure-ai-ml ``jobs.begin_cancel``): a running batch job ends
        ``Canceled`` (at once here; Azure goes through ``CancelRequested``), a long-running operation whose
        status the caller may poll. Unverified: the answer for a job that has ended (the service asks only
        for one it read running)."""
        self.settle()
        job = self.arm._found(self.arm.jobs.get(name), f"job {name}")
        if job["properties"]["status"] in ("Completed", "Failed", "Canceled"):
            raise Refusal(400, "UserError", f"Job {name} is in a terminal state and cannot be canceled")
        self.due.pop(name, None)
        self.arm.set_job_status(name, "Canceled")
        self.canceled.append(name)
        status_url = self.arm._status_url(self.arm._start_operation("cancel", name))
        return 202, {"Location": status_url}, None

    def _may_list_secrets(self, call: Call, uri: str) -> None:
        """The invoker must be able to list the secrets of the data asset's datastore ("Lists datastore
        secrets", Authorization on batch endpoints): ``datastores/listsecrets/action`` at the datastore."""
        match = re.match(r"azureml://datastores/([^/]+)/", uri)
        if match is None:
            raise Unexpected(f"a data asset outside a datastore: {uri}")
        self._refuse_unless(call, DATASTORE_SECRETS, f"{self.arm.ws_path}/datastores/{match[1]}")

    def _authorize(self, call: Call, endpoint: str, deployment: str | None) -> None:
        header = call.headers.get("Authorization")
        if token_audience(header) != "https://ml.azure.com":
            raise Refusal(401, "Unauthorized", "The token's audience is not https://ml.azure.com")
        action, scope = JOBS_WRITE, self.endpoints[endpoint]["id"]
        self._refuse_unless(call, ENDPOINT_READ, scope)  # "Read batch endpoints/deployments"
        if deployment:
            self._refuse_unless(call, DEPLOYMENT_READ, f"{scope}/deployments/{deployment}")
            action, scope = DEPLOYMENT_JOBS_WRITE, f"{scope}/deployments/{deployment}"
        self._refuse_unless(call, action, scope)  # "Create jobs in batch inference endpoints/deployment"
        for needed in INVOKER_ROLE if self.checks_invoker_role else ():
            self._refuse_unless(call, needed, self.arm.ws_path)

    def _refuse_unless(self, call: Call, action: str, scope: str) -> None:
        oid = str(token_claims(call.headers.get("Authorization")).get("oid"))
        principal = self.arm.principal if oid == self.arm.principal.oid else self.arm.others.get(oid)
        if principal is None or not principal.allows(action, scope):
            self.arm.refused.append((action, scope))
            body = rbac.refusal(oid, action, scope)["error"]
            raise Refusal(403, body["code"], body["message"])

    # ------------------------------------------------------------------ answering

    def routes(self) -> list[tuple[str, str, str, Any]]:
        return [
            ("GET", r"^batchEndpoints/([^/]+)$", "batchEndpoints", self._get_endpoint),
            ("PUT", r"^batchEndpoints/([^/]+)$", "batchEndpoints", self._put_endpoint),
            ("GET", r"^batchEndpoints/([^/]+)/deployments$", "batchEndpoints", self._list_deployments),
            ("GET", r"^batchEndpoints/([^/]+)/deployments/([^/]+)$", "batchDeployments", self._get_deployment),
            ("PUT", r"^batchEndpoints/([^/]+)/deployments/([^/]+)$", "batchDeployments", self._put_deployment),
            ("DELETE", r"^batchEndpoints/([^/]+)/deployments/([^/]+)$", "batchDeployments", self._delete_deployment),
        ]

    def _operation(self, kind: str, endpoint: str, target: tuple[str, str] | None = None) -> dict[str, str]:
        operation = self.arm._start_operation(kind, endpoint, target)
        return {"Azure-AsyncOperation": self.arm._status_url(operation)}

    def _endpoint(self, name: str) -> dict[str, Any]:
        self.settle()
        return self.arm._found(self.endpoints.get(name), f"batch endpoint {name}")

    def _get_endpoint(self, call: Call, name: str) -> Answer:
        return 200, {}, self._endpoint(name)

    def _put_endpoint(self, call: Call, name: str) -> Answer:
        """An update of an existing batch endpoint (the service switches its default deployment)."""
        existing = self.endpoints.get(name)
        if existing is None:
            raise Unexpected("the service creates no batch endpoints, it only switches their default")
        self.settle()
        if any(op["endpoint"] == name and op["status"] == "InProgress" for op in self.arm.operations.values()):
            raise Refusal(409, "Conflict", f"Cannot update batch endpoint {name} while an operation on it runs.")
        body = call.body or {}
        props = body.get("properties") or {}
        if body.get("location") != self.arm.location:
            raise Unexpected(f"location {body.get('location')!r}, the workspace is in {self.arm.location}")
        # the SDK writes the enum 'aadToken' (the REST spec's AADToken): ARM's enums compare case-insensitively
        if str(props.get("authMode")).lower() != existing["properties"]["authMode"].lower():
            raise Unexpected("an update that changes the batch endpoint's authMode")
        default = (props.get("defaults") or {}).get("deploymentName")
        if default:
            found = self.deployments.get((name, default))
            if found is None:
                raise Refusal(400, "UserError", f"Deployment {default} does not exist on batch endpoint {name}")
            state = found["properties"].get("provisioningState")
            if state != "Succeeded":
                raise Refusal(
                    400,
                    "UserError",
                    f"Deployment {default} is in provisioning state {state}; the default needs Succeeded",
                )
        existing["properties"]["defaults"] = {"deploymentName": default}
        existing["properties"]["provisioningState"] = "Updating"
        existing["tags"] = dict(body.get("tags") or existing["tags"])
        return 200, self._operation("batch-update", name), existing

    def _list_deployments(self, call: Call, endpoint: str) -> Answer:
        self._endpoint(endpoint)
        return 200, {}, {"value": [d for (e, _), d in self.deployments.items() if e == endpoint]}

    def _get_deployment(self, call: Call, endpoint: str, name: str) -> Answer:
        self.settle()
        return 200, {}, self.arm._found(self.deployments.get((endpoint, name)), f"batch deployment {endpoint}/{name}")

    def _put_deployment(self, call: Call, endpoint: str, name: str) -> Answer:
        body = call.body or {}
        props = body.get("properties") or {}
        if endpoint not in self.endpoints:
            raise Refusal(404, "UserError", f"Batch endpoint {endpoint} not found")
        if body.get("location") != self.arm.location:
            raise Unexpected(f"location {body.get('location')!r}, the workspace is in {self.arm.location}")
        model = (props.get("model") or {}).get("assetId")
        if self.arm._resource_by_id(self.arm.models, model) is None:
            raise Refusal(400, "UserError", f"Model {model} not found")
        if not props.get("compute"):
            raise Unexpected("a batch deployment names its compute cluster")
        stored = copy.deepcopy(body)
        stored.update(
            {
                "id": self.arm.arm_id("batchEndpoints", endpoint, "deployments", name),
                "name": name,
                "type": f"{PROVIDER}/workspaces/batchEndpoints/deployments",
                "systemData": self.arm._modified_by(call, self.deployments.get((endpoint, name))),
            }
        )
        stored["properties"]["provisioningState"] = "Creating"
        self.deployments[(endpoint, name)] = stored
        return 201, self._operation("batch-create", endpoint, (endpoint, name)), stored

    def _delete_deployment(self, call: Call, endpoint: str, name: str) -> Answer:
        self.settle()
        if self.deployments.get((endpoint, name)) is None:
            return 204, {}, None
        if self.endpoints[endpoint]["properties"]["defaults"].get("deploymentName") == name:
            raise Refusal(400, "UserError", f"Deployment {name} is the default of batch endpoint {endpoint}")
        self.deployments[(endpoint, name)]["properties"]["provisioningState"] = "Deleting"
        headers = self._operation("batch-delete", endpoint, (endpoint, name))
        return 202, {**headers, "Location": headers["Azure-AsyncOperation"]}, None
