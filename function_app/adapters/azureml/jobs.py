"""The Jobs port (:class:`handlers.workspace_ports.Jobs`) on Azure ML: retraining pipeline jobs.

The pipeline job ``plan.name`` is submitted from the registered pipeline component (``name:version``,
or ``name@label`` resolved through the SDK). The name is derived from the decision key (keyed:
:mod:`handlers.jobnames`), so a redelivered event finds the job it already submitted and adopts it; a
job of that name is adopted only when it is provably this decision's (its tags, experiment and
component, and its creator in ``systemData`` is this client's own identity), and is otherwise a failed
decision that names who created it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlparse

from azure.core.exceptions import AzureError

from function_app.adapters.azureml import provenance
from function_app.adapters.azureml.client import BACKEND, SHORT_ASSET, AzureMLClient, who_created
from function_app.retry import Budget
from handlers import pins
from handlers.creators import RunCreator
from handlers.errors import PermanentError
from handlers.plans import JobPlan
from handlers.signals import FINISHED_STATUSES
from handlers.workspace_ports import ActionResult, JobInfo

log = logging.getLogger(__name__)


def _is_remote(path: str) -> bool:
    parsed = urlparse(path)
    return bool(parsed.scheme and parsed.netloc) or path.startswith("/subscriptions/")


_LITERAL_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "string": (str,),
}


def _check_inputs(plan: JobPlan, ref: str, declared: Mapping[str, Any]) -> None:
    """The plan's inputs against the component's declared ones: a name it does not declare, or a
    literal of another type than it declares (``true`` for an integer, ``"many"`` for a number), is
    refused here, with the input's name, instead of reaching the job."""
    for name, spec in plan.inputs.items():
        if name not in declared:
            raise PermanentError(
                f"pipeline component {ref!r} has no input {name!r} (it has {', '.join(sorted(declared)) or 'none'}); "
                f"fix models.{plan.model}.retrain.inputs"
            )
        kind = str(getattr(declared[name], "type", "") or "").lower()
        allowed = _LITERAL_TYPES.get(kind)
        if spec["type"] != "literal" or allowed is None:
            continue
        value = spec["value"]
        if isinstance(value, bool) != (kind == "boolean") or not isinstance(value, allowed):
            raise PermanentError(
                f"input {name!r} of pipeline component {ref!r} is declared {kind}, but the {spec.get('from', 'plan')} "
                f"gives {type(value).__name__} {str(value)[:80]!r}; fix models.{plan.model}.retrain.inputs.{name}"
            )


