"""An in-process Azure Resource Manager for one Azure ML workspace, for the real SDK to talk to.

``MLClient(credential, sub, rg, ws, transport=FakeArm(...))`` reaches every pipeline of the client:
the SDK builds and sends its real requests, and this transport answers them like the service.
It is a :class:`tests.fake_http.FakeService` (the transport, the scripted faults and the tokens
every fake shares): this module is its handler. A scripted fault (``fail``, ``time_out``,
``refuse_connections``, each for a method and a path regex) can raise what ``requests`` raises on
a timeout or a refused connection, so azure-core maps it to its own exceptions as in production.

What it checks, for every request: the host, the workspace path, the api-version (the ones the
installed SDK uses; a new one fails loudly), the bearer token's audience, and for writes the body
(a pipeline job from a registered pipeline component with known inputs and compute, a model
registered from an existing job output, a deployment of an existing model version). A request it
does not know is answered 400 and recorded in ``unexpected``: the ``arm`` fixture fails the test.

What it keeps: components, data assets, computes, jobs, models, endpoints and deployments, so a
sequence of calls behaves like a workspace. A job or deployment records ``systemData`` from the
token of whoever created it (:func:`system_data`), as ARM does, so a job a workspace user created
(:meth:`FakeArm.workspace_user`) is told apart from the service's own. A PUT on an existing job name is an update, as the
REST reference says ("for update case, the Tags in the definition passed in will replace Tags in
the existing job"); one that changes what the job runs is refused with 400 UserError. Deployment
creation, deletion and a traffic update are long-running operations (``Azure-AsyncOperation``) that
are done ``durations[kind]`` seconds later on the fake clock, whether or not anyone polls; while one
runs, a write to that endpoint or its deployments is refused with 409 Conflict, as Azure ML refuses
it. An endpoint holds at most 20 deployments. Nothing here ever sleeps in real time: ``sleep()``
(azure-core's retry and polling waits) is recorded, and an SDK poller's thread waits there for the
fake clock to move (the test moves it: :meth:`finish_operations`; :meth:`close` ends the pollers).
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from requests.structures import CaseInsensitiveDict

from tests import rbac
from tests.fake_batch import FakeBatch
from tests.fake_datastores import FakeDatastores
from tests.fake_http import (
    APP_CLAIMS,
    USER_CLAIMS,
    USER_OID,
    Answer,
    FakeCredential,
    FakeService,
    Refusal,
    Request,
    Unexpected,
    token_audience,
    token_claims,
)
from tests.fake_registry import FakeRegistries
from tests.fake_scoring import FakeScoring

ARM_HOST = "management.azure.com"
PROVIDER = "Microsoft.MachineLearningServices"
CREATED = "2026-11-20T09:00:00.000000+00:00"

# The api-versions the installed azure-ai-ml (1.35.2) sends, per resource (found by driving it).
API_VERSIONS: dict[str, frozenset[str]] = {
    "workspace": frozenset({"2024-10-01-preview"}),
    "computes": frozenset({"2023-08-01-preview"}),
    "components": frozenset({"2024-01-01-preview"}),
    "data": frozenset({"2023-04-01-preview"}),
    "datastores": frozenset({"2024-10-01-preview", "2024-01-01-preview", "2023-04-01-preview"}),
    "jobs": frozenset({"2024-01-01-preview"}),
    "jobCancel": frozenset({"2023-04-01-preview"}),  # azure-ai-ml's jobs.begin_cancel
    "models": frozenset({"2023-08-01-preview"}),
    "onlineEndpoints": frozenset({"2022-02-01-preview", "2023-04-01-preview"}),
    "deployments": frozenset({"2023-04-01-preview"}),
    "operations": frozenset({"2023-04-01-preview"}),
    "schedules": frozenset({"2023-06-01-preview"}),
    "batchEndpoints": frozenset({"2023-10-01", "2024-01-01-preview"}),  # batch_deployments reads it too
    "batchDeployments": frozenset({"2024-01-01-preview"}),
}
MAX_DEPLOYMENTS = 20  # per online endpoint (Azure ML docs, "Manage and increase quotas")
MAX_MIRROR_PERCENT = 50  # of an endpoint's traffic, to one deployment ("Safe rollout for online endpoints")
JOB_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}$")
JOB_INPUT_TYPES = frozenset(
    {"literal", "uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"}
)


def system_data(claims: dict[str, Any], at: str) -> dict[str, Any]:
    """The ``systemData`` ARM records on a resource created with a token of ``claims`` (ARM common
    types, SystemData): a person by their sign-in name, type ``User``; an application by its client
    id, type ``ManagedIdentity`` for a managed identity's token (it carries ``xms_mirid``), else
    ``Application``."""
    if claims.get("idtyp") == "user" or "upn" in claims:
        who, kind = str(claims.get("upn") or claims.get("unique_name") or claims.get("oid")), "User"
    else:
        who = str(claims.get("appid") or claims.get("azp") or claims.get("oid"))
        kind = "ManagedIdentity" if "xms_mirid" in claims else "Application"
    return {
        "createdAt": at,
        "createdBy": who,
        "createdByType": kind,
        "lastModifiedAt": at,
        "lastModifiedBy": who,
        "lastModifiedByType": kind,
    }


def job_system_data(claims: dict[str, Any], at: str) -> dict[str, Any]:
    """The ``systemData`` of a job: as :func:`system_data`, but a person is named by their display name, as
    Azure ML records a job's creator (``az ml job create`` prints ``"created_by": "<full name>"`` with
    ``created_by_type: User``; Az PowerShell's ``Get-AzMLWorkspaceJob`` help shows ``UserName (Example)``, ``User``)."""
    data = system_data(claims, at)
    if data["createdByType"] == "User" and claims.get("name"):
        data["createdBy"] = data["lastModifiedBy"] = str(claims["name"])
    return data


def run_history_user(claims: dict[str, Any]) -> dict[str, Any]:
    """Run history's ``createdBy`` (the REST client's ``User``: ``userObjectId`` "a user or service principal's
    object ID", ``userName`` "a user's full name or a service principal's app ID", ``upn`` "a user's Principal
    name") for a run created with a token of ``claims``."""
    person = claims.get("idtyp") == "user" or "upn" in claims
    tenant = str(claims.get("tid") or "00000000-0000-0000-0000-0000000000bb")
    return {
        "userObjectId": claims.get("oid"),
        "userPuId": None,
        "userIdp": None,
        "userAltSecId": None,
        "userIss": f"https://sts.windows.net/{tenant}/",
        "userTenantId": tenant,
        "userName": claims.get("name") if person else claims.get("appid"),
        "upn": (claims.get("upn") or claims.get("unique_name")) if person else None,
    }


# --------------------------------------------------------------------------- clock


class FakeClock:
    """Epoch seconds that move only when something waits (a recorded sleep) or a fault says so.
    A thread can wait for it (:meth:`wait_until`): the SDK's pollers wait for the fake's time."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self._moved = threading.Condition()
        self._now = start
        self.slept: list[float] = []

    @property
    def now(self) -> float:
        return self._now

    @now.setter
    def now(self, value: float) -> None:
        with self._moved:
            self._now = value
            self._moved.notify_all()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def wait_until(self, when: float, released: Callable[[], bool], real_timeout: float) -> None:
        """Block until the clock reaches ``when`` or ``released()``, at most ``real_timeout`` real seconds."""
        with self._moved:
            self._moved.wait_for(lambda: self._now >= when or released(), timeout=real_timeout)


# --------------------------------------------------------------------------- requests and faults


@dataclass
class Call:
    method: str
    url: str
    path: str  # below the workspace, e.g. "jobs/retrain-x"; or the full path outside it
    api_version: str | None
    query: dict[str, str]
    headers: CaseInsensitiveDict[str]
    body: Any
    status: int = 0


class MlflowAnswer(Refusal):
    """An error as the MLflow REST API spells it: ``{"error_code": ..., "message": ...}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message, body={"error_code": code, "message": message})


# --------------------------------------------------------------------------- the fake


