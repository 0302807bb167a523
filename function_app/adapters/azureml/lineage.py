"""What a retrain's checks read before it is submitted (``Jobs.retrain_facts``, :mod:`handlers.worthiness`).

- The run a breach's event names (``breach``): read back (``jobs.get``, and the pipeline runs above a step
  for its experiment: :func:`provenance.breach_misstated`); when it is not what the event told of, nothing
  else is read.
- The monitor run of a breach (``veto``): the breach step's MLflow run, its root run (``mlflow.rootRunId``,
  else ``mlflow.parentRunId``), which must have ended (else a TransientError: the retrain waits, for at most
  :data:`MAX_WAIT` after the run started, then it is not retrained on), and the root's steps and theirs (``runs/search`` by ``mlflow.parentRunId``: ``DEPTH`` levels, at most
  ``MAX_SEARCHES`` searches of :mod:`function_app.adapters.mlflow_metrics`, else it is not retrained on). Model
  monitoring tags the step that evaluated a signal with ``azureml_modelmonitor_threshold_breached``
  ("The signal '<name>' has failed ..."), and, when it notifies by e-mail, the root run with
  ``azureml.modelmonitor.threshold.breached.<name>`` (azureml-assets, model monitoring's ``event_utils``).
- The champion's lineage (``worthiness``): the champion is the version the policy's online endpoint serves
  (its deployment with the most live traffic: :meth:`AzureMLFreshness.champion`, the rule the gate and
  ``retrain.max_age`` use); without an endpoint, or when it serves no version of the model, the model's latest
  version (``models.list``), and the notes say so. A champion served from a registry is never replaced by a
  workspace version: from the policy's registry (``environment.registry``) it is read there, and its lineage
  tags (``retrain_source_workspace``, ``retrain_run``: what the upstream's promotion wrote) name the workspace
  and run it was trained in, whose data asset versions are not this workspace's: its training data is not
  compared (the retrain goes ahead, the notes say why); from another registry it is not read at all. Then its ``job_name`` (the run that produced it), that job's
  inputs that name a data asset version (``azureml:<name>:<version>`` or the version's resource id), and each
  asset's latest version (``data.get(name, label='latest')``). A version registered by a pipeline's step names
  the step's run, which the SDK reads from run history without inputs: its ``azureml.pipelinerunid``
  property names the pipeline job, whose data-asset inputs are read instead (all of them: which step read
  which is not reported, so the retrain is skipped only when none of them has a newer version).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from function_app.adapters.azureml import provenance
from function_app.adapters.azureml.client import DATA_ID, SHORT_ASSET, AzureMLClient
from function_app.adapters.mlflow_metrics import MAX_SEARCHES, PARENT_TAG
from handlers.errors import PermanentError, TransientError
from handlers.pickup import SOURCE_WORKSPACE
from handlers.told import PIPELINE_RUN  # a pipeline step run's property: its pipeline job
from handlers.worthiness import RetrainFacts

if TYPE_CHECKING:
    from function_app.adapters.azureml.freshness import AzureMLFreshness
    from function_app.retry import Budget
    from handlers.freshness import Champion
    from handlers.plans import JobPlan

log = logging.getLogger(__name__)

ROOT_TAG = "mlflow.rootRunId"
BREACH_TAG = "azureml_modelmonitor_threshold_breached"
ROOT_BREACH_PREFIX = "azureml.modelmonitor.threshold.breached."
UNFINISHED = ("RUNNING", "SCHEDULED")  # MLflow RunStatus values of a run that has not ended
MAX_WAIT = 6 * 3600  # seconds a retrain waits for its monitor run to end; longer, it is not retrained on
_SIGNAL = re.compile(r"signal\s+'([^']+)'", re.IGNORECASE)
_BARE = re.compile(
    r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*):(?P<version>[A-Za-z0-9_.-]+)$"
)  # as azure-ai-ml reads a job back


def data_version(path: Any) -> tuple[str, str] | None:
    """The data asset ``(name, version)`` a job input's path names, or None (a URI, a label, a literal).
    azure-ai-ml reads a pipeline job's input that the REST API gives as the version's resource id back
    as ``name:version``."""
    text = str(path or "").strip()
    match = SHORT_ASSET.match(text) or DATA_ID.search(text) or _BARE.match(text)
    return (match["name"], match["version"]) if match else None


class AzureMLLineage:
    def __init__(self, client: AzureMLClient, freshness: AzureMLFreshness) -> None:
        self.client = client
        self.freshness = freshness  # the served champion, by the gate's rule (one copy of it)

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        budget = self.client.retry.budget()
        told = plan.checks.get("breach")
        if isinstance(told, dict):  # a breach's run as the workspace holds it, before anything else is read
            misstated = (
                provenance.breach_misstated(
                    self.client, budget, str(told["run"]), told.get("experiment"), dict(told.get("tags") or {})
                )
                if told.get("run")
                else "not retrained: the breach event names no run to read back"
            )
            if misstated is not None:
                return RetrainFacts(breach_misstated=misstated)
        breaches: dict[str, str] | None = None
        run: str | None = None
        unread: str | None = None
        veto = plan.checks.get("veto")
        if isinstance(veto, dict) and veto.get("run"):
            breaches, run, unread = self._breaches(budget, str(veto["run"]))
        if "worthiness" not in plan.checks:
            return RetrainFacts(breaches, run, unread)
        try:
            check = plan.checks["worthiness"]
            champion, trained_on, notes = self._lineage(
                budget, plan.model, check.get("endpoint"), check.get("registry")
            )
        except PermanentError as exc:  # the lineage is an optimisation: unreadable, the retrain goes ahead
            champion, trained_on, notes = None, None, [f"the champion's lineage could not be read: {exc}"]
        latest: dict[str, str] = {}
        for name in trained_on or {}:
            version = self._latest(budget, name)
            if version is not None:
                latest[name] = version
        return RetrainFacts(breaches, run, unread, champion, trained_on, latest, tuple(notes))

    def _latest(self, budget: Budget, name: str) -> str | None:
        """The data asset's latest version (None: the workspace has no such asset)."""
        asset = self.client.call(
            budget, f"data asset {name}", lambda: self.client.ml.data.get(name, label="latest"), or_none=True
        )
        return None if asset is None else str(asset.version)

    # ------------------------------------------------------------------ the monitor run

    def _breaches(self, budget: Budget, step: str) -> tuple[dict[str, str] | None, str | None, str | None]:
        """The breached signals of the monitor run ``step`` belongs to, that run's id, or why it could not be read."""
        mlflow = self.client.mlflow
        if mlflow is None:
            return None, None, "the workspace's MLflow tracking server is not known"
        run = mlflow.run(budget, step)
        if run is None:
            log.warning("monitor step run %s is not in MLflow: its monitor run's breaches cannot be read", step)
            return None, None, f"MLflow has no run {step[:200]}"
        root_id = run.tags.get(ROOT_TAG) or run.tags.get(PARENT_TAG) or run.run_id
        root = run if root_id == run.run_id else mlflow.run(budget, root_id)
        if root is None:
            return None, None, f"MLflow has no run {root_id[:200]} (the monitor run of step {step[:200]})"
        started = root.start_time
        if root.status.upper() in UNFINISHED and started is not None and self.client.retry.clock() - started > MAX_WAIT:
            return None, None, f"monitor run {root.run_id} is still {root.status.lower()} after {MAX_WAIT // 3600}h"
        if root.status.upper() in UNFINISHED:
            # Each signal is evaluated in its own step, in parallel: a veto signal's step may not have tagged
            # its breach yet. Wait for the run (the redelivery, or the reconciler, resumes this reservation).
            raise TransientError(
                f"monitor run {root.run_id} is still {root.status.lower()}: its veto signals are not all evaluated "
                "yet; the retrain waits for it"
            )
        found: dict[str, str] = {}
        for key, value in root.tags.items():
            if key.lower().startswith(ROOT_BREACH_PREFIX):
                found[key[len(ROOT_BREACH_PREFIX) :].lower()] = value[:300]
        steps = mlflow.descendants(budget, root)  # a signal component's steps too (model monitoring runs each)
        if steps is None:
            why = (
                f"monitor run {root.run_id} has more than {MAX_SEARCHES} steps to read for its breaches "
                "(each searched for steps of its own); not all could be checked"
            )
            return None, None, why
        for child in [run, *steps]:
            breach = child.tags.get(BREACH_TAG)
            match = _SIGNAL.search(breach or "")
            if match:
                found[match.group(1).lower()] = str(breach)[:300]
        return found, root.run_id, None

    # ------------------------------------------------------------------ the champion's lineage

    def _lineage(
        self, budget: Budget, model: str, endpoint: str | None, registry: str | None
    ) -> tuple[str | None, dict[str, str] | None, list[str]]:
        served, read = self.freshness.served(endpoint, registry) if endpoint else (None, None)
        if served is not None and served.registry is not None and served.version.name == model:
            return served.label, None, [_registry_lineage(served, read)]
        version, notes = self._champion(budget, model, endpoint, served)
        if version is None:
            return None, None, notes
        champion = f"{model}:{version.version}"
        trained_on, why = self._trained_on(budget, champion, version)
        return champion, trained_on, [*notes, *why]

    def _champion(
        self, budget: Budget, model: str, endpoint: str | None, served: Champion | None
    ) -> tuple[Any | None, list[str]]:
        """The model version the endpoint serves (``served``, the champion), else the latest registered one, and
        notes that say which it is when it is not the served one."""
        if endpoint:
            if served is not None and served.version.name == model:
                found = self.client.call(
                    budget,
                    f"model {served.version.label}",
                    lambda: self.client.ml.models.get(model, version=served.version.version),
                    or_none=True,
                )
                if found is not None:
                    return found, []
            fallback = (
                f"endpoint {endpoint!r} serves no version of model {model} (its live deployment serves "
                f"{served.version.label if served else 'no workspace model version'}): the champion is taken to be its latest version"
            )
        else:
            fallback = f"model {model} has no online endpoint (deploy.endpoint): the champion is taken to be its latest version"
        versions = self.client.call(
            budget, f"versions of model {model}", lambda: list(self.client.ml.models.list(name=model)), or_none=True
        )
        if not versions:
            return None, [f"the workspace has no version of model {model}: no champion to compare with"]
        latest = max(
            versions, key=lambda m: (str(m.version).isdigit(), int(m.version) if str(m.version).isdigit() else 0)
        )
        return latest, [f"{fallback}, {model}:{latest.version}"]

    def _trained_on(self, budget: Budget, champion: str, latest: Any) -> tuple[dict[str, str] | None, list[str]]:
        """The data asset versions the job that produced the champion read (None, and why, when unknown)."""
        job_name = getattr(latest, "job_name", None)
        if not job_name:
            return None, [f"{champion} names no job that produced it"]
        job = self.client.call(
            budget, f"job {job_name} of {champion}", lambda: self.client.ml.jobs.get(job_name), or_none=True
        )
        if job is None:
            return None, [f"the workspace has no job {job_name} (the job of {champion})"]
        trained = _data_inputs(job)
        pipeline = str((getattr(job, "properties", None) or {}).get(PIPELINE_RUN) or "")
        if not trained and pipeline and pipeline != job_name:  # a step's run: its pipeline's inputs
            parent = self.client.call(
                budget,
                f"pipeline job {pipeline} of {champion}",
                lambda: self.client.ml.jobs.get(pipeline),
                or_none=True,
            )
            trained = _data_inputs(parent) if parent is not None else {}
            job_name = f"{job_name} (a step of pipeline job {pipeline})"
        if not trained:
            return None, [f"job {job_name} of {champion} read no data asset version"]
        return trained, []


def _registry_lineage(served: Champion, version: Any | None) -> str:
    """Why a champion served from a registry has no training data to compare: not read (another registry), or
    trained in the workspace its lineage names (read from the registry's version)."""
    if served.unread or version is None:
        return f"the champion {served.label} was not read: {served.unread}; its training data is not compared"
    tags = getattr(version, "tags", None) or {}
    source = str(tags.get(SOURCE_WORKSPACE) or "") or "a workspace its lineage does not name"
    run = f", run {str(tags['retrain_run'])[:200]}" if tags.get("retrain_run") else ""
    return (
        f"the champion {served.label} ({served.where}) was trained in {source[:300]}{run} (its lineage, read "
        "from the registry): that workspace's data asset versions are not this one's, so its training data is not compared"
    )


def _data_inputs(job: Any) -> dict[str, str]:
    """Each data asset a job's inputs name -> that version."""
    trained: dict[str, str] = {}
    for value in (getattr(job, "inputs", None) or {}).values():
        found = data_version(getattr(value, "path", None))
        if found is not None:
            trained[found[0]] = found[1]
    return trained
