"""Managed online endpoints and their deployments in the fake ARM, and the long-running operations that
create, update and delete them on the fake clock (409 while one runs, at most 20 deployments, the
mirror-traffic rules)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.fake_arm_common import ARM_HOST, PROVIDER, Call
from tests.fake_http import Answer, Refusal, Unexpected

MAX_DEPLOYMENTS = 20  # per online endpoint (Azure ML docs, "Manage and increase quotas")
MAX_MIRROR_PERCENT = 50  # of an endpoint's traffic, to one deployment ("Safe rollout for online endpoints")


class OnlineEndpoints:
    """Mixed into :class:`tests.fake_arm.FakeArm` (``self`` is the fake, its stores and its clock):
    online endpoints, deployments, traffic and their operations in time."""

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

    def provision(self, endpoint: str, deployment: str, state: str) -> None:
        """The deployment's provisioning ends (or is still going): 'Succeeded', 'Failed', 'Creating', ...
        A final state ends its running operation with that outcome."""
        self.settle()
        self.deployments[(endpoint, deployment)]["properties"]["provisioningState"] = state
        if state in ("Succeeded", "Failed", "Canceled"):
            for op in self.operations.values():
                if op["target"] == (endpoint, deployment) and op["status"] == "InProgress":
                    op["status"] = state

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

    def _get_operation(self, call: Call, operation: str) -> Answer:
        op = self._found(self.operations.get(operation), f"operation {operation}")
        self.settle()  # done when its time has come, not after some number of polls
        return 200, {}, {"id": operation, "name": operation, "status": op["status"]}
