"""A finished run's event, forged with an events key (or a webhook someone else can post to): the event names a
run by its id and says what it is (its experiment, its status, its tags). What the service deploys must be what
the workspace says the run is, never what the event says: a run of an experiment the policy's `candidates` do
not admit, or one that did not complete, is not deployed whatever its event claims. Through the real Azure ML
SDK against the fake ARM (docs/security.md, "What was attacked")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.azure_world import ENDPOINT, AzureWorld
from tests.builders import ADA_TOKEN, MODEL, run_event
from tests.fake_arm_common import run_history_user

ADMITTED = "diabetes-retrain"  # the example policy's candidates.experiments


def scratch_run(azure: AzureWorld, run_id: str, experiment: str, status: str = "Completed") -> None:
    """A run someone left in the workspace, with a model output and a step that logged a fine metric."""
    azure.arm.add_job(run_id, experiment=experiment, status=status)
    azure.arm.add_step(run_id, "evaluate_model", metrics={"r2_score": 0.99})


def forged(azure: AzureWorld, run_id: str, **data: Any) -> dict[str, Any]:
    return run_event(run_id=run_id, experiment=ADMITTED, topic=azure.workspace_id, event_id=f"forged-{run_id}", **data)


def deployed(azure: AzureWorld) -> list[str]:
    return [name for (endpoint, name) in azure.arm.deployments if endpoint == ENDPOINT]


@pytest.mark.parametrize(
    ("experiment", "status", "says"),
    [
        ("scratch", "Completed", "is in experiment 'scratch', not 'diabetes-retrain'"),
        (ADMITTED, "Failed", "is Failed in the workspace, not Completed"),
        (ADMITTED, "Running", "is Running in the workspace, not Completed"),
    ],
)
def test_a_run_event_that_misstates_the_run_deploys_nothing(
    azure: AzureWorld, experiment: str, status: str, says: str
) -> None:
    before = deployed(azure)
    scratch_run(azure, "scratch-42", experiment, status)

    [rec] = azure.deliver(forged(azure, "scratch-42")).decisions

    assert (rec.action, rec.outcome) == ("deploy", "skipped"), rec.reason
    assert f"run scratch-42 {says}" in rec.reason and "not rolled out" in rec.reason
    assert deployed(azure) == before
    assert not [m for m in azure.arm.models if m[0] == MODEL and m[1] not in {"1", "2", "3"}]  # nothing registered


def test_a_run_event_naming_a_pipeline_step_as_a_top_level_run_deploys_nothing(azure: AzureWorld) -> None:
    """A step's event carries its parent; a forged one leaves it out to pass a training step's own model off as
    a candidate, judged on its own metrics."""
    before = deployed(azure)
    azure.arm.add_job("pipe-1", experiment=ADMITTED)
    step = azure.arm.add_step("pipe-1", "train_model", metrics={"r2_score": 0.99})

    [rec] = azure.deliver(forged(azure, step)).decisions

    assert (rec.action, rec.outcome) == ("deploy", "skipped"), rec.reason
    assert f"run {step} is a step of pipeline run pipe-1 in the workspace" in rec.reason
    assert deployed(azure) == before


def test_a_run_event_claiming_tags_the_run_does_not_carry_deploys_nothing(azure: AzureWorld) -> None:
    """`candidates.tags` (or a gate read from the run's tags) judged on what the workspace holds, not the event."""
    before = deployed(azure)
    scratch_run(azure, "tagged-7", ADMITTED)

    [rec] = azure.deliver(forged(azure, "tagged-7", tags={"r2_score": "0.99", "approved": "yes"})).decisions

    assert (rec.action, rec.outcome) == ("deploy", "skipped"), rec.reason
    assert "run tagged-7 does not carry the tags its event names (approved, r2_score)" in rec.reason
    assert deployed(azure) == before


def test_a_run_event_that_states_the_run_as_the_workspace_does_is_still_judged_and_rolled_out(
    azure: AzureWorld,
) -> None:
    scratch_run(azure, "honest-1", ADMITTED)
    [rec] = azure.deliver(forged(azure, "honest-1")).decisions
    assert (rec.action, rec.outcome) == ("deploy", "submitted"), rec.reason


def test_a_forged_completion_sent_before_the_run_ends_does_not_stop_its_deploy_once_it_completes(
    azure: AzureWorld,
) -> None:
    """The skip is not final (``guard: not_as_told``): the run's real completion is judged again, not answered
    with the forged event's skip, so telling of a run first cannot deny its deploy."""
    scratch_run(azure, "early-3", ADMITTED, status="Running")
    [early] = azure.deliver(forged(azure, "early-3")).decisions
    assert (early.outcome, early.details.get("guard")) == ("skipped", "not_as_told"), early.reason

    azure.arm.set_job_status("early-3", "Completed")
    real = run_event(run_id="early-3", experiment=ADMITTED, topic=azure.workspace_id, event_id="real-early-3")
    [rec] = azure.deliver(real).decisions

    assert (rec.id, rec.outcome) == (early.id, "submitted"), rec.reason


def test_an_mlflow_run_posing_as_a_step_of_the_service_s_pipeline_does_not_judge_its_candidate(
    azure: AzureWorld,
) -> None:
    """A workspace account logs an MLflow run under the service's own pipeline run (the tag
    `mlflow.parentRunId`, which MLflow lets a run's creator set) named as the gate's step, with a better
    metric than the real step logged: which of the two is the pipeline's step cannot be told, so neither
    judges the candidate."""
    before = deployed(azure)
    event = azure.finished_run("0.41")  # the real evaluate_model step: worse than the champion
    run_id = event["data"]["runId"]
    azure.arm.log_mlflow_run(
        "posing-step", experiment=ADMITTED, name="evaluate_model", parent=run_id, metrics={"r2_score": 0.99}
    )
    azure.arm.mlflow_runs["posing-step"]["info"]["start_time"] += 60_000  # logged after the pipeline's own steps

    [rec] = azure.deliver(event).decisions

    assert (rec.action, rec.outcome) == ("deploy", "skipped"), rec.reason
    assert f"2 MLflow runs under pipeline run {run_id} are named 'evaluate_model'" in rec.reason
    assert deployed(azure) == before


def test_a_version_registered_from_a_run_posing_as_a_step_is_not_rolled_out_as_the_candidate(
    azure: AzureWorld,
) -> None:
    """Ada logs a run under the service's pipeline run (any name) and registers her model from it: a step is
    the pipeline's only when run history says its creator is the pipeline's, so her version is not the
    candidate; the service registers the pipeline's own output instead."""
    event = azure.finished_run("0.71")  # a better candidate, whose pipeline registers no version itself
    run_id = event["data"]["runId"]
    posing = azure.arm.add_step(run_id, "helper")
    azure.arm.steps[posing]["createdBy"] = run_history_user(ADA_TOKEN)  # run history records who created it
    azure.arm.add_model(MODEL, "9", job_name=posing)

    [rec] = azure.deliver(event).decisions

    assert rec.outcome == "submitted", rec.reason
    served = {str(d["properties"]["model"]) for (e, _), d in azure.arm.deployments.items() if e == ENDPOINT}
    assert not any(m.endswith("/versions/9") for m in served)
    assert any(m.endswith("/versions/10") for m in served)  # registered from the pipeline's output
    assert azure.arm.models[(MODEL, "10")]["properties"]["jobName"] == run_id


def test_a_version_registered_by_the_pipeline_s_own_step_is_its_candidate(azure: AzureWorld) -> None:
    event = azure.finished_run("0.71", register_step=True)
    [rec] = azure.deliver(event).decisions
    assert rec.outcome == "submitted", rec.reason
    served = {str(d["properties"]["model"]) for (e, _), d in azure.arm.deployments.items() if e == ENDPOINT}
    assert any(m.endswith("/versions/4") for m in served)  # the step's version, none registered beside it
    assert sorted(v for n, v in azure.arm.models if n == MODEL) == ["3", "4"]


def test_a_gate_read_from_the_run_takes_its_figures_from_the_workspace_not_from_properties_its_event_adds(
    azure: AzureWorld,
) -> None:
    """`gate.source: run` reads the run's tags and properties. An event's `runProperties` are anyone's to write
    with the events key, as its tags are; the tags are held to the workspace's, so the properties must be too:
    a figure only the event carries is no figure of the run."""
    from handlers.gate_rules import GateRule
    from handlers.plans import DeployPlan

    azure.arm.add_job("props-5", experiment=ADMITTED, tags={"stage": "candidate"})
    plan = DeployPlan(
        model=MODEL,
        endpoint=ENDPOINT,
        deployment="sklearn-regressio-5",
        run_id="props-5",
        version=None,
        source="run",
        tags={"retrain_decision": "de-5"},
        run_tags={"stage": "candidate"},
        run_properties={"r2_score": "0.99"},  # the event's claim; the workspace's run holds no such property
        gate=GateRule(metric="r2_score", source="run"),
        experiment=ADMITTED,
    )

    facts = azure.actions.candidate_facts(plan)

    assert "r2_score" not in facts.candidate_metrics, facts.candidate_metrics
    assert facts.candidate_metrics.get("stage") == "candidate"  # the workspace's own tag is still read