class FakeArm(FakeService):
    unexpected_code = "FakeArmUnexpectedRequest"
    fault_message = "The service is temporarily unavailable"

    def __init__(
        self,
        subscription: str,
        resource_group: str,
        workspace: str,
        *,
        location: str = "westeurope",
        clock: FakeClock | None = None,
        principal: rbac.Principal | None = None,
    ) -> None:
        super().__init__()
        # Who may do what: the function app's identity as infra/ assigns its roles (tests/rbac.py)
        self.principal = principal if principal is not None else rbac.app(subscription, resource_group, workspace)
        self.others: dict[str, rbac.Principal] = {}  # other identities that may call (:meth:`admit`)
        self.refused: list[tuple[str, str]] = []  # (action, scope) of each request refused 403
        self.subscription, self.resource_group, self.workspace, self.location = (
            subscription,
            resource_group,
            workspace,
            location,
        )
        self.ws_path = (
            f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{PROVIDER}/workspaces/{workspace}"
        )
        self.clock = clock or FakeClock()
        # How long Azure ML's operations take on the fake clock (seconds). Azure documents no figure;
        # a managed deployment takes minutes to create, a traffic update seconds (unverified orders of
        # magnitude: what matters is that an operation takes time, polled or not). A traffic update
        # shorter than a delivery's retry budget: a write that meets it (409) is retried until it ends.
        self.durations: dict[str, float] = {"create": 300.0, "update": 20.0, "delete": 120.0}
        # batch endpoints' operations (tests/fake_batch.py): a batch deployment is created like an online one
        self.durations.update({"batch-create": 300.0, "batch-update": 20.0, "batch-delete": 120.0})
        self.durations["cancel"] = 30.0  # a job's cancellation, as an operation (unverified order of magnitude)
        self.durations["batch-job"] = 900.0  # a batch job's run, from its invocation (unverified order of magnitude)
        self._closed = False
        self.calls: list[Call] = []
        self.hooks: list[tuple[str, str, Callable[[], None]]] = []
        self.sdk_sleeps: list[float] = []
        self.computes: dict[str, dict[str, Any]] = {}
        self.components: dict[tuple[str, str], dict[str, Any]] = {}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        self.data_page = 100  # data versions a page of Data Versions - List (a test may make it small)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.mlflow_runs: dict[str, dict[str, Any]] = {}  # run id -> the MLflow REST API's Run
        self.steps: dict[str, dict[str, Any]] = {}  # a pipeline step's run id -> its run history Run
        self.creators: dict[str, dict[str, Any]] = {}  # a job's name -> the token claims of whoever created it
        self.schedules: dict[str, dict[str, Any]] = {}
        self.scoring = FakeScoring(self)  # the endpoints' scoring URIs
        self.registries = FakeRegistries(self)  # Azure ML registries: discovery and their regional endpoints
        self.datastores = FakeDatastores(self, "stretraindev")  # workspaceblobstore and its blobs
        self.batch = FakeBatch(self)  # batch endpoints and their deployments

    @property
    def mlflow_host(self) -> str:
        return f"{self.location}.api.azureml.ms"

    # ------------------------------------------------------------------ azure-core hooks

    def sleep(self, duration: float) -> None:
        """azure-core's waits (RetryPolicy backoff, LRO polling): recorded, never slept in real time.
        An SDK poller's thread waits for the fake clock to move ``duration`` on (the test moves it, or
        :meth:`finish_operations`); no other thread ever blocks here."""
        self.sdk_sleeps.append(duration)
        if threading.current_thread().name.startswith("LROPoller"):
            self.clock.wait_until(self.clock.now + duration, self._all_done, real_timeout=30.0)

    def _all_done(self) -> bool:
        """Whether no operation is left to wait for (read without the fake's lock: the clock's is held)."""
        now = self.clock.now
        return self._closed or all(
            op["status"] != "InProgress" or op["done_at"] <= now for op in list(self.operations.values())
        )

    def close(self) -> None:
        """The test is over: every operation reports done, so that the SDK's pollers end."""
        with self.lock:
            self._closed = True
            self.clock.now = self.clock.now  # wakes the pollers waiting for the clock

    # ------------------------------------------------------------------ operations in time

    def _start_operation(self, kind: str, endpoint: str, target: tuple[str, str] | None = None) -> str:
        """An operation on ``endpoint`` (``target``: the deployment it creates or deletes) that is done
        ``durations[kind]`` seconds from now on the fake clock, whether or not anyone polls it."""
        operation = str(uuid.uuid4())
        self.operations[operation] = {
            "kind": kind,
            "endpoint": endpoint,
            "target": target,
            "done_at": self.clock.now + self.durations[kind],
            "status": "InProgress",
        }
        return operation

    def _status_url(self, operation: str) -> str:
        return (
            f"https://{ARM_HOST}/subscriptions/{self.subscription}/providers/{PROVIDER}/locations/{self.location}"
            f"/mfeOperationsStatus/{operation}?api-version=2023-04-01-preview"
        )

    def settle(self) -> None:
        """The operations whose time has come are done: the deployment created is 'Succeeded', the one
        deleted is gone, the endpoint updated is 'Succeeded' again."""
        with self.lock:
            for op in self.operations.values():
                if op["kind"].startswith("batch-"):  # a batch endpoint's: tests/fake_batch.py settles it
                    continue
                if op["status"] != "InProgress" or (op["done_at"] > self.clock.now and not self._closed):
                    continue
                op["status"] = "Succeeded"
                if op["kind"] == "delete":
                    self.deployments.pop(op["target"], None)
                elif op["kind"] == "create" and op["target"] in self.deployments:
                    self.deployments[op["target"]]["properties"]["provisioningState"] = "Succeeded"
                elif op["kind"] == "update" and op["endpoint"] in self.endpoints:
                    self.endpoints[op["endpoint"]]["properties"]["provisioningState"] = "Succeeded"
            self.batch.settle()

    def running(self, endpoint: str) -> list[dict[str, Any]]:
        """The operations on ``endpoint`` still in progress."""
        self.settle()
        return [op for op in self.operations.values() if op["endpoint"] == endpoint and op["status"] == "InProgress"]

    def finish_operations(self) -> float:
        """Move the clock to when every running operation is done (the seconds it moved)."""
        with self.lock:
            pending = [op["done_at"] for op in self.operations.values() if op["status"] == "InProgress"]
            moved = max(0.0, max(pending, default=self.clock.now) - self.clock.now)
            self.clock.now += moved
            self.settle()
            return moved

    def update_endpoint(self, endpoint: str, seconds: float | None = None) -> None:
        """Another client updates the endpoint (its traffic, say): an operation on it runs for ``seconds``."""
        with self.lock:
            operation = self._start_operation("update", endpoint)
            if seconds is not None:
                self.operations[operation]["done_at"] = self.clock.now + seconds
            self.endpoints[endpoint]["properties"]["provisioningState"] = "Updating"

    def _refuse_while_busy(self, endpoint: str, what: str) -> None:
        """Azure ML refuses a write to an endpoint or its deployments while an operation on the endpoint
        runs: 409 Conflict, e.g. "Cannot create a deployment in endpoint <name> because it is in
        Updating provisioning state." (the message seen by azure-sdk-for-net#36961; the status and the
        wording for other writes are unverified)."""
        running = self.running(endpoint)
        if running:
            state = self.endpoints[endpoint]["properties"].get("provisioningState") or "Updating"
            state = "Updating" if state == "Succeeded" else state
            raise Refusal(
                409,
                "Conflict",
                f"Cannot {what} in endpoint {endpoint} because it is in {state} provisioning state.",
            )

    # ------------------------------------------------------------------ seeding the workspace

    def arm_id(self, *parts: str) -> str:
        return "/".join((self.ws_path, *parts))

    def admit(self, principal: rbac.Principal) -> None:
        """Another identity that may call, with the grants it holds (a workspace user, say)."""
        self.others[principal.oid] = principal

    def workspace_user(self) -> FakeCredential:
        """A person with a workspace account (AzureML Data Scientist on the workspace: they submit
        jobs and create deployments), admitted here; their credential, for an ``MLClient`` of theirs."""
        self.admit(
            rbac.Principal(
                USER_OID,
                "workspace user",
                (
                    rbac.Grant(
                        "AzureML Data Scientist",
                        self.ws_path,
                        actions=(
                            f"{PROVIDER}/workspaces/read",
                            f"{PROVIDER}/workspaces/*/read",
                            f"{PROVIDER}/workspaces/*/action",
                            f"{PROVIDER}/workspaces/*/delete",
                            f"{PROVIDER}/workspaces/*/write",
                        ),
                        not_actions=(f"{PROVIDER}/workspaces/write", f"{PROVIDER}/workspaces/computes/*/write"),
                    ),
                ),
            )
        )
        return FakeCredential(**USER_CLAIMS)

    def _now_iso(self) -> str:
        return datetime.fromtimestamp(self.clock.now, UTC).isoformat()

    def _created_by(self, call: Call) -> dict[str, Any]:
        """``systemData`` for a resource the caller of ``call`` creates now (its token says who)."""
        return system_data(token_claims(call.headers.get("Authorization")), self._now_iso())

    def _modified_by(self, call: Call, existing: dict[str, Any] | None) -> dict[str, Any]:
        """``systemData`` after ``call`` writes a resource: its creator stays whoever created it."""
        now = self._created_by(call)
        if existing is None:
            return now
        before = existing.get("systemData") or {}
        return {**now, **{k: v for k, v in before.items() if k.startswith("created")}}

    def add_compute(self, name: str) -> None:
        self.computes[name] = {
            "id": self.arm_id("computes", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/computes",
            "location": self.location,
            "properties": {"computeType": "AmlCompute", "provisioningState": "Succeeded", "properties": {}},
        }

    def add_component(
        self, name: str, version: str, *, kind: str = "pipeline", inputs: dict[str, str] | None = None
    ) -> None:
        spec = {
            "name": name,
            "version": version,
            "type": kind,
            "display_name": name,
            "inputs": {k: {"type": t} for k, t in (inputs or {}).items()},
            "outputs": {"model": {"type": "custom_model"}},
        }
        if kind == "pipeline":
            spec["jobs"] = {}
        self.components[(name, version)] = {
            "id": self.arm_id("components", name, "versions", version),
            "name": version,
            "type": f"{PROVIDER}/workspaces/components/versions",
            "systemData": {"createdAt": f"2026-11-{10 + len(self.components):02d}T09:00:00Z"},
            "properties": {
                "componentSpec": spec,
                "isAnonymous": False,
                "isArchived": False,
                "properties": {},
                "tags": {},
            },
        }

    def add_data(
        self, name: str, version: str, *, kind: str = "mltable", uri: str | None = None, created: str = CREATED
    ) -> None:
        self.data[(name, version)] = {
            "id": self.arm_id("data", name, "versions", version),
            "name": version,
            "type": f"{PROVIDER}/workspaces/data/versions",
            "systemData": {"createdAt": created},
            "properties": {
                "dataType": kind,
                "dataUri": uri or f"azureml://datastores/workspaceblobstore/paths/{name}/{version}/",
                "isAnonymous": False,
                "isArchived": False,
                "properties": {},
                "tags": {},
            },
        }

    def add_model(
        self,
        name: str,
        version: str,
        *,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        kind: str = "custom_model",
        job_name: str | None = None,
        created: str = CREATED,
    ) -> str:
        self.models[(name, version)] = {
            "id": self.arm_id("models", name, "versions", version),
            "name": version,
            "type": f"{PROVIDER}/workspaces/models/versions",
            "systemData": {"createdAt": created},
            "properties": {
                "modelType": kind,
                "flavors": {},
                "modelUri": f"azureml://datastores/workspaceblobstore/paths/models/{name}/{version}/",
                "jobName": job_name,
                "tags": dict(tags or {}),
                "properties": dict(properties or {}),
                "isAnonymous": False,
                "isArchived": False,
            },
        }
        return str(self.models[(name, version)]["id"])

    def add_job(
        self,
        name: str,
        *,
        experiment: str = "Default",
        status: str = "Completed",
        outputs: tuple[str, ...] = ("model",),
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        created_by: dict[str, Any] | None = None,
        display_name: str | None = None,
        inputs: dict[str, str] | None = None,
    ) -> None:
        """A finished run, as another client left it (its outputs can be registered as models), with
        the MLflow metrics the pipeline run itself logged; ``created_by``: the claims of whoever
        created it (default: a workspace user, :data:`USER_CLAIMS`); ``inputs``: its data inputs (name ->
        a data asset reference such as ``azureml:name:version``), as the REST API's ``JobInput`` (mltable)."""
        self.jobs[name] = self._job_resource(
            name,
            {
                "jobType": "Pipeline",
                "displayName": display_name,
                "experimentName": experiment,
                "inputs": {
                    k: {"jobInputType": "mltable", "uri": v, "mode": "ReadOnlyMount"} for k, v in (inputs or {}).items()
                },
                "outputs": {o: {"jobOutputType": "custom_model", "mode": "ReadWriteMount"} for o in outputs},
                "tags": dict(tags or {}),
                "properties": {},
            },
            status,
            job_system_data(USER_CLAIMS if created_by is None else created_by, CREATED),
        )
        self.creators[name] = dict(USER_CLAIMS if created_by is None else created_by)
        self.log_mlflow_run(name, experiment=experiment, metrics=metrics)

    def log_mlflow_run(
        self,
        run_id: str,
        *,
        experiment: str = "Default",
        name: str | None = None,
        metrics: dict[str, float] | None = None,
        parent: str | None = None,
        status: str = "FINISHED",
        tags: dict[str, str] | None = None,
    ) -> None:
        """The MLflow run every Azure ML job is (run id = job name), with the metrics it logged; a
        pipeline step's run carries its parent in the tag ``mlflow.parentRunId``, its display name
        as ``run_name`` (MLflow REST API, Run / RunInfo / RunData)."""
        logged = [{"key": "mlflow.runName", "value": name or run_id}]
        if parent is not None:  # Azure ML sets both on a step's run (model monitoring reads mlflow.rootRunId)
            root = self._root_of(parent)
            logged += [{"key": "mlflow.parentRunId", "value": parent}, {"key": "mlflow.rootRunId", "value": root}]
        logged += [{"key": k, "value": v} for k, v in (tags or {}).items()]
        self.mlflow_runs[run_id] = {
            "info": {
                "run_id": run_id,
                "run_uuid": run_id,
                "run_name": name or run_id,
                "experiment_id": self.experiment_id(experiment),
                "status": status,
                "start_time": 1_795_000_000_000,
                "end_time": 1_795_000_600_000,
                "artifact_uri": f"azureml://experiments/{experiment}/runs/{run_id}/artifacts",
                "lifecycle_stage": "active",
            },
            "data": {
                "metrics": [
                    {"key": k, "value": v, "timestamp": 1_795_000_500_000, "step": 0}
                    for k, v in (metrics or {}).items()
                ],
                "params": [],
                "tags": logged,
            },
        }

    def _root_of(self, run_id: str) -> str:
        """The top-level run above ``run_id`` (itself when it has no parent), as MLflow tags tell it."""
        run = self.mlflow_runs.get(run_id)
        tags = {t["key"]: t["value"] for t in (run or {}).get("data", {}).get("tags", [])}
        return str(tags.get("mlflow.rootRunId") or run_id)

    def tag_mlflow_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags set on an MLflow run after it was logged (``MlflowClient.set_tag``)."""
        logged = self.mlflow_runs[run_id]["data"]["tags"]
        logged += [{"key": k, "value": v} for k, v in tags.items()]

    def add_step(
        self,
        parent: str,
        name: str,
        *,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """A pipeline step of job ``parent`` (a child job with its own MLflow run and run-history run, with
        ``tags``); returns its run id."""
        run_id = f"{parent}_{name}_{len(self.mlflow_runs):04d}"
        experiment = self.jobs[parent]["properties"].get("experimentName") or "Default"
        self.log_mlflow_run(run_id, experiment=experiment, name=name, metrics=metrics, parent=parent, tags=tags)
        # What run history keeps of it (the SDK reads a step there: MFE does not serve child jobs).
        self.steps[run_id] = {
            "runId": run_id,
            "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, run_id)),
            "parentRunId": parent,
            "rootRunId": parent,
            "experimentId": self.experiment_id(experiment),
            "status": "Completed",
            "displayName": name,
            "name": name,
            "runType": "azureml.StepRun",
            "createdUtc": "2026-11-20T09:00:00.000Z",
            "startTimeUtc": "2026-11-20T09:01:00.000Z",
            "endTimeUtc": "2026-11-20T09:10:00.000Z",
            "tags": dict(tags or {}),
            "createdBy": run_history_user(self.creators.get(parent, APP_CLAIMS)),
            # As Azure ML records a step's run: its pipeline job (the parent run) under azureml.pipelinerunid
            # (Microsoft's azureml-assets components read it so); azureml.pipeline is another id, the pipeline's.
            "properties": {
                "azureml.runsource": "azureml.StepRun",
                "azureml.nodeid": name,
                "azureml.pipelinerunid": parent,
            },
            "compute": {"target": "cpu-cluster"},
        }
        return run_id

    @staticmethod
    def experiment_id(experiment: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"experiment:{experiment}"))

    def set_job_status(self, name: str, status: str, *, tags: dict[str, str] | None = None) -> None:
        """The job moves on, as Azure ML moves it ('Running', 'Completed', 'Failed', 'Canceled', ...);
        ``tags`` are added to its tags (what the run logged, e.g. its metric)."""
        props = self.jobs[name]["properties"]
        props["status"] = status
        props["tags"] = {**(props.get("tags") or {}), **(tags or {})}

    def add_endpoint(self, name: str, traffic: dict[str, int] | None = None) -> None:
        self.endpoints[name] = {
            "id": self.arm_id("onlineEndpoints", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/onlineEndpoints",
            "location": self.location,
            "kind": "Managed",
            "identity": {"type": "SystemAssigned"},
            "tags": {},
            "properties": {
                "authMode": "Key",
                "scoringUri": f"https://{name}.{self.location}.inference.ml.azure.com/score",
                "traffic": dict(traffic or {}),
                "mirrorTraffic": {},
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled",
            },
        }

    def add_deployment(self, endpoint: str, name: str, *, model: tuple[str, str], instance_count: int = 2) -> None:
        for collection in ("model_inputs", "model_outputs"):  # the SDK registered them when it was created
            self.add_data(
                f"{endpoint}-{name}-{collection}",
                "1",
                kind="uri_folder",
                uri=f"azureml://datastores/workspaceblobstore/paths/modelDataCollector/{endpoint}/{name}/{collection}",
            )
        self.deployments[(endpoint, name)] = {
            "id": self.arm_id("onlineEndpoints", endpoint, "deployments", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/onlineEndpoints/deployments",
            "location": self.location,
            "kind": "Managed",
            "tags": {"team": "mlops"},
            "sku": {"name": "Default", "tier": "Standard", "capacity": instance_count},
            "properties": {
                "endpointComputeType": "Managed",
                "model": self.arm_id("models", model[0], "versions", model[1]),
                "environmentId": self.arm_id("environments", "sklearn-env", "versions", "7"),
                "codeConfiguration": {
                    "codeId": self.arm_id("codes", "6e1f3c2a-2b7e-4a43-9d33-2d5c0c1f2a10", "versions", "1"),
                    "scoringScript": "score.py",
                },
                "instanceType": "Standard_DS3_v2",
                "environmentVariables": {"WORKER_COUNT": "2"},
                "scaleSettings": {"scaleType": "Default"},
                "requestSettings": {"requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 2},
                "livenessProbe": {
                    "initialDelay": "PT10S",
                    "period": "PT10S",
                    "timeout": "PT2S",
                    "failureThreshold": 30,
                    "successThreshold": 1,
                },
                "appInsightsEnabled": True,
                "egressPublicNetworkAccess": "Enabled",
                "modelMountPath": "/var/azureml-app/model",
                "dataCollector": {  # what v2 model monitoring reads: the deployment's inputs and outputs
                    "collections": {
                        "model_inputs": {
                            "dataCollectionMode": "Enabled",
                            "dataId": self.arm_id("data", f"{endpoint}-{name}-model_inputs", "versions", "1"),
                            "samplingRate": 1.0,
                        },
                        "model_outputs": {
                            "dataCollectionMode": "Enabled",
                            "dataId": self.arm_id("data", f"{endpoint}-{name}-model_outputs", "versions", "1"),
                            "samplingRate": 1.0,
                        },
                    },
                    "requestLogging": {"captureHeaders": []},
                    "rollingRate": "Hour",
                },
                "provisioningState": "Succeeded",
                "properties": {},
            },
        }

    def add_monitor(self, name: str, endpoint: str, deployment: str, *, short_id: bool = False) -> None:
        """A v2 model-monitor schedule (a ``CreateMonitor`` schedule, REST shape of the schedules API)
        watching ``endpoint/deployment``'s collected data for drift, daily."""
        target = (
            f"azureml:{endpoint}:{deployment}"
            if short_id
            else self.arm_id("onlineEndpoints", endpoint, "deployments", deployment)
        )
        inputs = self.arm_id("data", f"{endpoint}-{deployment}-model_inputs", "versions", "1")
        self.schedules[name] = {
            "id": self.arm_id("schedules", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/schedules",
            "systemData": {"createdAt": CREATED},
            "properties": {
                "displayName": name,
                "isEnabled": True,
                "provisioningState": "Succeeded",
                "tags": {},
                "properties": {},
                "trigger": {
                    "triggerType": "Recurrence",
                    "frequency": "Day",
                    "interval": 1,
                    "schedule": {"hours": [3], "minutes": [0]},
                    "timeZone": "UTC",
                },
                "action": {
                    "actionType": "CreateMonitor",
                    "monitorDefinition": {
                        "computeConfiguration": {
                            "computeType": "ServerlessSpark",
                            "instanceType": "standard_e4s_v3",
                            "runtimeVersion": "3.3",
                            "computeIdentity": {"computeIdentityType": "AmlToken"},
                        },
                        "monitoringTarget": {"deploymentId": target, "taskType": "Regression"},
                        "signals": {
                            "feature-drift": {
                                "signalType": "DataDrift",
                                "productionData": {
                                    "inputDataType": "Rolling",
                                    "jobInputType": "uri_folder",
                                    "uri": inputs,
                                    "windowSize": "P1D",
                                },
                                "referenceData": {
                                    "inputDataType": "Static",
                                    "jobInputType": "mltable",
                                    "uri": self.arm_id("data", "diabetes-training", "versions", "1"),
                                },
                                "metricThresholds": [
                                    {
                                        "dataType": "Numerical",
                                        "metric": "JensenShannonDistance",
                                        "threshold": {"value": 0.1},
                                    }
                                ],
                            }
                        },
                    },
                },
            },
        }

    # ------------------------------------------------------------------ scripting

    def fault_code(self, status: int) -> str:
        codes = {429: "TooManyRequests", 503: "ServiceUnavailable", 500: "InternalServerError", 404: "NotFound"}
        return codes.get(status, "UserError")

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    def before(self, method: str, path: str, hook: Callable[[], None]) -> None:
        """Run ``hook`` once, just before the first matching request is answered (a concurrent writer)."""
        self.hooks.append((method, path, hook))

    # ------------------------------------------------------------------ reading what happened

    def requests_to(self, method: str, path: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and re.search(path, c.path)]

    @property
    def job_puts(self) -> list[Call]:
        return self.requests_to("PUT", r"^jobs/")

    @property
    def traffic_puts(self) -> list[dict[str, int]]:
        """The traffic splits sent to endpoints, in order (the PUTs the service answered)."""
        return [
            dict(c.body["properties"].get("traffic") or {})
            for c in self.requests_to("PUT", r"^onlineEndpoints/[^/]+$")
            if c.status in (200, 201)
        ]

    @property
    def endpoint_puts(self) -> list[tuple[dict[str, int], dict[str, int]]]:
        """The (traffic, mirror traffic) of each endpoint update the service answered, in order."""
        return [
            (dict(c.body["properties"].get("traffic") or {}), dict(c.body["properties"].get("mirrorTraffic") or {}))
            for c in self.requests_to("PUT", r"^onlineEndpoints/[^/]+$")
            if c.status in (200, 201)
        ]

    def provision(self, endpoint: str, deployment: str, state: str) -> None:
        """The deployment's provisioning ends (or is still going): 'Succeeded', 'Failed', 'Creating', ...
        A final state ends its running operation with that outcome."""
        self.settle()
        self.deployments[(endpoint, deployment)]["properties"]["provisioningState"] = state
        if state in ("Succeeded", "Failed", "Canceled"):
            for op in self.operations.values():
                if op["target"] == (endpoint, deployment) and op["status"] == "InProgress":
                    op["status"] = state

    def writes(self) -> list[Call]:
        """The requests that change something (MLflow's ``runs/search`` is a POST that reads)."""
        return [
            c
            for c in self.calls
            if c.method in ("PUT", "POST", "PATCH", "DELETE") and not c.path.startswith("/mlflow/")
        ]

    def mlflow_calls(self, endpoint: str = "") -> list[Call]:
        return [c for c in self.calls if c.path.startswith("/mlflow/") and c.path.endswith(endpoint)]

    # ------------------------------------------------------------------ answering

    def record(self, request: Request) -> Call:
        path = urlparse(request.url).path
        below = path[len(self.ws_path) + 1 :] if path.startswith(self.ws_path + "/") else path
        if path == self.ws_path:
            below = ""
        query = {k: v[-1] for k, v in parse_qs(urlparse(request.url).query).items()}
        return Call(request.method, request.url, below, query.get("api-version"), query, request.headers, request.body)

    def check(self, call: Call) -> None:
        """A test's hook (:meth:`before`) runs before anything answers."""
        for i, (method, pattern, hook) in enumerate(self.hooks):
            if method == call.method and re.search(pattern, call.path):
                del self.hooks[i]
                hook()
                break

    def handle(self, call: Call) -> Answer:
        return self._route(call, urlparse(call.url).hostname or "")

    def error(self, code: str, message: str) -> Any:
        return {"error": {"code": code, "message": message, "details": [], "additionalInfo": []}}

    def _authorize(self, call: Call, action: str, scope: str, *, mlflow: bool = False) -> None:
        """Refuse as Azure does when the caller's identity holds no role that grants ``action`` at
        ``scope`` (an identity the fake does not know holds none)."""
        oid = str(token_claims(call.headers.get("Authorization")).get("oid"))
        principal = self.principal if oid == self.principal.oid else self.others.get(oid)
        if principal is not None and principal.allows(action, scope):
            return
        self.refused.append((action, scope))
        body = rbac.refusal(oid, action, scope)["error"]
        if mlflow:  # unverified: the body Azure ML's MLflow server sends with its 403
            raise MlflowAnswer(403, "PERMISSION_DENIED", body["message"])
        raise Refusal(403, body["code"], body["message"])

    def _route(self, call: Call, host: str) -> Answer:
        if host == self.mlflow_host:
            return self._mlflow(call)
        if self.batch.handles(host):  # a batch endpoint's scoring URI (invoking it): tests/fake_batch.py
            return self.batch.invoke(call)
        if self.scoring.handles(host):  # an endpoint's scoring URI (the data plane): tests/fake_scoring.py
            return self.scoring.answer(call)
        if self.registries.handles(host):  # a registry's discovery and data plane: tests/fake_registry.py
            return self.registries.answer(call)
        if self.datastores.handles(host):  # a datastore's blobs (Azure Storage): tests/fake_datastores.py
            return self.datastores.answer(call)
        if host != ARM_HOST:
            raise Unexpected(f"host {host}")
        if token_audience(call.headers.get("Authorization")) != f"https://{ARM_HOST}":
            raise Unexpected("no bearer token for https://management.azure.com")
        if "/mfeOperationsStatus/" not in call.path:  # ARM answers an operation's status to its caller
            self._authorize(call, *rbac.arm_action(call.method, urlparse(call.url).path))
        routes: list[tuple[str, str, str, Callable[..., Answer]]] = [
            ("GET", r"^$", "workspace", self._get_workspace),
            ("GET", r"^computes/([^/]+)$", "computes", self._get_compute),
            ("GET", r"^components/([^/]+)/versions$", "components", self._list_components),
            ("GET", r"^components/([^/]+)/versions/([^/]+)$", "components", self._get_component),
            ("GET", r"^data/([^/]+)$", "data", self._get_data_container),
            ("GET", r"^data/([^/]+)/versions$", "data", self._list_data),
            ("GET", r"^data/([^/]+)/versions/([^/]+)$", "data", self._get_data),
            ("PUT", r"^data/([^/]+)/versions/([^/]+)$", "data", self._put_data),
            ("GET", r"^datastores/([^/]+)$", "datastores", self.datastores.datastore),
            ("GET", r"^jobs/([^/]+)$", "jobs", self._get_job),
            ("PUT", r"^jobs/([^/]+)$", "jobs", self._put_job),
            ("POST", r"^jobs/([^/]+)/cancel$", "jobCancel", self.batch.cancel),
            ("GET", r"^models/([^/]+)$", "models", self._get_model_container),
            ("GET", r"^models/([^/]+)/versions$", "models", self._list_models),
            ("GET", r"^models/([^/]+)/versions/([^/]+)$", "models", self._get_model),
            ("PUT", r"^models/([^/]+)/versions/([^/]+)$", "models", self._put_model),
            ("GET", r"^onlineEndpoints/([^/]+)$", "onlineEndpoints", self._get_endpoint),
            ("PUT", r"^onlineEndpoints/([^/]+)$", "onlineEndpoints", self._put_endpoint),
            ("GET", r"^onlineEndpoints/([^/]+)/deployments$", "onlineEndpoints", self._list_deployments),
            ("GET", r"^onlineEndpoints/([^/]+)/deployments/([^/]+)$", "deployments", self._get_deployment),
            ("PUT", r"^onlineEndpoints/([^/]+)/deployments/([^/]+)$", "deployments", self._put_deployment),
            ("DELETE", r"^onlineEndpoints/([^/]+)/deployments/([^/]+)$", "deployments", self._delete_deployment),
            *self.batch.routes(),
            ("GET", r"^schedules$", "schedules", self._list_schedules),
            ("GET", r"^schedules/([^/]+)$", "schedules", self._get_schedule),
            ("PUT", r"^schedules/([^/]+)$", "schedules", self._put_schedule),
            (
                "GET",
                rf"^/subscriptions/{re.escape(self.subscription)}/providers/{PROVIDER}/locations/[^/]+/mfeOperationsStatus/([^/]+)$",
                "operations",
                self._get_operation,
            ),
        ]
        for method, pattern, kind, handler in routes:
            match = re.match(pattern, call.path)
            if method == call.method and match:
                if call.api_version not in API_VERSIONS[kind]:
                    raise Unexpected(f"api-version {call.api_version} for {kind}")
                return handler(call, *match.groups())
        raise Unexpected("no such route")

    # ------------------------------------------------------------------ handlers

    def _get_workspace(self, call: Call) -> Answer:
        return (
            200,
            {},
            {
                "id": self.ws_path,
                "name": self.workspace,
                "type": f"{PROVIDER}/workspaces",
                "location": self.location,
                "identity": {"type": "SystemAssigned"},
                "properties": {
                    "friendlyName": self.workspace,
                    "workspaceId": "5b1f3b5e-7f0e-4c55-9c3b-4a3f2d1e0c9b",
                    "discoveryUrl": f"https://{self.location}.api.azureml.ms/discovery",
                    "mlFlowTrackingUri": f"azureml://{self.mlflow_host}/mlflow/v1.0{self.ws_path}",
                    "provisioningState": "Succeeded",
                },
            },
        )

    def _get_compute(self, call: Call, name: str) -> Answer:
        return 200, {}, self._found(self.computes.get(name), f"compute {name}")

    def _get_component(self, call: Call, name: str, version: str) -> Answer:
        return 200, {}, self._found(self.components.get((name, version)), f"component {name}:{version}")

    def _list_components(self, call: Call, name: str) -> Answer:
        versions = [v for (n, _), v in self.components.items() if n == name]
        versions.sort(key=lambda v: v["systemData"]["createdAt"], reverse="desc" in call.query.get("$orderBy", ""))
        return 200, {}, {"value": versions[: int(call.query.get("$top", len(versions) or 1))]}

    def _get_data_container(self, call: Call, name: str) -> Answer:
        versions = sorted((int(v) for (n, v) in self.data if n == name and v.isdigit()), reverse=True)
        if not versions:
            raise Refusal(404, "UserError", f"Could not find data asset {name} in workspace {self.workspace}")
        latest = str(versions[0])
        return (
            200,
            {},
            {
                "id": self.arm_id("data", name),
                "name": name,
                "properties": {"latestVersion": latest, "nextVersion": str(versions[0] + 1), "isArchived": False},
            },
        )

    def _list_data(self, call: Call, name: str) -> Answer:
        """Data Versions - List: the versions of one data asset, newest first, ``DATA_PAGE`` a page, the
        next page behind ``nextLink`` (a ``$skipToken``); archived versions only when ``listViewType`` asks
        for them. No such asset: an empty list (a list is not a lookup)."""
        view = call.query.get("listViewType", "ActiveOnly")
        if view not in ("ActiveOnly", "ArchivedOnly", "All"):
            raise Unexpected(f"listViewType {view}")
        versions = [
            v
            for (n, _), v in self.data.items()
            if n == name and (view == "All" or v["properties"]["isArchived"] == (view == "ArchivedOnly"))
        ]
        versions.sort(key=lambda v: v["systemData"]["createdAt"], reverse=True)
        start = int(call.query.get("$skipToken", "0") or 0)
        page = versions[start : start + self.data_page]
        out: dict[str, Any] = {"value": page}
        if start + self.data_page < len(versions):
            query = urlencode({**call.query, "$skipToken": str(start + self.data_page)})
            out["nextLink"] = f"https://{ARM_HOST}{urlparse(call.url).path}?{query}"
        return 200, {}, out

    def _get_data(self, call: Call, name: str, version: str) -> Answer:
        return 200, {}, self._found(self.data.get((name, version)), f"data asset {name}:{version}")

    def _put_data(self, call: Call, name: str, version: str) -> Answer:
        """Registering a data asset version: an existing version with the same path is accepted as
        it is; a changed path is refused ("Asset paths cannot be updated")."""
        props = (call.body or {}).get("properties") or {}
        uri, kind = str(props.get("dataUri") or ""), str(props.get("dataType") or "")
        if not uri or not kind:
            raise Unexpected("a data version needs dataType and dataUri")
        existing = self.data.get((name, version))
        if existing is not None:
            if existing["properties"]["dataUri"].rstrip("/") != uri.rstrip("/"):
                raise Refusal(400, "UserError", "Asset paths cannot be updated.")
            return 200, {}, existing
        self.add_data(name, version, kind=kind, uri=uri)
        return 201, {}, self.data[(name, version)]

    def _get_job(self, call: Call, name: str) -> Answer:
        """A pipeline step's run is a job too, but the jobs API answers it without ``properties``: the SDK
        reads that as a pipeline child job ("Child jobs are no longer available through MFE",
        ``JobOperations.get``) and asks run history (``/history/v1.0/.../runs/<id>``) instead. (The
        REST specs' examples show only top-level jobs; the empty answer is the SDK's reading of it.)"""
        self.batch.settle()  # a batch job ends on the fake clock
        if name in self.steps and name not in self.jobs:
            return 200, {}, {"id": self.arm_id("jobs", name), "name": name, "type": f"{PROVIDER}/workspaces/jobs"}
        return 200, {}, self._found(self.jobs.get(name), f"job {name}")

    def _put_job(self, call: Call, name: str) -> Answer:
        props = (call.body or {}).get("properties") or {}
        self._check_pipeline_job(call, name, props)
        existing = self.jobs.get(name)
        if existing is not None:
            old = existing["properties"]
            changed = [
                k
                for k in ("jobType", "componentId", "computeId", "experimentName", "inputs")
                if old.get(k) != props.get(k)
            ]
            if changed:
                raise Refusal(
                    400,
                    "UserError",
                    f"Job {name} already exists; an existing job's {', '.join(changed)} cannot be changed, "
                    "only its tags, display name, description and new properties",
                )
            old["tags"] = dict(props.get("tags") or {})
            for key in ("displayName", "description"):
                if props.get(key) is not None:
                    old[key] = props[key]
            return 200, {}, existing
        if (
            call.headers.get("x-azureml-token") is None
            or token_audience("Bearer " + call.headers["x-azureml-token"]) != "https://ml.azure.com"
        ):
            raise Refusal(
                401, "UserError", "a pipeline job is submitted with the user's Azure ML token (x-azureml-token)"
            )
        claims = token_claims(call.headers.get("Authorization"))
        job = self._job_resource(name, props, "NotStarted", job_system_data(claims, self._now_iso()))
        self.creators[name] = claims
        # The service binds the outputs the job does not name to the pipeline component's outputs.
        component = self._resource_by_id(self.components, props.get("componentId"))
        assert component is not None  # checked above
        declared = component["properties"]["componentSpec"]["outputs"]
        job["properties"]["outputs"] = {
            k: {"jobOutputType": v["type"], "mode": "ReadWriteMount"} for k, v in declared.items()
        } | dict(props.get("outputs") or {})
        self.jobs[name] = job
        self.log_mlflow_run(name, experiment=str(props.get("experimentName")), status="SCHEDULED")
        return 201, {}, job

    def _check_pipeline_job(self, call: Call, name: str, props: dict[str, Any]) -> None:
        if not JOB_NAME.match(name):  # the REST API's pattern for a job's name
            raise Refusal(400, "UserError", f"Job name {name!r} must match {JOB_NAME.pattern}")
        if props.get("jobType") != "Pipeline":
            raise Unexpected(f"jobType {props.get('jobType')!r}, expected a pipeline job")
        component = self._resource_by_id(self.components, props.get("componentId"))
        if component is None:
            raise Refusal(400, "UserError", f"Component {props.get('componentId')} not found")
        if self._resource_by_id({("c", k): v for k, v in self.computes.items()}, props.get("computeId")) is None:
            raise Refusal(400, "UserError", f"Compute {props.get('computeId')} not found in workspace {self.workspace}")
        if not props.get("experimentName"):
            raise Unexpected("no experimentName")
        declared = component["properties"]["componentSpec"]["inputs"]
        for key, value in (props.get("inputs") or {}).items():
            if key not in declared:
                raise Refusal(400, "UserError", f"Input {key} is not an input of component {props['componentId']}")
            kind = value.get("jobInputType")
            if kind not in JOB_INPUT_TYPES:
                raise Unexpected(f"input {key}: jobInputType {kind!r}")
            if kind == "literal" and not isinstance(value.get("value"), str):
                raise Unexpected(f"input {key}: a literal's value is a string on the wire")
            if kind != "literal":
                uri = str(value.get("uri") or "")
                if "/data/" in uri and self._resource_by_id(self.data, uri) is None:
                    raise Refusal(400, "UserError", f"Data asset {uri} not found")
                if not uri:
                    raise Unexpected(f"input {key}: no uri")
        tags = props.get("tags") or {}
        if not all(isinstance(v, str) for v in tags.values()):
            raise Unexpected("tag values are strings")

    def _job_resource(
        self, name: str, props: dict[str, Any], status: str, system: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A job's resource; ``system``: its ``systemData`` (default: created by the function app's identity)."""
        stored = copy.deepcopy(props)
        stored["status"] = status
        stored["services"] = {
            "Studio": {"jobServiceType": "Studio", "endpoint": f"https://ml.azure.com/runs/{name}?wsid={self.ws_path}"}
        }
        return {
            "id": self.arm_id("jobs", name),
            "name": name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "systemData": system if system is not None else job_system_data(APP_CLAIMS, CREATED),
            "properties": stored,
        }

    def _get_model_container(self, call: Call, name: str) -> Answer:
        versions = sorted((int(v) for (n, v) in self.models if n == name and v.isdigit()), reverse=True)
        if not versions:
            raise Refusal(404, "UserError", f"Could not find model {name} in workspace {self.workspace}")
        return (
            200,
            {},
            {
                "id": self.arm_id("models", name),
                "name": name,
                "properties": {
                    "latestVersion": str(versions[0]),
                    "nextVersion": str(versions[0] + 1),
                    "isArchived": False,
                },
            },
        )

    def _list_models(self, call: Call, name: str) -> Answer:
        versions = [v for (n, _), v in self.models.items() if n == name]
        if not versions:
            raise Refusal(404, "UserError", f"Could not find model {name} in workspace {self.workspace}")
        top = int(call.query.get("$top", len(versions)))
        return 200, {}, {"value": list(reversed(versions))[:top]}

    def _get_model(self, call: Call, name: str, version: str) -> Answer:
        return 200, {}, self._found(self.models.get((name, version)), f"model {name}:{version}")

    def _put_model(self, call: Call, name: str, version: str) -> Answer:
        props = (call.body or {}).get("properties") or {}
        uri = str(props.get("modelUri") or "")
        if not props.get("modelType") or not uri:
            raise Unexpected("a model version needs modelType and modelUri")
        existing = self.models.get((name, version))
        if existing is not None:  # re-registering: the same path is accepted, a changed one refused
            if existing["properties"]["modelUri"].rstrip("/") != uri.rstrip("/"):
                raise Refusal(400, "UserError", "Asset paths cannot be updated.")
            existing["properties"]["tags"] = dict(props.get("tags") or {})
            return 200, {}, existing
        job_name = None
        job_output = re.match(r"^azureml://jobs/([^/]+)/outputs/([^/]+)$", uri)
        if job_output:
            job_name, output = job_output.groups()
            job = self.jobs.get(job_name)
            if job is None or output not in (job["properties"].get("outputs") or {}):
                raise Refusal(400, "UserError", f"Job {job_name} has no output named {output}")
        model_id = self.add_model(
            name,
            version,
            tags=props.get("tags"),
            properties=props.get("properties"),
            kind=props["modelType"],
            job_name=job_name,
        )
        self.models[(name, version)]["properties"]["modelUri"] = uri
        self.models[(name, version)]["systemData"] = self._created_by(call)
        assert model_id
        return 201, {}, self.models[(name, version)]

    def _get_endpoint(self, call: Call, name: str) -> Answer:
        self.settle()
        return 200, {}, self._found(self.endpoints.get(name), f"online endpoint {name}")

    def _put_endpoint(self, call: Call, name: str) -> Answer:
        """An update of an existing endpoint, as ``online_endpoints.begin_create_or_update`` sends it: the
        traffic split must name deployments of the endpoint that are provisioned, and sum to 100 (or
        be empty). Accepted as a long-running operation, like a deployment."""
        existing = self.endpoints.get(name)
        if existing is None:
            raise Unexpected("the service creates no endpoints, it only updates their traffic")
        self._refuse_while_busy(name, "update the endpoint's traffic")
        body = call.body or {}
        props = body.get("properties") or {}
        if body.get("location") != self.location:
            raise Unexpected(f"location {body.get('location')!r}, the workspace is in {self.location}")
        if props.get("authMode") != existing["properties"]["authMode"]:
            raise Unexpected("an update that changes the endpoint's authMode")
        traffic = props.get("traffic") or {}
        if not all(isinstance(v, int) and 0 <= v <= 100 for v in traffic.values()):
            raise Refusal(400, "UserError", f"Traffic values must be integers between 0 and 100: {traffic}")
        if traffic and sum(traffic.values()) != 100:
            raise Refusal(400, "UserError", f"Traffic values must add up to 100; got {sum(traffic.values())}")
        for deployment, percent in traffic.items():
            found = self.deployments.get((name, deployment))
            if found is None:
                raise Refusal(400, "UserError", f"Deployment {deployment} does not exist on endpoint {name}")
            state = found["properties"].get("provisioningState")
            if percent and state != "Succeeded":
                raise Refusal(
                    400,
                    "UserError",
                    f"Deployment {deployment} is in provisioning state {state}; traffic needs Succeeded",
                )
        mirror = props.get("mirrorTraffic") or {}
        self._check_mirror(name, traffic, mirror)
        existing["properties"]["traffic"] = dict(traffic)
        # A PUT without mirrorTraffic clears it ("If you use an older version of the Azure Machine Learning
        # CLI or the Python SDK to update an endpoint, you lose the mirror traffic setting")
        existing["properties"]["mirrorTraffic"] = dict(mirror)
        existing["properties"]["provisioningState"] = "Updating"
        existing["tags"] = dict(body.get("tags") or existing["tags"])
        operation = self._start_operation("update", name)
        return 200, {"Azure-AsyncOperation": self._status_url(operation)}, existing

    def _check_mirror(self, endpoint: str, traffic: dict[str, Any], mirror: dict[str, Any]) -> None:
        """Azure ML's rules for mirror traffic ("Safe rollout for online endpoints", the mirroring
        limitations; the REST spec's OnlineEndpoint ``mirrorTraffic``: "Percentage of traffic to be
        mirrored to each deployment without using returned scoring. Traffic values need to sum to
        utmost 50"): at most 50% in all, one mirrored deployment per endpoint, a deployment gets live
        or mirrored traffic but not both, and the keys are deployments of the endpoint. Azure's
        codes and wording for these refusals are unverified: 400 UserError saying which rule."""
        if not all(isinstance(v, int) and 0 <= v <= 100 for v in mirror.values()):
            raise Refusal(400, "UserError", f"Mirror traffic values must be integers between 0 and 100: {mirror}")
        mirrored = {d: p for d, p in mirror.items() if p}
        if sum(mirrored.values()) > MAX_MIRROR_PERCENT:
            raise Refusal(
                400,
                "UserError",
                f"Mirror traffic values must sum to at most {MAX_MIRROR_PERCENT}; got {sum(mirrored.values())}",
            )
        if len(mirrored) > 1:
            raise Refusal(
                400, "UserError", f"Traffic can be mirrored to one deployment only; got {', '.join(sorted(mirrored))}"
            )
        for deployment, percent in mirrored.items():
            found = self.deployments.get((endpoint, deployment))
            if found is None:
                raise Refusal(400, "UserError", f"Deployment {deployment} does not exist on endpoint {endpoint}")
            if (traffic.get(deployment) or 0) > 0:
                raise Refusal(
                    400,
                    "UserError",
                    f"Deployment {deployment} cannot receive both live traffic ({traffic[deployment]}%) and mirror "
                    f"traffic ({percent}%)",
                )
            state = found["properties"].get("provisioningState")
            if state != "Succeeded":
                raise Refusal(
                    400,
                    "UserError",
                    f"Deployment {deployment} is in provisioning state {state}; traffic needs Succeeded",
                )

    def _list_deployments(self, call: Call, endpoint: str) -> Answer:
        self._found(self.endpoints.get(endpoint), f"online endpoint {endpoint}")
        self.settle()
        return 200, {}, {"value": [d for (e, _), d in self.deployments.items() if e == endpoint]}

    def _get_deployment(self, call: Call, endpoint: str, name: str) -> Answer:
        self.settle()
        return 200, {}, self._found(self.deployments.get((endpoint, name)), f"deployment {endpoint}/{name}")

    def _put_deployment(self, call: Call, endpoint: str, name: str) -> Answer:
        body = call.body or {}
        props = body.get("properties") or {}
        if endpoint not in self.endpoints:
            raise Refusal(404, "UserError", f"Online endpoint {endpoint} not found")
        if body.get("location") != self.location:
            raise Unexpected(f"location {body.get('location')!r}, the workspace is in {self.location}")
        if props.get("endpointComputeType") != "Managed" or not props.get("instanceType"):
            raise Unexpected("a managed deployment names its instance type")
        if not self.registries.deployable(call, str(props.get("model") or "")) and (
            self._resource_by_id(self.models, props.get("model")) is None
        ):
            raise Refusal(400, "UserError", f"Model {props.get('model')} not found")
        if not isinstance((body.get("sku") or {}).get("capacity"), int):
            raise Unexpected("sku.capacity is the instance count")
        self._refuse_while_busy(endpoint, "create a deployment")
        count = sum(1 for (e, _) in self.deployments if e == endpoint)
        if (endpoint, name) not in self.deployments and count >= MAX_DEPLOYMENTS:
            # At most 20 deployments per endpoint (Azure ML docs, "Manage and increase quotas"). Azure's
            # wording and code for the refusal are unverified: a 400 that says what the limit is.
            raise Refusal(
                400,
                "BadRequest",
                f"Endpoint {endpoint} already has {count} deployments; the limit is {MAX_DEPLOYMENTS} "
                "deployments per endpoint",
            )
        # A data collector collects into data-asset versions that exist: azure-ai-ml registers one per
        # collection (a PUT of data/<name>/versions/<version>) before it PUTs the deployment.
        for collection, spec in ((props.get("dataCollector") or {}).get("collections") or {}).items():
            data_id = (spec or {}).get("dataId")
            if data_id and self._resource_by_id(self.data, data_id) is None:
                raise Refusal(400, "UserError", f"Data asset {data_id} of collection {collection} not found")
        stored = copy.deepcopy(body)
        stored.update(
            {
                "id": self.arm_id("onlineEndpoints", endpoint, "deployments", name),
                "name": name,
                "type": f"{PROVIDER}/workspaces/onlineEndpoints/deployments",
                "systemData": self._modified_by(call, self.deployments.get((endpoint, name))),
            }
        )
        stored["properties"].setdefault("scaleSettings", {"scaleType": "Default"})  # the service's default
        stored["properties"]["provisioningState"] = "Creating"
        self.deployments[(endpoint, name)] = stored
        operation = self._start_operation("create", endpoint, (endpoint, name))
        return 201, {"Azure-AsyncOperation": self._status_url(operation)}, stored

    def _delete_deployment(self, call: Call, endpoint: str, name: str) -> Answer:
        """Azure ML refuses to delete a deployment that has live or mirrored traffic; otherwise the
        deletion is a long-running operation ('Deleting', then gone). A missing one is 204."""
        self.settle()
        found = self.deployments.get((endpoint, name))
        if found is None:
            return 204, {}, None
        self._refuse_while_busy(endpoint, "delete a deployment")
        props = self.endpoints[endpoint]["properties"]
        if (props.get("traffic") or {}).get(name) or (props.get("mirrorTraffic") or {}).get(name):
            raise Refusal(
                400, "UserError", f"Deployment {name} has traffic; set its traffic and mirror traffic to 0 first"
            )
        found["properties"]["provisioningState"] = "Deleting"
        status_url = self._status_url(self._start_operation("delete", endpoint, (endpoint, name)))
        return 202, {"Azure-AsyncOperation": status_url, "Location": status_url}, None

    def _list_schedules(self, call: Call) -> Answer:
        view = call.query.get("listViewType", "EnabledOnly")
        found = [
            s
            for s in self.schedules.values()
            if view == "All" or s["properties"]["isEnabled"] == (view == "EnabledOnly")
        ]
        return 200, {}, {"value": found}

    def _get_schedule(self, call: Call, name: str) -> Answer:
        return 200, {}, self._found(self.schedules.get(name), f"schedule {name}")

    def _put_schedule(self, call: Call, name: str) -> Answer:
        """A schedule PUT replaces the schedule. The monitoring target must be a deployment of an
        endpoint of the workspace."""
        body = copy.deepcopy(call.body or {})
        props = body.get("properties") or {}
        action = props.get("action") or {}
        if action.get("actionType") == "CreateMonitor":
            target = str(((action.get("monitorDefinition") or {}).get("monitoringTarget") or {}).get("deploymentId"))
            match = re.search(r"onlineEndpoints/([^/]+)/deployments/([^/]+)$", target) or re.match(
                r"^azureml:([^:]+):([^:]+)$", target
            )
            if match is None or tuple(match.groups()) not in self.deployments:
                raise Refusal(400, "UserError", f"Monitoring target {target} is not a deployment of this workspace")
        if not props.get("trigger"):
            raise Unexpected("a schedule needs its trigger")
        created = name not in self.schedules
        body.update({"id": self.arm_id("schedules", name), "name": name, "type": f"{PROVIDER}/workspaces/schedules"})
        body["properties"]["provisioningState"] = "Succeeded"
        self.schedules[name] = body
        return (201 if created else 200), {}, body

    def _get_operation(self, call: Call, operation: str) -> Answer:
        op = self._found(self.operations.get(operation), f"operation {operation}")
        self.settle()  # done when its time has come, not after some number of polls
        return 200, {}, {"id": operation, "name": operation, "status": op["status"]}

    # ------------------------------------------------------------------ MLflow (the tracking server)

    def _mlflow(self, call: Call) -> Answer:
        """The MLflow REST API at the workspace's tracking URI (``/mlflow/v1.0/<workspace id>``):
        ``GET runs/get?run_id=`` and ``POST runs/search``, with an Azure Resource Manager token."""
        prefix = f"/mlflow/v1.0{self.ws_path}/api/2.0/mlflow/"
        if call.method == "GET" and call.path == "/discovery":  # the workspace's discoveryUrl: its services
            base = f"https://{self.mlflow_host}"
            return 200, {}, {"api": base, "catalog": base, "experimentation": base, "history": base}
        if call.method == "GET" and call.path.startswith(f"/history/v1.0{self.ws_path}/runs/"):
            if token_audience(call.headers.get("Authorization")) != f"https://{ARM_HOST}":
                raise Unexpected("run history call without a bearer token for Azure Resource Manager")
            # reading a run is experiments/runs/read, as for MLflow (the error body's shape is unverified)
            self._authorize(call, f"{PROVIDER}/workspaces/experiments/runs/read", self.ws_path)
            run_id = call.path.rsplit("/", 1)[1]
            run = self.steps.get(run_id) or self._history_run(run_id)
            if run is None:
                raise Refusal(404, "UserError", f"Run {run_id} was not found")
            return 200, {}, run
        if not call.path.startswith(prefix):
            raise Unexpected(f"MLflow path {call.path}")
        if token_audience(call.headers.get("Authorization")) != f"https://{ARM_HOST}":
            raise Unexpected("MLflow call without a bearer token for https://management.azure.com")
        endpoint = call.path.removeprefix(prefix)
        if endpoint in ("runs/get", "runs/search"):  # "MLflow operations" (Azure ML docs, Manage roles)
            self._authorize(call, f"{PROVIDER}/workspaces/experiments/runs/read", self.ws_path, mlflow=True)
        if (call.method, endpoint) == ("GET", "runs/get"):
            run_id = call.query.get("run_id") or call.query.get("run_uuid")
            run = self.mlflow_runs.get(str(run_id))
            if run is None:
                raise MlflowAnswer(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
            return 200, {}, {"run": run}
        if (call.method, endpoint) == ("POST", "runs/search"):
            return 200, {}, self._search_runs(call)
        if (call.method, endpoint) == ("GET", "experiments/get-by-name"):  # MLflow's get_experiment_by_name
            self._authorize(call, f"{PROVIDER}/workspaces/experiments/read", self.ws_path, mlflow=True)
            name = str(call.query.get("experiment_name") or "")
            wanted = self.experiment_id(name)
            if not any(r["info"]["experiment_id"] == wanted for r in self.mlflow_runs.values()):
                raise MlflowAnswer(404, "RESOURCE_DOES_NOT_EXIST", f"Experiment '{name}' does not exist.")
            return 200, {}, {"experiment": {"experiment_id": wanted, "name": name, "lifecycle_stage": "active"}}
        raise Unexpected(f"MLflow endpoint {call.method} {endpoint}")

    def _history_run(self, name: str) -> dict[str, Any] | None:
        """What run history keeps of a top-level job (run id = job name): its status, experiment and tags as
        the job has them, and who created it (``createdBy``, from the creating token)."""
        job = self.jobs.get(name)
        if job is None:
            return None
        props = job["properties"]
        experiment = str(props.get("experimentName") or "Default")
        return {
            "runId": name,
            "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "rootRunId": name,
            "experimentId": self.experiment_id(experiment),
            "status": props.get("status"),
            "displayName": props.get("displayName") or name,
            "name": name,
            "runType": "azureml.PipelineRun",
            "createdUtc": job["systemData"].get("createdAt"),
            "tags": dict(props.get("tags") or {}),
            "properties": dict(props.get("properties") or {}),
            "createdBy": run_history_user(self.creators.get(name, APP_CLAIMS)),
        }

    def _search_runs(self, call: Call) -> dict[str, Any]:
        body = call.body or {}
        experiments = body.get("experiment_ids")
        if not isinstance(experiments, list) or not experiments:
            raise MlflowAnswer(400, "INVALID_PARAMETER_VALUE", "experiment_ids must be a non-empty list")
        text = str(body.get("filter") or "")
        if "`" in text:
            # Azure ML's support matrix for MLflow queries lists names with escaped special characters
            # (backticks) as not supported. The exact answer is unverified: an MLflow-shaped 400.
            raise MlflowAnswer(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Invalid filter {text!r}: names escaped with backticks are not supported by Azure Machine Learning",
            )
        match = re.fullmatch(r"\s*tags\.mlflow\.parentRunId\s*=\s*'([^']*)'\s*", text)
        if match is None and text.strip():
            raise Unexpected(f"runs/search filter {body.get('filter')!r}")
        found = [
            r
            for r in self.mlflow_runs.values()
            if r["info"]["experiment_id"] in experiments
            and (match is None or {"key": "mlflow.parentRunId", "value": match.group(1)} in r["data"]["tags"])
        ]
        size = int(body.get("max_results") or 1000)
        start = int(body.get("page_token") or 0)
        page = found[start : start + size]
        out: dict[str, Any] = {"runs": page}
        if start + size < len(found):
            out["next_page_token"] = str(start + size)
        return out

    # ------------------------------------------------------------------ helpers

    def _found(self, resource: dict[str, Any] | None, what: str) -> dict[str, Any]:
        if resource is None:
            raise Refusal(404, "UserError", f"Could not find {what} in workspace {self.workspace}")
        return resource

    @staticmethod
    def _resource_by_id(resources: dict[Any, dict[str, Any]], arm_id: Any) -> dict[str, Any] | None:
        wanted = str(arm_id or "").lower()
        return next((r for r in resources.values() if r["id"].lower() == wanted), None)
