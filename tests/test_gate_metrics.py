"""Gates on several metrics (issue 24): each metric with its direction, floor, absolute and relative
margin, per-slice metrics that must not regress, and ``require`` naming which decide; every figure in
the verdict. Pure, then through the policy file, then end to end with the real Azure ML SDK."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.errors import PolicyError
from handlers.gate import MAX_SLICES, evaluate, tags_for
from handlers.gate_rules import GateRule
from handlers.policy_file import parse_policy
from tests.azure_world import MODEL, AzureWorld

SLICED = GateRule.model_validate(
    {
        "metrics": [
            {"name": "r2_score", "floor": 0.4, "margin": 0.01, "slices": {"pattern": "r2_region_*", "tolerance": 0.01}},
            {"name": "mae", "higher_is_better": False, "margin": -0.5},
        ]
    }
)
CHAMPION = {"r2_score": "0.52", "mae": "41.0", "r2_region_north": "0.60", "r2_region_south": "0.45"}


def test_better_overall_and_on_every_slice_passes_with_each_metric_s_figures() -> None:
    verdict = evaluate(SLICED, {**CHAMPION, "r2_score": "0.58", "r2_region_south": "0.50", "mae": "41.2"}, CHAMPION)

    assert verdict.passed
    r2, mae = verdict.metrics
    assert (r2.metric, r2.passed, r2.candidate, r2.champion, r2.needed) == ("r2_score", True, 0.58, 0.52, 0.01)
    assert [(s.name, s.candidate, s.champion, s.passed) for s in r2.slices] == [
        ("r2_region_north", 0.60, 0.60, True),
        ("r2_region_south", 0.50, 0.45, True),
    ]
    assert (mae.passed, mae.higher_is_better, mae.gain) == (True, False, pytest.approx(-0.2))  # 0.2 worse: allowed
    assert "is within the margin of" in mae.why
    assert verdict.why.startswith("2 of 2 required metric(s) pass: r2_score: ")


def test_better_overall_but_worse_on_a_protected_slice_is_refused_naming_the_slice() -> None:
    verdict = evaluate(SLICED, {**CHAMPION, "r2_score": "0.61", "r2_region_south": "0.41"}, CHAMPION)

    assert not verdict.passed
    r2 = verdict.metrics[0]
    assert r2.gain == pytest.approx(0.09) and not r2.passed
    [south] = [s for s in r2.slices if not s.passed]
    assert (south.name, south.candidate, south.champion) == ("r2_region_south", 0.41, 0.45)
    assert "1 of 2 slice(s) regress: r2_region_south 0.41 vs 0.45: regresses (tolerance 0.01)" in verdict.why
    assert verdict.why.startswith("1 of 2 required metric(s) pass: r2_score: ")


def test_a_slice_within_its_tolerance_holds_and_one_the_candidate_lacks_fails() -> None:
    within = evaluate(SLICED, {**CHAMPION, "r2_score": "0.6", "r2_region_south": "0.445"}, CHAMPION)
    assert within.passed

    lacking = {k: v for k, v in CHAMPION.items() if k != "r2_region_north"} | {"r2_score": "0.6"}
    missing = evaluate(SLICED, lacking, CHAMPION)
    assert not missing.passed
    assert "r2_region_north the champion has 0.6, the candidate none" in missing.why


def test_a_slice_only_the_candidate_has_is_recorded_and_does_not_decide() -> None:
    verdict = evaluate(SLICED, {**CHAMPION, "r2_score": "0.6", "r2_region_east": "0.1"}, CHAMPION)
    assert verdict.passed
    east = [s for s in verdict.metrics[0].slices if s.name == "r2_region_east"]
    assert east and east[0].passed and east[0].champion is None


def test_too_many_slices_fail_closed_and_say_to_narrow_the_pattern() -> None:
    many = {f"r2_region_{n}": "0.5" for n in range(MAX_SLICES + 1)}
    verdict = evaluate(SLICED, {**many, "r2_score": "0.6", "mae": "40"}, {**many, "r2_score": "0.5", "mae": "40"})
    assert not verdict.passed and "narrow it" in verdict.why


def test_a_relative_margin_asks_for_a_share_of_the_champion_s_value() -> None:
    rule = GateRule.model_validate({"metrics": [{"name": "auc", "relative_margin": 0.02}]})
    assert not evaluate(rule, {"auc": "0.91"}, {"auc": "0.90"}).passed  # 0.01 < 2% of 0.90
    passed = evaluate(rule, {"auc": "0.92"}, {"auc": "0.90"})
    assert passed.passed and passed.metrics[0].needed == pytest.approx(0.018)


def test_require_names_the_metrics_that_decide_the_others_are_recorded() -> None:
    rule = GateRule.model_validate(
        {"metrics": [{"name": "r2_score"}, {"name": "latency_ms", "higher_is_better": False}], "require": ["r2_score"]}
    )
    verdict = evaluate(rule, {"r2_score": "0.6", "latency_ms": "900"}, {"r2_score": "0.5", "latency_ms": "100"})
    assert verdict.passed
    latency = verdict.metrics[1]
    assert (latency.passed, latency.required) == (False, False)
    assert "(recorded, not required)" in verdict.why


def test_the_one_metric_form_judges_as_before() -> None:
    rule = GateRule(metric="r2_score", floor=0.4, margin=0.01)
    verdict = evaluate(rule, {"r2_score": "0.525"}, {"r2_score": "0.52"})
    assert not verdict.passed and len(verdict.metrics) == 1
    assert (
        verdict.why
        == "candidate r2_score 0.525 does not beat champion r2_score 0.52 by the margin 0.01 (higher is better)"
    )


def test_a_registered_candidate_is_tagged_with_every_metric_and_slice() -> None:
    tags = tags_for(SLICED, {"r2_score": 0.61, "mae": 40.0, "r2_region_north": 0.6, "other": 1.0})
    assert tags == {"r2_score": "0.61", "r2_region_north": "0.6", "mae": "40"}


# --------------------------------------------------------------------------- the policy file

DEPLOY = """
models:
  churn:
    retrain:
      pipeline: churn-train:3
    deploy:
      endpoint: churn-endpoint
      gate:
