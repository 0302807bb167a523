"""decide() is pure: signals and a policy in, decisions with reasons out. No fakes needed."""

from __future__ import annotations

import ast
import inspect
import json
import re
from typing import Any

import pytest

from handlers.decisions import decide
from handlers.envelopes import parse_body, to_signal, workspace_key
from handlers.errors import InvalidInput
from handlers.inputs import check_manual
from handlers.plans import Deploy, Retrain, Skip
from handlers.policy import Policy
from handlers.signals import ManualRequest, Trigger
from tests.builders import EXAMPLE_POLICY, MODEL, WORKSPACE, breach_event, drift_event, event, ours, run_event
from tests.conftest import REPO


def decisions_for(raw: dict[str, Any]) -> list[Any]:
    [env] = parse_body(json.dumps([raw]))
    return decide(to_signal(env, frozenset({workspace_key(WORKSPACE)})), EXAMPLE_POLICY)


def manual(model: str = MODEL, action: str = "retrain", **kw: Any) -> list[Any]:
    req = ManualRequest(Trigger("http", "req-1", "ManualRequest." + action), model, action, "because", **kw)
    return decide(req, EXAMPLE_POLICY)


def test_drift_above_threshold_retrains_the_model_that_listens() -> None:
    [d] = decisions_for(drift_event(coefficient=0.4))
    assert isinstance(d, Retrain) and d.model == MODEL
    assert "coefficient 0.4" in d.reason and "min_coefficient 0.3" in d.reason


def test_drift_below_threshold_is_skipped_with_both_numbers() -> None:
    [d] = decisions_for(drift_event(coefficient=0.1))
    assert isinstance(d, Skip) and d.model == MODEL
    assert "0.100 is below the policy's min_coefficient 0.3" in d.reason


def test_drift_from_an_unknown_monitor_names_the_monitor() -> None:
    [d] = decisions_for(drift_event(monitor="otherMonitor"))
    assert isinstance(d, Skip) and "'otherMonitor'" in d.reason


def test_retrain_job_is_rendered_with_the_policy_inputs() -> None:
    [d] = decisions_for(drift_event(event_id="e-1"))
    job = d.job.as_dict()
    assert job["component"] == "diabetes-retrain:3"
    assert job["experiment_name"] == "diabetes-retrain" and job["compute"] == "cpu-cluster"
    assert job["inputs"]["training_data"] == {
        "type": "mltable",
        "value": "azureml:diabetes-training@latest",
        "from": "policy",
    }
    assert job["inputs"]["learning_rate"] == {"type": "literal", "value": 0.01, "from": "policy"}
    assert job["tags"]["retrain_model"] == MODEL and job["tags"]["retrain_decision"] == d.id
    assert job["name"] == "retrain-sklearn-regression-model-" + d.id.split("-", 1)[1]


def _from_event_policy(fallback: str | None) -> Policy:
    spec: dict[str, Any] = {"type": "mltable", "from_event": "TargetDatasetId"}
    if fallback is not None:
        spec["value"] = fallback
    return Policy.model_validate(
        {
            "models": {
                MODEL: {
                    "drift": {"monitors": ["myDriftMonitor"], "signals": ["feature-drift"]},
                    "retrain": {"pipeline": "diabetes-retrain:3", "inputs": {"training_data": spec}},
                }
            }
        }
    )


def test_a_v1_drift_events_dataset_id_is_not_taken_for_a_data_asset_name() -> None:
    [env] = parse_body(json.dumps([drift_event(event_id="e-2")]))
    signal = to_signal(env, frozenset({workspace_key(WORKSPACE)}))
    [with_fallback] = decide(signal, _from_event_policy("azureml:diabetes-training@latest"))
    assert isinstance(with_fallback, Retrain)
    assert with_fallback.job.inputs["training_data"] == {
        "type": "mltable",
        "value": "azureml:diabetes-training@latest",
        "from": "policy (the event's TargetDatasetId is a v1 dataset id)",
    }
    [without] = decide(signal, _from_event_policy(None))
    assert isinstance(without, Skip)
    assert "'target-ds' from an SDK v1 data-drift event is a v1 dataset id, not a data asset name" in without.reason


def test_same_event_gives_the_same_decision_and_job_name() -> None:
    e = drift_event()
    [a], [b] = decisions_for(e), decisions_for(dict(e))
    assert (a.id, a.job.name) == (b.id, b.job.name)
    [c] = decisions_for(drift_event())
    assert c.id != a.id


def test_v2_breach_retrains_the_model_listening_to_that_monitor_and_signal() -> None:
    [d] = decisions_for(breach_event(signal="churn-data-drift", experiment="churn-monitor"))
    assert isinstance(d, Retrain) and d.model == "churn-classifier"


