"""A model monitor's passes in the fake workspace, and the breach events Azure ML sends of them: the world's one
way of sending a breach, so that the run its event names exists, tagged, as Azure's would (the service reads it
back before a breach starts a retrain: :func:`function_app.adapters.azureml.provenance.breach_misstated`)."""

from __future__ import annotations

from typing import Any

from tests.azure_world import WORKSPACE_ID, AzureWorld
from tests.builders import breach_event

BREACH = "azureml_modelmonitor_threshold_breached"
MONITOR = "diabetes-monitor"


def breached_text(signal: str) -> str:
    """The tag model monitoring writes on the step that found ``signal`` breached."""
    return f"The signal '{signal}' has failed due to one or more features violating metric thresholds."


def monitor_run(azure: AzureWorld, run: str, *breached: str, quiet: tuple[str, ...] = ()) -> dict[str, str]:
    """A finished monitor pass ``run`` whose signals ``breached`` each failed (their evaluation step's run
    tagged as model monitoring tags it) and ``quiet`` passed; returns each signal's step run id."""
    azure.arm.add_job(run, experiment=MONITOR, outputs=())
    steps = {}
    for signal in breached:
        steps[signal] = azure.arm.add_step(run, f"{signal}_evaluate", tags={BREACH: breached_text(signal)})
    for signal in quiet:
        steps[signal] = azure.arm.add_step(run, f"{signal}_evaluate")
    return steps


def breach(azure: AzureWorld, signal: str, step: str) -> dict[str, Any]:
    """The RunStatusChanged of the evaluation step ``step`` (a step of a monitor run the world holds) that found
    ``signal`` breached, carrying the step's tags as the workspace holds them, as Azure ML sends it."""
    raw = breach_event(signal=signal, experiment=MONITOR, topic=WORKSPACE_ID)
    raw["data"]["runId"] = step
    raw["data"]["runTags"] = dict(azure.arm.steps[step]["tags"])
    return raw
