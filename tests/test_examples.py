"""The example events and policy shipped in examples/ decide what examples/events/README.md says."""

from __future__ import annotations

import json

import pytest

from handlers.decisions import Deploy, Retrain, decide
from handlers.policy import load_policy
from handlers.signals import parse_alert, parse_body, to_signal, workspace_key
from tests.builders import NOW, SCOPE, WORKSPACE
from tests.conftest import REPO

EXAMPLES = REPO / "examples"


@pytest.mark.parametrize(
    ("name", "kind", "model"),
    [
        ("drift.eventgrid.json", Retrain, "sklearn_regression_model"),
        ("monitor-breach.cloudevents.json", Retrain, "churn-classifier"),
        ("retrain-run-completed.eventgrid.json", Deploy, "sklearn_regression_model"),
    ],
)
def test_example_event_decides_as_documented(name: str, kind: type, model: str) -> None:
    policy = load_policy(EXAMPLES / "policy.yaml")
    [env] = parse_body((EXAMPLES / "events" / name).read_text())
    [decision] = decide(to_signal(env, frozenset({workspace_key(WORKSPACE)})), policy, NOW)
    assert isinstance(decision, kind) and decision.model == model
    assert name in (EXAMPLES / "events" / "README.md").read_text()


def test_example_alert_retrains_the_model_that_listens_to_its_rule() -> None:
    policy = load_policy(EXAMPLES / "policy.yaml")
    signal = parse_alert((EXAMPLES / "events" / "alert.common-schema.json").read_bytes())
    [decision] = decide(signal, policy, NOW, SCOPE)
    assert isinstance(decision, Retrain) and decision.model == "sklearn_regression_model"


def test_every_example_event_is_documented() -> None:
    listed = (EXAMPLES / "events" / "README.md").read_text()
    for path in (EXAMPLES / "events").glob("*.json"):
        assert f"`{path.name}`" in listed
        json.loads(path.read_text())
