"""The policy file: the example is valid, and every error names the file, the key path and the fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from handlers.errors import PolicyError
from handlers.policy_base import parse_duration
from handlers.policy_file import load_policy, parse_policy
from tests.conftest import REPO, retrain_cli

MINIMAL = """
models:
  churn:
    retrain:
      pipeline: churn-train:3
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    return info.value.problems


def test_example_policy_is_valid() -> None:
    policy = load_policy(REPO / "examples" / "policy.yaml")
    assert "sklearn_regression_model" in policy.models
    assert policy.cooldown("churn-classifier") == timedelta(hours=12)


def test_defaults_apply_when_a_model_says_nothing() -> None:
    policy = parse_policy(MINIMAL)
    assert policy.cooldown("churn") == timedelta(hours=6)
    assert policy.daily_budget("churn") == 4
    assert str(policy.models["churn"].retrain.pipeline) == "churn-train:3"  # type: ignore[union-attr]


def test_pipeline_without_version_says_how_to_write_one() -> None:
    [line] = problems(MINIMAL.replace("churn-train:3", "train"))
    assert (
        line
        == "policy.yaml: models.churn.retrain.pipeline: component 'train' has no version; write 'train:3' or 'train@latest'"
    )


def test_label_reference_is_accepted() -> None:
    policy = parse_policy(MINIMAL.replace("churn-train:3", "churn-train@latest"))
    assert policy.models["churn"].retrain.pipeline.label == "latest"  # type: ignore[union-attr]


def test_unknown_key_is_named_with_its_path() -> None:
    [line] = problems(MINIMAL + "      cooldwn: 6h\n")
    assert line == "policy.yaml: models.churn.retrain.cooldwn: unknown key; remove it or check its spelling"


def test_bad_duration_shows_the_accepted_forms() -> None:
    [line] = problems(MINIMAL + "      cooldown: six hours\n")
    assert line.startswith("policy.yaml: models.churn.retrain.cooldown:") and "'6h'" in line


def test_overridable_input_must_be_declared() -> None:
    [line] = problems(MINIMAL + "      overridable: [learning_rate]\n")
    assert "models.churn.retrain" in line and "'learning_rate'" in line and "declare them under 'inputs'" in line


def test_missing_models_is_reported() -> None:
    [line] = problems("version: 1\n")
    assert line == "policy.yaml: models: it is required; add it"


def test_yaml_syntax_error_names_line_and_column() -> None:
    [line] = problems("models:\n  churn: [\n")
    assert line.startswith("policy.yaml: line ") and "fix the syntax" in line


def test_several_problems_are_all_reported() -> None:
    text = MINIMAL.replace("churn-train:3", "train") + "    deploy:\n      endpoint: x\n"
    assert len(problems(text)) == 2


def test_unreadable_file_says_which_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="RETRAIN_POLICY_PATH"):
        load_policy(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("text", "seconds"), [("6h", 21600), ("1d12h", 129600), ("30m", 1800), ("45s", 45), (90, 90)])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_check_policy_command_reports_errors_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text(MINIMAL.replace("churn-train:3", "train"))
    out = retrain_cli("check-policy", str(bad))
    assert out.returncode == 2
    assert f"{bad}: models.churn.retrain.pipeline: component 'train' has no version" in out.stderr


def test_a_label_the_sdk_cannot_resolve_is_refused_with_the_fix() -> None:
    [problem] = problems(MINIMAL.replace("churn-train:3", "churn-train@prod"))
    assert problem == (
        "policy.yaml: models.churn.retrain.pipeline: 'churn-train@prod' names the label 'prod', but the Azure ML "
        "SDK resolves only the label 'latest'; write 'churn-train@latest' or pin a version ('churn-train:3')"
    )
    text = MINIMAL + "      inputs:\n        data: {type: uri_folder, value: 'azureml:churn-data@champion'}\n"
    [problem] = problems(text)
    assert "models.churn.retrain.inputs.data" in problem and "resolves only the label 'latest'" in problem
    assert parse_policy(MINIMAL.replace("churn-train:3", "churn-train@latest"))


DEPLOY = (
    MINIMAL
    + """    deploy:
      endpoint: churn-endpoint
"""
)


def test_the_deploy_defaults_gate_on_mlflow_retire_after_a_day_and_keep_one_previous() -> None:
    policy = parse_policy(DEPLOY + "      gate: {metric: auc}\n")
    deploy = policy.models["churn"].deploy
    assert deploy is not None and deploy.gate is not None
    assert (deploy.gate.source, deploy.gate.step) == ("mlflow", None)
    assert (deploy.retire_after, deploy.keep_previous, deploy.instance_count) == (timedelta(hours=24), 1, None)


def test_a_gate_step_needs_the_mlflow_source_and_instance_count_is_positive() -> None:
    [problem] = problems(DEPLOY + "      gate: {metric: auc, source: run, step: evaluate}\n")
    assert "models.churn.deploy.gate" in problem and "it needs source: mlflow, not run" in problem
    [problem] = problems(DEPLOY + "      instance_count: 0\n")
    assert "models.churn.deploy.instance_count" in problem


@pytest.mark.parametrize("step", ['""', "' '"])
def test_an_empty_gate_step_names_the_key_and_says_to_name_the_step_or_leave_it_out(step: str) -> None:
    [problem] = problems(DEPLOY + f"      gate: {{metric: auc, step: {step}}}\n")
    assert "models.churn.deploy.gate.step: an empty step; write the display name of the pipeline step" in problem
    assert "or leave it out to read the pipeline run's own metrics" in problem and "at least 1" not in problem
