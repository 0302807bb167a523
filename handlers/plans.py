"""Plans and decisions: the values :func:`handlers.decisions.decide` returns.

A decision is ``Retrain``, ``Deploy`` or ``Skip(reason)``; the first two carry the exact plan the
executor carries out (:class:`JobPlan`: the pipeline job to submit; :class:`DeployPlan`: the candidate
to gate and roll out), rendered to and read back from the ledger by ``as_dict`` / ``from_dict``. Every
decision carries a deterministic key, derived from the model and the triggering event (for the deploy of
a finished run: from the run), so a redelivered event yields the same decision, the same job name and the
same ledger record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from handlers.keys import digest, slug
from handlers.signals import TAG_DECISION, TAG_MODEL, TAG_SERVICE, RunFinished, Trigger

if TYPE_CHECKING:  # the policy module imports pydantic; a plan only carries the gate
    from handlers.gate_rules import GateRule
    from handlers.policy import ModelPolicy

SERVICE_TAG_VALUE = "retrain-service"


@dataclass(frozen=True)
class JobPlan:
    """The exact pipeline job a Retrain submits (or, in dry run, would submit)."""

    name: str
    model: str
    component: str
    experiment: str
    compute: str | None
    inputs: dict[str, dict[str, Any]]
    tags: dict[str, str]
    display_name: str
    # what is read before it is submitted (handlers.worthiness): "veto" {run, signals}: the monitor run
    # whose veto-class breaches block it; "worthiness" {endpoint?}: the training data of the champion (the
    # version the endpoint serves; without one, the latest) must have moved on
    checks: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            **({"checks": self.checks} if self.checks else {}),
            "name": self.name,
            "type": "pipeline",
            "model": self.model,
            "component": self.component,
            "experiment_name": self.experiment,
            "compute": self.compute,
            "inputs": self.inputs,
            "tags": self.tags,
            "display_name": self.display_name,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobPlan:
        """The plan ``as_dict`` rendered (a reserved decision's record): raises KeyError, TypeError or
        ValueError when ``data`` is not such a rendering."""
        if data["type"] != "pipeline":
            raise ValueError(f"not a pipeline job rendering: type {data['type']!r}")
        return cls(
            name=str(data["name"]),
            model=str(data["model"]),
            component=str(data["component"]),
            experiment=str(data["experiment_name"]),
            compute=None if data["compute"] is None else str(data["compute"]),
            inputs={k: dict(v) for k, v in data["inputs"].items()},
            tags=dict(data["tags"]),
            display_name=str(data["display_name"]),
            checks=dict(data.get("checks") or {}),
        )


@dataclass(frozen=True)
class DeployPlan:
    """A candidate to gate and roll out on the model's online endpoint."""

    model: str
    endpoint: str
    deployment: str
    run_id: str | None
    version: str | None
    source: str  # run, registration, manual
    tags: dict[str, str]
    run_tags: dict[str, str] = field(default_factory=dict)
    run_properties: dict[str, Any] = field(default_factory=dict)
    gate: GateRule | None = None  # the policy's deploy.gate; None: every candidate passes
    model_output: str = "model"  # the run output registered as the candidate when the run registered none
    instance_count: int | None = None  # deploy.instance_count: the candidate's start size (None: the live one's)
    # deploy.rollout.mirror: the candidate shadows the live one first, so its data collector collects into
    # data assets of its own, never into the live deployment's
    shadows: bool = False
    registry: str | None = None  # environment.registry, role downstream: the one registry whose champions are read
    share_to: str | None = None  # environment.registry, role upstream: the registry a promotion shares into
    # environment.upstream (role downstream): the dev workspace a registry version's lineage must name to be picked up
    upstream: str | None = None
    # environment.upstream_identity: the ids of the identity the registry must record as a picked-up version's creator
    upstream_identity: tuple[str, ...] = ()
    # the experiment the run's event named (source run): the workspace must say the same of the run (handlers/told.py)
    experiment: str | None = None

    @property
    def keyed(self) -> bool:
        """A decision keyed by its candidate (a run's, a registry version's), not by the event that told of
        it: every event about the candidate makes the same decision, judged once."""
        return self.source in ("run", "registry")

    def as_dict(self) -> dict[str, Any]:
        """Everything needed to act again (the reconciler resumes a reserved deploy from this)."""
        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "deployment": self.deployment,
            "candidate": {
                "run_id": self.run_id,
                "version": self.version,
                "source": self.source,
                "run_tags": self.run_tags,
                "run_properties": self.run_properties,
            },
            "gate": self.gate.model_dump() if self.gate else None,
            "model_output": self.model_output,
            "instance_count": self.instance_count,
            **({"shadows": True} if self.shadows else {}),
            **({"registry": self.registry} if self.registry else {}),
            **({"share_to": self.share_to} if self.share_to else {}),
            **({"upstream": self.upstream} if self.upstream else {}),
            **({"upstream_identity": list(self.upstream_identity)} if self.upstream_identity else {}),
            **({"experiment": self.experiment} if self.experiment is not None else {}),
            "traffic": 0,
            "tags": self.tags,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeployPlan:
        """The plan ``as_dict`` rendered: raises KeyError, TypeError or ValueError (a pydantic
        ValidationError for a gate the policy model no longer accepts) when it is not one."""
        from handlers.gate_rules import GateRule  # pydantic: loaded only on the path that resumes a deploy

        candidate = data["candidate"]
        return cls(
            model=str(data["model"]),
            endpoint=str(data["endpoint"]),
            deployment=str(data["deployment"]),
            run_id=None if candidate["run_id"] is None else str(candidate["run_id"]),
            version=None if candidate["version"] is None else str(candidate["version"]),
            source=str(candidate["source"]),
            tags=dict(data["tags"]),
            run_tags=dict(candidate["run_tags"]),
            run_properties=dict(candidate["run_properties"]),
            gate=None if data["gate"] is None else GateRule.model_validate(data["gate"]),
            model_output=str(data["model_output"]),
            instance_count=None if data.get("instance_count") is None else int(data["instance_count"]),
            shadows=bool(data.get("shadows")),
            registry=None if data.get("registry") is None else str(data["registry"]),
            share_to=None if data.get("share_to") is None else str(data["share_to"]),
            upstream=None if data.get("upstream") is None else str(data["upstream"]),
            upstream_identity=tuple(str(i) for i in data.get("upstream_identity") or ()),
            experiment=None if data.get("experiment") is None else str(data["experiment"]),
        )


@dataclass(frozen=True)
class Retrain:
    id: str
    model: str
    reason: str
    trigger: Trigger
    job: JobPlan
    force: bool = False
    dry_run: bool = False
    action: str = "retrain"
    once: bool = False  # keyed by what it is about (an upstream run): carried out once, whichever event asks
    urgent: bool = False  # a retrain_now signal's: past the cooldown, never past the budget (handlers.signal_rules)
    details: dict[str, Any] = field(default_factory=dict)  # said in each of its records (the signal and its class)


@dataclass(frozen=True)
class Deploy:
    id: str
    model: str
    reason: str
    trigger: Trigger
    plan: DeployPlan
    force: bool = False
    dry_run: bool = False
    action: str = "deploy"


@dataclass(frozen=True)
class Skip:
    id: str
    model: str | None
    reason: str
    trigger: Trigger
    action: str = "none"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Collect:
    """A new blob counted into ``model``'s burst of new data (:mod:`handlers.newdata`): nothing starts
    now; the reconciler starts one retrain once the burst has settled (no new blob for ``settle``)."""

    id: str
    model: str
    reason: str
    trigger: Trigger
    blob: str  # container/name
    settle: timedelta
    action: str = "collect"


Decision = Retrain | Deploy | Collect | Skip


def decision_id(action: str, model: str | None, trigger: Trigger) -> str:
    """Deterministic: the same event (source, type, id) and model always give the same id."""
    key = digest(action, model or "-", trigger.source.lower(), trigger.event_type, trigger.event_id)
    return f"{action[:2]}-{key}"


def run_decision_id(model: str, run_id: str) -> str:
    """The deploy decision for a finished run: keyed by the run, not by the event that told of it, so
    that its RunCompleted event and the reconciler, which catches a completion whose event was
    missed, make the same decision (one deployment name, one record) whichever comes first or twice."""
    return f"de-{digest('deploy', model, 'run', run_id)}"


def registry_decision_id(model: str, registry: str, version: str) -> str:
    """The deploy decision for a registry version picked up (:mod:`handlers.pickup`): keyed by the version,
    so its notification, a redelivery of it and the reconciler's poll of the registry make one decision."""
    return f"de-{digest('deploy', model, 'registry', registry.casefold(), version)}"


def skip(trigger: Trigger, reason: str, model: str | None = None, **details: Any) -> Skip:
    return Skip(decision_id("skip", model, trigger), model, reason, trigger, details=details)


def rendered_of(decision: Retrain | Deploy) -> dict[str, Any]:
    """The plan a decision carries out, as its ``reserved`` record keeps it."""
    return decision.job.as_dict() if isinstance(decision, Retrain) else decision.plan.as_dict()


def job_of(rendered: dict[str, Any]) -> dict[str, Any] | None:
    """The job (or ``endpoint/deployment``) a rendered plan names, as a record's ``job``."""
    if rendered.get("type") == "pipeline":
        return {"name": rendered["name"], "url": None}
    if "deployment" in rendered:
        return {"name": f"{rendered['endpoint']}/{rendered['deployment']}", "url": None}
    return None


def deploy_plan(
    model: str, mp: ModelPolicy, did: str, source: str, run: RunFinished | None, version: str | None
) -> DeployPlan:
    """The candidate plan of ``model`` under its policy ``mp`` (which has a deploy section), for decision ``did``."""
    assert mp.deploy is not None
    env = mp.environment
    key = did.split("-", 1)[1]
    base = slug(model, 20)
    if not base[0].isalpha():
        base = "m" + base[:19]
    return DeployPlan(
        model=model,
        endpoint=mp.deploy.target,
        deployment=f"{base}-{key[:8]}",
        run_id=run.run_id if run else None,
        version=version,
        source=source,
        tags={TAG_SERVICE: SERVICE_TAG_VALUE, TAG_MODEL: model, TAG_DECISION: did},
        run_tags=dict(run.run_tags) if run else {},
        run_properties=dict(run.run_properties) if run else {},
        gate=mp.deploy.gate,
        model_output=mp.deploy.model_output,
        instance_count=mp.deploy.instance_count,
        shadows=mp.deploy.rollout.mirror is not None,
        registry=env.serves_from if env is not None else None,
        share_to=env.registry if env is not None and env.role == "upstream" else None,
        upstream=env.upstream if env is not None and env.role == "downstream" else None,
        upstream_identity=tuple(env.upstream_identity or ()) if env is not None and env.role == "downstream" else (),
        experiment=run.experiment if run else None,
    )
