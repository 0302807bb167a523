"""The Azure ML backend end to end: events through RetrainService and the real SDK to a fake ARM.

Nothing here pretends a call happened: ``MLClient`` (built by ``AzureMLActions.from_settings``)
sends its real requests to :class:`tests.fake_arm.FakeArm`, and the tests read what it received.
The retry sleep and clock are a :class:`FakeClock`: no test waits.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.ai.ml.exceptions as ml_exceptions
import azure.core.exceptions as core_exceptions
import pytest
from azure.ai.ml import MLClient

from function_app.adapters.azure_errors import is_transient, translate
from function_app.adapters.azureml import AzureMLActions
from handlers import gate
from handlers.errors import PermanentError, TransientError
from handlers.gate_rules import GateRule
from handlers.jobnames import job_name as keyed_job_name
from handlers.plans import DeployPlan, JobPlan
from handlers.signals import ManualRequest, Trigger
from tests.azure_world import (
    DATASET,
    DRIFT_SAMPLE,
    ENDPOINT,
    JOB_NAME_KEY,
    MODEL,
    RG,
    RUN_SAMPLE,
    SUB,
    WORKSPACE_ID,
    WS,
    AzureWorld,
    DiesAfterActing,
    WorkerDied,
    in_workspace,
)
from tests.builders import gated_run_plan, ours, run_event, with_retrain
from tests.conftest import REPO
from tests.fake_http import FakeCredential

# --------------------------------------------------------------------------- retraining


def test_sample_drift_event_submits_exactly_the_expected_pipeline_job(azure: AzureWorld) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome, rec.model) == ("retrain", "submitted", MODEL)
    job_name = rec.job["name"]  # type: ignore[index]
    # from the decision key, under the service's secret (RETRAIN_JOB_NAME_KEY)
    assert job_name == keyed_job_name(JOB_NAME_KEY.encode(), MODEL, rec.id)
    assert rec.id.split("-", 1)[1] not in job_name  # not the public digest a workspace user can compute

    [put] = azure.arm.job_puts
    assert put.path == f"jobs/{job_name}"
    props = put.body["properties"]
    assert props["jobType"] == "Pipeline"
    assert props["componentId"] == azure.arm.arm_id("components", "diabetes-retrain", "versions", "3")
    assert props["computeId"] == azure.arm.arm_id("computes", "cpu-cluster")
    assert props["experimentName"] == "diabetes-retrain"
    assert props["inputs"] == {
        "training_data": {"jobInputType": "mltable", "uri": azure.arm.arm_id("data", DATASET, "versions", "2")},
        "learning_rate": {"jobInputType": "literal", "value": "0.01"},
        "max_epochs": {"jobInputType": "literal", "value": "20"},
    }
    assert props["tags"] == {
        "retrain_service": "retrain-service",
        "retrain_model": MODEL,
        "retrain_decision": rec.id,
        "retrain_trigger": f"DatasetDriftDetected:{raw['id']}",
    }
    assert props["displayName"].startswith(f"retrain {MODEL}: data drift monitor myDriftMonitor")
    assert props["properties"] == {}
    assert (
        rec.job["url"]
        == f"https://ml.azure.com/runs/{job_name}?wsid={WORKSPACE_ID}&tid=00000000-0000-0000-0000-0000000000bb"
    )  # type: ignore[index]
    assert azure.clock.slept == [] and azure.arm.sdk_sleeps == []
    assert azure.service.ledger.get_model(MODEL).flights["retrain"].job == job_name


def test_redelivered_drift_event_submits_no_second_job(azure: AzureWorld) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    first = azure.deliver(raw)
    again = azure.deliver(raw)
    assert again.status == "duplicate" and again.decisions[0].job == first.decisions[0].job
    assert len(azure.arm.job_puts) == 1 and len(azure.arm.jobs) == 1


@pytest.mark.both_ledgers
def test_redelivery_after_a_crash_between_submit_and_confirm_adopts_the_job(azure: AzureWorld) -> None:
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    [submitted] = list(azure.arm.jobs)
    assert azure.decision(azure.arm.jobs[submitted]["properties"]["tags"]["retrain_decision"]).outcome == "reserved"  # type: ignore[union-attr]

    with pytest.raises(TransientError):  # while the dead worker's lease runs, the event is someone else's
        azure.deliver(raw)
    azure.now.advance(minutes=2)
    [rec] = azure.deliver(raw, azure.new_worker()).decisions
    assert (rec.outcome, rec.job["name"], rec.details["adopted"]) == ("submitted", submitted, True)  # type: ignore[index]
    assert len(azure.arm.job_puts) == 1 and list(azure.arm.jobs) == [submitted]
    assert azure.service.ledger.get_model(MODEL).flights["retrain"].job == submitted


def test_a_job_submitted_concurrently_between_look_and_put_is_adopted(azure: AzureWorld) -> None:
    def another_instance_submits() -> None:  # the same name, but it resolved the dataset to version 1
        pending = azure.arm.job_puts[-1].body["properties"]
        theirs = copy.deepcopy(pending)
        theirs["inputs"]["training_data"]["uri"] = azure.arm.arm_id("data", DATASET, "versions", "1")
        name = azure.arm.job_puts[-1].path.removeprefix("jobs/")
        azure.arm.jobs[name] = azure.arm._job_resource(name, theirs, "Running")

    azure.arm.before("PUT", r"^jobs/", another_instance_submits)
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert (rec.outcome, rec.details["adopted"]) == ("submitted", True)
    assert [c.status for c in azure.arm.job_puts] == [400] and len(azure.arm.jobs) == 1


def test_a_pipeline_label_is_resolved_through_the_sdk(azure: AzureWorld) -> None:
    azure.arm.add_component("churn-train", "1", inputs={"training_data": "uri_folder"})
    azure.arm.add_component("churn-train", "2", inputs={"training_data": "uri_folder"})
    azure.arm.add_data("churn-training", "4", kind="uri_folder")
    request = ManualRequest(Trigger("http", "req-1", "ManualRequest.retrain"), "churn-classifier", "retrain", "test")
    rec = azure.service.manual(request)
    assert rec.outcome == "submitted"
    [listing] = azure.arm.requests_to("GET", r"^components/churn-train/versions$")
    assert (listing.query["$orderBy"], listing.query["$top"]) == ("createdtime desc", "1")
    props = azure.arm.job_puts[0].body["properties"]
    assert props["componentId"] == azure.arm.arm_id("components", "churn-train", "versions", "2")
    assert props["inputs"]["training_data"]["uri"] == azure.arm.arm_id("data", "churn-training", "versions", "4")


def test_a_local_input_path_is_refused_rather_than_uploaded(azure: AzureWorld) -> None:
    plan = JobPlan(
        name="retrain-x-1",
        model=MODEL,
        component="diabetes-retrain:3",
        experiment="e",
        compute="cpu-cluster",
        inputs={"training_data": {"type": "uri_folder", "value": "data/train", "from": "policy"}},
        tags={},
        display_name="x",
    )
    with pytest.raises(PermanentError, match="'data/train', a local path; the service uploads nothing"):
        azure.actions.submit_retrain(plan)
    assert azure.arm.writes() == []


# --------------------------------------------------------------------------- transient and permanent


def test_throttled_submission_is_retried_after_its_retry_after(azure: AzureWorld) -> None:
    azure.arm.fail(429, method="PUT", path=r"^jobs/", headers={"Retry-After": "2"})
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted"
    assert azure.clock.slept == [2.0]
    assert [c.status for c in azure.arm.job_puts] == [429, 201]


def test_a_run_of_503s_ends_as_a_transient_error_within_the_deadline(azure: AzureWorld) -> None:
    start = azure.clock.now
    azure.arm.fail(503, method="GET", path=r"^components/", times=1000)
    raw = in_workspace(DRIFT_SAMPLE)
    with pytest.raises(TransientError, match=r"HTTP 503.*25 s budget"):
        azure.deliver(raw)
    assert azure.clock.now - start <= azure.settings.deadline_seconds
    assert len(azure.arm.requests_to("GET", r"^components/")) == len(azure.clock.slept) + 1 > 3
    assert azure.arm.job_puts == []

    azure.arm.faults.clear()  # Event Grid delivers it again once Azure is back
    [rec] = azure.deliver(raw).decisions
    assert rec.outcome == "submitted" and len(azure.arm.job_puts) == 1


def test_a_webhook_batch_shares_one_deadline_across_its_events(azure: AzureWorld) -> None:
    """The first event's job is throttled for 20 s, then the second event's deployment meets 503s:
    it gets the 5 s left of the delivery's 25, so the batch answers 503 inside Event Grid's 30 s."""
    import main
    from function_app import runtime
    from function_app.localhost import Host
    from tests.conftest import Client

    # without the worthiness check, which reads the endpoint (its served champion) before the job is submitted
    azure.policy = with_retrain({"worthiness": False})
    azure.worker = azure.new_worker()
    azure.arm.fail(429, method="PUT", path=r"^jobs/", headers={"Retry-After": "20"})
    azure.arm.fail(503, method="GET", path=r"^onlineEndpoints/", times=1000)
    start = azure.clock.now
    runtime.set_retrainer(azure.worker)
    try:
        status, _, body = Client(Host(main.app)).call(
            "POST", "/api/events", [in_workspace(DRIFT_SAMPLE), azure.finished_run(r2="0.61")]
        )
    finally:
        runtime.set_retrainer(None)
    assert status == 503 and "budget of this attempt is spent" in body["error"]
    assert azure.clock.now - start <= azure.settings.deadline_seconds
    assert azure.clock.slept[0] == 20.0 and len(azure.arm.requests_to("GET", r"^onlineEndpoints/")) >= 2
    assert [c.status for c in azure.arm.job_puts] == [429, 201]  # the first event's job was submitted


def test_timeouts_count_against_the_deadline(azure: AzureWorld) -> None:
    start = azure.clock.now
    azure.arm.time_out("GET", r"^components/", times=1000, seconds=6.0)
    with pytest.raises(TransientError, match="ServiceResponseTimeoutError"):
        azure.deliver(in_workspace(DRIFT_SAMPLE))
    assert sum(azure.clock.slept) < azure.settings.deadline_seconds
    assert azure.clock.now - start <= azure.settings.deadline_seconds + 6.0  # the last attempt may start near it


def test_a_missing_component_fails_the_decision_naming_the_component(azure: AzureWorld) -> None:
    del azure.arm.components[("diabetes-retrain", "3")]
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "failed"
    assert (
        "pipeline component 'diabetes-retrain:3' not found in workspace ws-retrain; "
        "register it or fix models.sklearn_regression_model.retrain.pipeline"
    ) in rec.reason
    assert azure.arm.job_puts == [] and azure.clock.slept == []
    state = azure.service.ledger.get_model(MODEL)
    assert "retrain" not in state.flights and state.last_retrain_at is None  # the cooldown is given back


def test_the_sdks_own_retries_are_off_so_the_budget_is_tenacitys(azure: AzureWorld) -> None:
    azure.arm.fail(503, method="GET", path=r"^components/")
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "submitted"
    assert len(azure.arm.requests_to("GET", r"^components/")) == 2  # one failure, one retry: ours
    assert len(azure.clock.slept) == 1 and azure.arm.sdk_sleeps == []

    # Built with its defaults, the SDK retries by itself underneath, outside the budget's sight.
    default = MLClient(FakeCredential(), SUB, RG, WS, transport=azure.arm, enable_telemetry=False)
    azure.arm.fail(503, method="GET", path=r"^components/")
    default.components.get("diabetes-retrain", version="3")
    assert len(azure.arm.requests_to("GET", r"^components/")) == 4 and len(azure.clock.slept) == 1


class _Answer400:
    """Just what azure-core's errors read from a response."""

    status_code, reason, headers, url = 400, "Bad Request", {}, "https://management.azure.com/x"
    request = None

    def text(self) -> str:
        return json.dumps({"error": {"code": "UserError", "message": "bad"}})


