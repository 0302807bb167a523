"""The gate's named step (``deploy.gate.step``) inside a sub-pipeline: a pipeline component's steps are MLflow
runs whose ``mlflow.parentRunId`` is the component's run, not the pipeline's. The gate reads the pipeline's steps
and theirs (two levels, as the veto reads a monitor run's, by the same bounded search); a step it cannot read,
deeper or beyond the search bound, or named twice, is a refusal that says so, never a pass."""

from __future__ import annotations

from function_app.adapters.mlflow_metrics import DEPTH, MAX_SEARCHES
from handlers import gate
from tests.azure_world import AzureWorld
from tests.builders import gated_run_plan


def judged(azure: AzureWorld, run_id: str) -> gate.CandidateVerdict:
    chosen = gated_run_plan(run_id, "evaluate_model", n=9)
    assert chosen.gate is not None
    return gate.judge(chosen.gate, azure.actions.candidate_facts(chosen))


def test_the_gate_reads_its_named_step_inside_a_sub_pipeline(azure: AzureWorld) -> None:
    azure.arm.add_job("pipe-nested", experiment="diabetes-retrain")
    azure.arm.add_step("pipe-nested", "prepare", metrics={"r2_score": 0.1})
    component = azure.arm.add_step("pipe-nested", "train_and_evaluate")  # a pipeline component's run
    azure.arm.add_step(component, "train_model", metrics={"r2_score": 0.2})
    evaluated = azure.arm.add_step(component, "evaluate_model", metrics={"r2_score": 0.58})

    verdict = judged(azure, "pipe-nested")

    assert verdict.next == "deploy", verdict.why
    assert verdict.gate is not None and verdict.gate.candidate == 0.58
    assert f"step evaluate_model: {evaluated}" in verdict.why  # the step's own run, named


def test_a_step_named_in_the_pipeline_and_in_a_sub_pipeline_judges_nothing(azure: AzureWorld) -> None:
    """Two MLflow runs under the pipeline bear the step's name, one level apart: which is the pipeline's step cannot
    be told (whoever creates an MLflow run sets its parent), so neither is judged, as at one level."""
    azure.arm.add_job("pipe-both", experiment="diabetes-retrain")
    component = azure.arm.add_step("pipe-both", "sub")
    azure.arm.add_step(component, "evaluate_model", metrics={"r2_score": 0.9})
    azure.arm.add_step("pipe-both", "evaluate_model", metrics={"r2_score": 0.3})

    verdict = judged(azure, "pipe-both")

    assert (
        verdict.next == "skip"
        and "2 MLflow runs under pipeline run pipe-both are named 'evaluate_model'" in verdict.why
    )


def test_a_step_deeper_than_the_gate_reads_is_a_refusal_that_names_the_steps_read(azure: AzureWorld) -> None:
    azure.arm.add_job("pipe-deep", experiment="diabetes-retrain")
    parent = "pipe-deep"
    for level in range(DEPTH):
        parent = azure.arm.add_step(parent, f"level_{level}")
    azure.arm.add_step(parent, "evaluate_model", metrics={"r2_score": 0.9})  # one level below what is read

    verdict = judged(azure, "pipe-deep")

    assert verdict.next == "skip"
    assert "step 'evaluate_model' not found; steps: level_0, level_1" in verdict.why
    assert "has no numeric 'r2_score'" in verdict.why


def test_a_pipeline_with_more_steps_than_the_gate_searches_is_refused_not_passed(azure: AzureWorld) -> None:
    azure.arm.add_job("pipe-wide", experiment="diabetes-retrain")
    azure.arm.add_step("pipe-wide", "evaluate_model", metrics={"r2_score": 0.9})  # would pass, if it were read
    for i in range(MAX_SEARCHES):
        azure.arm.add_step("pipe-wide", f"shard_{i}")

    verdict = judged(azure, "pipe-wide")

    assert verdict.next == "skip"
    assert f"more than {MAX_SEARCHES} searches" in verdict.why
    assert "has no numeric 'r2_score'" in verdict.why
