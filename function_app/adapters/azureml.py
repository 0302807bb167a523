"""The Azure ML backend: carries decisions out through the real SDK (azure-ai-ml).

This is the only module that imports ``azure.ai.ml``, and it does so on the first action, not at
import: importing the SDK costs about a second and 100 MB, and nothing the root script imports
may depend on it. The ``MLClient`` is built once per worker, on first use, with the worker's
managed identity (``DefaultAzureCredential(managed_identity_client_id=AZURE_CLIENT_ID)``) and with
the SDK's own retries off (``retry_total=0``): :mod:`function_app.retry` owns the time budget.

Retrain: the pipeline job ``plan.name`` is submitted from the registered pipeline component
(``name:version``, or ``name@label`` resolved through the SDK). The name is derived from the
decision key (keyed: :mod:`handlers.jobnames`), so a redelivered event finds the job it already
submitted and adopts it; a job of that name is adopted only when it is provably this decision's (its
tags, experiment and component, and its creator in ``systemData`` is this client's own identity), and
is otherwise a failed decision that names who created it. A candidate deployment likewise.

Deploy: :meth:`AzureMLActions.candidate_facts` reads what the candidate gate (:mod:`handlers.gate`,
run by the executor) judges: the candidate and the champion, the model version behind the endpoint's
live deployment (the one with the most traffic). A passing candidate that the run did not register
is registered from the run's output ``deploy.model_output`` by :meth:`start_deploy`; then a new
managed online deployment is started beside the live one, copying its settings, with the
candidate model and no traffic. The long-running operation is started and not waited for: the
SDK's poller follows it on a daemon thread, the reconciler follows the rollout.

Errors: the SDK's exceptions are translated here, at the boundary (:mod:`azure_errors` decides
what is transient). Transient ones (throttling, timeouts, 5xx) are retried inside the budget
(:mod:`function_app.retry`) and then raised as TransientError; the others become a PermanentError
whose message says what is wrong and where to fix it.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from azure.core.exceptions import AzureError, ResourceNotFoundError

from function_app.adapters import azure_errors
from function_app.adapters.azure_errors import describe, is_identity_fault, is_transient, status_of
from function_app.adapters.clients import LazyClient, sdk_options
from function_app.adapters.mlflow_metrics import MlflowRun, MlflowRuns
from function_app.retry import Budget, RetryPolicy
from handlers import gate, rollout
from handlers.decisions import DeployPlan, JobPlan
from handlers.errors import PermanentError, TransientError
from handlers.ports import ActionResult, CandidateFacts, DeploymentInfo, JobInfo, ModelVersion
from handlers.signals import FINISHED_STATUSES, TAG_DECISION

if TYPE_CHECKING:
    from types import FrameType

    from azure.core.credentials import TokenCredential

    from function_app.settings import Settings

log = logging.getLogger(__name__)

STUDIO = "https://ml.azure.com"
_VERSIONED_ID = re.compile(r"/models/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE)
_SHORT_MODEL = re.compile(r"^azureml:(?P<name>[^:@/]+):(?P<version>[^:@/]+)$")
_DATA_ID = re.compile(r"/data/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)$", re.IGNORECASE)
_SHORT_DATA = re.compile(r"^azureml:(?P<name>[^:@/]+):(?P<version>[^:@/]+)$")
_DEPLOYMENT_ID = re.compile(r"onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<deployment>[^/?]+)$", re.IGNORECASE)
_SHORT_DEPLOYMENT = re.compile(r"^azureml:(?P<endpoint>[^:/]+):(?P<deployment>[^:/]+)$")
_BUSY = frozenset({409})  # an endpoint with an operation in progress: try again later
MAX_DEPLOYMENTS = 20  # per online endpoint (Azure ML docs, "Manage and increase quotas")
_MLFLOW_FIX = (
    "the identity needs MLflow tracking on the workspace (experiments/runs/read: the service's custom role "
    "grants it, as does AzureML Data Scientist)"
)
_REGISTRY_MODEL = re.compile(r"^azureml://registries/(?P<registry>[^/]+)/models/", re.IGNORECASE)


@dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    name: str
    id: str  # the ARM resource id

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspace:
        return cls(settings.subscription_id, settings.resource_group, settings.workspace_name, settings.workspace_id)

    def studio(self, path: str) -> str:
        return f"{STUDIO}/{path}?wsid={quote(self.id, safe='/')}"


ROLE_PROPAGATION = 3600.0  # seconds: "role assignments can take up to an hour to take effect"


def _from_rest_object_is_calling() -> bool:
    """azure-ai-ml's ``_should_skip_warning``, without its cost: whether a ``_from_rest_object`` is
    among the callers (the SDK then skips its "experimental class" warning). The SDK answers it with
    ``inspect.stack()``, which reads the source file of every frame on the stack and scans every loaded
    module for each: tens of milliseconds, four times for each deployment read that carries a data
    collector (every rollout pass lists them). Walking the frames answers the same question."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_from_rest_object":
            return True
        frame = frame.f_back
    return False


def _cheaper_experimental_check() -> None:
    """Put :func:`_from_rest_object_is_calling` in place of the SDK's check (the same answer; it is
    looked up at each call). Only where the pinned SDK has the check: a newer one is left as it is."""
    from azure.ai.ml._utils import _experimental

    sdk_check = getattr(_experimental, "_should_skip_warning", None)
    if callable(sdk_check) and sdk_check is not _from_rest_object_is_calling:
        _REPLACED.append(sdk_check)  # kept, so a test can hold the two to the same answers
        _experimental._should_skip_warning = _from_rest_object_is_calling


_REPLACED: list[Callable[[], bool]] = []