def _instances(module: Any) -> Iterator[BaseException]:
    """One instance of every exception class a module defines, built with placeholder arguments."""
    placeholders: dict[str, Any] = {"response": _Answer400(), "history": []}
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if not issubclass(cls, Exception) or not cls.__module__.startswith("azure."):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        args = {
            p.name: placeholders.get(p.name, 1 if p.name.endswith("_number") else "x")
            for p in params
            if p.name != "self"
            and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        if "message" in [p.name for p in params] and issubclass(cls, ml_exceptions.MlException):
            args.setdefault("message", "x")
            args.setdefault("no_personal_data_message", "x")
        yield cls(**args)


def test_every_error_the_sdk_raises_is_translated_to_transient_or_permanent() -> None:
    errors = [*_instances(core_exceptions), *_instances(ml_exceptions)]
    assert len(errors) > 40
    transient = {type(e).__name__ for e in errors if is_transient(e)}
    assert transient == {  # a ClientAuthenticationError without a status is a misconfigured identity: permanent
        "IncompleteReadError",
        "ServiceRequestError",
        "ServiceRequestTimeoutError",
        "ServiceResponseError",
        "ServiceResponseTimeoutError",
    }
    for error in errors:
        if isinstance(error, core_exceptions.AzureError):  # what the adapter catches: every SDK error is one
            as_azure_ml = translate(error, "x", service="Azure ML", refused="grant a role")  # as the backend does
            assert isinstance(as_azure_ml, TransientError if is_transient(error) else PermanentError)
    sdk_errors = [cls for _, cls in inspect.getmembers(ml_exceptions, inspect.isclass) if issubclass(cls, Exception)]
    assert all(
        issubclass(cls, core_exceptions.AzureError) for cls in sdk_errors if cls.__module__.startswith("azure.ai.ml")
    )


# --------------------------------------------------------------------------- deploying


def test_a_finished_run_that_beats_the_champion_starts_a_zero_traffic_deployment(azure: AzureWorld) -> None:
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert (rec.action, rec.outcome) == ("deploy", "submitted")
    deployment = rec.details["rendered"]["deployment"]
    assert rec.job["name"] == f"{ENDPOINT}/{deployment}"  # type: ignore[index]
    assert rec.details["gate"] == {
        "passed": True,
        "metric": "r2_score",
        "higher_is_better": True,
        "candidate": 0.61,
        "champion": 0.52,
        "floor": 0.4,
        "margin": 0.01,
        "why": rec.details["gate"]["why"],
        "metrics": [rec.details["gate"]["metrics"][0]],
    }
    [r2] = rec.details["gate"]["metrics"]
    assert (r2["metric"], r2["passed"], r2["required"], r2["slices"]) == ("r2_score", True, True, [])
    assert (r2["candidate"], r2["champion"], r2["needed"]) == (0.61, 0.52, 0.01)
    assert r2["gain"] == pytest.approx(0.09)

    [register] = azure.arm.requests_to("PUT", r"^models/")
    assert register.path == f"models/{MODEL}/versions/4"
    run_id = "retrain-sklearn-regression-model-0123456789abcdef"
    assert register.body["properties"]["modelUri"] == f"azureml://jobs/{run_id}/outputs/model"
    assert register.body["properties"]["tags"]["r2_score"] == "0.61"

    [create] = azure.arm.requests_to("PUT", r"^onlineEndpoints/")
    assert create.path == f"onlineEndpoints/{ENDPOINT}/deployments/{deployment}"
    live = azure.arm.deployments[(ENDPOINT, "blue")]
    body = create.body
    assert body["properties"]["model"] == azure.arm.arm_id("models", MODEL, "versions", "4")
    for copied in (
        "instanceType",
        "environmentId",
        "codeConfiguration",
        "environmentVariables",
        "requestSettings",
        "appInsightsEnabled",
        "egressPublicNetworkAccess",
    ):
        assert body["properties"][copied] == live["properties"][copied], copied
    assert body["sku"]["capacity"] == live["sku"]["capacity"]
    # the data collector that feeds model monitoring, collecting into the live deployment's data assets
    collections = body["properties"]["dataCollector"]["collections"]
    for name in ("model_inputs", "model_outputs"):
        assert collections[name]["dataId"] == live["properties"]["dataCollector"]["collections"][name]["dataId"]
        assert collections[name]["dataCollectionMode"].lower() == "enabled"
    assert all(c.status in (200, 201) for c in azure.arm.requests_to("PUT", r"^data/"))
    collected = sorted(n for n, _ in azure.arm.data if "model_" in n)  # no new asset: it collects into blue's
    assert collected == [f"{ENDPOINT}-blue-model_inputs", f"{ENDPOINT}-blue-model_outputs"]
    assert body["tags"]["retrain_decision"] == rec.id
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100}  # the new one starts at 0%
    assert azure.service.ledger.get_model(MODEL).flights["rollout"].job == rec.job["name"]  # type: ignore[index]


