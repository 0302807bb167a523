"""A model monitor's breach event, forged with an events key: the event names the monitor's run by its id and
says what it is (its experiment, that it completed, its breach tag). A breach starts a retrain and takes the
model's cooldown and budget, so what starts one must be what the workspace says of the run, never the event:
a breach naming a run the workspace does not hold, one without the breach tag, or one under another
experiment's run is a recorded skip that gives back what it took and is not final, and the monitor's real
breach still retrains. Through the real Azure ML SDK against the fake ARM (docs/security.md, "What was
attacked")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.azure_world import WORKSPACE_ID, AzureWorld
from tests.builders import MODEL, breach_event, with_classes
from tests.monitoring import BREACH, MONITOR, breach, breached_text, monitor_run


@pytest.fixture
def watched(azure: AzureWorld) -> AzureWorld:
    """The world, its model retraining on the monitor's feature-drift breaches."""
    azure.policy = with_classes({"feature-drift": "retrain"})
    azure.worker = azure.new_worker()
    return azure


def forged(run_id: str, experiment: str = MONITOR) -> dict[str, Any]:
    """A breach of feature-drift as anyone with the events key can post it, naming ``run_id``."""
    raw = breach_event(signal="feature-drift", experiment=experiment, topic=WORKSPACE_ID, event_id=f"forged-{run_id}")
    raw["data"]["runId"] = run_id
    return raw


def refused_then_the_real_breach_retrains(azure: AzureWorld, raw: dict[str, Any], says: str) -> None:
    [rec] = azure.deliver(raw).decisions
    assert (rec.action, rec.outcome) == ("retrain", "skipped"), rec.reason
    assert says in rec.reason and rec.details["guard"] == "not_as_told"  # not final, as a run not as told
    assert rec.details["breach"]["misstated"] in rec.reason
    state = azure.ledger.get_model(MODEL)
    assert azure.arm.job_puts == [] and state.flights == {}
    assert state.last_retrain_at is None and state.budget_used == 0  # the cooldown and budget given back

    real = monitor_run(azure, "monitor-run-real", "feature-drift")["feature-drift"]
    [retrain] = azure.deliver(breach(azure, "feature-drift", real)).decisions
    assert (retrain.action, retrain.outcome) == ("retrain", "submitted"), retrain.reason
    assert retrain.details["breach"] == {"run": real, "checked": True}
    assert len(azure.arm.job_puts) == 1


@pytest.mark.both_ledgers  # a skip with a guard after the reservation, its slot settled: the ledger's write
def test_a_breach_naming_a_run_the_workspace_does_not_hold_retrains_nothing(watched: AzureWorld) -> None:
    says = "not retrained: the workspace has no run no-such-run, which its breach event names"
    refused_then_the_real_breach_retrains(watched, forged("no-such-run"), says)


def test_a_breach_naming_a_run_without_the_breach_tag_retrains_nothing(watched: AzureWorld) -> None:
    quiet = monitor_run(watched, "monitor-run-quiet", quiet=("feature-drift",))["feature-drift"]
    says = f"run {quiet} does not carry the tags its event names ({BREACH})"
    refused_then_the_real_breach_retrains(watched, forged(quiet), says)


def test_a_breach_naming_a_tagged_run_of_another_experiment_retrains_nothing(watched: AzureWorld) -> None:
    """A workspace account's own pipeline, its step tagged as a monitor's, told of as the monitor's run."""
    watched.arm.add_job("scratch-1", experiment="my-scratch", outputs=())
    step = watched.arm.add_step("scratch-1", "evaluate", tags={BREACH: breached_text("feature-drift")})
    raw = forged(step)
    raw["data"]["runTags"] = {BREACH: breached_text("feature-drift")}
    says = f"run {step} is in experiment 'my-scratch', not '{MONITOR}' as its event says"
    refused_then_the_real_breach_retrains(watched, raw, says)
