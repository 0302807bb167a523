"""Putting the inside together: one executor, the service and the reconciler that share it.

A worker builds this once (function_app.runtime), a test world once per test: the same assembly, so
the objects tests drive are the objects Azure runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from handlers.executor import Executor, Limits
from handlers.ports import Deployments, Health, Jobs, Ledger
from handlers.reconcile import Reconciler, ReconcileReport, RetireRule
from handlers.service import RetrainService
from handlers.signals import workspace_key
from handlers.stepper import RolloutStepper

if TYPE_CHECKING:
    from handlers.policy import Policy, RolloutRule


@dataclass(frozen=True)
class Retrainer:
    """The service (events and manual requests) and the reconciler (the timer), over one executor."""

    policy: Policy
    ledger: Ledger
    jobs: Jobs
    deployments: Deployments
    executor: Executor
    service: RetrainService
    reconciler: Reconciler
    clock: Callable[[], datetime]

    @property
    def backend(self) -> str:
        """The name of the backend that acts (``dryrun``, ``azureml``, or a test's fake)."""
        return self.jobs.name

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        """One reconciler pass at ``now`` (default: the clock's now)."""
        return self.reconciler.run(now or self.clock())


def assemble(
    policy: Policy,
    ledger: Ledger,
    jobs: Jobs,
    deployments: Deployments,
    clock: Callable[[], datetime],
    workspaces: Iterable[str],
    *,
    health: Health | None = None,
    allow_force: bool = False,
    lease: timedelta = timedelta(seconds=60),
    job_grace: timedelta = timedelta(minutes=15),
    retention: timedelta = timedelta(days=30),
) -> Retrainer:
    """``workspaces``: the workspace resource ids whose events are acted on (the first is the one the
    reconciler's signals of missed runs come from). ``health`` None: no rollout health data."""
    accepted = list(workspaces)

    def limits(model: str) -> Limits:
        return Limits(policy.cooldown(model), policy.daily_budget(model))

    def rule(model: str) -> RolloutRule:
        from handlers.policy import RolloutRule  # pydantic: loaded on the reconciler's path only

        mp = policy.models.get(model)
        return mp.deploy.rollout if mp is not None and mp.deploy is not None else RolloutRule()

    def retiring(model: str) -> RetireRule | None:
        mp = policy.models.get(model)
        if mp is None or mp.deploy is None:
            return None
        return RetireRule(mp.deploy.endpoint, mp.deploy.retire_after, mp.deploy.keep_previous)

    executor = Executor(ledger, jobs, deployments, limits)
    service = RetrainService(policy, ledger, executor, clock, accepted, allow_force=allow_force, lease=lease)
    reconciler = Reconciler(
        ledger,
        executor,
        RolloutStepper(ledger, deployments, executor, rule, health),
        jobs,
        service.handle,
        workspace_key(accepted[0]) if accepted else "",
        lease=lease,
        job_grace=job_grace,
        retention=retention,
        deployments=deployments,
        retiring=retiring,
    )
    return Retrainer(policy, ledger, jobs, deployments, executor, service, reconciler, clock)