def test_creating_a_candidate_beside_a_data_collector_registers_each_collections_data_version(
    azure: AzureWorld,
) -> None:
    """The live deployment collects its inputs into its own data asset; its outputs collection names
    none. azure-ai-ml PUTs a data-asset version per collection while it creates the candidate: blue's
    for the inputs (it exists: 200), a new ``<endpoint>-<deployment>-model_outputs`` for the outputs
    (201), which the candidate then collects into. The identity needs data/versions/write for it."""
    from function_app.adapters import permissions

    live = azure.arm.deployments[(ENDPOINT, "blue")]["properties"]["dataCollector"]["collections"]
    del live["model_outputs"]["dataId"]
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "submitted"
    name = rec.details["rendered"]["deployment"]
    puts = {c.path: c.status for c in azure.arm.requests_to("PUT", r"^data/")}
    assert puts == {
        f"data/{ENDPOINT}-blue-model_inputs/versions/1": 200,
        f"data/{ENDPOINT}-{name}-model_outputs/versions/1": 201,
    }
    registered = azure.arm.data[(f"{ENDPOINT}-{name}-model_outputs", "1")]["properties"]
    assert registered["dataUri"].endswith(f"/modelDataCollector/{ENDPOINT}/{name}/model_outputs")
    collections = azure.arm.deployments[(ENDPOINT, name)]["properties"]["dataCollector"]["collections"]
    assert collections["model_outputs"]["dataId"] == azure.arm.arm_id(
        "data", f"{ENDPOINT}-{name}-model_outputs", "versions", "1"
    )
    granted = permissions.OPERATIONS["AzureMLActions.start_deploy"]
    for action in ("data/versions/write", "data/versions/read"):  # the PUTs above, and the adapter's data.get
        assert any(permissions.matches(g, f"{permissions.AML}/{action}") for g in granted), action


