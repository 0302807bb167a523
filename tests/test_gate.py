"""The candidate gate as a pure function: the numbers in, a verdict with the numbers out."""

from __future__ import annotations

import json

from handlers.decisions import decide
from handlers.envelopes import parse_body, to_signal
from handlers.gate import evaluate, metric_value
from handlers.gate_rules import GateRule
from handlers.plans import Deploy
from handlers.policy_file import load_policy
from tests.builders import ours, run_event
from tests.conftest import REPO

R2 = GateRule(metric="r2_score", floor=0.4, margin=0.01)


def test_candidate_that_beats_the_champion_by_the_margin_passes() -> None:
    verdict = evaluate(R2, {"r2_score": "0.60"}, {"r2_score": "0.52"})
    assert verdict.passed
    assert (verdict.candidate, verdict.champion, verdict.floor, verdict.margin) == (0.60, 0.52, 0.4, 0.01)


def test_candidate_short_of_the_margin_fails_naming_both_metrics_and_the_margin() -> None:
    verdict = evaluate(R2, {"r2_score": "0.525"}, {"r2_score": "0.52"}, champion_name="champion m:3")
    assert not verdict.passed
    assert verdict.why == (
        "candidate r2_score 0.525 does not beat champion m:3 r2_score 0.52 by the margin 0.01 (higher is better)"
    )


def test_candidate_equal_to_the_champion_fails_even_without_a_margin() -> None:
    rule = GateRule(metric="auc", margin=0.0)
    assert not evaluate(rule, {"auc": 0.9}, {"auc": 0.9}).passed
    assert evaluate(rule, {"auc": 0.9001}, {"auc": 0.9}).passed


def test_candidate_below_the_floor_fails_whatever_the_champion() -> None:
    verdict = evaluate(R2, {"r2_score": "0.35"}, {"r2_score": "0.1"})
    assert not verdict.passed
    assert "does not reach the floor 0.4" in verdict.why


def test_candidate_at_the_floor_reaches_it() -> None:
    assert evaluate(R2, {"r2_score": 0.4}, None).passed


def test_without_a_champion_the_floor_alone_decides() -> None:
    verdict = evaluate(R2, {"r2_score": "0.45"}, None)
    assert verdict.passed and verdict.champion is None
    assert "no live deployment to compare with" in verdict.why


def test_champion_without_the_metric_leaves_the_decision_to_the_floor() -> None:
    verdict = evaluate(R2, {"r2_score": "0.45"}, {"accuracy": "0.9"})
    assert verdict.passed
    assert "champion carries no numeric 'r2_score'" in verdict.why


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    rmse = GateRule(metric="rmse", higher_is_better=False, floor=60.0, margin=1.0)
    assert evaluate(rmse, {"rmse": "50"}, {"rmse": "52"}).passed
    assert not evaluate(rmse, {"rmse": "51.5"}, {"rmse": "52"}).passed
    assert not evaluate(rmse, {"rmse": "61"}, None).passed


def test_candidate_without_the_metric_fails_and_says_where_it_looked() -> None:
    verdict = evaluate(GateRule(metric="r2_score", source="model"), {"accuracy": "0.9"}, None)
    assert not verdict.passed
    assert verdict.why == "candidate has no numeric 'r2_score' in its model tags or properties"


def test_metric_values_are_read_case_insensitively_and_must_be_finite_numbers() -> None:
    assert metric_value({"R2_Score": " 0.5 "}, "r2_score") == 0.5
    assert metric_value({"r2_score": "n/a"}, "r2_score") is None
    assert metric_value({"r2_score": "nan"}, "r2_score") is None
    assert metric_value({"r2_score": True}, "r2_score") is None


def test_deploy_decision_carries_the_policy_gate_and_model_output() -> None:
    policy = load_policy(REPO / "examples" / "policy.yaml")
    raw = run_event(tags={**ours(), "r2_score": "0.6"})
    [env] = parse_body(json.dumps([raw]))
    [decision] = decide(to_signal(env), policy)
    assert isinstance(decision, Deploy)
    assert decision.plan.gate == policy.models["sklearn_regression_model"].deploy.gate  # type: ignore[union-attr]
    assert decision.plan.model_output == "model"
    assert decision.plan.as_dict()["gate"] == {
        "metric": "r2_score",
        "higher_is_better": True,
        "floor": 0.4,
        "margin": 0.01,
        "metrics": None,  # the one-metric form
        "require": "all",
        "source": "mlflow",
        "step": "evaluate_model",
    }