"""


def problems(gate: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(DEPLOY + gate, "policy.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("gate", "says"),
    [
        ("        metric: auc\n        metrics: [{name: auc}]\n", "write either 'metric'"),
        ("        floor: 0.3\n", "write either 'metric'"),
        ("        metrics: [{name: auc}]\n        floor: 0.3\n", "floor beside 'metrics' belong to a metric"),
        ("        metrics: [{name: auc}, {name: AUC}]\n", "auc listed twice"),
        ("        metrics: [{name: auc}]\n        require: [f1]\n", "require names 'f1'"),
        ("        metrics: [{name: auc, slices: {pattern: auc_north}}]\n", "is not a slice pattern"),
        ("        metrics: [{name: auc, relative_margin: 2}]\n", "relative_margin"),
        ("        metrics: [{name: auc, slices: {pattern: 'auc_*', tolerance: -1}}]\n", "tolerance"),
        ("        metrics: [{name: auc}]\n        require: any\n", "'any': write 'all' or a list of the gate's metric"),
        ("        metrics: []\n", "list at least one"),
        ("        metrics: [{name: auc, floor: high}]\n", "write a number, e.g. 0.7"),
        ("        metrics: [{name: auc, higher_is_better: maybe}]\n", "write true or false"),
    ],
)
def test_each_gate_mistake_names_the_key_and_the_fix(gate: str, says: str) -> None:
    found = problems(gate)
    assert any(says in p for p in found), found
    assert all("deploy.gate" in p for p in found), found


# --------------------------------------------------------------------------- end to end


SLICED_GATE = """      gate:
        source: mlflow
        step: evaluate_model
        metrics:
          - name: r2_score
            floor: 0.4
            margin: 0.01
            slices: {pattern: "r2_region_*", tolerance: 0.01}
          - name: mae
            higher_is_better: false
            relative_margin: 0.01
