"""The Azure ML backend's gate: its verdict as a value (dry runs, ``retrain explain``) and the MLflow
metrics it reads, of the pipeline run, its steps and the champion's source run. As in
tests/test_azureml_actions.py, the real SDK talks to the fake ARM and no test waits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers import gate
from tests.azure_world import (
    DRIFT_SAMPLE,
    ENDPOINT,
    MODEL,
    AzureWorld,
    in_workspace,
)
from tests.builders import gated_run_plan, gated_version_plan
from tests.conftest import REPO

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
    plan = gated_version_plan("6", source="mlflow")
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
    plan = gated_version_plan("3", source="run")
    facts = azure.actions.candidate_facts(plan)
    assert facts.champion_version is not None and facts.champion_version.label == f"{MODEL}:5"
    assert facts.champion_metrics is not None and facts.champion_metrics["r2_score"] == "0.55"
    assert facts.champion_metrics["azureml.pipelinerunid"] == "retrain-earlier"  # the step's run properties
    assert facts.notes == ()
    [history] = [c for c in azure.arm.calls if c.path.startswith("/history/")]
    assert history.path.endswith(f"/runs/{step}") and history.status == 200
