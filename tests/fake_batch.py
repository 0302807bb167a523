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

Invoking a batch endpoint (its scoring URI) and the batch jobs it starts: :mod:`tests.fake_batch_jobs`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from tests.fake_arm_common import PROVIDER
from tests.fake_batch_jobs import BatchJobs
from tests.fake_http import Answer, Refusal, Unexpected

if TYPE_CHECKING:
    from tests.fake_arm import FakeArm
    from tests.fake_arm_common import Call


class FakeBatch(BatchJobs):
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

    # ------------------------------------------------------------------ answering ARM (batchEndpoints/...)

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
