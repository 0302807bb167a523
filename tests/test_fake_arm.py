"""The fake ARM's own tests: it answers the real SDK like a workspace, and checks what it is sent.

Also: the network guard of conftest stops azure-core's real transport, so a test that forgets the
fake fails instead of reaching Azure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.ai.ml import Input, MLClient
from azure.ai.ml.entities import ManagedOnlineDeployment, Model, PipelineJob
from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError, ServiceResponseTimeoutError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.pipeline.transport import HttpRequest as TransportRequest
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest as RestRequest

from tests.fake_arm import FakeArm
from tests.fake_arm_common import FakeClock
from tests.fake_http import FakeCredential, unsigned_jwt

SUB, RG, WS = "7a3c5f0e-1111-4d2b-9e8a-2b6f1c0d9e77", "rg-mlops", "ws-retrain"
ARM = "https://management.azure.com"


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def blocked(exc: BaseException) -> bool:
    """conftest's NetworkBlocked (by name: pytest loads conftest under its own module name)."""
    return any(type(e).__name__ == "NetworkBlocked" for e in chain(exc))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def arm(clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[FakeArm]:
    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure: the SDK adds no git properties to jobs
    fake = FakeArm(SUB, RG, WS, clock=clock)
    fake.add_compute("cpu-cluster")
    fake.add_component("train", "1", inputs={"data": "uri_folder", "lr": "number"})
    yield fake
    fake.close()  # the SDK's pollers of operations still running end


def ml(arm: FakeArm) -> MLClient:
    return MLClient(FakeCredential(), SUB, RG, WS, transport=arm, retry_total=0, enable_telemetry=False)


def pipeline_job(arm: FakeArm, *, lr: float = 0.1, tags: dict[str, str] | None = None, **more: Any) -> PipelineJob:
    return PipelineJob(
        component=arm.arm_id("components", "train", "versions", "1"),
        inputs={"data": Input(type="uri_folder", path="azureml://datastores/blob/paths/d/"), "lr": lr, **more},
        name="job-1",
        experiment_name="exp",
        compute="cpu-cluster",
        tags=tags or {"a": "1"},
    )


def test_the_network_guard_stops_azure_cores_requests_transport() -> None:
    transport = RequestsTransport()
    for url in ("https://203.0.113.10/", f"{ARM}/subscriptions"):
        with pytest.raises(Exception) as caught:
            transport.send(TransportRequest("GET", url))
        assert blocked(caught.value), url


def test_an_mlclient_without_the_fake_cannot_reach_azure() -> None:
    client = MLClient(FakeCredential(), SUB, RG, WS, retry_total=0, enable_telemetry=False)
    with pytest.raises(Exception) as caught:
        client.components.get("train", version="1")
    assert blocked(caught.value)


def test_both_azure_core_request_types_read_the_answers(arm: FakeArm) -> None:
    url = f"{ARM}{arm.ws_path}/computes/cpu-cluster?api-version=2023-08-01-preview"
    client = PipelineClient(
        base_url=ARM, transport=arm, policies=[BearerTokenCredentialPolicy(FakeCredential(), f"{ARM}/.default")]
    )
    rest = client.send_request(RestRequest("GET", url))
    assert (rest.status_code, rest.json()["name"]) == (200, "cpu-cluster")

    request = TransportRequest("GET", url)
    request.headers["Authorization"] = "Bearer " + unsigned_jwt(ARM)
    answer = arm.send(request)
    assert (answer.status_code, json.loads(answer.text())["name"]) == (200, "cpu-cluster")


def test_a_request_it_does_not_know_is_refused_and_recorded(arm: FakeArm) -> None:
    request = TransportRequest("GET", f"{ARM}{arm.ws_path}/featuresets?api-version=2024-01-01-preview")
    request.headers["Authorization"] = "Bearer " + unsigned_jwt(ARM)
    assert arm.send(request).status_code == 400
    assert arm.unexpected == ["GET featuresets: no such route"]


def test_an_api_version_the_sdk_does_not_send_is_flagged(arm: FakeArm) -> None:
    request = TransportRequest("GET", f"{ARM}{arm.ws_path}/computes/cpu-cluster?api-version=2021-01-01")
    request.headers["Authorization"] = "Bearer " + unsigned_jwt(ARM)
    assert arm.send(request).status_code == 400
    assert arm.unexpected == ["GET computes/cpu-cluster: api-version 2021-01-01 for computes"]


def test_a_request_without_a_management_token_is_refused(arm: FakeArm) -> None:
    request = TransportRequest("GET", f"{ARM}{arm.ws_path}/computes/cpu-cluster?api-version=2023-08-01-preview")
    request.headers["Authorization"] = "Bearer " + unsigned_jwt("https://storage.azure.com")
    assert arm.send(request).status_code == 400
    assert arm.unexpected == ["GET computes/cpu-cluster: no bearer token for https://management.azure.com"]


def test_the_sdk_submits_a_pipeline_job_from_a_registered_component(arm: FakeArm) -> None:
    job = ml(arm).jobs.create_or_update(pipeline_job(arm), skip_validation=True)
    assert (job.name, job.status) == ("job-1", "NotStarted")
    [put] = arm.job_puts
    assert put.headers["x-azureml-token"]  # pipeline jobs carry the user's Azure ML token
    assert put.body["properties"]["inputs"]["lr"] == {"jobInputType": "literal", "value": "0.1"}
    assert arm.unexpected == []


def test_a_put_on_an_existing_job_name_updates_its_tags_and_starts_nothing(arm: FakeArm) -> None:
    client = ml(arm)
    client.jobs.create_or_update(pipeline_job(arm), skip_validation=True)
    again = client.jobs.create_or_update(pipeline_job(arm, tags={"b": "2"}), skip_validation=True)
    assert [c.status for c in arm.job_puts] == [201, 200]
    assert list(arm.jobs) == ["job-1"] and again.tags == {"b": "2"}


def test_a_put_that_changes_what_an_existing_job_runs_is_refused(arm: FakeArm) -> None:
    client = ml(arm)
    client.jobs.create_or_update(pipeline_job(arm), skip_validation=True)
    with pytest.raises(HttpResponseError) as caught:
        client.jobs.create_or_update(pipeline_job(arm, lr=0.2), skip_validation=True)
    assert caught.value.status_code == 400
    assert "already exists; an existing job's inputs cannot be changed" in str(caught.value)


def test_inputs_the_component_does_not_declare_are_refused(arm: FakeArm) -> None:
    with pytest.raises(HttpResponseError) as caught:
        ml(arm).jobs.create_or_update(pipeline_job(arm, epochs=3), skip_validation=True)
    assert caught.value.status_code == 400 and "Input epochs is not an input of component" in str(caught.value)


def test_scripted_faults_come_first_then_the_workspace_answers(arm: FakeArm) -> None:
    arm.fail(429, method="GET", path=r"^computes/", headers={"Retry-After": "2"})
    client = ml(arm)
    with pytest.raises(HttpResponseError) as caught:
        client.compute.get("cpu-cluster")
    assert caught.value.status_code == 429 and caught.value.response.headers["Retry-After"] == "2"
    assert client.compute.get("cpu-cluster").name == "cpu-cluster"


def test_a_timeout_reaches_the_sdk_as_azure_cores_timeout_and_takes_time(arm: FakeArm, clock: FakeClock) -> None:
    start = clock.now
    arm.time_out("GET", r"^computes/", seconds=5.0)
    with pytest.raises(ServiceResponseTimeoutError):
        ml(arm).compute.get("cpu-cluster")
    assert clock.now - start == 5.0


def test_a_model_registered_from_a_job_output_needs_the_job_and_the_output(arm: FakeArm) -> None:
    client = ml(arm)
    with pytest.raises(HttpResponseError) as caught:
        client.models.create_or_update(Model(name="m", path="azureml://jobs/nojob/outputs/model", type="custom_model"))
    assert caught.value.status_code == 400
    arm.add_job("run-1")
    model = client.models.create_or_update(Model(name="m", path="azureml://jobs/run-1/outputs/model"))
    assert (model.version, model.job_name) == ("1", "run-1")


def _green(arm: FakeArm, name: str = "green") -> ManagedOnlineDeployment:
    model_id = arm.add_model("m", "1")
    if "ep-1" not in arm.endpoints:
        arm.add_endpoint("ep-1", {"blue": 100})
        arm.add_deployment("ep-1", "blue", model=("m", "1"))
    return ManagedOnlineDeployment(
        name=name, endpoint_name="ep-1", model=model_id, instance_type="Standard_DS3_v2", instance_count=1
    )


def test_deployment_creation_takes_its_time_on_the_clock_whether_or_not_anyone_polls(
    arm: FakeArm, clock: FakeClock
) -> None:
    client = ml(arm)
    poller = client.online_deployments.begin_create_or_update(_green(arm), skip_script_validation=True)
    clock.now += arm.durations["create"] - 1
    assert client.online_deployments.get("green", endpoint_name="ep-1").provisioning_state == "Creating"
    clock.now += 1  # nobody polled in between: the operation is done all the same
    assert arm.deployments[("ep-1", "green")]["properties"]["provisioningState"] == "Creating"  # until asked
    assert client.online_deployments.get("green", endpoint_name="ep-1").provisioning_state == "Succeeded"
    assert poller.result().provisioning_state == "Succeeded"  # the poller's thread waited for the clock
    assert arm.endpoints["ep-1"]["properties"]["traffic"] == {"blue": 100}
    assert arm.sdk_sleeps and clock.slept == []  # the poller waited for the fake clock, nobody slept


def test_writes_to_an_endpoint_with_an_operation_in_progress_are_refused_with_409(
    arm: FakeArm, clock: FakeClock
) -> None:
    client = ml(arm)
    client.online_deployments.begin_create_or_update(_green(arm), skip_script_validation=True)
    endpoint = client.online_endpoints.get("ep-1")
    endpoint.traffic = {"blue": 100}
    with pytest.raises(HttpResponseError) as caught:
        client.online_endpoints.begin_create_or_update(endpoint)
    assert caught.value.status_code == 409 and caught.value.error.code == "Conflict"  # type: ignore[union-attr]
    assert "Cannot update the endpoint's traffic in endpoint ep-1" in str(caught.value)
    with pytest.raises(HttpResponseError) as again:
        client.online_deployments.begin_delete(name="green", endpoint_name="ep-1")
    assert again.value.status_code == 409
    clock.now += arm.durations["create"]
    client.online_endpoints.begin_create_or_update(endpoint)  # done: accepted
    with pytest.raises(HttpResponseError) as updating:  # now the traffic update runs
        client.online_deployments.begin_create_or_update(_green(arm, "red"), skip_script_validation=True)
    assert updating.value.status_code == 409
    assert "Cannot create a deployment in endpoint ep-1 because it is in Updating provisioning state" in str(
        updating.value
    )


def test_an_endpoint_holds_at_most_twenty_deployments(arm: FakeArm) -> None:
    arm.add_model("m", "1")
    arm.add_endpoint("ep-1", {"d0": 100})
    for i in range(20):
        arm.add_deployment("ep-1", f"d{i}", model=("m", "1"))
    with pytest.raises(HttpResponseError) as caught:
        ml(arm).online_deployments.begin_create_or_update(_green(arm), skip_script_validation=True)
    assert caught.value.status_code == 400 and "the limit is 20 deployments per endpoint" in str(caught.value)
    assert ("ep-1", "green") not in arm.deployments


def test_re_registering_a_model_version_accepts_the_same_path_and_refuses_a_changed_one(arm: FakeArm) -> None:
    arm.add_job("run-1")
    arm.add_job("run-2")
    client = ml(arm)
    first = client.models.create_or_update(Model(name="m", version="1", path="azureml://jobs/run-1/outputs/model"))
    again = client.models.create_or_update(Model(name="m", version="1", path="azureml://jobs/run-1/outputs/model"))
    assert (first.version, again.version) == ("1", "1")
    assert [c.status for c in arm.requests_to("PUT", r"^models/")] == [201, 200]
    with pytest.raises(HttpResponseError, match="Asset paths cannot be updated"):
        client.models.create_or_update(Model(name="m", version="1", path="azureml://jobs/run-2/outputs/model"))


def test_a_job_name_outside_the_rest_pattern_is_refused(arm: FakeArm) -> None:
    job = pipeline_job(arm)
    job.name = "bad.name"
    with pytest.raises(HttpResponseError, match="must match"):
        ml(arm).jobs.create_or_update(job, skip_validation=True)


def test_the_mlflow_endpoints_answer_in_the_rest_apis_shape_at_the_tracking_uri(arm: FakeArm) -> None:
    arm.add_job("pipe", experiment="exp", metrics={"loss": 0.3})
    step = arm.add_step("pipe", "evaluate", metrics={"r2_score": 0.7})
    uri = ml(arm).workspaces.get(WS).mlflow_tracking_uri
    assert uri == f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{arm.ws_path}"
    client = PipelineClient(
        uri.replace("azureml://", "https://"),
        policies=[BearerTokenCredentialPolicy(FakeCredential(), f"{ARM}/.default")],
        transport=arm,
    )
    got = client.send_request(RestRequest("GET", client._base_url + "/api/2.0/mlflow/runs/get?run_id=pipe"))
    run = got.json()["run"]
    assert run["info"]["experiment_id"] == arm.experiment_id("exp")
    assert run["data"]["metrics"][0] == {"key": "loss", "value": 0.3, "timestamp": 1_795_000_500_000, "step": 0}
    body = {"experiment_ids": [arm.experiment_id("exp")], "filter": "tags.mlflow.parentRunId = 'pipe'"}
    found = client.send_request(RestRequest("POST", client._base_url + "/api/2.0/mlflow/runs/search", json=body))
    assert [r["info"]["run_id"] for r in found.json()["runs"]] == [step]
    # Azure ML lists names escaped with backticks as unsupported: the escaped filter is refused
    body["filter"] = "tags.`mlflow.parentRunId` = 'pipe'"
    escaped = client.send_request(RestRequest("POST", client._base_url + "/api/2.0/mlflow/runs/search", json=body))
    assert escaped.status_code == 400 and escaped.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert arm.unexpected == []
    missing = client.send_request(RestRequest("GET", client._base_url + "/api/2.0/mlflow/runs/get?run_id=nope"))
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
