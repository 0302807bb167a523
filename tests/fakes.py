"""In-memory fakes of our own ports that record calls (fakes over mocks, STYLE.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.analysis import Reading
from handlers.errors import PermanentError, TransientError
from handlers.plans import DeployPlan, JobPlan
from handlers.signals import FINISHED_STATUSES
from handlers.workspace_ports import ActionResult, CandidateFacts, DeploymentInfo, JobInfo, ModelVersion
from handlers.worthiness import RetrainFacts


@dataclass
class RecordingActions:
    """Like a workspace: a job name submitted twice is adopted, not started again (the adopted job's inputs are
    what it was submitted with); a data asset read through ``@latest`` is pinned (``latest``). A submitted job
    is 'Running' until a test sets ``statuses[name]`` (or ``run_tags[name]``: tags the run logged);
    ``forget(name)`` deletes it; ``status_error`` is raised by :meth:`job_status`. Every candidate
    logged ``metrics`` (its run's tags override them); the endpoint's live deployment is the one
    with the most traffic (``blue`` when a test set none), serving a champion with ``champion_metrics``."""

    name: str = "recording"
    jobs: dict[str, JobPlan] = field(default_factory=dict)
    submissions: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)  # the jobs a resumed retrain looked for (find_retrain)
    deployments: list[DeployPlan] = field(default_factory=list)
    fail_with: Exception | None = None
    statuses: dict[str, str] = field(default_factory=dict)
    run_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    status_calls: list[str] = field(default_factory=list)
    status_error: Exception | None = None
    metrics: dict[str, str] = field(default_factory=lambda: {"r2_score": "0.9", "auc": "0.9"})
    champion_metrics: dict[str, str] = field(default_factory=dict)
    fact_reads: list[str] = field(default_factory=list)  # the deployments whose facts were read
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)  # endpoint -> split
    traffic_sets: list[tuple[str, dict[str, int]]] = field(default_factory=list)  # what set_traffic sent
    provisioning: dict[str, str] = field(default_factory=dict)  # "endpoint/deployment" -> state
    traffic_error: Exception | None = None
    deleted: list[str] = field(default_factory=list)  # "endpoint/deployment" deletions asked for
    monitors: dict[str, str] = field(default_factory=dict)  # schedule -> "endpoint/deployment" it targets
    shared: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (deployment, registry, lineage)
    mirror: dict[str, dict[str, int]] = field(default_factory=dict)  # endpoint -> mirrored traffic
    mirror_sets: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    breaches: dict[str, list[str]] = field(default_factory=dict)  # monitor run -> its breached signals
    misstated: dict[str, str] = field(default_factory=dict)  # a breach's run -> why it is not as its event told
    trained_on: dict[str, str] = field(default_factory=dict)  # the champion's lineage: data asset -> version
    latest: dict[str, str] = field(default_factory=dict)  # data asset -> its latest version
    latest_models: dict[str, str] = field(default_factory=dict)  # model -> its latest version

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        self.submissions.append(plan.name)
        if self.fail_with is not None:
            raise self.fail_with
        adopted = plan.name in self.jobs
        return self._submitted(self.jobs.setdefault(plan.name, plan), adopted)

    def find_retrain(self, plan: JobPlan) -> ActionResult | None:
        """The job of the plan's name, adopted, as :meth:`submit_retrain` adopts it; None when none was submitted."""
        self.lookups.append(plan.name)
        if self.fail_with is not None:
            raise self.fail_with
        job = self.jobs.get(plan.name)
        return None if job is None else self._submitted(job, adopted=True)

    @staticmethod
    def _submitted(job: JobPlan, adopted: bool) -> ActionResult:
        held = {k: str(v["value"]) for k, v in job.inputs.items() if v.get("type") != "literal"}
        return ActionResult(
            "submitted",
            job={"name": job.name, "url": f"https://ml.example/{job.name}"},
            details={"adopted": adopted},
            trains_on=held if adopted else None,  # the job adopted reads what it was submitted with
        )

    def latest_data(self, name: str) -> str:
        """Which version of data asset ``name`` is its latest (handlers.pins.AssetVersions): ``latest[name]``; an
        asset no test told of has one version, 1."""
        return self.latest.get(name, "1")

    def latest_model(self, name: str) -> str:
        """Which version of model ``name`` is its latest, as :meth:`latest_data`: ``latest_models[name]`` or 1."""
        return self.latest_models.get(name, "1")

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        """What the world was told: ``breaches`` of monitor runs (run -> signal names) and the champion's
        lineage (``trained_on``, ``latest``); nothing told: nothing known. A breach's run is as its event told
        (``misstated``: run -> why it is not; the SDK world reads it back)."""
        run = str((plan.checks.get("veto") or {}).get("run") or "")
        found = self.breaches.get(run)
        return RetrainFacts(
            breaches=None if found is None else {s.lower(): "breached" for s in found},
            monitor_run=run or None,
            champion=f"{plan.model}:1" if self.trained_on else None,
            trained_on=dict(self.trained_on) or None,
            latest=dict(self.latest),
            notes=() if self.trained_on else ("the world knows no lineage",),
            breach_misstated=self.misstated.get(str((plan.checks.get("breach") or {}).get("run") or "")),
        )

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        self.fact_reads.append(plan.deployment)
        if self.fail_with is not None:
            raise self.fail_with
        split = self.traffic.get(plan.endpoint) or {"blue": 100}
        live = max(split, key=lambda d: (split[d], d))
        version = (
            ModelVersion(plan.model, plan.version, f"azureml:{plan.model}:{plan.version}") if plan.version else None
        )
        return CandidateFacts(
            candidate=version.label if version else f"run {plan.run_id}",
            candidate_version=version,
            candidate_metrics={**self.metrics, **plan.run_properties, **plan.run_tags},
            live_deployment=f"{plan.endpoint}/{live}",
            champion_version=ModelVersion(plan.model, "1", f"azureml:{plan.model}:1"),
            champion_metrics=dict(self.champion_metrics),
        )

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        if self.fail_with is not None:
            raise self.fail_with
        self.deployments.append(plan)
        self.provisioning.setdefault(f"{plan.endpoint}/{plan.deployment}", "Creating")
        return ActionResult("submitted", job={"name": f"{plan.endpoint}/{plan.deployment}", "url": None})

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        """The deployment of the plan's name, adopted, when a deploy started it; None when none did."""
        if self.fail_with is not None:
            raise self.fail_with
        if not any((d.endpoint, d.deployment) == (plan.endpoint, plan.deployment) for d in self.deployments):
            return None
        job = {"name": f"{plan.endpoint}/{plan.deployment}", "url": None}
        return ActionResult("submitted", job=job, details={"adopted": True})

    def job_status(self, name: str) -> JobInfo | None:
        self.status_calls.append(name)
        if self.status_error is not None:
            raise self.status_error
        plan = self.jobs.get(name)
        if plan is None:
            return None
        status = self.statuses.get(name, "Running")
        return JobInfo(
            name,
            status,
            plan.experiment,
            tags={**plan.tags, **self.run_tags.get(name, {})},
            properties={"azureml.runsource": "azureml.PipelineRun"},
            terminal=status.lower() in FINISHED_STATUSES,
        )

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        return self.provisioning.get(f"{endpoint}/{deployment}")

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        return dict(self.traffic.get(endpoint, {}))

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        """Like the workspace: a split the endpoint has already is not sent again (live traffic in
        ``traffic_sets``, mirror traffic in ``mirror_sets``)."""
        if self.traffic_error is not None:
            raise self.traffic_error
        changed = False
        if mirror is not None and self.mirror.get(endpoint, {}) != {k: v for k, v in mirror.items() if v}:
            self.mirror[endpoint] = {k: v for k, v in mirror.items() if v}
            self.mirror_sets.append((endpoint, dict(self.mirror[endpoint])))
            changed = True
        if traffic is None:
            return changed
        wanted = {k: v for k, v in traffic.items() if v}
        if self.traffic.get(endpoint) == wanted:
            return changed
        self.traffic_sets.append((endpoint, wanted))
        self.traffic[endpoint] = wanted
        return True

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        split, mirror = self.traffic.get(endpoint, {}), self.mirror.get(endpoint, {})
        names = {key.partition("/")[2] for key in self.provisioning if key.startswith(f"{endpoint}/")} | set(split)
        return [
            DeploymentInfo(n, split.get(n, 0), mirror.get(n, 0), self.provisioning.get(f"{endpoint}/{n}", "Succeeded"))
            for n in sorted(names)
        ]

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        """Like Azure ML: a deployment with traffic is not deleted."""
        key = f"{endpoint}/{deployment}"
        if self.traffic.get(endpoint, {}).get(deployment) or self.mirror.get(endpoint, {}).get(deployment):
            raise PermanentError(f"deployment {key} has traffic; it cannot be deleted")
        self.deleted.append(key)
        return self.provisioning.pop(key, None) is not None

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        return sorted(s for s, target in self.monitors.items() if target == f"{endpoint}/{deployment}")

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        if self.monitors.get(schedule) == f"{endpoint}/{deployment}":
            return False
        self.monitors[schedule] = f"{endpoint}/{deployment}"
        return True

    def share_promoted(
        self, endpoint: str, deployment: str, registry: str, lineage: Mapping[str, str]
    ) -> dict[str, Any]:
        self.shared.append((f"{endpoint}/{deployment}", registry, dict(lineage)))
        return {"registry": registry, "outcome": "shared", "lineage": dict(lineage)}

    def forget(self, name: str) -> None:
        """The job is deleted from the workspace."""
        del self.jobs[name]


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class SteadyHealth:
    """A health source of our own port that reports the same traffic every time: the candidate
    answering 1 in 200 with a model error, the baseline 1 in 100."""

    name = "metrics"

    def read(
        self,
        endpoint: str,
        candidate: str,
        baseline: str | None,
        since: datetime,
        until: datetime,
        before: datetime | None = None,
    ) -> tuple[Reading, Reading | None]:
        def reading(deployment: str, failures: int, total: int) -> Reading:
            codes = {(200, 200): total - failures, (424, 500): failures}
            return Reading.of(
                endpoint, deployment, since.isoformat(), until.isoformat(), codes, 41.0, "metrics", "test"
            )

        return reading(candidate, 2, 400), reading(baseline, 8, 800) if baseline else None


__all__ = ["Clock", "PermanentError", "RecordingActions", "SteadyHealth", "TransientError"]