def test_a_candidate_created_while_the_endpoint_is_updating_waits_for_it_within_the_budget(
    azure: AzureWorld,
) -> None:
    """Azure ML refuses a deployment on an endpoint with an operation in progress (409 Conflict): the
    creation is retried as the update goes on, and made once it is done."""
    azure.arm.update_endpoint(ENDPOINT, seconds=10)
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "submitted"
    statuses = [c.status for c in azure.arm.requests_to("PUT", r"^onlineEndpoints/[^/]+/deployments/")]
    assert statuses[0] == 409 and statuses[-1] == 201 and set(statuses) == {409, 201}


def test_a_candidate_that_meets_a_long_endpoint_update_is_deferred_not_failed(azure: AzureWorld) -> None:
    azure.arm.update_endpoint(ENDPOINT, seconds=600)  # longer than a delivery's retry budget
    event = azure.finished_run(r2="0.61")
    with pytest.raises(TransientError, match="409"):
        azure.deliver(event)
    azure.clock.now += 600
    [rec] = azure.deliver(event).decisions  # Event Grid's redelivery
    assert rec.outcome == "submitted"


def test_an_endpoint_with_twenty_deployments_fails_the_deploy_saying_to_delete_some_or_raise_the_quota(
    azure: AzureWorld,
) -> None:
    for i in range(19):  # with blue: the 20 an endpoint may hold
        azure.arm.add_deployment(ENDPOINT, f"old-{i}", model=(MODEL, "3"))
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "failed"
    assert f"endpoint {ENDPOINT} already has 20 deployments, the most Azure ML allows per endpoint" in rec.reason
    assert "delete deployments it no longer needs" in rec.reason and "quota request" in rec.reason
    assert [c.status for c in azure.arm.requests_to("PUT", r"^onlineEndpoints/[^/]+/deployments/")] == [400]
    assert azure.clock.slept == []  # refused for good: not retried


def test_the_candidate_mounts_its_model_where_the_live_deployment_does(azure: AzureWorld) -> None:
    """azure-ai-ml 1.35 drops ``modelMountPath`` when it reads a deployment; the REST body has it, and
    the candidate gets the live deployment's (a custom container reads its model from there)."""
    azure.arm.deployments[(ENDPOINT, "blue")]["properties"]["modelMountPath"] = "/opt/models/diabetes"
    assert azure.actions.ml.online_deployments.get("blue", endpoint_name=ENDPOINT).model_mount_path is None  # SDK
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "submitted"
    [create] = azure.arm.requests_to("PUT", r"^onlineEndpoints/[^/]+/deployments/")
    assert create.body["properties"]["modelMountPath"] == "/opt/models/diabetes"
    name = rec.details["rendered"]["deployment"]
    ops = azure.actions.ml.online_deployments._online_deployment  # the REST answer, as Azure keeps it
    assert ops.get(RG, WS, ENDPOINT, name).properties.model_mount_path == "/opt/models/diabetes"


