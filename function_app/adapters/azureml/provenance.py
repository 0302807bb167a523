"""Whether a run is what its event and its MLflow tags say it is, by what Azure ML records and no caller
chooses: the job as the workspace holds it (``jobs.get``: experiment, status, tags) and the creator run history
records (``createdBy``, from the creating token).

A run's event is anyone's to write with the events key (:mod:`handlers.told` judges it against the job), and
a pipeline's steps are found through MLflow's ``mlflow.parentRunId``, a tag whoever creates an MLflow run sets:
a model version registered from a step counts as the pipeline's only when run history says the step's creator
is the pipeline's (Azure ML creates a step's run for the one who submitted the pipeline)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from function_app.adapters.azureml.client import AzureMLClient
from function_app.retry import Budget
from handlers import told
from handlers.creators import RunCreator
from handlers.errors import PermanentError

log = logging.getLogger(__name__)


def run_creator(client: AzureMLClient, budget: Budget, run_id: str) -> RunCreator:
    """Who created ``run_id`` as run history records it (``createdBy``: object id, principal name, name; the
    job's ``systemData`` names a person only by display name), read with the SDK's run-history client, as
    ``jobs.get`` reads a pipeline step. A refusal or no such run: ``problem`` says so."""
    what = f"reading who created run {run_id}"
    try:
        run = client.call(budget, what, lambda: client.ml.jobs._runs_operations.get_run(run_id), or_none=True)
    except PermanentError as exc:
        return RunCreator(run_id, problem=str(exc)[:300])
    if run is None:
        return RunCreator(run_id, problem=f"the workspace has no run {run_id}")
    user = getattr(run, "created_by", None)
    return RunCreator(
        run_id,
        object_id=str(getattr(user, "user_object_id", None) or ""),
        upn=str(getattr(user, "upn", None) or ""),
        name=str(getattr(user, "user_name", None) or ""),
    )


@dataclass(frozen=True)
class HeldRun:
    """A finished run as the workspace holds it (``jobs.get``): why it is not the one its event told of
    (``misstated``; None when it is), and its tags and properties, what a gate reading the run judges (an
    event's are anyone's to write)."""

    misstated: str | None
    tags: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


def held(client: AzureMLClient, budget: Budget, run_id: str, experiment: str | None, tags: dict[str, Any]) -> HeldRun:
    """The run ``run_id`` as the workspace holds it, judged against what its event told of (``experiment``,
    ``tags``)."""
    job = _read_job(client, budget, f"candidate run {run_id}", run_id)
    if job is None:
        return HeldRun(f"not rolled out: the workspace has no run {run_id}, which its event names")
    properties = dict(getattr(job, "properties", None) or {})
    why = told.misstated(run_id, experiment, tags, _status_of(job), _experiment_of(job), _tags_of(job), properties)
    return HeldRun(why, _tags_of(job), properties)


MONITOR_DEPTH = 3  # pipeline runs read above a breach's step (a signal component's step is two below the monitor run)


def breach_misstated(
    client: AzureMLClient, budget: Budget, run_id: str, experiment: str | None, tags: dict[str, Any]
) -> str | None:
    """Why the run a monitor's breach event names (the step that evaluated the signal) is not what the event
    told of: no such run, not ``Completed``, without the breach tag it names, or under a monitor run of another
    experiment (run history gives a step's experiment by id: the name is read from the pipeline run above it,
    its ``azureml.pipelinerunid``, at most :data:`MONITOR_DEPTH` levels up); None when it is."""
    job = _read_job(client, budget, f"the monitor run {run_id} of a breach", run_id)
    if job is None:
        return f"not retrained: the workspace has no run {run_id}, which its breach event names"
    top = job
    for _ in range(MONITOR_DEPTH + 1):
        parent = str((getattr(top, "properties", None) or {}).get(told.PIPELINE_RUN) or "")
        if not parent or parent == getattr(top, "name", None):
            break
        above = _read_job(client, budget, f"the pipeline run {parent} of {run_id}", parent)
        if above is None:
            return f"not retrained: the workspace has no run {parent[:200]}, the pipeline run of {run_id}"
        top = above
    else:
        return f"not retrained: run {run_id} is more than {MONITOR_DEPTH} pipeline runs below its monitor run"
    return told.misstated(
        run_id, experiment, tags, _status_of(job), _experiment_of(top), _tags_of(job), refused="not retrained"
    )


def _read_job(client: AzureMLClient, budget: Budget, what: str, run_id: str) -> Any:
    return client.call(budget, what, lambda: client.ml.jobs.get(run_id), or_none=True)


def _status_of(job: Any) -> str:
    raw = getattr(job, "status", None)
    return str(getattr(raw, "value", raw) or "")


def _experiment_of(job: Any) -> str:
    return str(getattr(job, "experiment_name", None) or "")


def _tags_of(job: Any) -> dict[str, Any]:
    return dict(getattr(job, "tags", None) or {})


def registered_by_pipeline(
    client: AzureMLClient, budget: Budget, pipeline: str, steps: set[str], versions: Iterable[Any]
) -> list[Any]:
    """``versions`` without those registered from a step (a run in ``steps``) whose creator run history does
    not record as the pipeline's: a run posing as a step (its own ``mlflow.parentRunId``) registers nothing the
    pipeline made. A creator that cannot be read counts as another's."""
    kept: list[Any] = []
    creators: dict[str, str] = {}

    def creator(run_id: str) -> str:
        if run_id not in creators:
            creators[run_id] = run_creator(client, budget, run_id).object_id.strip().lower()
        return creators[run_id]

    for v in versions:
        job = str(getattr(v, "job_name", None) or "")
        if job in steps and job != pipeline and (not creator(pipeline) or creator(job) != creator(pipeline)):
            log.warning(
                "version %s:%s was registered from run %s, an MLflow child of pipeline run %s that run history does "
                "not record as created by the pipeline's creator: not taken as its candidate",
                getattr(v, "name", "?"),
                getattr(v, "version", "?"),
                job,
                pipeline,
            )
            continue
        kept.append(v)
    return kept
