"""The Azure ML workspace's ports: running retraining jobs (:class:`Jobs`) and deploying candidates
(:class:`Deployments`), as Protocols, with the values they answer. Adapters: function_app/adapters/azureml/.
The ledger's and the notifier's ports are in :mod:`handlers.ports`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from handlers.plans import DeployPlan, JobPlan
from handlers.worthiness import RetrainFacts


@dataclass(frozen=True)
class ActionResult:
    """What an action did: ``submitted`` (acting in Azure) or ``planned`` (dry run), with the job (or
    deployment) it acts through. ``details["note"]`` is extra explanation kept beside the decision's
    own reason. ``trains_on``: the data inputs of a retraining job adopted, not submitted, by this call (input ->
    what it reads, ``azureml:<asset>:<version>`` for a version of the workspace's data; :func:`handlers.pins.as_adopted`);
    None when the job was submitted with the plan's inputs."""

    outcome: str
    job: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    trains_on: Mapping[str, str | None] | None = None


@dataclass(frozen=True)
class JobInfo:
    """A job as the workspace reports it now: ``status`` as Azure ML spells it ('Completed', 'Failed',
    'Canceled', 'NotResponding', 'Running', ...), and whether that status is final (``terminal``)."""

    name: str
    status: str
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    terminal: bool = False
    display_name: str = ""


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version: ``id`` is the reference a deployment names (an asset id)."""

    name: str
    version: str
    id: str
    type: str | None = None  # custom_model, mlflow_model, ...

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class CandidateFacts:
    """What the candidate gate judges, as a deployments adapter read it from the workspace (or, in a
    dry run, from the plan alone): the candidate, its registered version if it has one yet, and the
    metrics the gate reads for it; the live deployment (the one with the most traffic) and the
    champion version it serves, with its metrics. ``champion_metrics`` is None when there is no live
    deployment, ``{}`` when the live model's metrics cannot be read. ``notes`` say what was not read."""

    candidate: str
    candidate_version: ModelVersion | None
    candidate_metrics: dict[str, Any]
    live_deployment: str | None = None
    champion_version: ModelVersion | None = None
    champion_metrics: dict[str, Any] | None = None
    champion_unreadable: str | None = None  # why the champion cannot be compared (the gate skips)
    candidate_unreadable: str | None = None  # why the candidate is not one to judge (the gate skips)
    candidate_absent: bool = False  # not (yet) as told (a registry version, a run): the skip is judged again later
    notes: tuple[str, ...] = ()

    @property
    def champion(self) -> str | None:
        if self.live_deployment is None:
            return None
        if self.champion_version is None:
            return self.live_deployment
        return f"{self.champion_version.label} ({self.live_deployment})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "candidate_version": self.candidate_version.label if self.candidate_version else None,
            "champion": self.champion,
            "live_deployment": self.live_deployment,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment of an online endpoint as it stands: its share of the live traffic and of the
    mirrored traffic (percent), and its provisioning state as Azure ML spells it."""

    name: str
    traffic: int
    mirror: int
    state: str

    @property
    def idle(self) -> bool:
        """No live and no mirrored traffic: deleting it changes what no caller sees."""
        return self.traffic == 0 and self.mirror == 0


class Jobs(Protocol):
    """Retraining jobs in the workspace (or their rendering, in dry run)."""

    name: str

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        """Submit the pipeline job named ``plan.name``; adopt an existing job of that name only when it is
        provably this decision's (its tags, experiment, component and creator), else raise PermanentError."""
        ...

    def find_retrain(self, plan: JobPlan) -> ActionResult | None:
        """The job named ``plan.name``, adopted as :meth:`submit_retrain` adopts it (``submitted``, ``trains_on`` what
        its inputs hold), when it exists and is provably this decision's; None when the workspace has no such job;
        PermanentError, naming who created it, when it exists and is not. Reads only: what a retrain resumed after
        its worker died asks first, since that worker may have submitted it."""
        ...

    def job_status(self, name: str) -> JobInfo | None:
        """The job ``name`` as it is now; None when the workspace has no such job. Raises
        TransientError when Azure cannot answer now, PermanentError when it refuses."""
        ...

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        """What ``plan.checks`` need (:mod:`handlers.worthiness`): the monitor run's breached signals, the
        champion's training data and those assets' latest versions. What cannot be read is a note, not an
        error; TransientError when Azure cannot answer now."""
        ...


class Deployments(Protocol):
    """Candidates, online deployments and endpoint traffic (or their rendering, in dry run)."""

    name: str

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        """Read what the gate judges (nothing is changed): the candidate, the live deployment and
        its champion. Raises TransientError / PermanentError like every read."""
        ...

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        """Start the candidate of ``plan`` (which passed the gate on ``facts``) at 0% beside the live
        deployment, registering it first if it has no version; never wait for the long-running
        operation; adopt a deployment of the same name."""
        ...

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        """The candidate deployment named ``plan.deployment``, adopted as :meth:`start_deploy` adopts it (``submitted``,
        ``adopted``), when it exists and is provably this decision's; None when the endpoint has no such deployment;
        PermanentError, naming who created it, when it exists and is not. Reads only: what a deploy resumed after its
        worker died asks first, since that worker may have started it."""
        ...

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        """The provisioning state of ``endpoint/deployment`` as Azure ML spells it ('Creating',
        'Updating', 'Succeeded', 'Failed', 'Canceled', ...); None when there is no such deployment."""
        ...

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        """The endpoint's traffic split now: deployment name -> percent (deployments at 0% may be absent)."""
        ...

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        """Give the endpoint the traffic split ``traffic`` (a deployment left out gets 0%; None: the
        split it has) and, when ``mirror`` is not None, the mirror traffic ``mirror`` (``{}``: none), in
        one update; submit it and do not wait for it. Returns False when the endpoint has both already
        (nothing is sent), so setting the same traffic twice is harmless. Never asks for what Azure ML
        refuses (a mirror over 50%, two mirrored deployments, one deployment live and mirrored): a
        PermanentError instead."""
        ...

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """The endpoint's deployments, each with its live and mirrored traffic and its state."""
        ...

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        """Start deleting ``endpoint/deployment`` (not waited for). False when it is gone already.
        Azure refuses to delete a deployment that has traffic (PermanentError)."""
        ...

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        """The model-monitor schedules whose monitoring target is ``endpoint/deployment``."""
        ...

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        """Point the model-monitor schedule ``schedule`` at ``endpoint/deployment``, changing nothing
        else. False when it targets it already (nothing is sent)."""
        ...

    def share_promoted(
        self, endpoint: str, deployment: str, registry: str, lineage: Mapping[str, str]
    ) -> dict[str, Any]:
        """Share the workspace model version ``endpoint/deployment`` serves into ``registry`` (its name and
        version), tagged with ``lineage``; what was done, for the promotion's record. A version the
        registry holds from the same decision already is not shared again; another one is refused."""
        ...


class Actions(Jobs, Deployments, Protocol):
    """A backend that stands for both: the Azure ML adapter and the dry run."""
