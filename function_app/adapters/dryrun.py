"""The dry-run Azure ML backend: renders exactly what would be submitted, and submits nothing."""

from __future__ import annotations

from handlers.decisions import DeployPlan, JobPlan
from handlers.ports import ActionResult, JobInfo


class DryRunActions:
    name = "dryrun"

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
