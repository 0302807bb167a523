"""The Azure ML backend deploying: a finished run that beats the champion becomes a zero-traffic
candidate deployment, through RetrainService and the real SDK to a fake ARM. As in
tests/test_azureml_actions.py, the real SDK talks to the fake ARM and no test waits."""

from __future__ import annotations

import pytest

from handlers import gate
from handlers.errors import TransientError
from handlers.gate_rules import GateRule
from handlers.plans import DeployPlan
from handlers.signals import ManualRequest, Trigger
from tests.azure_world import (
    ENDPOINT,
    MODEL,
    RG,
    RUN_SAMPLE,
    WORKSPACE_ID,
    WS,
    AzureWorld,
    DiesAfterActing,
    WorkerDied,
    in_workspace,
)
from tests.builders import ours, run_event

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