def translate(
    exc: AzureError, what: str, fix: str = "", workspace: str = "", *, roles_settling: bool = False
) -> PermanentError | TransientError:
    """One SDK error as the service's error (:mod:`azure_errors` decides transient or permanent), with
    what to do: ``what`` names the thing, ``workspace`` where it was looked for, ``fix`` the remedy.
    ``roles_settling``: the worker started less than an hour ago, when a 403 may be a role assignment
    made at deployment that has not taken effect yet: retried (transient) rather than recorded."""
    if is_transient(exc):
        return azure_errors.translate(exc, what)
    status = status_of(exc)
    message = describe(exc)
    hint = f"; {fix}" if fix else ""
    if is_identity_fault(exc):
        return PermanentError(
            f"{what}: the function app's identity could not get a token ({message}); {azure_errors.IDENTITY_FIX}"
        )
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        where = f" in workspace {workspace}" if workspace else ""
        return PermanentError(f"{what} not found{where}{hint} (Azure ML: {message})")
    grant = (
        "grant the function app's managed identity a role on the workspace that allows it: the service's custom "
        "role (infra/modules/workspace-access.bicep; the actions it needs are in function_app/adapters/"
        "permissions.py), or AzureML Data Scientist"
    )
    if status == 403 and roles_settling:
        return TransientError(
            f"{what}: Azure ML refused access ({message}); role assignments take up to an hour to take effect "
            f"after deployment, so this is retried; if it persists, {grant}"
        )
    if status in (401, 403):
        return PermanentError(f"{what}: Azure ML refused access ({message}); {grant}")
    return PermanentError(f"{what}: {message}{hint}")


def _is_remote(path: str) -> bool:
    parsed = urlparse(path)
    return bool(parsed.scheme and parsed.netloc) or path.startswith("/subscriptions/")


def _facts(tags: Mapping[str, Any] | None, properties: Mapping[str, Any] | None) -> dict[str, Any]:
    """Tags and properties as one mapping for the gate; a tag wins over a property of the same name."""
    return {**dict(properties or {}), **dict(tags or {})}


@dataclass
class _Candidate:
    label: str  # for messages: "run X" or "model:5"
    model: Any | None  # the registered version, if any
    facts: dict[str, Any]
    notes: list[str] = field(default_factory=list)


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


def _monitor_target(schedule: Any) -> tuple[str, str] | None:
    """(endpoint, deployment) a model-monitor schedule watches, lower-cased; None for other schedules."""
    action = (schedule.get("properties") or {}).get("action") or {}
    if str(action.get("actionType") or "").lower() != "createmonitor":
        return None
    target = ((action.get("monitorDefinition") or {}).get("monitoringTarget") or {}).get("deploymentId")
    match = _DEPLOYMENT_ID.search(str(target or "")) or _SHORT_DEPLOYMENT.match(str(target or ""))
    return (match["endpoint"].lower(), match["deployment"].lower()) if match else None


def _retargeted_id(old: str, endpoint: str, deployment: str) -> str:
    """``old`` (an ARM id or ``azureml:endpoint:deployment``) naming ``endpoint/deployment`` instead."""
    if _SHORT_DEPLOYMENT.match(old):
        return f"azureml:{endpoint}:{deployment}"
    match = _DEPLOYMENT_ID.search(old)
    if match is None:
        raise PermanentError(f"monitoring target {old!r} does not name an online deployment")
    return f"{old[: match.start()]}onlineEndpoints/{endpoint}/deployments/{deployment}"


def _traffic(endpoint: Any) -> dict[str, int]:
    """An endpoint's split, deployments at 0% left out."""
    return rollout.live(getattr(endpoint, "traffic", None) or {})


def _version(model: Any | None) -> ModelVersion | None:
    """An SDK model version as the plain fact the inside judges."""
    if model is None:
        return None
    kind = getattr(model, "type", None)
    return ModelVersion(str(model.name), str(model.version), str(model.id), None if kind is None else str(kind))


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
_SHORT_COMPONENT = re.compile(r"^azureml:(?P<name>[^:@/]+):(?P<version>[^:@/]+)$")


def _same_component(ref: str, job_component: str) -> bool:
    """Whether a job's component (an ARM id, or ``azureml:name:version``) is the plan's ``ref``
    (``name:version``, or ``name@label``: a label moves, so the name decides)."""
    match = _COMPONENT_ID.search(job_component) or _SHORT_COMPONENT.match(job_component)
    if match is None:
        return False
    name, sep, rest = ref.partition("@") if "@" in ref else ref.partition(":")
    if match["name"].lower() != name.lower():
        return False
    return sep == "@" or match["version"] == rest