def test_a_run_that_does_not_beat_the_champion_is_recorded_with_both_metrics_and_the_margin(
    azure: AzureWorld,
) -> None:
    [rec] = azure.deliver(azure.finished_run(r2="0.525")).decisions
    assert (rec.action, rec.outcome, rec.job) == ("deploy", "skipped", None)
    assert "r2_score 0.525 does not beat champion sklearn_regression_model:3" in rec.reason
    assert "r2_score 0.52 by the margin 0.01" in rec.reason
    gate = rec.details["gate"]
    assert (gate["passed"], gate["candidate"], gate["champion"], gate["margin"]) == (False, 0.525, 0.52, 0.01)
    assert azure.arm.writes() == []
    assert "rollout" not in azure.service.ledger.get_model(MODEL).flights


def test_a_child_step_or_a_failed_run_starts_nothing(azure: AzureWorld) -> None:
    child_of_automl = in_workspace(RUN_SAMPLE)
    step_of_ours = run_event(tags=ours(MODEL), properties={"azureml.pipelinerunid": "parent"}, topic=WORKSPACE_ID)
    failed_of_ours = run_event(tags=ours(MODEL), status="Failed", topic=WORKSPACE_ID)
    for raw in (child_of_automl, step_of_ours, failed_of_ours):
        [rec] = azure.deliver(raw).decisions
        assert rec.outcome == "skipped", rec.reason
    assert azure.arm.calls == []


@pytest.mark.both_ledgers
def test_redelivery_after_a_crash_adopts_the_registered_model_and_the_started_deployment(
    azure: AzureWorld,
) -> None:
    raw = azure.finished_run(r2="0.61")
    with pytest.raises(WorkerDied):
        azure.deliver(raw, azure.new_worker(DiesAfterActing(azure.actions)))
    azure.now.advance(minutes=2)
    [rec] = azure.deliver(raw, azure.new_worker()).decisions
    assert (rec.outcome, rec.details["adopted"]) == ("submitted", True)
    assert len(azure.arm.requests_to("PUT", r"^models/")) == 1
    assert len(azure.arm.requests_to("PUT", r"^onlineEndpoints/")) == 1


def test_manual_deploy_of_a_version_gates_it_by_its_run_and_deploys_it(azure: AzureWorld) -> None:
    azure.arm.add_job("run-5", metrics={"r2_score": 0.7})  # logged with MLflow by the run
    azure.arm.add_model(MODEL, "5", job_name="run-5")
    request = ManualRequest(Trigger("http", "req-1", "ManualRequest.deploy"), MODEL, "deploy", "ops", version="5")
    rec = azure.service.manual(request)
    assert (rec.outcome, rec.details["gate"]["candidate"]) == ("submitted", 0.7)
    assert azure.arm.requests_to("PUT", r"^models/") == []
    [create] = azure.arm.requests_to("PUT", r"^onlineEndpoints/")
    assert create.body["properties"]["model"] == azure.arm.arm_id("models", MODEL, "versions", "5")


def test_a_gate_on_model_tags_judges_the_version_the_run_registered(azure: AzureWorld) -> None:
    run_id = "run-7"
    azure.arm.add_job(run_id)
    plan = DeployPlan(
        model=MODEL,
        endpoint=ENDPOINT,
        deployment="sklearn-regressio-7",
        run_id=run_id,
        version=None,
        source="run",
        tags={"retrain_decision": "de-7"},
        gate=GateRule(metric="r2_score", floor=0.4, margin=0.01, source="model"),
    )
    unregistered = gate.judge(plan.gate, azure.actions.candidate_facts(plan))
    assert unregistered.next == "skip"
    assert unregistered.why == (
        f"not rolled out: candidate run {run_id} (which registered no version of {MODEL}) "
        "has no numeric 'r2_score' in its model tags or properties"
    )
    azure.arm.add_model(MODEL, "6", tags={"r2_score": "0.7"}, job_name=run_id)
    facts = azure.actions.candidate_facts(plan)
    registered = gate.judge(plan.gate, facts)
    assert (registered.next, registered.gate.candidate if registered.gate else None) == ("deploy", 0.7)
    assert azure.actions.start_deploy(plan, facts).outcome == "submitted"
    assert azure.arm.requests_to("PUT", r"^models/") == []


def test_an_endpoint_without_live_traffic_has_nothing_to_copy_and_says_what_to_do(azure: AzureWorld) -> None:
    azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] = {}
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "failed"
    assert "has no deployment with traffic to copy" in rec.reason and "create the first deployment" in rec.reason
    assert azure.arm.writes() == []


def test_a_missing_endpoint_fails_the_decision_naming_the_policy_key(azure: AzureWorld) -> None:
    del azure.arm.endpoints[ENDPOINT]
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "failed"
    assert (
        "online endpoint 'diabetes-endpoint' not found in workspace ws-retrain; create it or fix models.sklearn_regression_model.deploy.endpoint"
        in rec.reason
    )


def test_the_client_is_built_on_first_use_and_only_once(azure: AzureWorld) -> None:
    builds: list[int] = []
    real = AzureMLActions.from_settings(azure.settings, credential=FakeCredential(), transport=azure.arm)
    factory = real.client.lazy.factory
    assert factory is not None and not real.client.lazy.built

    def counting() -> Any:
        builds.append(1)
        return factory()

    actions = AzureMLActions(counting, real.workspace, real.retry)
    assert builds == []
    assert actions.ml is actions.ml and builds == [1]


