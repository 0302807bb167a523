"""The BatchRuns port (:class:`handlers.rollout.compare.BatchRuns`): the batch jobs of a batch candidate's
comparison (``deploy.batch_endpoint.compare``).

A job is started with ``batch_endpoints.invoke`` (the SDK posts to the endpoint's scoring URI, the
``azureml-model-deployment`` header naming the deployment, as the invoking identity), with the policy's
data asset as its input and the name the service chose (``job_name``; keyed, so nobody else can take it
first, :func:`handlers.jobnames.batch_job_name`) and the same name as its experiment's. Azure may not give
the job that name (the one public report, azure-sdk-for-python#32763, says ``job_name`` "does nothing"):
the name Azure answers is the one returned and recorded, and a job asked for is found by its name or, failing
that, as the first job of its experiment (docs/azure-behaviour.md). A job so found is adopted only when this
service's identity created it: a pass that finds the comparison pending (the worker died after invoking),
or a retry of an invocation whose answer was lost, finds its job and starts no second one. A batch job is a pipeline job whose step ``batchscoring`` runs the
scoring script ("Troubleshoot batch endpoints": its logs are under that step); the metrics the script
logged with MLflow are read from that step's run (``runs/search`` by parent run), once the job completed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from function_app.adapters.azureml.client import AzureMLClient
from function_app.adapters.mlflow_metrics import TOO_MANY_STEPS, named, not_told_apart
from handlers.errors import PermanentError
from handlers.rollout.compare import BatchRun
from handlers.signals import FINISHED_STATUSES

if TYPE_CHECKING:
    from function_app.adapters.azureml.candidates import AzureMLCandidates
    from function_app.retry import Budget

log = logging.getLogger(__name__)
DATASTORE_SECRETS = "datastores/listsecrets/action"  # what invoking needs of the data's datastore (a refusal names it)
INPUT_TYPES = ("uri_file", "uri_folder")  # what a model deployment's batch job reads (its InputData)


class AzureMLBatchJobs:
    """Starting and reading a comparison's batch jobs, through the client's ``MLClient`` and the MLflow
    reader that ``candidates`` uses for the gate."""

    def __init__(self, client: AzureMLClient, candidates: AzureMLCandidates) -> None:
        self.client = client
        self.candidates = candidates

    def invoke_batch(self, endpoint: str, deployment: str, data: str, job: str) -> str:
        budget = self.client.retry.budget()
        found = self._started(budget, job)
        if found is not None:
            return self._adopted(found, job, endpoint, deployment)
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

        tries: list[Any] = []  # None for an invocation sent, the job found for one an earlier try started

        def invoke() -> Any:
            if tries:  # an earlier try may have started the job before it failed: Azure may not keep the name
                again = self._started(budget, job)
                if again is not None:
                    tries.append(again)
                    return again
            tries.append(None)
            return self.client.ml.batch_endpoints.invoke(
                endpoint_name=endpoint,
                deployment_name=deployment,
                input=Input(type=kind, path=data),
                job_name=job,
                experiment_name=job,  # found by it when Azure does not give the job the name asked for
            )

        try:
            started = self.client.call(
                budget,
                f"invoking batch deployment {endpoint}/{deployment}",
                invoke,
                f"check that {endpoint}/{deployment} exists and that the service may invoke it",
            )
        except PermanentError as exc:
            # A refusal may be the name taken meanwhile (another pass): what stands under it decides (the
            # status Azure answers for a batch job name in use is not documented).
            found = self._started(budget, job)
            if found is None and DATASTORE_SECRETS in str(exc).lower():
                raise PermanentError(
                    f"{exc}; listing the secrets of the data's datastore is granted by infra on that datastore alone "
                    "(set RETRAIN_BATCH_DATASTORE to its name and provision; infra/modules/workspace-access.bicep)"
                ) from exc
            if found is None:
                raise
            return self._adopted(found, job, endpoint, deployment)
        if tries and tries[-1] is not None:
            return self._adopted(started, job, endpoint, deployment)
        given = str(getattr(started, "name", None) or job)
        log.info("started batch job %s (asked for %s) of %s/%s on %s", given, job, endpoint, deployment, data)
        return given

    def _started(self, budget: Budget, job: str) -> Any:
        """The batch job a comparison asked to be named ``job``, if it was started: the job of that name, or,
        as Azure may give a batch job a name of its own (azure-sdk-for-python#32763), the first job of the
        experiment named ``job`` (each invocation names its experiment after the job it asks for; the run of
        an Azure ML job in MLflow has the job's name as its id). None when neither is there."""
        found = self._job(budget, job)
        if found is not None:
            return found
        runs = self.candidates.mlflow_experiment_runs(budget, job)
        if not runs:
            return None
        first = min(runs, key=lambda r: (r.start_time or 0.0, r.run_id))
        if len(runs) > 1:
            log.warning(
                "experiment %s holds %d batch jobs; the first, %s, is the comparison's", job, len(runs), first.run_id
            )
        return self._job(budget, first.run_id)

    def _adopted(self, found: Any, job: str, endpoint: str, deployment: str) -> str:
        why = self.client.not_created_by_us(getattr(found, "creation_context", None))
        if why is not None:
            raise PermanentError(
                f"batch job {found.name} (asked for as {job}) already exists but {why}; it is not adopted and the "
                "comparison is not judged on it: find out who created it"
            )
        log.info(
            "batch job %s (asked for as %s) of %s/%s already started; adopted", found.name, job, endpoint, deployment
        )
        return str(found.name)

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
        if steps is None:  # not all read: no metric, so the comparison cannot pass on it
            return BatchRun(
                str(found.name), status, terminal, {}, f"job {job}: step {step!r} not read: {TOO_MANY_STEPS}"
            )
        chosen = named(steps, step)
        if not chosen:
            names = ", ".join(sorted(s.name for s in steps)) or "none"
            return BatchRun(
                str(found.name), status, terminal, {}, f"job {job} has no step {step!r} (its steps: {names})"
            )
        posing = not_told_apart(chosen, step, f"job {job}")  # the gate's rule: none judges, the comparison fails
        if posing is not None:
            note = f"{posing}, so none is read: remove the runs that are not the job's"
            return BatchRun(str(found.name), status, terminal, {}, note)
        return BatchRun(str(found.name), status, terminal, dict(chosen[0].metrics))

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