_COMPONENT_ID = re.compile(r"/components/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE)


def _same_component(ref: str, job_component: str) -> bool:
    """Whether a job's component (an ARM id, or ``azureml:name:version``) is the plan's ``ref``
    (``name:version``, or ``name@label``: a label moves, so the name decides)."""
    match = _COMPONENT_ID.search(job_component) or SHORT_ASSET.match(job_component)
    if match is None:
        return False
    name, sep, rest = ref.partition("@") if "@" in ref else ref.partition(":")
    if match["name"].lower() != name.lower():
        return False
    return sep == "@" or match["version"] == rest


def held_inputs(job: Any) -> dict[str, str | None]:
    """The data inputs of ``job`` as ``jobs.get`` reads them (each a path: literals are left out), in the policy's
    form: azure-ai-ml names a data version of its own workspace ``<asset>:<version>`` (``JobOperations.get``
    shortens its resource id, ``resolve_azureml_id``), given here as ``azureml:<asset>:<version>``; anything else
    (another workspace's resource id, a registry's, a URI) as the job holds it."""
    from azure.ai.ml import Input

    out: dict[str, str | None] = {}
    for name, entry in (getattr(job, "inputs", None) or {}).items():
        value = entry.result() if hasattr(type(entry), "result") else entry  # a PipelineInput holds the Input
        path = value.path if isinstance(value, Input) else None  # a literal has none
        if not isinstance(path, str):
            continue
        short = f"azureml:{path}"
        out[str(name)] = short if SHORT_ASSET.match(short) else path
    return out


class AzureMLJobs:
    """Submitting, adopting and reading retraining pipeline jobs."""

    def __init__(self, client: AzureMLClient) -> None:
        self.client = client

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        """Submit the pipeline job ``plan.name``; adopt a job of that name only when it is provably the
        one this decision submitted (:meth:`_not_ours`): anything else is a PermanentError (a recorded
        ``failed`` decision) that names who created it, and nothing is submitted or deployed."""
        budget = self.client.retry.budget()
        existing = self._find_job(budget, plan.name)
        if existing is not None:
            return self._adopted(plan, existing, "exists already")
        component_id = self._component_id(budget, plan)
        what = f"submitting pipeline job {plan.name} from {plan.component}"
        try:  # not through the client's call: a refusal may be a concurrent submission, adopted below
            job = budget.call(
                what,
                lambda: self.client.ml.jobs.create_or_update(
                    self._pipeline_job(plan, component_id), skip_validation=True
                ),
            )
        except AzureError as exc:
            # Another instance may have submitted it between our look and our PUT (the service
            # answers an update, or refuses one that changes the job): the name is the key.
            raced = self._find_job(budget, plan.name)
            if raced is None:
                raise self.client.translate(exc, what, f"check models.{plan.model}.retrain in the policy") from exc
            return self._adopted(plan, raced, "was submitted concurrently")
        # A PUT on a name someone created between our look and our PUT is an update of their job
        # (the REST API's create-or-update): the answer says whose job it is.
        self._refuse_foreign(plan, job)
        log.info("submitted pipeline job %s model=%s component=%s", plan.name, plan.model, component_id)
        return self._submitted(job, adopted=False)

    def find_retrain(self, plan: JobPlan) -> ActionResult | None:
        """The job ``plan.name`` adopted, as :meth:`submit_retrain` adopts it, when it exists and is provably this
        decision's (:meth:`_not_ours`); None when there is no such job; a PermanentError naming who created one
        that is not. One ``jobs.get``, nothing submitted."""
        existing = self._find_job(self.client.retry.budget(), plan.name)
        if existing is None:
            return None
        return self._adopted(plan, existing, "was submitted before its worker died")

    def _adopted(self, plan: JobPlan, job: Any, how: str) -> ActionResult:
        """``job``, of ``plan``'s name, adopted when it is provably this decision's (:meth:`_refuse_foreign`)."""
        self._refuse_foreign(plan, job)
        log.info("pipeline job %s %s; adopting it (model=%s)", plan.name, how, plan.model)
        return self._submitted(job, adopted=True)

    def _refuse_foreign(self, plan: JobPlan, job: Any) -> None:
        why = self._not_ours(plan, job)
        if why is None:
            return
        who, kind = who_created(getattr(job, "creation_context", None))
        who, kind = who or "an unknown identity", kind or "unknown type"
        experiment = getattr(job, "experiment_name", None) or "(none)"
        log.warning(
            "pipeline job %s exists but is not this decision's (%s); created by %r (%s) in experiment %r; not adopted",
            plan.name,
            why,
            str(who)[:200],
            kind,
            str(experiment)[:200],
        )
        raise PermanentError(
            f"pipeline job {plan.name} already exists in workspace {self.client.workspace.name} but was not submitted by "
            f"this service for this decision ({why}): it was created by {str(who)[:200]} ({kind}) in experiment "
            f"{str(experiment)[:200]!r}; it is not adopted and nothing is deployed from it. Someone with access "
            "to the workspace created a job under the name this decision uses: find out who, and cancel it "
            "(RETRAIN_JOB_NAME_KEY keeps job names unguessable; rotate it if it leaked)"
        )

    def _not_ours(self, plan: JobPlan, job: Any) -> str | None:
        """Why ``job`` is not the job this decision submitted (None: it is): it must carry the plan's
        tags, sit in the plan's experiment, run the plan's pipeline component, and have been created
        by this service's own identity (the job's ``systemData``; a tag or a name anyone can write)."""
        tags = {str(k): v for k, v in (getattr(job, "tags", None) or {}).items()}
        wrong = sorted(k for k, v in plan.tags.items() if tags.get(k) != v)
        if wrong:
            return f"its tags {', '.join(wrong)} are not this decision's"
        experiment = str(getattr(job, "experiment_name", None) or "")
        if experiment != plan.experiment:
            return f"it is in experiment {experiment[:200]!r}, not {plan.experiment!r}"
        component = str(getattr(job, "component", None) or "")
        if not _same_component(plan.component, component):
            return f"it runs component {component[:300]!r}, not {plan.component!r}"
        return self.client.not_created_by_us(getattr(job, "creation_context", None))

    def job_status(self, name: str) -> JobInfo | None:
        """The job as the workspace reports it now (``jobs.get``); None when there is no such job.
        'Paused', which the SDK counts as terminal, is not: a paused job can be resumed."""
        job = self._find_job(self.client.retry.budget(), name)
        if job is None:
            return None
        raw = getattr(job, "status", None)
        status = str(getattr(raw, "value", raw) or "")
        return JobInfo(
            name=str(job.name),
            status=status,
            experiment=str(getattr(job, "experiment_name", None) or ""),
            tags={str(k): "" if v is None else str(v) for k, v in (getattr(job, "tags", None) or {}).items()},
            properties=dict(getattr(job, "properties", None) or {}),
            terminal=status.lower() in FINISHED_STATUSES,
            display_name=str(getattr(job, "display_name", None) or ""),
        )

    def run_creator(self, run_id: str) -> RunCreator:
        """Who created ``run_id`` as run history records it (:func:`provenance.run_creator`)."""
        return provenance.run_creator(self.client, self.client.retry.budget(), run_id)

    def _find_job(self, budget: Budget, name: str) -> Any | None:
        return self.client.call(
            budget, f"looking up pipeline job {name}", lambda: self.client.ml.jobs.get(name), or_none=True
        )

    def _component_id(self, budget: Budget, plan: JobPlan) -> str:
        ref = plan.component
        name, sep, rest = ref.partition("@") if "@" in ref else ref.partition(":")
        label, version = (rest, None) if sep == "@" else (None, rest)
        fix = f"register it or fix models.{plan.model}.retrain.pipeline"
        component = self.client.call(
            budget,
            f"pipeline component {ref!r}",
            lambda: self.client.ml.components.get(name, version=version, label=label),
            fix,
        )
        kind = str(getattr(component, "type", "") or "").lower()
        if kind and kind != "pipeline":
            raise PermanentError(
                f"component {ref!r} is a {kind} component, not a pipeline component; "
                f"models.{plan.model}.retrain.pipeline must name a registered pipeline component"
            )
        _check_inputs(plan, ref, getattr(component, "inputs", None) or {})
        return str(component.id)

    def _pipeline_job(self, plan: JobPlan, component_id: str) -> Any:
        from azure.ai.ml import Input
        from azure.ai.ml.entities import PipelineJob

        inputs: dict[str, Any] = {}
        for name, spec in plan.inputs.items():
            kind, value = spec["type"], spec["value"]
            if kind == "literal":
                inputs[name] = value
                continue
            inputs[name] = Input(type=kind, path=self._asset_path(plan, name, str(value)))
        return PipelineJob(
            component=component_id,
            inputs=inputs,
            name=plan.name,
            display_name=plan.display_name,
            experiment_name=plan.experiment,
            compute=plan.compute,
            tags=dict(plan.tags),
        )

    @staticmethod
    def _asset_path(plan: JobPlan, name: str, path: str) -> str:
        """An input's path as the SDK resolves it: never a local path (it would upload from the worker), and never
        a data asset's or a model's latest version unpinned: the executor pins it first (:mod:`handlers.pins`), so what the
        decision records is what the job trains on."""
        if pins.reads_latest(plan.inputs[name]) is not None:
            raise PermanentError(
                f"input {name!r} of model {plan.model!r} reads {path!r}, an asset's latest version, which was not "
                "pinned to a version before the job's submission (handlers/pins.py); nothing is submitted"
            )
        if path.startswith("azureml:") and not path.startswith("azureml://"):
            ref = path.removeprefix("azureml:")
            if "@" in ref:
                return ref  # name@label: the SDK resolves labels only without the azureml: prefix
            if ":" not in ref:
                return f"{ref}@latest"  # a data asset named without version (e.g. an event's dataset id)
            return path
        if _is_remote(path):
            return path
        raise PermanentError(
            f"input {name!r} of model {plan.model!r} is {path!r}, a local path; the service uploads nothing: "
            "use a data asset (azureml:name:version or azureml:name@latest) or a remote URI "
            f"(azureml://, https://, abfss://) in models.{plan.model}.retrain.inputs.{name}"
        )

    def _submitted(self, job: Any, adopted: bool) -> ActionResult:
        name = str(job.name)
        url = getattr(job, "studio_url", None) or self.client.workspace.studio(f"runs/{quote(name)}")
        status = getattr(job, "status", None)
        details: dict[str, Any] = {"backend": BACKEND, "status": str(getattr(status, "value", status) or "") or None}
        if not adopted:
            return ActionResult("submitted", job={"name": name, "url": url}, details=details)
        details["adopted"] = True
        details["note"] = f"pipeline job {name} already existed (a redelivery or a concurrent instance); adopted"
        return ActionResult("submitted", job={"name": name, "url": url}, details=details, trains_on=held_inputs(job))