def _run(code: str, tmp_path: Path, **env: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "RETRAIN_SQLITE_PATH": str(tmp_path / "ledger.db"), **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_main_handling_a_dry_run_event_and_reconciling_leave_the_sdks_unloaded(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import main\n"
        "from function_app.runtime import get_retrainer\n"
        "from handlers.envelopes import parse_body\n"
        "from tests.conftest import SAMPLE_EVENTS\n"
        f"body = (SAMPLE_EVENTS / {DRIFT_SAMPLE!r}).read_text()\n"
        "worker = get_retrainer()\n"
        "[rec] = worker.service.handle_envelope(parse_body(body)[0]).decisions\n"
        "report = worker.reconcile()\n"
        "loaded = [m for m in ('azure.ai.ml', 'azure.monitor.query', 'azure.monitor.querymetrics') if m in sys.modules]\n"
        "sources = {k: v.name for k, v in worker.reconciler.stepper.online.sources.items()}\n"
        "print(json.dumps([rec.outcome, worker.backend, sources, loaded]))\n"
    )
    logs = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.OperationalInsights/workspaces/logs"
    assert _run(code, tmp_path, RETRAIN_BACKEND="dryrun", RETRAIN_LOG_ANALYTICS_WORKSPACE_ID=logs) == [
        "planned",
        "dryrun",
        {"metrics": "none", "logs": "logs"},
        [],
    ]


def test_choosing_the_azure_ml_backend_loads_the_sdk_only_when_it_acts(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from function_app.runtime import make_actions, make_credential\n"
        "from function_app.settings import Settings\n"
        "settings = Settings.from_env()\n"
        "actions = make_actions(settings, make_credential(settings))\n"
        "print(json.dumps([actions.name, 'azure.ai.ml' in sys.modules, 'azure.identity' in sys.modules]))\n"
    )
    workspace = {"AZUREML_SUBSCRIPTION_ID": SUB, "AZUREML_RESOURCE_GROUP": RG, "AZUREML_WORKSPACE_NAME": WS}
    assert _run(code, tmp_path, RETRAIN_BACKEND="azureml", **workspace) == ["azureml", False, False]


# --------------------------------------------------------------------------- the gate as a value


def test_a_dry_run_deploy_shows_the_gate_verdict_with_its_numbers_and_changes_nothing(azure: AzureWorld) -> None:
    azure.arm.add_job("train-8", metrics={"r2_score": 0.55})  # the run that produced version 8 logged it
    azure.arm.add_model(MODEL, "8", job_name="train-8")
    rec = azure.manual("deploy", version="8", dry_run=True)

    assert (rec.action, rec.outcome) == ("deploy", "planned")
    gate_verdict = rec.details["gate"]
    assert (gate_verdict["passed"], gate_verdict["candidate"], gate_verdict["champion"]) == (True, 0.55, 0.52)
    assert "beats champion sklearn_regression_model:3" in gate_verdict["why"]
    assert rec.details["candidate"]["champion"] == f"{MODEL}:3 ({ENDPOINT}/blue)"
    assert azure.arm.writes() == [] and azure.flights() == {}


def test_a_dry_run_deploy_of_a_worse_version_is_a_skip_with_both_numbers(azure: AzureWorld) -> None:
    azure.arm.add_job("train-9", metrics={"r2_score": 0.45})
    azure.arm.add_model(MODEL, "9", job_name="train-9")
    rec = azure.manual("deploy", version="9", dry_run=True)
    assert rec.outcome == "skipped" and rec.details["gate"]["passed"] is False
    assert "0.45 does not beat champion" in rec.reason and "0.52" in rec.reason
    assert azure.arm.writes() == []


def test_retrain_explain_prints_the_gate_verdict_for_a_finished_candidate_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from function_app.cli import main as cli

    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(tmp_path / "l.db"))
    assert cli(["explain", str(REPO / "examples" / "events" / "retrain-run-completed.eventgrid.json")]) == 0
    out = capsys.readouterr().out
    assert "decide  deploy model=sklearn_regression_model" in out
    gate_line = next(line for line in out.splitlines() if line.startswith("gate    "))
    assert gate_line.startswith(
        "gate    deploy (dryrun backend): candidate run retrain-sklearn-regression-model-example"
    )
    assert "r2_score 0.61 reaches the floor 0.4" in gate_line
    numbers = json.loads(out.split(gate_line, 1)[1].splitlines()[1])
    assert (numbers["passed"], numbers["candidate"], numbers["floor"]) == (True, 0.61, 0.4)


def test_a_literal_of_another_type_than_the_component_declares_fails_the_decision_naming_the_input(
    tmp_path: Path,
) -> None:
    from handlers.policy_file import parse_policy
    from tests.ledgers import LedgerSpec

    text = (REPO / "examples" / "policy.yaml").read_text()
    policy = parse_policy(text.replace("max_epochs: {value: 20, min: 1, max: 500}", 'max_epochs: "twenty"'))
    azure = AzureWorld(tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=policy)
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "failed"
    assert "input 'max_epochs' of pipeline component 'diabetes-retrain:3' is declared integer" in rec.reason
    assert (
        "gives str 'twenty'" in rec.reason and "models.sklearn_regression_model.retrain.inputs.max_epochs" in rec.reason
    )
    assert azure.arm.job_puts == []


# --------------------------------------------------------------------------- MLflow metrics


