"""The dry-run Azure ML backend: renders exactly what would be submitted, and submits nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from handlers.decisions import DeployPlan, JobPlan
from handlers.ports import ActionResult, JobInfo

log = logging.getLogger(__name__)


@dataclass
class DryRunActions:
    """Submits nothing. ``traffic`` lists the splits it was asked to set (a dry run never holds a
    rollout, so the reconciler does not ask; a caller that does gets it logged, not done)."""

    name: str = "dryrun"
    traffic: list[tuple[str, dict[str, int]]] = field(default_factory=list)

    def submit_retrain(self, plan: JobPlan) -> ActionResult:
        return ActionResult(
            "planned",
            job={"name": plan.name, "url": None},
            details={
                "backend": self.name,
                "note": f"dry run: would submit pipeline job {plan.name} from {plan.component}",
            },
        )

    def start_deploy(self, plan: DeployPlan) -> ActionResult:
        candidate = f"version {plan.version}" if plan.version else f"the model of run {plan.run_id}"
        return ActionResult(
            "planned",
            job={"name": f"{plan.endpoint}/{plan.deployment}", "url": None},
            details={
                "backend": self.name,
                "note": f"dry run: would gate {plan.model} ({candidate}) and create deployment "
                f"{plan.deployment} on endpoint {plan.endpoint} at 0% traffic",
            },
        )

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

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> bool:
        self.traffic.append((endpoint, dict(traffic)))
        log.info("dry run: would set the traffic of endpoint %s to %s", endpoint, traffic)
        return False
