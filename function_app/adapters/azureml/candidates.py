"""What the candidate gate judges (:meth:`AzureMLCandidates.candidate_facts`, part of the Deployments
port, :class:`handlers.workspace_ports.Deployments`), and registering a candidate that has no version yet.

The candidate: its registered version, if any, and the metrics the gate reads (the MLflow metrics of
the run or of its step ``gate.step``, looked for in its sub-pipelines too: :meth:`MlflowRuns.descendants`, two
levels, bounded, a step not read is no metric; the run's tags and properties, or the model version's). The
champion: the model version behind the endpoint's live deployment (the one with the most traffic). A
passing candidate that the run did not register is registered from the run's output
``deploy.model_output`` (:meth:`AzureMLCandidates.register`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from function_app.adapters.azureml import provenance
from function_app.adapters.azureml.client import SHORT_ASSET, AzureMLClient, who_created
from function_app.adapters.azureml.registry import RegistryModelRef, RegistryModels
from function_app.adapters.mlflow_metrics import TOO_MANY_STEPS, MlflowRun, MlflowRuns, named, not_told_apart
from function_app.retry import Budget
from handlers import gate
from handlers.errors import PermanentError
from handlers.pickup import SOURCE_WORKSPACE, not_shared_by_upstream
from handlers.plans import DeployPlan
from handlers.signals import TAG_DECISION
from handlers.workspace_ports import CandidateFacts, ModelVersion

log = logging.getLogger(__name__)

_VERSIONED_ID = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE)
_REGISTRY_MODEL = re.compile(r"^azureml://registries/(?P<registry>[^/]+)/models/", re.IGNORECASE)
_MLFLOW_FIX = (
    "the identity needs MLflow tracking on the workspace (experiments/runs/read: the service's custom role "
    "grants it, as does AzureML Data Scientist)"
)


def _facts(tags: Mapping[str, Any] | None, properties: Mapping[str, Any] | None) -> dict[str, Any]:
    """Tags and properties as one mapping for the gate; a tag wins over a property of the same name."""
    return {**dict(properties or {}), **dict(tags or {})}


@dataclass
class _Candidate:
    label: str  # for messages: "run X" or "model:5"
    model: Any | None  # the registered version, if any
    facts: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # why it is not a candidate to judge (a registry version not there, or not the upstream's)
    unreadable: str | None = None
    absent: bool = False  # a registry version the registry does not hold (yet)


@dataclass
class _Champion:
    """What the candidate is judged against: the live deployment and its model (all None without one).
    ``metrics`` None: nothing to compare with (no live deployment); empty: nothing the gate can read."""

    deployment: str | None  # "endpoint/deployment"
    live: Any | None
    model: Any | None
    metrics: dict[str, Any] | None = None
    unreadable: str | None = None  # why the champion cannot be compared (served from a registry)
    notes: list[str] = field(default_factory=list)

    @property
    def facts(self) -> dict[str, Any] | None:
        if self.deployment is None:
            return None
        return dict(self.metrics or {})


def _version(model: Any | None) -> ModelVersion | None:
    """An SDK model version as the plain fact the inside judges."""
    if model is None:
        return None
    kind = getattr(model, "type", None)
    return ModelVersion(str(model.name), str(model.version), str(model.id), None if kind is None else str(kind))


class AzureMLCandidates:
    """The candidate and the champion as the gate reads them; the candidate's registration."""

    def __init__(self, client: AzureMLClient, registries: RegistryModels | None = None) -> None:
        self.client = client
        self.registries = registries or RegistryModels(client.registry_client)

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        """The candidate (its registered version, if any, and the metrics the gate reads) and the
        champion (the model version behind the endpoint's deployment with the most traffic)."""
        budget = self.client.retry.budget()
        return self.facts_of(budget, plan, self._champion(budget, plan))

    def facts_of(self, budget: Budget, plan: DeployPlan, champion: _Champion) -> CandidateFacts:
        """The candidate of ``plan`` read, beside ``champion`` (an online or a batch endpoint's)."""
        candidate = self._candidate(budget, plan)
        return CandidateFacts(
            candidate=candidate.label,
            candidate_version=_version(candidate.model),
            candidate_metrics=candidate.facts,
            live_deployment=champion.deployment,
            champion_version=_version(champion.model),
            champion_metrics=champion.facts,
            champion_unreadable=champion.unreadable,
            candidate_unreadable=candidate.unreadable,
            candidate_absent=candidate.absent,
            notes=tuple(candidate.notes + champion.notes),
        )

    def _champion(self, budget: Budget, plan: DeployPlan) -> _Champion:
        """The endpoint's live deployment (the one with the most traffic) and the model version it serves."""
        found = self.live(budget, plan.endpoint, f"create it or fix models.{plan.model}.deploy.endpoint")
        if found is None:
            return _Champion(None, None, None)
        name, live = found
        return self.champion_in(budget, plan, f"{plan.endpoint}/{name}", live)

    def live(self, budget: Budget, endpoint: str, fix: str) -> tuple[str, Any] | None:
        """The online endpoint's deployment with the most live traffic (its name and the SDK's deployment);
        None when no deployment has traffic."""
        found = self.client.call(
            budget, f"online endpoint {endpoint!r}", lambda: self.client.ml.online_endpoints.get(endpoint), fix
        )
        traffic = {str(k): int(v) for k, v in (getattr(found, "traffic", None) or {}).items()}
        name = max((d for d, pct in traffic.items() if pct > 0), key=lambda d: traffic[d], default=None)
        if name is None:
            return None
        live = self.client.call(
            budget,
            f"live deployment {endpoint}/{name}",
            lambda: self.client.ml.online_deployments.get(name, endpoint_name=endpoint),
        )
        return name, live

    def champion_in(self, budget: Budget, plan: DeployPlan, where: str, live: Any) -> _Champion:
        """The champion the deployment ``live`` (``where``: ``endpoint/deployment``) serves, with its metrics."""
        ref = str(getattr(live, "model", None) or "")
        registry = _REGISTRY_MODEL.match(ref)
        if registry:  # a registry's model: read from the registry the policy names, and no other
            return self._registry_champion(budget, plan, where, live, ref, registry["registry"])
        model = self.model_of(budget, live)
        if model is None:
            return _Champion(where, live, None)
        facts, notes = self._version_metrics(budget, plan, model, tags_first=True)
        return _Champion(where, live, model, facts, notes=notes)

    def _registry_champion(
        self, budget: Budget, plan: DeployPlan, where: str, live: Any, ref: str, registry: str
    ) -> _Champion:
        """A champion served from a registry: judged by its registry version's tags and properties
        (the lineage a promotion writes there; its source run is in another workspace, not read here),
        when the registry is the policy's ``environment.registry``; any other registry is not read."""
        parsed = RegistryModelRef.parse(ref)
        if parsed is None or plan.registry is None or parsed.registry.casefold() != plan.registry.casefold():
            trusted = (
                f"the policy reads registry {plan.registry!r} only (models.{plan.model}.environment.registry)"
                if plan.registry
                else f"the policy names no registry for it (models.{plan.model}.environment.registry)"
            )
            why = (
                f"not rolled out: the champion in {where} is served from registry {registry!r} ({ref}), and "
                f"{trusted}, so the candidate cannot be compared with it; name that registry in the policy's "
                f"environment (role downstream), or compare them by hand and deploy with "
                f"POST /api/models/{plan.model}/deploy"
            )
            return _Champion(where, live, None, unreadable=why)
        model = self.registries.version(budget, parsed, roles_settling=self.client.roles_settling)
        note = f"the champion {parsed} was read from the registry"
        return _Champion(where, live, model, _facts(model.tags, model.properties), notes=[note])

    def model_of(self, budget: Budget, deployment: Any) -> Any | None:
        ref = str(getattr(deployment, "model", None) or "")
        match = _VERSIONED_ID.search(ref) or SHORT_ASSET.match(ref)
        if not match or ref.startswith("azureml://registries/"):
            log.warning(
                "live deployment %s serves model %r, which is not a workspace model version", deployment.name, ref
            )
            return None
        name, version = match["name"], match["version"]
        return self.client.call(
            budget, f"champion model {name}:{version}", lambda: self.client.ml.models.get(name, version=version)
        )

    def _version_metrics(
        self, budget: Budget, plan: DeployPlan, model: Any, *, tags_first: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """What the gate reads for a model version: its tags and properties (source ``model``), or, for
        ``run`` and ``mlflow``, its source run's tags and properties or MLflow metrics beside them
        (``tags_first``: the version's tags win, as for a champion the service tagged when registering it)."""
        source = plan.gate.source if plan.gate is not None else "run"
        own = _facts(model.tags, model.properties)
        job_name = getattr(model, "job_name", None)  # the run that produced the version holds its metrics
        if source == "model" or not job_name:
            return own, []
        if tags_first and plan.gate is not None and gate.carries_all(plan.gate, own):
            return own, []  # a champion that carries the metrics: its source run is not read
        label = f"{model.name}:{model.version}"
        if source == "run":
            job = self.client.call(
                budget, f"run {job_name} of model {label}", lambda: self.client.ml.jobs.get(job_name), or_none=True
            )
            if job is None:
                return own, [f"the workspace has no run {job_name} (the source run of {label})"]
            ran = _facts(job.tags, job.properties)
            return ({**ran, **own} if tags_first else {**own, **ran}), []
        run = self.mlflow_run(budget, str(job_name))
        if run is None:
            return own, [f"MLflow has no run {job_name} (the source run of {label})"]
        return ({**run.metrics, **own} if tags_first else {**own, **run.metrics}), []

    def _mlflow(self) -> MlflowRuns:
        if self.client.mlflow is None:
            raise PermanentError(
                "the gate reads MLflow metrics, but this backend has no MLflow reader; build it with "
                "AzureMLActions.from_settings"
            )
        return self.client.mlflow

    def mlflow_run(self, budget: Budget, run_id: str) -> MlflowRun | None:
        with self.client.translating(f"reading MLflow run {run_id}", _MLFLOW_FIX):  # the reader keeps the budget
            return self._mlflow().run(budget, run_id)

    def mlflow_steps(self, budget: Budget, pipeline: MlflowRun) -> list[MlflowRun] | None:
        """The pipeline's steps and those of its sub-pipelines (:meth:`MlflowRuns.descendants`: two levels, its
        own steps first); None when there are more than can be read (the caller must not judge on them)."""
        with self.client.translating(f"searching the MLflow runs of pipeline {pipeline.run_id}", _MLFLOW_FIX):
            return self._mlflow().descendants(budget, pipeline)

    def mlflow_experiment_runs(self, budget: Budget, experiment: str) -> list[MlflowRun]:
        with self.client.translating(f"searching the MLflow runs of experiment {experiment}", _MLFLOW_FIX):
            return self._mlflow().experiment_runs(budget, experiment)

    def _candidate(self, budget: Budget, plan: DeployPlan) -> _Candidate:
        """The model version to roll out (None: the run registered none yet) and the facts the gate reads:
        the MLflow metrics of the run or of its step ``gate.step`` (gate source ``mlflow``), the run's
        tags and properties (``run``) or the model version's (``model``)."""
        source = plan.gate.source if plan.gate is not None else "run"
        if plan.source == "registry":
            return self._registry_candidate(budget, plan)
        if plan.run_id:
            return self._run_candidate(budget, plan, source)
        version, label = (plan.version, None) if plan.version else (None, "latest")
        model = self.client.call(
            budget,
            f"candidate model {plan.model}:{plan.version or '@latest'}",
            lambda: self.client.ml.models.get(plan.model, version=version, label=label),
            "register it, or send an existing version",
        )
        facts, notes = self._version_metrics(budget, plan, model, tags_first=False)
        return _Candidate(f"{model.name}:{model.version}", model, facts, notes)

    def _registry_candidate(self, budget: Budget, plan: DeployPlan) -> _Candidate:
        """A registry version picked up (:mod:`handlers.pickup`), read again from the registry whatever told
        of it: judged by its tags and properties (the lineage its upstream's promotion wrote: the gate's
        figures under the metrics' names), only when that lineage names the policy's upstream workspace."""
        ref = RegistryModelRef(str(plan.registry), plan.model, str(plan.version))
        model = self.registries.version(budget, ref, roles_settling=self.client.roles_settling, or_none=True)
        if model is None:
            why = (
                f"not rolled out: registry {ref.registry} holds no version {ref.name}:{ref.version} (read from the "
                "registry); judged again when the registry holds it"
            )
            return _Candidate(str(ref), None, {}, unreadable=why, absent=True)
        came_from = str((model.tags or {}).get(SOURCE_WORKSPACE) or "")
        if plan.upstream and came_from.strip("/").casefold() != plan.upstream.strip("/").casefold():
            why = (
                f"not rolled out: the lineage of {ref} names {came_from[:300] or 'no workspace'} as its source "
                f"({SOURCE_WORKSPACE}), not the upstream models.{plan.model}.environment.upstream ({plan.upstream})"
            )
            return _Candidate(str(ref), model, {}, unreadable=why)
        stranger = not_shared_by_upstream(
            *who_created(getattr(model, "creation_context", None)), plan.upstream_identity, plan.model
        )
        if plan.upstream and stranger is not None:  # never picked up: who created it is the registry's record
            return _Candidate(str(ref), model, {}, unreadable=f"not rolled out: {ref}: {stranger}")
        facts = _facts(model.tags, model.properties)
        return _Candidate(str(ref), model, facts, [f"the candidate {ref} was read from the registry"])

    def _run_candidate(self, budget: Budget, plan: DeployPlan, source: str) -> _Candidate:
        """A finished pipeline run: the versions it or its steps registered, and its metric."""
        assert plan.run_id is not None
        run_id = plan.run_id
        run = provenance.held(self.client, budget, run_id, plan.experiment, plan.run_tags)
        if run.misstated is not None:  # judged again when another event tells of the run (absent: not final)
            return _Candidate(f"run {run_id}", None, {}, unreadable=run.misstated, absent=True)
        notes: list[str] = []
        steps: list[MlflowRun] | None = []
        pipeline: MlflowRun | None = None
        if self.client.mlflow is not None or source == "mlflow":
            try:
                pipeline = self.mlflow_run(budget, run_id)
                steps = self.mlflow_steps(budget, pipeline) if pipeline is not None else []
            except PermanentError as exc:
                if source == "mlflow":
                    raise
                notes.append(f"the versions its steps registered were not looked for: {exc}")
            if pipeline is None and not notes:
                notes.append(f"MLflow has no run {run_id}")
        unread = steps is None
        if steps is None:
            steps = []
            notes.append(f"pipeline run {run_id} has more steps than are read ({TOO_MANY_STEPS})")
        runs = {run_id, *(s.run_id for s in steps)}
        versions = self._versions_of_run(budget, plan, runs)
        model = next(iter(provenance.registered_by_pipeline(self.client, budget, run_id, runs, versions)), None)
        if source == "run":
            return _Candidate(f"run {run_id}", model, _facts(run.tags, run.properties), notes)
        if source == "model":
            if model is None:
                return _Candidate(f"run {run_id} (which registered no version of {plan.model})", None, {}, notes)
            return _Candidate(f"{model.name}:{model.version}", model, _facts(model.tags, model.properties), notes)
        step = plan.gate.step if plan.gate is not None else None
        if step is None:
            return _Candidate(f"run {run_id}", model, dict(pipeline.metrics) if pipeline else {}, notes)
        if unread:  # a step that could not be read is no metric: the gate refuses, it never passes
            return _Candidate(f"run {run_id} (step {step!r} not read: {TOO_MANY_STEPS})", model, {}, notes)
        found = named(steps, step)
        if not found:
            names = ", ".join(sorted(s.name for s in steps)) or "none"
            notes.append(f"pipeline run {run_id} has no step named {step!r} (its steps: {names})")
            return _Candidate(f"run {run_id} (step {step!r} not found; steps: {names})", model, {}, notes)
        posing = not_told_apart(found, step, f"pipeline run {run_id}")
        if posing is not None:
            why = (
                f"not rolled out: {posing}, so none judges the candidate: remove the runs that are not the pipeline's, "
                "or deploy by hand"
            )
            return _Candidate(f"run {run_id} (step {step!r}: {len(found)} runs)", model, {}, notes, unreadable=why)
        chosen = found[0]
        return _Candidate(f"run {run_id} (step {step}: {chosen.run_id})", model, dict(chosen.metrics), notes)

    def _versions_of_run(self, budget: Budget, plan: DeployPlan, runs: set[str]) -> list[Any]:
        """Versions of the model registered from this run or one of its steps (``runs``; a step that calls
        ``mlflow.register_model`` registers under its own run), or by us on an earlier delivery (tagged
        with the decision, and created by this service's identity)."""
        versions = (
            self.client.call(
                budget,
                f"versions of model {plan.model}",
                lambda: list(self.client.ml.models.list(name=plan.model)),
                or_none=True,
            )
            or []
        )
        decision = plan.tags.get(TAG_DECISION)
        return [
            v
            for v in versions
            if getattr(v, "job_name", None) in runs
            or (
                decision
                and (v.tags or {}).get(TAG_DECISION) == decision
                # a tag is anyone's to write: only a version this service registered is its own
                and self.client.not_created_by_us(getattr(v, "creation_context", None)) is None
            )
        ]

    def register(self, budget: Budget, plan: DeployPlan, facts: CandidateFacts) -> ModelVersion:
        from azure.ai.ml.entities import Model

        if not plan.run_id:
            raise PermanentError(
                f"candidate {facts.candidate} has no registered version and no run to register it from"
            )
        tags = dict(plan.tags)
        if plan.gate is not None:  # so that it can be judged as a champion later
            tags.update(gate.tags_for(plan.gate, facts.candidate_metrics))
        path = f"azureml://jobs/{plan.run_id}/outputs/{plan.model_output}"
        champion = facts.champion_version
        model = Model(
            name=plan.model,
            path=path,
            type=(champion.type if champion is not None else None) or "custom_model",
            tags=tags,
            description=f"registered by the retrain service from run {plan.run_id}",
        )
        registered = self.client.call(
            budget,
            f"registering model {plan.model} from {path}",
            lambda: self.client.ml.models.create_or_update(model),
            f"check that the pipeline has the output models.{plan.model}.deploy.model_output ({plan.model_output!r})",
        )
        version = _version(registered)
        assert version is not None
        return version