def test_the_gate_reads_the_evaluation_steps_mlflow_metric_at_the_workspace_tracking_uri(azure: AzureWorld) -> None:
    run_id = "retrain-sklearn-regression-model-0123456789abcdef"
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert (rec.outcome, rec.details["gate"]["candidate"], rec.details["gate"]["champion"]) == ("submitted", 0.61, 0.52)
    assert rec.details["candidate"]["candidate"] == f"run {run_id} (step evaluate_model: {azure.step_run})"

    base = f"/mlflow/v1.0{azure.arm.ws_path}/api/2.0/mlflow/"
    [get] = azure.arm.mlflow_calls("runs/get")
    assert (get.method, get.path, get.query) == ("GET", base + "runs/get", {"run_id": run_id})
    assert get.url.startswith(f"https://{azure.arm.mlflow_host}/mlflow/v1.0/subscriptions/")  # azureml:// -> https
    # the pipeline's steps, then each step's own (a sub-pipeline's: two levels, MlflowRuns.descendants)
    search, *below = azure.arm.mlflow_calls("runs/search")
    searched = [c.body["filter"].split("'")[1] for c in below]
    assert len(searched) == 2 and azure.step_run in searched  # train_model's and evaluate_model's
    assert search.method == "POST" and search.status == 200
    assert search.body["experiment_ids"] == [azure.arm.experiment_id("diabetes-retrain")]
    assert search.body["filter"] == f"tags.mlflow.parentRunId = '{run_id}'"  # as Azure ML documents it
    assert all(c.headers["Authorization"].startswith("Bearer ") for c in (get, search))
    [register] = azure.arm.requests_to("PUT", r"^models/")  # registered once, from the pipeline's output
    assert register.body["properties"]["tags"]["r2_score"] == "0.61"


def test_a_version_registered_by_a_pipeline_step_is_rolled_out_not_registered_again(azure: AzureWorld) -> None:
    [rec] = azure.deliver(azure.finished_run(r2="0.61", register_step=True)).decisions
    assert rec.outcome == "submitted"
    assert rec.details["candidate"]["candidate_version"] == f"{MODEL}:4"
    assert azure.arm.requests_to("PUT", r"^models/") == []
    [create] = azure.arm.requests_to("PUT", r"^onlineEndpoints/[^/]+/deployments/")
    assert create.body["properties"]["model"] == azure.arm.arm_id("models", MODEL, "versions", "4")


def test_a_worse_step_metric_is_a_recorded_skip_with_both_numbers_and_nothing_is_registered(
    azure: AzureWorld,
) -> None:
    [rec] = azure.deliver(azure.finished_run(r2="0.5", register_step=True)).decisions
    assert rec.outcome == "skipped"
    assert "r2_score 0.5 does not beat champion sklearn_regression_model:3" in rec.reason and "0.52" in rec.reason
    assert (rec.details["gate"]["candidate"], rec.details["gate"]["champion"]) == (0.5, 0.52)
    assert azure.arm.writes() == []


def test_without_a_step_the_gate_reads_the_pipeline_runs_own_mlflow_metric(azure: AzureWorld) -> None:
    azure.arm.add_job("pipe-1", experiment="diabetes-retrain", metrics={"r2_score": 0.58})
    verdict = gate.judge(
        gated_run_plan("pipe-1", None).gate, azure.actions.candidate_facts(gated_run_plan("pipe-1", None))
    )
    assert (verdict.next, verdict.gate.candidate if verdict.gate else None) == ("deploy", 0.58)


def test_a_step_the_pipeline_does_not_have_is_a_skip_that_names_its_steps(azure: AzureWorld) -> None:
    azure.arm.add_job("pipe-2", experiment="diabetes-retrain", metrics={"r2_score": 0.9})
    azure.arm.add_step("pipe-2", "train_model", metrics={"r2_score": 0.9})
    plan = gated_run_plan("pipe-2", "evaluate_model")
    verdict = gate.judge(plan.gate, azure.actions.candidate_facts(plan))
    assert verdict.next == "skip"
    assert verdict.why == (
        "not rolled out: candidate run pipe-2 (step 'evaluate_model' not found; steps: train_model) "
        "has no numeric 'r2_score' in its MLflow metrics of step 'evaluate_model'"
    )


def test_the_champions_metric_comes_from_its_source_runs_mlflow_metrics_when_untagged(azure: AzureWorld) -> None:
    azure.arm.add_job("champ-run", metrics={"r2_score": 0.7})
    azure.arm.add_model(MODEL, "3", job_name="champ-run")  # the live version, without the tag
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "skipped" and (rec.details["gate"]["champion"], rec.details["gate"]["candidate"]) == (
        0.7,
        0.61,
    )


def test_a_champion_served_from_a_registry_is_a_recorded_skip_that_says_so(azure: AzureWorld) -> None:
    ref = "azureml://registries/shared-models/models/sklearn_regression_model/versions/2"
    azure.arm.deployments[(ENDPOINT, "blue")]["properties"]["model"] = ref
    [rec] = azure.deliver(azure.finished_run(r2="0.61")).decisions
    assert rec.outcome == "skipped"
    assert "served from registry 'shared-models'" in rec.reason and "compare them by hand" in rec.reason
    assert azure.arm.requests_to("GET", r"^models/sklearn_regression_model/versions/2$") == []
    assert azure.arm.writes() == []


