"""Invoking a batch endpoint of the fake ARM: the batch jobs it starts and who may start them (mixed
into :class:`tests.fake_batch.FakeBatch`, whose endpoints, deployments and settings it reads).

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

import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from tests import rbac_model
from tests.fake_arm_common import PROVIDER
from tests.fake_http import Answer, Refusal, Unexpected, token_audience, token_claims

if TYPE_CHECKING:
    from tests.fake_arm_common import Call

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


class BatchJobs:
    """Mixed into :class:`tests.fake_batch.FakeBatch` (``self`` is the batch fake: its endpoints,
    deployments, scores and settings, and ``arm``, the fake ARM with the clock, the jobs and the roles):
    invoking a scoring URI and canceling the job it started."""

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
            body = rbac_model.refusal(oid, action, scope)["error"]
            raise Refusal(403, body["code"], body["message"])
