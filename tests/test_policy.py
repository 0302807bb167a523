"""The policy file: the example is valid, and every error names the file, the key path and the fix."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from handlers.errors import PolicyError
from handlers.policy import load_policy, parse_duration, parse_policy
from tests.conftest import REPO

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
    out = subprocess.run(
        [sys.executable, "-m", "function_app.cli", "check-policy", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert f"{bad}: models.churn.retrain.pipeline: component 'train' has no version" in out.stderr