def test_the_candidate_starts_with_deploy_instance_count_and_an_mlflow_model_gets_no_environment(
    azure: AzureWorld,
) -> None:
    azure.arm.add_job("run-mlflow", metrics={"r2_score": 0.7})
    azure.arm.add_model(MODEL, "6", job_name="run-mlflow", kind="mlflow_model")
    live = azure.arm.deployments[(ENDPOINT, "blue")]["properties"]
    del live["codeConfiguration"]  # a no-code MLflow deployment: MLflow scores it
    plan = DeployPlan(
        model=MODEL,
        endpoint=ENDPOINT,
        deployment="sklearn-regressio-6",
        run_id=None,
        version="6",
        source="manual",
        tags={"retrain_decision": "de-6"},
        gate=GateRule(metric="r2_score", source="mlflow"),
        instance_count=1,
    )
    facts = azure.actions.candidate_facts(plan)
    assert azure.actions.start_deploy(plan, facts).outcome == "submitted"
    [create] = azure.arm.requests_to("PUT", r"^onlineEndpoints/[^/]+/deployments/")
    assert create.body["sku"]["capacity"] == 1 and azure.arm.deployments[(ENDPOINT, "blue")]["sku"]["capacity"] == 2
    assert "environmentId" not in create.body["properties"] and "codeConfiguration" not in create.body["properties"]
    assert create.body["properties"]["dataCollector"]["collections"]["model_inputs"]["dataId"].endswith(
        "/data/diabetes-endpoint-blue-model_inputs/versions/1"
    )


def test_a_champion_registered_by_a_pipeline_step_is_judged_on_the_steps_run(azure: AzureWorld) -> None:
    """The champion's version names a pipeline step's run as its job (``mlflow.register_model`` in the
    step). Azure ML's jobs API answers a step without properties, and the SDK reads it from run history:
    its tags (here the metric the step logged as a tag) are the champion's facts with ``source: run``."""
    azure.arm.add_job("retrain-earlier", experiment="diabetes-retrain")
    step = azure.arm.add_step("retrain-earlier", "register_model", tags={"r2_score": "0.55"})
    azure.arm.add_model(MODEL, "5", job_name=step)
    azure.arm.deployments[(ENDPOINT, "blue")]["properties"]["model"] = azure.arm.arm_id(
        "models", MODEL, "versions", "5"
    )
    plan = DeployPlan(
        model=MODEL,
        endpoint=ENDPOINT,
        deployment="sklearn-regressio-3",
        run_id=None,
        version="3",
        source="manual",
        tags={"retrain_decision": "de-3"},
        gate=GateRule(metric="r2_score", source="run"),
        instance_count=1,
    )
    facts = azure.actions.candidate_facts(plan)
    assert facts.champion_version is not None and facts.champion_version.label == f"{MODEL}:5"
    assert facts.champion_metrics is not None and facts.champion_metrics["r2_score"] == "0.55"
    assert facts.champion_metrics["azureml.pipelinerunid"] == "retrain-earlier"  # the step's run properties
    assert facts.notes == ()
    [history] = [c for c in azure.arm.calls if c.path.startswith("/history/")]
    assert history.path.endswith(f"/runs/{step}") and history.status == 200


# --------------------------------------------------------------------------- identity and roles


class _NoToken:
    """A credential as DefaultAzureCredential fails with a wrong AZURE_CLIENT_ID: no status, no wire error."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise core_exceptions.ClientAuthenticationError(
            "DefaultAzureCredential failed to retrieve a token from the included credentials."
        )


def test_a_wrong_client_id_fails_the_decision_once_with_what_to_check(azure: AzureWorld) -> None:
    actions = AzureMLActions.from_settings(
        azure.settings, credential=_NoToken(), retry=azure.retry, transport=azure.arm
    )
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE), azure.new_worker(actions)).decisions
    assert rec.outcome == "failed"
    assert "AZURE_CLIENT_ID" in rec.reason and "AzureML Data Scientist" in rec.reason
    assert azure.clock.slept == []  # not retried: no retry mends a configuration fault


def test_a_403_in_the_first_hour_is_retried_while_roles_propagate_then_recorded(azure: AzureWorld) -> None:
    azure.arm.fail(403, method="GET", path=r"^components/", times=1000, code="AuthorizationFailed", message="no access")
    with pytest.raises(TransientError, match="take up to an hour to take effect"):
        azure.deliver(in_workspace(DRIFT_SAMPLE))
    azure.clock.now += 3600
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert rec.outcome == "failed" and "grant the function app's managed identity a role" in rec.reason


def _from_rest_object(check: Any) -> bool:
    """Named as the SDK's converters from a REST answer are, which its experimental check looks for."""
    return bool(check())


def _elsewhere(check: Any) -> bool:
    return bool(check())


def test_the_sdk_experimental_check_is_replaced_by_one_that_gives_its_answers_without_reading_the_stack(
    azure: AzureWorld,
) -> None:
    """Reading a deployment with a data collector makes azure-ai-ml ask four times whether a
    ``_from_rest_object`` is calling, with ``inspect.stack()`` (most of a rollout pass's CPU): the
    backend puts a frame walk in its place when it builds its client, and both answer alike."""
    from azure.ai.ml._utils import _experimental

    from function_app.adapters.azureml import client as azureml

    assert azure.actions.ml is not None  # the first action builds the client
    assert _experimental._should_skip_warning is azureml._from_rest_object_is_calling
    [sdk_check] = azureml._REPLACED
    assert "inspect.stack()" in inspect.getsource(sdk_check)  # the SDK's own, kept for this comparison
    for check in (sdk_check, azureml._from_rest_object_is_calling):
        assert (_from_rest_object(check), _elsewhere(check)) == (True, False)
    azureml._cheaper_experimental_check()  # a second client replaces nothing more
    assert [sdk_check] == azureml._REPLACED
