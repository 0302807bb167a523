"""Whether a finished run is what its event said it is. A run's event (``RunCompleted``, ``RunStatusChanged``)
names the run by its id and says what it is: its experiment, that it completed, its tags. Anyone holding the
events key can post such a body about any run of the workspace, so what is deployed is judged on what the
workspace says of the run (``jobs.get``), never on the event: a run in another experiment than its event
names, one that did not complete, or one without a tag its event claims is not rolled out. A model monitor's
breach (its step's run, tagged ``azureml_modelmonitor_threshold_breached``) is held to the same rule before it
starts a retrain: the step as the workspace holds it, in the experiment of the pipeline run above it. Pure: the
adapter reads the run, this says what does not match."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COMPLETED = "Completed"
PIPELINE_RUN = "azureml.pipelinerunid"  # a step's run property naming its pipeline job (run history)
# What Azure ML or MLflow add to a run's tags themselves; an event may carry them and the job's tags not.
SYSTEM_TAGS = ("azureml.", "mlflow.", "_aml_system")


def misstated(
    run_id: str,
    told_experiment: str | None,
    told_tags: Mapping[str, Any],
    status: str,
    experiment: str,
    tags: Mapping[str, Any],
    properties: Mapping[str, Any] | None = None,
    *,
    refused: str = "not rolled out",
) -> str | None:
    """Why the run the workspace holds (``status``, ``experiment``, ``tags``, ``properties``) is not the one its
    event told of (``told_experiment``, ``told_tags``); None when it is. The reason starts with ``refused`` (a
    monitor's breach: ``not retrained``)."""
    pipeline = str((properties or {}).get(PIPELINE_RUN) or "")
    if pipeline and pipeline != run_id:  # what Azure ML records on a step's run: its pipeline job
        return (
            f"{refused}: run {run_id} is a step of pipeline run {pipeline[:200]} in the workspace, though its "
            "event names no parent: only a top-level pipeline run is a candidate"
        )
    if status != COMPLETED:
        return f"{refused}: run {run_id} is {status[:40] or 'of no status'} in the workspace, not {COMPLETED}"
    if told_experiment is not None and experiment.casefold() != told_experiment.casefold():
        return (
            f"{refused}: run {run_id} is in experiment {experiment[:200]!r}, not {told_experiment[:200]!r} as "
            "its event says; only the workspace's word on a run counts"
        )
    held = {str(k): "" if v is None else str(v) for k, v in tags.items()}
    differ = sorted(
        str(k)[:80]
        for k, v in told_tags.items()
        if not str(k).lower().startswith(SYSTEM_TAGS) and held.get(str(k)) != ("" if v is None else str(v))
    )
    if differ:
        return (
            f"{refused}: run {run_id} does not carry the tags its event names ({', '.join(differ[:10])}) "
            "with the values it names; only the workspace's word on a run counts"
        )
    return None