def test_a_breach_tag_on_a_run_of_a_monitor_the_policy_does_not_name_is_a_skip() -> None:
    """Anyone who can tag a run can write the breach tag: only the monitors the policy names count."""
    [d] = decisions_for(breach_event(signal="churn-data-drift", experiment="my-own-experiment"))
    assert isinstance(d, Skip) and "no model in the policy listens to drift monitor 'my-own-experiment'" in d.reason


def test_a_breach_of_a_signal_the_model_does_not_list_is_a_skip() -> None:
    [d] = decisions_for(breach_event(signal="some-other-signal", experiment="churn-monitor"))
    assert isinstance(d, Skip) and d.model is None


def test_a_run_this_service_started_never_triggers_a_retrain() -> None:
    [d] = decisions_for(breach_event(tags=ours("churn-classifier")))
    assert isinstance(d, Skip) and "never retrains from its own runs" in d.reason


def test_completed_top_level_run_of_ours_is_a_deploy_candidate() -> None:
    [d] = decisions_for(run_event(run_id="retrain-x", tags=ours()))
    assert isinstance(d, Deploy) and d.model == MODEL
    assert d.plan.run_id == "retrain-x" and d.plan.endpoint == "diabetes-endpoint"
    assert d.plan.deployment[0].isalpha() and len(d.plan.deployment) <= 32


def test_child_step_completion_is_not_a_candidate() -> None:
    [d] = decisions_for(run_event(run_id="step", tags=ours(), properties={"azureml.pipelinerunid": "parent"}))
    assert isinstance(d, Skip) and "top-level" in d.reason


def test_failed_retraining_run_is_recorded_not_deployed() -> None:
    [d] = decisions_for(run_event(tags=ours(), status="Failed"))
    assert isinstance(d, Skip) and "ended failed" in d.reason and d.model == MODEL


def test_unrelated_run_is_skipped_with_reason() -> None:
    [d] = decisions_for(run_event(experiment="someone-elses-experiment"))
    assert isinstance(d, Skip) and "not started by this service" in d.reason


def test_run_in_a_candidate_experiment_named_by_the_policy_is_a_candidate() -> None:
    [d] = decisions_for(run_event(experiment="diabetes-retrain"))
    assert isinstance(d, Deploy) and d.model == MODEL


def test_registration_is_recorded_unless_the_policy_deploys_on_registration() -> None:
    [d] = decisions_for(event("ModelRegistered", {"ModelName": MODEL, "ModelVersion": 7}))
    assert isinstance(d, Skip) and "does not deploy" in d.reason


def test_manual_retrain_uses_overrides_that_the_policy_allows() -> None:
    [d] = manual(inputs={"learning_rate": 0.5})
    assert isinstance(d, Retrain)
    assert d.job.inputs["learning_rate"] == {"type": "literal", "value": 0.5, "from": "request"}
    assert d.job.inputs["training_data"]["value"] == "azureml:diabetes-training@latest"


def test_manual_retrain_refuses_inputs_the_policy_does_not_allow_before_anything_is_claimed() -> None:
    request = ManualRequest(
        Trigger("http", "req-1", "ManualRequest.retrain"), MODEL, "retrain", "because", inputs={"training_data": "x"}
    )
    says = r"'training_data' may not be overridden.*overridable: learning_rate, max_epochs"
    with pytest.raises(InvalidInput, match=says):
        check_manual(request, EXAMPLE_POLICY)
    [d] = manual(inputs={"training_data": "azureml:mine:1"})  # decide itself never raises: a skip that says why
    assert isinstance(d, Skip) and re.search(says, d.reason)


def test_an_event_value_of_the_wrong_type_for_an_input_is_a_skip_naming_the_input_and_the_fix() -> None:
    raw = drift_event()
    raw["data"]["TargetDatasetId"] = 12345
    [env] = parse_body(json.dumps([raw]))
    [d] = decide(to_signal(env, frozenset({workspace_key(WORKSPACE)})), _from_event_policy(None))
    assert isinstance(d, Skip) and d.model == MODEL and d.details == {"input": "training_data"}
    assert "input 'training_data' is of type mltable" in d.reason and "gave int '12345'" in d.reason
    assert "models.sklearn_regression_model.retrain.inputs.training_data" in d.reason


def test_decide_is_given_no_time_and_its_module_reads_no_clock() -> None:
    """Time-dependent rules (cooldown, budget) are guards applied with the ledger: decide takes no
    ``now`` (it had one it never read), and nothing in its modules (the rules, the input checks, the
    plans) reads a clock or does I/O."""
    assert "now" not in inspect.signature(decide).parameters
    for module in ("decisions.py", "inputs.py", "plans.py"):
        tree = ast.parse((REPO / "handlers" / module).read_text())
        called = {
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
        }
        assert not called & {"now", "utcnow", "today", "time", "monotonic", "open", "urlopen", "read_text"}, module