"""


@pytest.fixture
def sliced(tmp_path: Any) -> Any:
    """The example policy with a gate on r2_score and its per-region slices and on mae (lower is better, by
    1% of the champion's); the champion (version 3) tagged with its figures, as the service tags a version
    it registers."""
    import re

    from handlers.policy_file import parse_policy as parse
    from tests.conftest import REPO
    from tests.ledgers import LedgerSpec

    text = (REPO / "examples" / "policy.yaml").read_text()
    text, n = re.subn(r"      gate:.*?\n        margin: 0\.01\n", SLICED_GATE, text, count=1, flags=re.DOTALL)
    assert n == 1
    azure = AzureWorld(tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=parse(text))
    azure.arm.models[(MODEL, "3")]["properties"]["tags"].update(
        {"r2_region_north": "0.60", "r2_region_south": "0.45", "mae": "41.0"}
    )
    yield azure
    azure.close()
    assert azure.arm.unexpected == []


@pytest.mark.sdk
def test_a_candidate_better_overall_but_worse_on_a_protected_slice_is_a_recorded_skip(sliced: AzureWorld) -> None:
    event = sliced.finished_run(r2="0.61", metrics={"r2_region_north": 0.62, "r2_region_south": 0.40, "mae": 39.0})

    [rec] = sliced.deliver(event).decisions

    assert (rec.action, rec.outcome) == ("deploy", "skipped")
    assert "r2_region_south 0.4 vs 0.45: regresses (tolerance 0.01)" in rec.reason
    r2, mae = rec.details["gate"]["metrics"]  # each metric's numbers, the one that passes too
    assert (r2["metric"], r2["candidate"], r2["champion"], r2["passed"]) == ("r2_score", 0.61, 0.52, False)
    assert (mae["metric"], mae["candidate"], mae["champion"], mae["passed"]) == ("mae", 39.0, 41.0, True)
    assert (mae["gain"], mae["needed"], mae["relative_margin"]) == (2.0, pytest.approx(0.41), 0.01)
    assert "1 of 2 required metric(s) pass" in rec.reason
    assert {s["name"]: (s["candidate"], s["champion"], s["passed"]) for s in r2["slices"]} == {
        "r2_region_north": (0.62, 0.60, True),
        "r2_region_south": (0.40, 0.45, False),
    }
    assert sliced.arm.requests_to("PUT", r"onlineEndpoints/.*/deployments/") == []  # nothing deployed


@pytest.mark.sdk
def test_a_candidate_that_holds_every_slice_rolls_out_and_its_version_carries_them(sliced: AzureWorld) -> None:
    event = sliced.finished_run(r2="0.61", metrics={"r2_region_north": 0.60, "r2_region_south": 0.47, "mae": 40.5})

    [rec] = sliced.deliver(event).decisions

    assert (rec.action, rec.outcome) == ("deploy", "submitted"), rec.reason
    assert "all 2 slice(s) hold" in rec.details["gate"]["why"]
    [register] = sliced.arm.requests_to("PUT", r"^models/")
    tags = register.body["properties"]["tags"]
    assert (tags["r2_score"], tags["r2_region_north"], tags["r2_region_south"]) == ("0.61", "0.6", "0.47")


def test_retrain_explain_prints_every_metric_s_figures(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dry run reads no champion, so floors decide: r2_score reaches its floor, mae (lower is better)
    misses its ceiling; explain prints both metrics' figures, the one that fails included."""
    import json
    import re

    from function_app.cli import main as cli
    from tests.conftest import REPO

    text = (REPO / "examples" / "policy.yaml").read_text()
    gate = "      gate:\n        metrics:\n          - {name: r2_score, floor: 0.4}\n          - {name: mae, higher_is_better: false, floor: 38}\n"
    text, n = re.subn(r"      gate:.*?\n        margin: 0\.01\n", gate, text, count=1, flags=re.DOTALL)
    (tmp_path / "policy.yaml").write_text(text)
    [event] = json.loads((REPO / "examples" / "events" / "retrain-run-completed.eventgrid.json").read_text())
    event["data"]["runTags"]["mae"] = "39.5"
    (tmp_path / "event.json").write_text(json.dumps(event))
    monkeypatch.setenv("RETRAIN_SQLITE_PATH", str(tmp_path / "l.db"))

    assert n == 1 and cli(["explain", str(tmp_path / "event.json"), "--policy", str(tmp_path / "policy.yaml")]) == 0

    out = capsys.readouterr().out
    gate_line = next(line for line in out.splitlines() if line.startswith("gate    "))
    assert gate_line.startswith("gate    skip") and "1 of 2 required metric(s) pass" in gate_line, gate_line
    figures = json.loads(out.split(gate_line, 1)[1].splitlines()[1])
    assert {m["metric"]: (m["candidate"], m["floor"], m["passed"]) for m in figures["metrics"]} == {
        "r2_score": (0.61, 0.4, True),
        "mae": (39.5, 38.0, False),
    }
