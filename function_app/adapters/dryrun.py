"""The dry-run Azure ML backend: renders exactly what would be submitted, and submits nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.plans import DeployPlan, JobPlan
from handlers.workspace_ports import ActionResult, CandidateFacts, DeploymentInfo, JobInfo, ModelVersion
from handlers.worthiness import RetrainFacts

log = logging.getLogger(__name__)


@dataclass
class DryRunActions:
    """Submits nothing. A dry run never holds a rollout, so the reconciler never asks it to set
    traffic; a caller that does gets it logged, not done."""

    name: str = "dryrun"

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        return ActionResult(
            "planned",
            job={"name": plan.name, "url": None},
            details={
                "backend": self.name,
                "note": f"dry run: would submit pipeline job {plan.name} from {plan.component}",
            },
        )

    def find_retrain(self, plan: JobPlan) -> ActionResult | None:
        """A dry run submits nothing, so no job of a decision's exists."""
        del plan
        return None

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        """A dry run reads no workspace: no breach is known, a breach's run is not read back (its record says
        so), the lineage is not judged."""
        unread = (
            "dry run: no workspace is read, so the breach's run was not read back" if "breach" in plan.checks else None
        )
        return RetrainFacts(notes=("dry run: no workspace is read",), breach_unread=unread)

    def candidate_facts(self, plan: DeployPlan) -> CandidateFacts:
        """What a dry run knows without a workspace: the candidate's own tags and properties (from
        its run's event); the champion is not read, so the gate's floor alone decides."""
        source = plan.gate.source if plan.gate is not None else "run"
        version = (
            ModelVersion(plan.model, plan.version, f"azureml:{plan.model}:{plan.version}") if plan.version else None
        )
        label = version.label if version is not None else f"run {plan.run_id}"
        metrics = {**plan.run_properties, **plan.run_tags} if source in ("run", "mlflow") else {}
        notes = ["dry run: the workspace is not read; the champion is unknown, so the gate's floor alone decides"]
        if source == "mlflow":
            notes.append("dry run: the workspace's MLflow metrics are not read; the event's run tags stand in for them")
        elif source != "run":
            notes.append(f"dry run: the gate's source is {source!r}, which only the workspace holds")
        return CandidateFacts(
            candidate=label,
            candidate_version=version,
            candidate_metrics=metrics,
            live_deployment=f"{plan.endpoint}/(live deployment, not read in a dry run)",
            champion_version=None,
            champion_metrics={},
            notes=tuple(notes),
        )

    def start_deploy(self, plan: DeployPlan, facts: CandidateFacts) -> ActionResult:
        return ActionResult(
            "planned",
            job={"name": f"{plan.endpoint}/{plan.deployment}", "url": None},
            details={
                "backend": self.name,
                "note": f"dry run: would create deployment {plan.deployment} of {facts.candidate} on endpoint "
                f"{plan.endpoint} at 0% traffic",
            },
        )

    def find_deploy(self, plan: DeployPlan) -> ActionResult | None:
        """A dry run creates no deployment, so none of a decision's exists."""
        del plan
        return None

    def job_status(self, name: str) -> JobInfo | None:
        """A dry run submits nothing, so no job of its own exists."""
        del name
        return None

    def deployment_state(self, endpoint: str, deployment: str) -> str | None:
        """A dry run creates no deployment."""
        del endpoint, deployment
        return None

    def endpoint_traffic(self, endpoint: str) -> dict[str, int]:
        del endpoint
        return {}

    def set_traffic(self, endpoint: str, traffic: dict[str, int] | None, mirror: dict[str, int] | None = None) -> bool:
        log.info("dry run: would set the traffic of endpoint %s to %s (mirror %s)", endpoint, traffic, mirror)
        return False

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """A dry run reads no workspace: it knows no deployment, so it retires none."""
        del endpoint
        return []

    def delete_deployment(self, endpoint: str, deployment: str) -> bool:
        log.info("dry run: would delete deployment %s/%s", endpoint, deployment)
        return False

    def monitors_targeting(self, endpoint: str, deployment: str) -> list[str]:
        del endpoint, deployment
        return []

    def retarget_monitor(self, schedule: str, endpoint: str, deployment: str) -> bool:
        log.info("dry run: would point model monitor %s at %s/%s", schedule, endpoint, deployment)
        return False

    def share_promoted(
        self, endpoint: str, deployment: str, registry: str, lineage: Mapping[str, str]
    ) -> dict[str, Any]:
        log.info("dry run: would share the version %s/%s serves into registry %s", endpoint, deployment, registry)
        return {"registry": registry, "outcome": "planned", "lineage": dict(lineage)}
