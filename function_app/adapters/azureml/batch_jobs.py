"""The BatchRuns port (:class:`handlers.rollout.compare.BatchRuns`): the batch jobs of a batch candidate's
comparison (``deploy.batch_endpoint.compare``).

A job is started with ``batch_endpoints.invoke`` (the SDK posts to the endpoint's scoring URI, the
``azureml-model-deployment`` header naming the deployment, as the invoking identity), with the policy's
data asset as its input and the name the service chose (``job_name``; keyed, so nobody else can take it
first, :func:`handlers.jobnames.batch_job_name`). A job of that name is adopted only when this service's
identity created it: a pass that finds the comparison pending (the worker died after invoking) finds
its job and starts no second one. A batch job is a pipeline job whose step ``batchscoring`` runs the
scoring script ("Troubleshoot batch endpoints": its logs are under that step); the metrics the script
logged with MLflow are read from that step's run (``runs/search`` by parent run), once the job completed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from function_app.adapters.azureml.client import AzureMLClient
from handlers.errors import PermanentError
from handlers.rollout.compare import BatchRun
from handlers.signals import FINISHED_STATUSES

if TYPE_CHECKING:
    from function_app.adapters.azureml.candidates import AzureMLCandidates
    from function_app.retry import Budget

log = logging.getLogger(__name__)
INPUT_TYPES = ("uri_file", "uri_folder")  # what a model deployment's batch job reads (its InputData)


class AzureMLBatchJobs:
    """Starting and reading a comparison's batch jobs, through the client's ``MLClient`` and the MLflow
    reader that ``candidates`` uses for the gate."""

    def __init__(self, client: AzureMLClient, candidates: AzureMLCandidates) -> None:
        self.client = client
        self.candidates = candidates

    def invoke_batch(self, endpoint: str, deployment: str, data: str, job: str) -> str:
        budget = self.client.retry.budget()
        found = self._job(budget, job)
        if found is not None:
            why = self.client.not_created_by_us(getattr(found, "creation_context", None))
            if why is not None:
                raise PermanentError(
                    f"batch job {job} already exists but {why}; it is not adopted and the comparison is not judged "
                    "on it: find out who created it"
                )
            log.info("batch job %s of %s/%s already started; adopted", job, endpoint, deployment)
            return str(found.name)
        _, name, version = data.split(":")
        asset = self.client.call(
            budget,
            f"data asset {name}:{version}",
            lambda: self.client.ml.data.get(name, version=version),
            "register it, or fix deploy.batch_endpoint.compare.data",
        )
        kind = str(getattr(asset, "type", "") or "")
        if kind not in INPUT_TYPES:
            raise PermanentError(
                f"data asset {name}:{version} is a {kind or 'data asset of no type'}; a batch model deployment scores "
                f"a {' or '.join(INPUT_TYPES)}: register the comparison's data as one"
            )
        from azure.ai.ml import Input

        started = self.client.call(  # not retried into a second job: a retry meets the first one's name
            budget,
            f"invoking batch deployment {endpoint}/{deployment}",
            lambda: self.client.ml.batch_endpoints.invoke(
                endpoint_name=endpoint, deployment_name=deployment, input=Input(type=kind, path=data), job_name=job
            ),
            f"check that {endpoint}/{deployment} exists and that the service may invoke it",
        )
        log.info("started batch job %s of %s/%s on %s", getattr(started, "name", job), endpoint, deployment, data)
        return str(getattr(started, "name", None) or job)

    def batch_run(self, job: str, step: str | None) -> BatchRun | None:
        budget = self.client.retry.budget()
        found = self._job(budget, job)
        if found is None:
            return None
        raw = getattr(found, "status", None)
        status = str(getattr(raw, "value", raw) or "Unknown")
        terminal = status.lower() in FINISHED_STATUSES
        if status.lower() != "completed":
            return BatchRun(str(found.name), status, terminal)
        run = self.candidates.mlflow_run(budget, job)
        if run is None:
            return BatchRun(str(found.name), status, terminal, {}, f"MLflow has no run {job}")
        if step is None:
            return BatchRun(str(found.name), status, terminal, dict(run.metrics))
        steps = self.candidates.mlflow_steps(budget, run)
        chosen = [s for s in steps if s.name == step] or [s for s in steps if s.name.casefold() == step.casefold()]
        if not chosen:
            names = ", ".join(sorted(s.name for s in steps)) or "none"
            return BatchRun(
                str(found.name), status, terminal, {}, f"job {job} has no step {step!r} (its steps: {names})"
            )
        return BatchRun(str(found.name), status, terminal, dict(chosen[-1].metrics))

    def cancel_batch(self, job: str) -> bool:
        budget = self.client.retry.budget()
        found = self._job(budget, job)
        raw = getattr(found, "status", None) if found is not None else None
        if found is None or str(getattr(raw, "value", raw) or "").lower() in FINISHED_STATUSES:
            return False
        self.client.call(  # the poller is not waited for
            budget, f"canceling batch job {job}", lambda: self.client.ml.jobs.begin_cancel(job), or_none=True
        )
        log.info("canceling batch job %s", job)
        return True

    def _job(self, budget: Budget, job: str) -> Any:
        return self.client.call(
            budget, f"looking up batch job {job}", lambda: self.client.ml.jobs.get(job), or_none=True
        )
