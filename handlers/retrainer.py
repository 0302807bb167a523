"""The application's API: what the triggers (function_app/triggers/) and the command line
(function_app/cli/) call, and all they call of the inside.

A trigger is parse -> call -> reply: it reads its input into the values this module re-exports
(envelopes, :class:`ManualRequest`, :class:`OperatorRequest`, :class:`Trigger`, the channels), calls
one method of :class:`Retrainer` and replies with what it returns. :func:`handlers.wiring.assemble`
builds the Retrainer (a worker once: function_app.runtime; a test world once per test).

Nothing heavy is imported here: the triggers load this module when the worker indexes its
functions; the executor, the rollout machinery and the policy come with the assembled Retrainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handlers.envelopes import Envelope, envelope_from_dict, parse_alert, parse_body, parse_events, to_signal
from handlers.idempotency import bound_request
from handlers.jsonin import loads as read_json
from handlers.keys import as_str
from handlers.reasons import one_line
from handlers.records import OUTCOMES, DecisionRecord, from_iso
from handlers.signals import MANUAL, OPERATOR, VALIDATION, ManualRequest, OperatorRequest, RunFinished, Signal, Trigger

if TYPE_CHECKING:
    from handlers.backtest_report import Report
    from handlers.executor import Executor
    from handlers.notify import DrainReport, Outbox
    from handlers.operate import Operator
    from handlers.plans import Decision
    from handlers.policy import Policy
    from handlers.ports import Ledger, OutboxEntry
    from handlers.preview import Preview
    from handlers.reconcile import Reconciler, ReconcileReport
    from handlers.replay import DeadLetterStore, ReplayReport
    from handlers.service import EventResult, RetrainService
    from handlers.why import Answer
    from handlers.workspace_ports import Deployments, Jobs

__all__ = [
    "MANUAL",
    "OPERATOR",
    "OUTCOMES",
    "VALIDATION",
    "Audit",
    "Envelope",
    "Explained",
    "ManualRequest",
    "OperatorRequest",
    "Retrainer",
    "Trigger",
    "as_str",
    "bound_request",
    "check_policy",
    "envelope_from_dict",
    "from_iso",
    "one_line",
    "parse_body",
    "parse_events",
    "read_json",
]


def check_policy(path: Path) -> list[str]:
    """The models of the policy file ``path``, validated as start-up validates it (PolicyError if not)."""
    from handlers.policy_file import load_policy  # pydantic: loaded by this command only

    return list(load_policy(path).models)


@dataclass(frozen=True)
class Audit:
    """What the ledger says: the audit trail, why an event did what it did, the outbox. Reads only."""

    ledger: Ledger

    def decisions(
        self,
        model: str | None = None,
        limit: int = 50,
        *,
        event_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
    ) -> list[DecisionRecord]:
        return self.ledger.decisions(model, limit, event_id=event_id, outcome=outcome, since=since)

    def why(self, event_id: str) -> list[Answer]:
        from handlers.why import why

        return why(self.ledger, event_id)

    def notifications(self, *, dead: bool, limit: int) -> list[OutboxEntry]:
        return self.ledger.notifications(dead=dead, limit=limit)


@dataclass(frozen=True)
class Explained:
    """One event of ``retrain explain``: its envelope, the signal it becomes (``checked``: its
    provenance was checked in the ledger), and each decision with the executor's preview of it (None
    for a skip, which carries nothing out)."""

    envelope: Envelope
    signal: Signal
    checked: bool
    decisions: list[tuple[Decision, Preview | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Retrainer:
    """The service (events and manual requests), the reconciler (the timer) and the operator (rollback,
    promote, pause, resume of rollouts), over one executor: the methods are the application's API."""

    policy: Policy
    ledger: Ledger
    jobs: Jobs
    deployments: Deployments
    executor: Executor
    service: RetrainService
    reconciler: Reconciler
    operator: Operator
    clock: Callable[[], datetime]
    outbox: Outbox
    # Batches of notifications one reconciler pass sends at most (retrying what deliveries left).
    notify_batches: int = 10

    @property
    def backend(self) -> str:
        """The name of the backend that acts (``dryrun``, ``azureml``, or a test's fake)."""
        return self.jobs.name

    # ------------------------------------------------------------------ ways in

    def deliver(self, envelope: Envelope) -> EventResult:
        """One Event Grid event: its decisions, or ``duplicate`` with those of its first delivery.
        Raises TransientError (the claim given back: deliver it again)."""
        return self.service.handle_envelope(envelope)

    def alert(self, body: bytes | str) -> EventResult:
        """An Azure Monitor alert (common alert schema): the rollout guards it trips
        (:mod:`handlers.rollout.watch`), the retrains it starts; InvalidInput when the body is not one."""
        return self.service.handle(parse_alert(body))

    def manual(self, request: ManualRequest) -> DecisionRecord:
        """A manual retrain or deploy (:meth:`handlers.service.RetrainService.manual` says what it raises)."""
        return self.service.manual(request)

    def operate(self, request: OperatorRequest) -> DecisionRecord:
        """An operator's rollback, promote, pause or resume (:class:`handlers.operate.Operator`)."""
        return self.operator.handle(request)

    def freeze(
        self,
        on: bool,
        trigger: Trigger,
        reason: str,
        *,
        models: Sequence[str] | None = None,
        actions: Sequence[str] | None = None,
    ) -> list[DecisionRecord]:
        """The stop switch set (``on``) or lifted on ``models`` (default all), recorded per model
        (:mod:`handlers.stopswitch`)."""
        from handlers.stopswitch import StopSwitch

        switch = StopSwitch(self.ledger, self.executor.write, lambda: list(self.policy.models), self.clock)
        return switch.set(on, trigger, reason, models=models, actions=actions)

    def approve(self, decision_id: str, trigger: Trigger, reason: str, *, approve: bool = True) -> DecisionRecord:
        """A deploy waiting for approval approved (carried out, once) or rejected (released), recorded
        with who did it and why (:mod:`handlers.approvals`)."""
        from handlers.approvals import Approvals
        from handlers.creators import Creators

        jobs = self.executor.jobs
        approvals = Approvals(
            self.policy, self.ledger, self.executor, self.clock, jobs if isinstance(jobs, Creators) else None
        )
        return (approvals.approve if approve else approvals.reject)(decision_id, trigger, reason)

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        """One reconciler pass at ``now`` (default: the clock's now), then the notifications still
        pending (bounded: ``notify_batches``), those the pass decided included."""
        report = self.reconciler.run(now or self.clock())
        report.notified = self.outbox.drain(self.clock(), attempts=self.notify_batches).to_dict()
        return report

    def notify(self) -> DrainReport:
        """After a delivery: one attempt at sending what this worker put in the outbox; never raises
        (what is not sent, and what others left pending, is the reconciler's)."""
        return self.outbox.drain(self.clock(), attempts=1, own=True)

    def replay(self, store: DeadLetterStore, *, dry_run: bool) -> list[ReplayReport]:
        """The dead-lettered events of ``store`` delivered again (:mod:`handlers.replay`)."""
        from handlers.replay import replay

        return replay(self.service, store, dry_run=dry_run)

    # ------------------------------------------------------------------ reading

    def backtest(self, window: timedelta, name: str = "") -> Report:
        """What this Retrainer's policy (``name``: its file) would have decided on the events the ledger
        kept over the last ``window``, replayed at their own clock against a copy of the guard state,
        beside what was recorded (:mod:`handlers.backtest`). Reads the ledger; changes nothing, acts on nothing."""
        from handlers.backtest import backtest

        now = self.clock()
        return backtest(self.ledger, self.policy, name, self.service.workspaces, now - window, now)

    def models(self) -> list[dict[str, Any]]:
        """Each model of the policy as ``GET /api/models`` shows it (:mod:`handlers.views`)."""
        from handlers.views import batch_defaults, model_views

        return model_views(self.policy, self.ledger, self.clock(), batch_defaults(self.policy, self.deployments))

    @property
    def audit(self) -> Audit:
        return Audit(self.ledger)

    def decisions(
        self,
        model: str | None = None,
        limit: int = 50,
        *,
        event_id: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
    ) -> list[DecisionRecord]:
        return self.audit.decisions(model, limit, event_id=event_id, outcome=outcome, since=since)

    def explain(self, envelopes: Sequence[Envelope], *, check: bool) -> list[Explained]:
        """What the events would decide and what carrying each decision out would do, through the
        executor's own preview (:meth:`handlers.executor.Executor.preview`), so that the explanation is
        what a delivery does: nothing is recorded, nothing submitted. ``check``: the signals'
        provenance and the guards are checked in the ledger (read only); otherwise neither is."""
        from handlers import upstream
        from handlers.decisions import decide
        from handlers.plans import Deploy, Retrain
        from handlers.service import verified

        now = self.clock()
        out = []
        for env in envelopes:
            signal = to_signal(env, self.service.workspaces)
            if check and isinstance(signal, RunFinished):  # read only: the ledger, and an upstream run's state
                signal = upstream.confirmed(verified(signal, self.ledger), self.policy, self.executor.jobs)
            decisions: list[tuple[Decision, Preview | None]] = [
                (
                    d,
                    self.executor.preview(d, now, check_guards=check, judge_always=True)
                    if isinstance(d, (Retrain, Deploy))
                    else None,
                )
                for d in decide(signal, self.policy, self.service.workspaces)
            ]
            out.append(Explained(env, signal, check, decisions))
        return out
