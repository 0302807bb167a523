"""The example events and policy shipped in examples/ decide what examples/events/README.md says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from function_app.adapters.dryrun import DryRunActions
from handlers.decisions import decide
from handlers.envelopes import parse_alert, parse_body, to_signal, workspace_key
from handlers.plans import Deploy, Retrain
from handlers.policy_file import load_policy
from tests.builders import SCOPE, WORKSPACE
from tests.conftest import REPO
from tests.ledgers import LedgerSpec
from tests.world import World

EXAMPLES = REPO / "examples"


@pytest.mark.parametrize(
    ("name", "kind", "model"),
    [
        ("monitor-breach.eventgrid.json", Retrain, "sklearn_regression_model"),
        ("drift.eventgrid.json", Retrain, "sklearn_regression_model"),
        ("monitor-breach.cloudevents.json", Retrain, "churn-classifier"),
        ("retrain-run-completed.eventgrid.json", Deploy, "sklearn_regression_model"),
    ],
)
def test_example_event_decides_as_documented(name: str, kind: type, model: str) -> None:
    policy = load_policy(EXAMPLES / "policy.yaml")
    [env] = parse_body((EXAMPLES / "events" / name).read_text())
    [decision] = decide(to_signal(env, frozenset({workspace_key(WORKSPACE)})), policy)
    assert isinstance(decision, kind) and decision.model == model
    assert name in (EXAMPLES / "events" / "README.md").read_text()


def test_example_alert_retrains_the_model_that_listens_to_its_rule() -> None:
    policy = load_policy(EXAMPLES / "policy.yaml")
    signal = parse_alert((EXAMPLES / "events" / "alert.common-schema.json").read_bytes())
    [decision] = decide(signal, policy, SCOPE)
    assert isinstance(decision, Retrain) and decision.model == "sklearn_regression_model"


def test_every_example_event_is_documented() -> None:
    listed = (EXAMPLES / "events" / "README.md").read_text()
    for path in (EXAMPLES / "events").glob("*.json"):
        assert f"`{path.name}`" in listed
        json.loads(path.read_text())


def test_the_example_policy_drives_the_v2_monitoring_loop_in_a_dry_run(tmp_path: Path) -> None:
    """What `make run` does with the bundled samples: a v2 monitor's breach plans the retrain; the
    retraining run's completion plans the deployment, gated on the evaluation step's r2_score (the
    event's tags stand in for MLflow, and the record says so); nothing is held, so the reconciler has
    no rollout to move and no deployment to retire."""
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), actions=DryRunActions())
    events = EXAMPLES / "events"
    [retrain] = world.deliver(json.loads((events / "monitor-breach.eventgrid.json").read_text())[0]).decisions
    assert (retrain.action, retrain.outcome, retrain.model) == ("retrain", "planned", "sklearn_regression_model")
    assert "feature-drift" in retrain.reason
    assert retrain.details["rendered"]["inputs"]["training_data"]["value"] == "azureml:diabetes-training@latest"

    [deploy] = world.deliver(json.loads((events / "retrain-run-completed.eventgrid.json").read_text())[0]).decisions
    assert (deploy.action, deploy.outcome) == ("deploy", "planned")
    assert deploy.details["gate"]["passed"] is True and deploy.details["gate"]["candidate"] == 0.61
    assert any("MLflow metrics are not read" in note for note in deploy.details["candidate"]["notes"])
    assert deploy.details["rendered"]["gate"]["step"] == "evaluate_model"

    report = world.reconcile()
    assert (report.rollouts, report.retired, report.deferred) == ([], [], [])


def test_the_example_policys_commented_retrain_triggers_validate_once_uncommented() -> None:
    from handlers.policy_file import parse_policy

    text = (EXAMPLES / "policy.yaml").read_text()
    start = text.index("      # max_age:")
    end = text.index("    candidates:", start)
    lines = text[start:end].splitlines(keepends=True)
    uncommented = "".join(line.replace("# ", "", 1) for line in lines)
    retrain = parse_policy(text[:start] + uncommented + text[end:]).models["sklearn_regression_model"].retrain
    assert retrain is not None and retrain.max_age is not None and retrain.max_age.days == 30
    assert [r.experiment for r in retrain.on.runs] == ["ingest-daily"]
    assert retrain.on.data is not None and retrain.on.data.assets == ["diabetes-training"]