def _claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without verifying it (our own credential's token)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError) as exc:
        raise PermanentError(f"the service's own access token is not a JWT ({type(exc).__name__})") from exc
    return claims if isinstance(claims, dict) else {}


@dataclass(frozen=True)
class Identity:
    """Who the service acts as, as Azure records a creator (``systemData.createdBy`` / ``createdByType``):
    an application or managed identity by its client id (``appid`` / ``azp``) or object id (``oid``);
    a person (running the service locally with their sign-in) by sign-in name or object id."""

    names: frozenset[str]
    kinds: frozenset[str]
    label: str

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Identity:
        if claims.get("idtyp") == "user" or "upn" in claims:
            keys: tuple[str, ...] = ("upn", "unique_name", "preferred_username", "email", "oid")
            kinds = frozenset({"user"})
        else:
            keys, kinds = ("appid", "azp", "oid"), frozenset({"application", "managedidentity"})
        names = frozenset(str(claims[k]).lower() for k in keys if claims.get(k))
        if not names:
            raise PermanentError("the service's own access token names no identity (no appid, azp, oid or upn)")
        label = str(claims.get("appid") or claims.get("azp") or claims.get("upn") or claims.get("oid"))
        return cls(names, kinds, label)


class AzureMLActions:
    name = "azureml"

    def __init__(self, ml_client: Any, workspace: Workspace, retry: RetryPolicy) -> None:
        """``ml_client``: an ``MLClient``, or a function that builds one on first use (once per worker)."""
        self._ml = LazyClient(ml_client)
        self.workspace = workspace
        self.retry = retry
        self.mlflow: MlflowRuns | None = None  # the workspace's MLflow tracking server (gate source mlflow)
        self.started = retry.clock()  # role assignments made at deployment take up to an hour to apply
        self._credential: Callable[[], Any] | None = None  # the client's credential (from_settings)
        self._identity: Identity | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        credential: TokenCredential | None = None,
        retry: RetryPolicy | None = None,
        **client_kwargs: Any,
    ) -> AzureMLActions:
        """The worker's backend. Nothing is imported or built until the first action."""
        workspace = Workspace.from_settings(settings)
        deadline = settings.deadline_seconds

        def identity() -> Any:
            from azure.identity import DefaultAzureCredential  # lazily, on the first action

            return credential or DefaultAzureCredential(managed_identity_client_id=settings.client_id)

        creds = LazyClient(identity)

        def build() -> Any:
            from azure.ai.ml import MLClient  # lazily, on the first action

            _cheaper_experimental_check()
            kwargs = sdk_options(deadline, enable_telemetry=False, **client_kwargs)
            log.info("building MLClient for workspace %s", workspace.id)
            return MLClient(creds.get(), workspace.subscription_id, workspace.resource_group, workspace.name, **kwargs)

        transport = {k: v for k, v in client_kwargs.items() if k == "transport"}
        actions = cls(build, workspace, retry or RetryPolicy.from_settings(settings))
        actions._credential = creds.get
        actions.mlflow = MlflowRuns(creds.get, actions.tracking_uri, **transport)
        return actions

    @property
    def roles_settling(self) -> bool:
        """Whether this worker started less than :data:`ROLE_PROPAGATION` ago (a 403 is then retried)."""
        return self.retry.clock() - self.started < ROLE_PROPAGATION

    @property
    def ml(self) -> Any:
        return self._ml.get()

    def _call(self, budget: Budget, what: str, fn: Callable[[], Any], fix: str = "") -> Any:
        """``fn()`` within the budget; a permanent SDK error becomes a PermanentError about ``what``.
        (Every error azure-ai-ml raises on purpose is an azure-core ``AzureError``.)"""
        try:
            return budget.call(what, fn)
        except AzureError as exc:
            raise translate(exc, what, fix, self.workspace.name, roles_settling=self.roles_settling) from exc

    def _get_or_none(self, budget: Budget, what: str, fn: Callable[[], Any]) -> Any | None:
        """Like :meth:`_call`, but a 404 means "there is none"."""
        try:
            return budget.call(what, fn)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise translate(exc, what, workspace=self.workspace.name, roles_settling=self.roles_settling) from exc

    # ------------------------------------------------------------------ retrain

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        """Submit the pipeline job ``plan.name``; adopt a job of that name only when it is provably the
        one this decision submitted (:meth:`_not_ours`): anything else is a PermanentError (a recorded
        ``failed`` decision) that names who created it, and nothing is submitted or deployed."""
        budget = self.retry.budget()
        existing = self._find_job(budget, plan.name)
        if existing is not None:
            self._refuse_foreign(plan, existing)
            log.info("pipeline job %s exists already; adopting it (model=%s)", plan.name, plan.model)
            return self._submitted(existing, adopted=True)
        component_id = self._component_id(budget, plan)
        what = f"submitting pipeline job {plan.name} from {plan.component}"
        try:
            job = budget.call(
                what,
                lambda: self.ml.jobs.create_or_update(self._pipeline_job(plan, component_id), skip_validation=True),
            )
        except AzureError as exc:
            # Another instance may have submitted it between our look and our PUT (the service
            # answers an update, or refuses one that changes the job): the name is the key.
            raced = self._find_job(budget, plan.name)
            if raced is None:
                raise translate(
                    exc,
                    what,
                    f"check models.{plan.model}.retrain in the policy",
                    self.workspace.name,
                    roles_settling=self.roles_settling,
                ) from exc
            self._refuse_foreign(plan, raced)
            log.info("pipeline job %s was submitted concurrently; adopting it", plan.name)
            return self._submitted(raced, adopted=True)
        # A PUT on a name someone created between our look and our PUT is an update of their job
        # (the REST API's create-or-update): the answer says whose job it is.
        self._refuse_foreign(plan, job)
        log.info("submitted pipeline job %s model=%s component=%s", plan.name, plan.model, component_id)
        return self._submitted(job, adopted=False)

    # ------------------------------------------------------------------ provenance

    def _own_identity(self) -> Identity:
        """Who this client acts as: read once from the claims of its own ARM token (unverified: it
        is our credential's own token, not a caller's)."""
        if self._identity is None:
            credential = self._credential() if self._credential is not None else getattr(self.ml, "_credential", None)
            if credential is None:
                raise PermanentError("the Azure ML client has no credential to tell this service's own jobs apart")
            try:
                token = credential.get_token("https://management.azure.com/.default").token
            except AzureError as exc:
                raise translate(exc, "reading the service's own identity", workspace=self.workspace.name) from exc
            self._identity = Identity.from_claims(_claims(token))
        return self._identity

    def _refuse_foreign(self, plan: JobPlan, job: Any) -> None:
        why = self._not_ours(plan, job)
        if why is None:
            return
        creator = getattr(job, "creation_context", None)
        who = getattr(creator, "created_by", None) or "an unknown identity"
        raw = getattr(creator, "created_by_type", None)
        kind = str(getattr(raw, "value", raw) or "unknown type")
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
            f"pipeline job {plan.name} already exists in workspace {self.workspace.name} but was not submitted by "
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
        return self._not_created_by_us(getattr(job, "creation_context", None))

    def _not_created_by_us(self, creator: Any) -> str | None:
        who = str(getattr(creator, "created_by", None) or "")
        raw = getattr(creator, "created_by_type", None)
        kind = str(getattr(raw, "value", raw) or "")
        mine = self._own_identity()
        if not who:
            return "Azure ML reports no creator for it"
        if kind.lower() not in mine.kinds or who.lower() not in mine.names:
            return f"this service's identity ({mine.label}) did not create it"
        return None

    def job_status(self, name: str) -> JobInfo | None:
        """The job as the workspace reports it now (``jobs.get``); None when there is no such job.
        'Paused', which the SDK counts as terminal, is not: a paused job can be resumed."""
        job = self._find_job(self.retry.budget(), name)
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
        )

    def _find_job(self, budget: Budget, name: str) -> Any | None:
        return self._get_or_none(budget, f"looking up pipeline job {name}", lambda: self.ml.jobs.get(name))

    def _component_id(self, budget: Budget, plan: JobPlan) -> str:
        ref = plan.component
        name, sep, rest = ref.partition("@") if "@" in ref else ref.partition(":")
        label, version = (rest, None) if sep == "@" else (None, rest)
        fix = f"register it or fix models.{plan.model}.retrain.pipeline"
        component = self._call(
            budget,
            f"pipeline component {ref!r}",
            lambda: self.ml.components.get(name, version=version, label=label),
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
        """An input's path as the SDK resolves it: never a local path (it would upload from the worker)."""
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
        url = getattr(job, "studio_url", None) or self.workspace.studio(f"runs/{quote(name)}")
        status = getattr(job, "status", None)
        details: dict[str, Any] = {"backend": self.name, "status": str(getattr(status, "value", status) or "") or None}
        if adopted:
            details["adopted"] = True
            details["note"] = f"pipeline job {name} already existed (a redelivery or a concurrent instance); adopted"
        return ActionResult("submitted", job={"name": name, "url": url}, details=details)

    # ------------------------------------------------------------------ deploy

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        """The candidate (its registered version, if any, and the metrics the gate reads) and the
        champion (the model version behind the endpoint's deployment with the most traffic)."""
        budget = self.retry.budget()
        champion = self._champion(budget, plan)
        candidate = self._candidate(budget, plan)
        return CandidateFacts(
            candidate=candidate.label,
            candidate_version=_version(candidate.model),
            candidate_metrics=candidate.facts,
            live_deployment=champion.deployment,
            champion_version=_version(champion.model),
            champion_metrics=champion.facts,
            champion_unreadable=champion.unreadable,
            notes=tuple(candidate.notes + champion.notes),
        )

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        """Register the candidate if it has no version yet, then start its deployment at 0% beside the
        live one, copying the live one's settings. The poller is not waited for."""
        budget = self.retry.budget()
        if facts.live_deployment is None:
            raise PermanentError(f"endpoint {plan.endpoint!r} has no live deployment to copy the settings from")
        live_name = facts.live_deployment.partition("/")[2]
        live, mount_path = self._live_deployment(budget, plan.endpoint, live_name)
        details: dict[str, Any] = {"backend": self.name}
        job = {
            "name": f"{plan.endpoint}/{plan.deployment}",
            "url": self.workspace.studio(f"endpoints/realtime/{quote(plan.endpoint)}/detail"),
        }
        # Looked for before anything is registered: a deployment of the name that is not this
        # decision's fails it with nothing changed.
        found = self._find_deployment_rest(budget, plan)
        model = facts.candidate_version
        if found is not None:
            self._refuse_foreign_deployment(plan, found, model)
            assert model is not None  # checked: it serves this decision's candidate
        if model is None:
            model = self._register(budget, plan, facts)
            details["registered"] = model.label
        details.update(
            {
                "candidate": model.label + (f" (run {plan.run_id})" if plan.run_id else ""),
                "copied_from": facts.live_deployment,
                "traffic": 0,
            }
        )
        if found is not None:
            note = f"deployment {plan.endpoint}/{plan.deployment} already existed (a redelivery); adopted"
            return ActionResult("submitted", job=job, details={**details, "adopted": True, "note": note})
        deployment = self._deployment(plan, live, model, self._collector(budget, plan, live), mount_path)
        what = f"creating deployment {plan.endpoint}/{plan.deployment}"
        # The SDK rewrites the entity it is given (each collection's data becomes an id string), so that
        # each attempt gets a fresh copy: a retried creation would otherwise fail inside the SDK.
        try:  # a 409 (an operation on the endpoint in progress) is retried, then transient
            budget.call(
                what,
                lambda: self.ml.online_deployments.begin_create_or_update(
                    copy.deepcopy(deployment), skip_script_validation=True
                ),
                retry_on=_BUSY,
            )  # the poller is not waited for: the reconciler follows the rollout
        except AzureError as exc:
            fix = f"check models.{plan.model}.deploy and the live deployment {facts.live_deployment}"
            error = translate(exc, what, fix, self.workspace.name, roles_settling=self.roles_settling)
            full = self._endpoint_full(budget, plan.endpoint) if isinstance(error, PermanentError) else None
            raise (PermanentError(f"{what}: {full}") if full else error) from exc
        log.info("started deployment %s model=%s traffic=0", job["name"], model.label)
        return ActionResult("submitted", job=job, details=details)

    # ------------------------------------------------------------------ rollout

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        """The deployment's provisioning state (``online_deployments.get``); None when it does not exist."""
        found = self._get_or_none(
            self.retry.budget(),
            f"deployment {endpoint}/{deployment}",
            lambda: self.ml.online_deployments.get(deployment, endpoint_name=endpoint),
        )
        if found is None:
            return None
        raw = getattr(found, "provisioning_state", None)
        return str(getattr(raw, "value", raw) or "Unknown")

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        return _traffic(self._endpoint(self.retry.budget(), endpoint))

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> bool:
        """Read the endpoint; if its split differs, PUT it with ``traffic`` (``begin_create_or_update``,
        whose poller is not waited for). The SDK leaves out deployments at 0%, as does Azure ML."""
        budget = self.retry.budget()
        current = self._endpoint(budget, endpoint)
        wanted = rollout.live(traffic)
        if _traffic(current) == wanted:
            return False
        current.traffic = dict(wanted)
        what = f"setting the traffic of endpoint {endpoint} to {wanted}"
        try:  # a 409 (another operation on the endpoint in progress) is retried, then transient
            budget.call(what, lambda: self.ml.online_endpoints.begin_create_or_update(current), retry_on=_BUSY)
        except AzureError as exc:
            fix = "check that every deployment named exists on the endpoint and is provisioned"
            raise translate(
                exc, what, fix, self.workspace.name, roles_settling=self.roles_settling
            ) from exc  # the poller is not waited for: the next reconciler pass reads the endpoint again
        log.info("set traffic endpoint=%s traffic=%s", endpoint, wanted)
        return True

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """The endpoint's deployments (``online_deployments.list``) with the endpoint's traffic and
        mirror traffic (``online_endpoints.get``)."""
        budget = self.retry.budget()
        current = self._endpoint(budget, endpoint)
        traffic = {str(k): int(v) for k, v in (getattr(current, "traffic", None) or {}).items()}
        mirror = {str(k): int(v) for k, v in (getattr(current, "mirror_traffic", None) or {}).items()}
        found = self._call(
            budget,
            f"deployments of endpoint {endpoint}",
            lambda: list(self.ml.online_deployments.list(endpoint_name=endpoint)),
        )
        out = []
        for d in found:
            raw = getattr(d, "provisioning_state", None)
            state = str(getattr(raw, "value", raw) or "Unknown")
            out.append(DeploymentInfo(str(d.name), traffic.get(str(d.name), 0), mirror.get(str(d.name), 0), state))
        return out

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        """``online_deployments.begin_delete``, not waited for. A 409 (another operation on the
        endpoint in progress) is retried like a transient failure."""
        budget = self.retry.budget()
        what = f"deleting deployment {endpoint}/{deployment}"
        try:
            budget.call(
                what,
                lambda: self.ml.online_deployments.begin_delete(name=deployment, endpoint_name=endpoint),
                retry_on=_BUSY,
            )
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise translate(
                exc,
                what,
                "check that it has no traffic or mirror traffic",
                self.workspace.name,
                roles_settling=self.roles_settling,
            ) from exc
        log.info("deleting deployment endpoint=%s deployment=%s", endpoint, deployment)
        return True

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        """The model-monitor schedules (``CreateMonitor`` schedules, enabled or not) whose monitoring
        target (``MonitoringTarget(endpoint_deployment_id=...)``) is ``endpoint/deployment``."""
        ops, rg, ws = self.ml.schedules.service_client, self.workspace.resource_group, self.workspace.name
        found = self._call(
            self.retry.budget(),
            "model-monitor schedules",
            lambda: list(ops.list(rg, ws, list_view_type="All")),
        )
        wanted = (endpoint.lower(), deployment.lower())
        return sorted(str(s["name"]) for s in found if _monitor_target(s) == wanted)

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        """Read the schedule and PUT it back with only its monitoring target's deployment id changed
        (in the form it had). Through the REST client the SDK's ``schedules`` use, so the signals,
        compute and trigger go back exactly as Azure ML stored them (the entity round trip would
        re-resolve every signal's data). A 409 (operation in progress) is retried."""
        ops, rg, ws = self.ml.schedules.service_client, self.workspace.resource_group, self.workspace.name
        budget = self.retry.budget()
        found = self._call(budget, f"model-monitor schedule {schedule}", lambda: ops.get(rg, ws, schedule))
        target = found["properties"]["action"]["monitorDefinition"]["monitoringTarget"]
        old = str(target.get("deploymentId") or "")
        new = _retargeted_id(old, endpoint, deployment)
        if old == new:
            return False
        target["deploymentId"] = new
        what = f"pointing model-monitor schedule {schedule} at {endpoint}/{deployment}"
        try:
            budget.call(
                what, lambda: ops.begin_create_or_update(rg, ws, schedule, found, polling=False), retry_on=_BUSY
            )
        except AzureError as exc:
            raise translate(
                exc,
                what,
                "check the schedule in the studio's Monitoring page",
                self.workspace.name,
                roles_settling=self.roles_settling,
            ) from exc
        log.info("model monitor %s now targets %s/%s (was %s)", schedule, endpoint, deployment, old)
        return True

    def _endpoint(self, budget: Budget, endpoint: str) -> Any:
        return self._call(
            budget,
            f"online endpoint {endpoint!r}",
            lambda: self.ml.online_endpoints.get(endpoint),
            "create it or fix the model's deploy.endpoint in the policy",
        )

    def _champion(self, budget: Budget, plan: DeployPlan) -> _Champion:
        """The endpoint's live deployment (the one with the most traffic) and the model version it serves."""
        endpoint = self._call(
            budget,
            f"online endpoint {plan.endpoint!r}",
            lambda: self.ml.online_endpoints.get(plan.endpoint),
            f"create it or fix models.{plan.model}.deploy.endpoint",
        )
        traffic = {str(k): int(v) for k, v in (getattr(endpoint, "traffic", None) or {}).items()}
        name = max((d for d, pct in traffic.items() if pct > 0), key=lambda d: traffic[d], default=None)
        if name is None:
            return _Champion(None, None, None)
        live = self._call(
            budget,
            f"live deployment {plan.endpoint}/{name}",
            lambda: self.ml.online_deployments.get(name, endpoint_name=plan.endpoint),
        )
        where = f"{plan.endpoint}/{name}"
        ref = str(getattr(live, "model", None) or "")
        registry = _REGISTRY_MODEL.match(ref)
        if registry:  # a registry's model: not a version of this workspace, whose metrics we could read
            why = (
                f"not rolled out: the champion in {where} is served from registry {registry['registry']!r} "
                f"({ref}), which the service does not read, so the candidate cannot be compared with it; "
                "compare them by hand and deploy with POST /api/models/{model}/deploy, or serve the champion "
                "from a version registered in this workspace"
            ).replace("{model}", plan.model)
            return _Champion(where, live, None, unreadable=why)
        model = self._model_of(budget, live)
        if model is None:
            return _Champion(where, live, None)
        facts, notes = self._version_metrics(budget, plan, model, tags_first=True)
        return _Champion(where, live, model, facts, notes=notes)

    def _model_of(self, budget: Budget, deployment: Any) -> Any | None:
        ref = str(getattr(deployment, "model", None) or "")
        match = _VERSIONED_ID.search(ref) or _SHORT_MODEL.match(ref)
        if not match or ref.startswith("azureml://registries/"):
            log.warning(
                "live deployment %s serves model %r, which is not a workspace model version", deployment.name, ref
            )
            return None
        name, version = match["name"], match["version"]
        return self._call(budget, f"champion model {name}:{version}", lambda: self.ml.models.get(name, version=version))

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
        if tags_first and plan.gate is not None and gate.metric_value(own, plan.gate.metric) is not None:
            return own, []  # a champion that carries the metric: its source run is not read
        label = f"{model.name}:{model.version}"
        if source == "run":
            job = self._get_or_none(budget, f"run {job_name} of model {label}", lambda: self.ml.jobs.get(job_name))
            if job is None:
                return own, [f"the workspace has no run {job_name} (the source run of {label})"]
            ran = _facts(job.tags, job.properties)
            return ({**ran, **own} if tags_first else {**own, **ran}), []
        run = self._mlflow_run(budget, str(job_name))
        if run is None:
            return own, [f"MLflow has no run {job_name} (the source run of {label})"]
        return ({**run.metrics, **own} if tags_first else {**own, **run.metrics}), []

    def _mlflow(self) -> MlflowRuns:
        if self.mlflow is None:
            raise PermanentError(
                "the gate reads MLflow metrics, but this backend has no MLflow reader; build it with "
                "AzureMLActions.from_settings"
            )
        return self.mlflow

    def _mlflow_run(self, budget: Budget, run_id: str) -> MlflowRun | None:
        try:
            return self._mlflow().run(budget, run_id)
        except AzureError as exc:
            raise translate(
                exc,
                f"reading MLflow run {run_id}",
                _MLFLOW_FIX,
                self.workspace.name,
                roles_settling=self.roles_settling,
            ) from exc

    def _mlflow_steps(self, budget: Budget, pipeline: MlflowRun) -> list[MlflowRun]:
        try:
            return self._mlflow().children(budget, pipeline)
        except AzureError as exc:
            what = f"searching the MLflow runs of pipeline {pipeline.run_id}"
            raise translate(exc, what, _MLFLOW_FIX, self.workspace.name, roles_settling=self.roles_settling) from exc

    def tracking_uri(self) -> str:
        """The workspace's MLflow tracking URI (``workspaces.get(name).mlflow_tracking_uri``)."""
        found = self._call(
            self.retry.budget(),
            f"workspace {self.workspace.name}",
            lambda: self.ml.workspaces.get(self.workspace.name),
        )
        uri = getattr(found, "mlflow_tracking_uri", None)
        if not uri:
            raise PermanentError(f"workspace {self.workspace.name} reports no MLflow tracking URI")
        return str(uri)

    def _candidate(self, budget: Budget, plan: DeployPlan) -> _Candidate:
        """The model version to roll out (None: the run registered none yet) and the facts the gate reads:
        the MLflow metrics of the run or of its step ``gate.step`` (gate source ``mlflow``), the run's
        tags and properties (``run``) or the model version's (``model``)."""
        source = plan.gate.source if plan.gate is not None else "run"
        if plan.run_id:
            return self._run_candidate(budget, plan, source)
        version, label = (plan.version, None) if plan.version else (None, "latest")
        model = self._call(
            budget,
            f"candidate model {plan.model}:{plan.version or '@latest'}",
            lambda: self.ml.models.get(plan.model, version=version, label=label),
            "register it, or send an existing version",
        )
        facts, notes = self._version_metrics(budget, plan, model, tags_first=False)
        return _Candidate(f"{model.name}:{model.version}", model, facts, notes)

    def _run_candidate(self, budget: Budget, plan: DeployPlan, source: str) -> _Candidate:
        """A finished pipeline run: the versions it or its steps registered, and its metric."""
        assert plan.run_id is not None
        run_id = plan.run_id
        notes: list[str] = []
        steps: list[MlflowRun] = []
        pipeline: MlflowRun | None = None
        if self.mlflow is not None or source == "mlflow":
            try:
                pipeline = self._mlflow_run(budget, run_id)
                steps = self._mlflow_steps(budget, pipeline) if pipeline is not None else []
            except PermanentError as exc:
                if source == "mlflow":
                    raise
                notes.append(f"the versions its steps registered were not looked for: {exc}")
            if pipeline is None and not notes:
                notes.append(f"MLflow has no run {run_id}")
        runs = {run_id, *(s.run_id for s in steps)}
        model = next(iter(self._versions_of_run(budget, plan, runs)), None)
        if source == "run":
            return _Candidate(f"run {run_id}", model, _facts(plan.run_tags, plan.run_properties), notes)
        if source == "model":
            if model is None:
                return _Candidate(f"run {run_id} (which registered no version of {plan.model})", None, {}, notes)
            return _Candidate(f"{model.name}:{model.version}", model, _facts(model.tags, model.properties), notes)
        step = plan.gate.step if plan.gate is not None else None
        if step is None:
            return _Candidate(f"run {run_id}", model, dict(pipeline.metrics) if pipeline else {}, notes)
        found = [s for s in steps if s.name == step] or [s for s in steps if s.name.casefold() == step.casefold()]
        if not found:
            names = ", ".join(sorted(s.name for s in steps)) or "none"
            notes.append(f"pipeline run {run_id} has no step named {step!r} (its steps: {names})")
            return _Candidate(f"run {run_id} (step {step!r} not found; steps: {names})", model, {}, notes)
        chosen = found[0]
        return _Candidate(f"run {run_id} (step {step}: {chosen.run_id})", model, dict(chosen.metrics), notes)

    def _versions_of_run(self, budget: Budget, plan: DeployPlan, runs: set[str]) -> list[Any]:
        """Versions of the model registered from this run or one of its steps (``runs``; a step that calls
        ``mlflow.register_model`` registers under its own run), or by us on an earlier delivery (tagged
        with the decision, and created by this service's identity)."""
        versions = (
            self._get_or_none(
                budget, f"versions of model {plan.model}", lambda: list(self.ml.models.list(name=plan.model))
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
                and self._not_created_by_us(getattr(v, "creation_context", None)) is None
            )
        ]

    def _register(self, budget: Budget, plan: DeployPlan, facts: CandidateFacts) -> ModelVersion:
        from azure.ai.ml.entities import Model

        if not plan.run_id:
            raise PermanentError(
                f"candidate {facts.candidate} has no registered version and no run to register it from"
            )
        tags = dict(plan.tags)
        if plan.gate is not None:
            value = gate.metric_value(facts.candidate_metrics, plan.gate.metric)
            if value is not None:
                tags[plan.gate.metric] = f"{value:g}"  # so that it can be judged as a champion later
        path = f"azureml://jobs/{plan.run_id}/outputs/{plan.model_output}"
        champion = facts.champion_version
        model = Model(
            name=plan.model,
            path=path,
            type=(champion.type if champion is not None else None) or "custom_model",
            tags=tags,
            description=f"registered by the retrain service from run {plan.run_id}",
        )
        registered = self._call(
            budget,
            f"registering model {plan.model} from {path}",
            lambda: self.ml.models.create_or_update(model),
            f"check that the pipeline has the output models.{plan.model}.deploy.model_output ({plan.model_output!r})",
        )
        version = _version(registered)
        assert version is not None
        return version

    def _live_deployment(self, budget: Budget, endpoint: str, name: str) -> tuple[Any, str | None]:
        """The live deployment as the SDK's entity, and its ``modelMountPath``. azure-ai-ml 1.35 drops
        ``modelMountPath`` when it converts a deployment it read (``ManagedOnlineDeployment._from_rest_object``),
        so the deployment is read through the REST client ``online_deployments.get`` itself uses, and
        converted here: one request, and the mount path from the REST body."""
        from azure.ai.ml.entities import OnlineDeployment

        rest = getattr(self.ml.online_deployments, "_online_deployment", None)
        if rest is None:  # another SDK than the pinned one: its entity, if it keeps the path
            live = self._call(
                budget,
                f"live deployment {endpoint}/{name}",
                lambda: self.ml.online_deployments.get(name, endpoint_name=endpoint),
            )
            return live, getattr(live, "model_mount_path", None)
        raw = self._call(
            budget,
            f"live deployment {endpoint}/{name}",
            lambda: rest.get(
                resource_group_name=self.workspace.resource_group,
                workspace_name=self.workspace.name,
                endpoint_name=endpoint,
                deployment_name=name,
            ),
        )
        mount_path = getattr(raw.properties, "model_mount_path", None)
        return OnlineDeployment._from_rest_object(raw), None if mount_path is None else str(mount_path)

    def _endpoint_full(self, budget: Budget, endpoint: str) -> str | None:
        """Why a refused creation was refused, when the endpoint holds as many deployments as Azure ML
        allows (:data:`MAX_DEPLOYMENTS`); None otherwise (Azure's wording for it is not documented, so
        the count decides, read after the refusal)."""
        try:
            found = budget.call(
                f"deployments of endpoint {endpoint}",
                lambda: list(self.ml.online_deployments.list(endpoint_name=endpoint)),
            )
        except (AzureError, TransientError):
            return None  # the creation's own error says what it can
        if len(found) < MAX_DEPLOYMENTS:
            return None
        names = ", ".join(sorted(str(d.name) for d in found))
        return (
            f"endpoint {endpoint} already has {len(found)} deployments, the most Azure ML allows per endpoint "
            f'("Manage and increase quotas"); delete deployments it no longer needs (rolled-back or demoted '
            f"ones at 0% traffic: {names}) or ask for a higher limit with a quota request, then deploy again"
        )

    def _find_deployment_rest(self, budget: Budget, plan: DeployPlan) -> Any | None:
        """The deployment as the REST API answers it (the SDK's entity drops ``systemData``)."""
        rest = getattr(self.ml.online_deployments, "_online_deployment", None)
        if rest is None:
            return self._find_deployment(budget, plan)
        return self._get_or_none(
            budget,
            f"deployment {plan.endpoint}/{plan.deployment}",
            lambda: rest.get(
                resource_group_name=self.workspace.resource_group,
                workspace_name=self.workspace.name,
                endpoint_name=plan.endpoint,
                deployment_name=plan.deployment,
            ),
        )

    def _refuse_foreign_deployment(self, plan: DeployPlan, found: Any, model: ModelVersion | None) -> None:
        """A deployment of the candidate's name is adopted only when it is this decision's: its tags,
        the candidate model (``model``; None: this decision has registered no version yet, so no
        deployment of it can be its own), created by this service's identity. Otherwise a
        PermanentError naming its creator: nothing is registered or deployed and no traffic moves."""
        tags = {str(k): v for k, v in (getattr(found, "tags", None) or {}).items()}
        props = getattr(found, "properties", None)
        served = str(getattr(props, "model", None) or getattr(found, "model", None) or "")
        creator = getattr(found, "system_data", None) or getattr(found, "creation_context", None)
        wrong = sorted(k for k, v in plan.tags.items() if tags.get(k) != v)
        if wrong:
            why: str | None = f"its tags {', '.join(wrong)} are not this decision's"
        elif model is None:
            why = f"it serves {served[:300]!r}, and this decision has registered no candidate version yet"
        elif served.lower() != str(model.id).lower():
            why = f"it serves {served[:300]!r}, not the candidate {model.label}"
        else:
            why = self._not_created_by_us(creator)
        if why is None:
            return
        who = str(getattr(creator, "created_by", None) or "an unknown identity")[:200]
        raw = getattr(creator, "created_by_type", None)
        kind = str(getattr(raw, "value", raw) or "unknown type")
        log.warning(
            "deployment %s/%s exists but is not this decision's (%s); created by %r (%s); not adopted",
            plan.endpoint,
            plan.deployment,
            why,
            who,
            kind,
        )
        raise PermanentError(
            f"deployment {plan.endpoint}/{plan.deployment} already exists but was not created by this service for "
            f"this decision ({why}): it was created by {who} ({kind}); it is not adopted and no traffic is moved. "
            "Someone with access to the workspace created a deployment under the name this decision uses: find "
            "out who, and delete it"
        )

    def _find_deployment(self, budget: Budget, plan: DeployPlan) -> Any | None:
        return self._get_or_none(
            budget,
            f"deployment {plan.endpoint}/{plan.deployment}",
            lambda: self.ml.online_deployments.get(plan.deployment, endpoint_name=plan.endpoint),
        )

    def _collector(self, budget: Budget, plan: DeployPlan, live: Any) -> Any | None:
        """The live deployment's data collector for the candidate, collecting into the same data assets
        (so a model monitor reading them keeps its production data). The SDK registers each
        collection's data asset when it creates a deployment, from a name, version and path: given
        those of the live deployment's assets, it finds them registered already."""
        from azure.ai.ml.entities._deployment.data_asset import DataAsset

        collector = copy.deepcopy(getattr(live, "data_collector", None))
        if collector is None:
            return None
        for name, collection in (collector.collections or {}).items():
            ref = str(collection.data or "")
            match = _DATA_ID.search(ref) or _SHORT_DATA.match(ref)
            if not match:
                collection.data = None  # the SDK registers <endpoint>-<deployment>-<name> for it
                continue
            asset_name, asset_version = match["name"], match["version"]
            asset = self._call(
                budget,
                f"data asset {asset_name}:{asset_version} of the {name} collection of {live.name}",
                partial(self.ml.data.get, asset_name, version=asset_version),
            )
            collection.data = DataAsset(name=asset.name, version=asset.version, path=asset.path)
        log.info("candidate %s/%s collects into the data assets of %s", plan.endpoint, plan.deployment, live.name)
        return collector

    def _deployment(
        self, plan: DeployPlan, live: Any, model: ModelVersion, collector: Any | None, mount_path: str | None
    ) -> Any:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        if not isinstance(live, ManagedOnlineDeployment):
            raise PermanentError(
                f"live deployment {plan.endpoint}/{live.name} is a {type(live).__name__}; "
                "the service rolls out to managed online endpoints only"
            )
        no_code = model.type == "mlflow_model" and live.code_configuration is None
        return ManagedOnlineDeployment(
            name=plan.deployment,
            endpoint_name=plan.endpoint,
            model=str(model.id),
            # An MLflow model without scoring code is served by MLflow itself: an environment given
            # here would replace the one Azure ML builds from the model, and its scoring with it.
            environment=None if no_code else live.environment,
            code_configuration=live.code_configuration,
            environment_variables=dict(live.environment_variables or {}),
            instance_type=live.instance_type,
            instance_count=plan.instance_count or live.instance_count,
            scale_settings=live.scale_settings,  # type: ignore[arg-type]  # read from a managed deployment
            request_settings=live.request_settings,
            liveness_probe=live.liveness_probe,
            readiness_probe=live.readiness_probe,
            app_insights_enabled=bool(live.app_insights_enabled),
            egress_public_network_access=live.egress_public_network_access,
            # The data collector feeds v2 model monitoring: without it the new deployment collects
            # nothing once it is promoted, and the monitor has nothing to judge.
            data_collector=collector,
            # The live one's modelMountPath, read from the REST body (the SDK drops it on read).
            model_mount_path=mount_path,
            tags={**dict(live.tags or {}), **plan.tags},
            description=f"candidate {model.label}, started at 0% beside {live.name}",
        )
