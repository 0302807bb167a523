"""Putting the inside together: one executor, the service, the reconciler and the operator that share
it, behind the application's API (:class:`handlers.retrainer.Retrainer`).

A worker builds this once (function_app.runtime), a test world once per test: the same assembly, so
the objects tests drive are the objects Azure runs. A worker that serves (events, the HTTP API, the
timer, the commands that act) is then started (:func:`start`); a read-only one (``retrain explain``,
``retrain backtest``) is not: it writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from handlers import freeze
from handlers.analysis import HealthSource
from handlers.approvals import Approvals
from handlers.claims import LEASE
from handlers.envelopes import workspace_key
from handlers.errors import PermanentError, TransientError
from handlers.executor import Executor
from handlers.guards import Limits
from handlers.notify import MAX_AGE, MAX_ATTEMPTS, Outbox
from handlers.operate import Operator
from handlers.pickup import RegistryPoll, RegistryVersions
from handlers.ports import Ledger, Notifier
from handlers.reconcile import Reconciler, RetireRule
from handlers.retrainer import Retrainer
from handlers.rollout.batch import BatchStepper, ByModel
from handlers.rollout.query_guards import GuardQueries
from handlers.rollout.smoke import Scoring
from handlers.rollout.stepper import RolloutStepper
from handlers.rollout.watch import AlertWatch
from handlers.routing import routed
from handlers.service import RetrainService
from handlers.settler import Settler
from handlers.watcher import Freshness, Watcher
from handlers.workspace_ports import Deployments, Jobs

if TYPE_CHECKING:
    from handlers.batch_rules import CompareRule
    from handlers.freeze import Frozen
    from handlers.policy import Approval, DeployRule, Policy, RetrainRule
    from handlers.rollout.compare import BatchRuns
    from handlers.rollout_rules import RolloutRule

log = logging.getLogger(__name__)


def start(retrainer: Retrainer) -> Retrainer:
    """``retrainer`` as a worker that serves starts it: its ledger adopts the policy's models
    (:meth:`handlers.ports.Ledger.adopt`; the Table ledger lists each in its directory, so that no
    model's first event has to). The policy is the worker's for its life (a change of it is a restart).
    A ledger that cannot be reached now does not stop the worker: a warning, and each model's first
    write does what adopting it would have (the deliveries fail as transient while it stays down)."""
    try:
        retrainer.ledger.adopt(retrainer.policy.models)
    except (TransientError, PermanentError) as exc:
        log.warning(
            "the ledger did not adopt the policy's models as the worker started; each on its first write: %s", exc
        )
    return retrainer


def assemble(
    policy: Policy,
    ledger: Ledger,
    jobs: Jobs,
    deployments: Deployments,
    clock: Callable[[], datetime],
    workspaces: Iterable[str],
    *,
    health: Mapping[str, HealthSource] | None = None,
    health_source: str = "metrics",
    allow_force: bool = False,
    lease: timedelta = LEASE,
    job_grace: timedelta = timedelta(minutes=15),
    retention: timedelta = timedelta(days=30),
    notifier: Notifier | None = None,
    notify_max_attempts: int = MAX_ATTEMPTS,
    notify_max_age: timedelta = MAX_AGE,
    job_name_key: bytes | None = None,
    guard_queries: GuardQueries | None = None,
    scoring: Scoring | None = None,
    registry: RegistryVersions | None = None,
    batch_runs: BatchRuns | None = None,
) -> Retrainer:
    """``workspaces``: the workspace resource ids whose events are acted on (the first is the one the
    reconciler's signals of missed runs come from). ``health``: the rollout health sources by name
    (``metrics``, ``logs``; one left out reads "no data"); ``health_source``: the one a model whose
    policy names none reads. ``notifier``: where the outbox's notifications go (None: kept, not sent);
    ``notify_max_attempts`` refusals or ``notify_max_age`` after its decision, a notification is dead-lettered.
    ``job_name_key``: the secret retraining jobs are named with (RETRAIN_JOB_NAME_KEY, :mod:`handlers.jobnames`).
    ``guard_queries``: where the rollouts' query guards are read (None: each is unverified, and says why).
    ``scoring``: how a smoke test invokes deployments (None: a smoke test fails, saying so). ``registry``:
    where the reconciler lists registry versions for the models that pick them up (None: it polls none).
    ``batch_runs``: how a batch comparison starts and reads its batch jobs (None: a comparison fails, saying so)."""
    accepted = list(workspaces)
    batch = {m: mp.deploy.target for m, mp in policy.models.items() if mp.deploy and mp.deploy.batch_endpoint}
    deployments = routed(deployments, frozenset(batch.values()))  # batch endpoints through the backend's batch port

    def asked(rule: DeployRule | RetrainRule | None) -> Approval | None:
        """The approval ``rule``'s actions wait for (None: none required)."""
        return rule.approval if rule is not None and rule.approval is not None and rule.approval.required else None

    def limits(model: str) -> Limits:
        mp = policy.models.get(model)
        deploy, retrain = (mp.deploy, mp.retrain) if mp is not None else (None, None)
        return Limits(
            policy.cooldown(model),
            policy.daily_budget(model),
            policy.freeze_windows(model),
            asked(deploy),
            asked(retrain),
        )

    def rule(model: str) -> RolloutRule:
        from handlers.rollout_rules import RolloutRule  # pydantic: loaded on the reconciler's path only

        mp = policy.models.get(model)
        return mp.deploy.rollout if mp is not None and mp.deploy is not None else RolloutRule()

    def retiring(model: str) -> RetireRule | None:
        mp = policy.models.get(model)
        if mp is None or mp.deploy is None:
            return None
        return RetireRule(mp.deploy.target, mp.deploy.retire_after, mp.deploy.keep_previous)

    executor = Executor(
        ledger, jobs, deployments, limits, job_name_key, scoring, rule, batch_runs, lease=lease, clock=clock
    )
    operator = Operator(policy, ledger, deployments, executor, clock, lease=lease)
    watch = AlertWatch(policy, ledger, executor, operator, frozenset(workspace_key(w) for w in accepted))
    service = RetrainService(
        policy, ledger, executor, clock, accepted, allow_force=allow_force, lease=lease, watch=watch
    )

    def frozen(model: str, action: str, now: datetime) -> Frozen | None:
        found = freeze.frozen(ledger.get_model(model).frozen, policy.freeze_windows(model), action, now)
        deploy = policy.models[model].deploy if model in policy.models else None
        if found is None and action == "promote" and deploy is not None and deploy.approval and deploy.approval.promote:
            why = f"the promotion waits for a person; POST /api/models/{model}/promote (or retrain promote) approves it"
            return freeze.Frozen("deploy.approval.promote", why, None, approval=True)
        return found

    online = RolloutStepper(ledger, deployments, executor, rule, health, health_source, guard_queries, frozen)

    def comparing(model: str) -> CompareRule | None:
        deploy = policy.models[model].deploy if model in policy.models else None
        return deploy.batch_endpoint.compare if deploy is not None and deploy.batch_endpoint is not None else None

    batch_stepper = BatchStepper(ledger, deployments, executor, frozen, comparing, batch_runs)
    stepper = ByModel(online, batch_stepper, batch.__contains__)
    reconciler = Reconciler(
        ledger,
        executor,
        stepper,
        jobs,
        service.handle,
        workspace_key(accepted[0]) if accepted else "",
        lease=lease,
        job_grace=job_grace,
        retention=retention,
        deployments=deployments,
        retiring=retiring,
        approvals=Approvals(policy, ledger, executor, clock),
        settler=Settler(policy, ledger, executor),
        watcher=Watcher(policy, ledger, executor, jobs) if isinstance(jobs, Freshness) else None,
        pickup=RegistryPoll(policy, ledger, executor, registry) if registry is not None else None,
    )
    outbox = Outbox(ledger, notifier, max_attempts=notify_max_attempts, max_age=notify_max_age)
    return Retrainer(policy, ledger, jobs, deployments, executor, service, reconciler, operator, clock, outbox)
