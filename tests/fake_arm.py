"""An in-process Azure Resource Manager for one Azure ML workspace, for the real SDK to talk to.

``MLClient(credential, sub, rg, ws, transport=FakeArm(...))`` reaches every pipeline of the client:
the SDK builds and sends its real requests, and this transport answers them like the service.
It is a :class:`tests.fake_http.FakeService` (the transport, the scripted faults and the tokens
every fake shares): this module is its handler, and each kind of resource is a module of its own,
mixed into :class:`FakeArm` (``fake_arm_assets``, ``_jobs``, ``_mlflow``, ``_online``, ``_schedules``;
what they share is ``fake_arm_common``). A scripted fault (``fail``, ``time_out``,
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

import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests import rbac, rbac_model
from tests.fake_arm_assets import Assets
from tests.fake_arm_common import API_VERSIONS, ARM_HOST, PROVIDER, Call, FakeClock, MlflowAnswer, system_data
from tests.fake_arm_jobs import Jobs
from tests.fake_arm_mlflow import Mlflow
from tests.fake_arm_online import OnlineEndpoints
from tests.fake_arm_schedules import Schedules
from tests.fake_batch import FakeBatch
from tests.fake_datastores import FakeDatastores
from tests.fake_http import (
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


class FakeArm(Assets, Jobs, Mlflow, OnlineEndpoints, Schedules, FakeService):
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
        principal: rbac_model.Principal | None = None,
    ) -> None:
        super().__init__()
        # Who may do what: the function app's identity as infra/ assigns its roles (tests/rbac.py)
        self.principal = principal if principal is not None else rbac.app(subscription, resource_group, workspace)
        self.others: dict[str, rbac_model.Principal] = {}  # other identities that may call (:meth:`admit`)
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

    def arm_id(self, *parts: str) -> str:
        return "/".join((self.ws_path, *parts))

    def admit(self, principal: rbac_model.Principal) -> None:
        """Another identity that may call, with the grants it holds (a workspace user, say)."""
        self.others[principal.oid] = principal

    def workspace_user(self) -> FakeCredential:
        """A person with a workspace account (AzureML Data Scientist on the workspace: they submit
        jobs and create deployments), admitted here; their credential, for an ``MLClient`` of theirs."""
        self.admit(
            rbac_model.Principal(
                USER_OID,
                "workspace user",
                (
                    rbac_model.Grant(
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

    def fault_code(self, status: int) -> str:
        codes = {429: "TooManyRequests", 503: "ServiceUnavailable", 500: "InternalServerError", 404: "NotFound"}
        return codes.get(status, "UserError")

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    def before(self, method: str, path: str, hook: Callable[[], None]) -> None:
        """Run ``hook`` once, just before the first matching request is answered (a concurrent writer)."""
        self.hooks.append((method, path, hook))

    def requests_to(self, method: str, path: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and re.search(path, c.path)]

    def writes(self) -> list[Call]:
        """The requests that change something (MLflow's ``runs/search`` is a POST that reads)."""
        return [
            c
            for c in self.calls
            if c.method in ("PUT", "POST", "PATCH", "DELETE") and not c.path.startswith("/mlflow/")
        ]

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
        body = rbac_model.refusal(oid, action, scope)["error"]
        if mlflow:  # unverified: the body Azure ML's MLflow server sends with its 403
            raise MlflowAnswer(403, "PERMISSION_DENIED", body["message"])
        raise Refusal(403, body["code"], body["message"])

    def _route(self, call: Call, host: str) -> Answer:
        if host == self.mlflow_host:
            return self._mlflow(call)
        if self.batch.handles(host):  # a batch endpoint's scoring URI (invoking it): tests/fake_batch_jobs.py
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
            self._authorize(call, *rbac_model.arm_action(call.method, urlparse(call.url).path))
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

    def _found(self, resource: dict[str, Any] | None, what: str) -> dict[str, Any]:
        if resource is None:
            raise Refusal(404, "UserError", f"Could not find {what} in workspace {self.workspace}")
        return resource

    @staticmethod
    def _resource_by_id(resources: dict[Any, dict[str, Any]], arm_id: Any) -> dict[str, Any] | None:
        wanted = str(arm_id or "").lower()
        return next((r for r in resources.values() if r["id"].lower() == wanted), None)
