"""What acting on a reserved decision takes (:meth:`handlers.executor.Executor.act`): a retrain's
checks (:mod:`handlers.worthiness`), a deploy's gate (:mod:`handlers.gate`), a person's approval asked
(:mod:`handlers.approval_rules`), and the action's result made a record. This changes when what a
decision must pass before it acts changes; the executor's reserve, record and settle do not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from handlers import approval_rules, gate, guards, pins, worthiness
from handlers.errors import TransientError
from handlers.guards import Limits
from handlers.plans import Deploy, Retrain, job_of, rendered_of
from handlers.ports import Ledger
from handlers.records import DecisionRecord, holds, iso
from handlers.workspace_ports import ActionResult, Deployments, Jobs

log = logging.getLogger("handlers.executor")


def _noted(found: ActionResult, said: str) -> ActionResult:
    """``found`` (what a resumed decision found its dead worker did) with ``said`` added to its note."""
    note = f"{found.details['note']}; {said}" if found.details.get("note") else said
    return replace(found, details={**found.details, "note": note})


class TakenOver(Exception):
    """The reservation an act was about to act on was taken over by another worker (:meth:`Acts._still_ours`):
    ``record``, the record that stands, is the answer; nothing is acted on, written or settled."""

    def __init__(self, record: DecisionRecord) -> None:
        super().__init__(record.id)
        self.record = record


class Acts:
    """The steps of :meth:`handlers.executor.Executor.act` (the executor is one)."""

    jobs: Jobs
    deployments: Deployments
    limits: Callable[[str], Limits]
    record: Callable[..., DecisionRecord]
    ledger: Ledger
    lease: timedelta
    clock: Callable[[], datetime] | None
    write: Callable[[DecisionRecord], DecisionRecord]
    settle: Callable[[str, str, DecisionRecord], None]

    def taken_over(self, model: str, kind: str, reserved: DecisionRecord, now: datetime) -> DecisionRecord:
        """``reserved``, taken over by this worker (its worker held it a lease, and may only have stalled), dated
        ``now``, so that what its first worker decided before is older and not written over it (``may_replace``;
        that worker's act stops: ``Acts._still_ours``). The record stored: a final one settles the slot."""
        stored = self.write(replace(reserved, at=iso(now)))
        if stored.outcome != "reserved":
            self.settle(model, kind, stored)
        return stored

    def _let_go(self, model: str, kind: str, decision_id: str, now: datetime) -> None:
        """Say in the model's slot that this worker stopped acting on ``decision_id`` (:func:`handlers.guards.let_go`);
        when storage refuses that too, the next resumer waits out the lease."""
        try:
            self.ledger.update_model(model, lambda s: guards.let_go(s, kind, decision_id, now))
        except TransientError:
            log.warning(
                "decision %s model=%s: could not let the reservation go; resumed after its lease", decision_id, model
            )

    def _still_ours(self, decision: Retrain | Deploy, now: datetime) -> None:
        """Returns when this worker may act on the reservation it made (or took over) at ``now``; else raises
        :class:`TakenOver` with the record that stands, which the executor answers with, settling nothing.
        Asked (one read) only once half the lease has passed on this worker's clock since: a worker that
        stalled that long may have been taken over (:meth:`taken_over` dates the reservation anew) by one
        that judged otherwise, and its submission would run a job, or stand up a deployment, that no record
        holds. A record dated otherwise, or past ``reserved``, is not ours."""
        if self.clock is None or self.clock() - now < self.lease / 2:
            return
        stored = self.ledger.get_decision(decision.id, decision.model)
        if holds(stored, now):
            return
        log.warning(
            "decision %s model=%s: not acting: this worker held its reservation past half the lease and the "
            "decision was taken over meanwhile (%s)",
            decision.id,
            decision.model,
            "no record" if stored is None else f"{stored.outcome} at {stored.at}",
        )
        raise TakenOver(stored or self.record(decision, "reserved", now))

    def _pinned(self, decision: Retrain) -> Retrain:
        """``decision`` with each data input it reads through ``@latest`` pinned to the version the workspace names
        latest now (:mod:`handlers.pins`), before its checks, its wait for approval and its submission. Nothing is
        written ahead: the record of its outcome (or its ``pending`` record) carries the pins, and a retrain resumed
        after its job was submitted records what that job's inputs hold (:meth:`_resumed`, :meth:`_submitted`)."""
        plan = pins.pin(decision.job, self.jobs if isinstance(self.jobs, pins.AssetVersions) else None)
        return decision if plan is decision.job else replace(decision, job=plan)

    def _resumed(self, decision: Retrain, now: datetime, extra: dict[str, Any]) -> DecisionRecord | None:
        """The ``submitted`` record of a resumed retrain whose job its dead worker submitted (``Jobs.find_retrain``:
        provably this decision's), adopted before anything is judged again: that worker passed the checks and the
        approval, if one was asked, before it submitted, and what changed since (a champion trained on the latest
        data, an approval the policy asks for now) does not stop a job that runs. Judged again, it was a skip or a
        wait that freed the slot while the job ran, and the job's completion no longer the service's own. None when
        no job of its name exists: it goes on as a first delivery does."""
        found = self.jobs.find_retrain(decision.job)
        if found is None:
            return None
        said = "adopted as the decision resumed, before its checks and approval: its worker had passed them"
        return self._submitted(decision, now, extra, _noted(found, said))

    def _submitted(
        self, decision: Retrain, now: datetime, extra: dict[str, Any], found: ActionResult | None = None
    ) -> DecisionRecord:
        """Submit the retrain's job (or take ``found``, the job a resumed retrain found) and record it; a job adopted
        (submitted by a worker of this decision that died before recording it) is recorded with the data its inputs
        hold (:func:`handlers.pins.as_adopted`): the versions it trains on, which four eyes compare, not the ones
        pinned again now."""
        if found is None:
            self._still_ours(decision, now)
        result = found if found is not None else self.jobs.submit_retrain(decision.job)
        if result.trains_on is not None:
            decision = replace(decision, job=pins.as_adopted(decision.job, result.trains_on))
            differs = sorted(k for k, spec in decision.job.inputs.items() if pins.ADOPTED in spec)
            if differs:
                log.warning(
                    "decision %s model=%s: adopted job's inputs %s differ from its plan",
                    decision.id,
                    decision.model,
                    ", ".join(differs),
                )
        return self._recorded(decision, now, result, rendered_of(decision), extra)

    def _resumed_deploy(self, decision: Deploy, now: datetime, extra: dict[str, Any]) -> DecisionRecord | None:
        """The ``submitted`` record of a resumed deploy whose candidate deployment its dead worker started
        (``Deployments.find_deploy``: provably this decision's), adopted before the gate and the approval are asked
        again: that worker passed them before it started it, and what changed since (a better champion live, an
        approval the policy asks for now) does not remove a deployment that stands at 0%. Judged again, it was a
        skip or a wait that freed the rollout slot while the deployment stood, followed by no rollout. None when no
        deployment of its name exists: it goes on as a first delivery does."""
        found = self.deployments.find_deploy(decision.plan)
        if found is None:
            return None
        said = "adopted as the decision resumed, before its gate and approval: its worker had passed them"
        return self._recorded(decision, now, _noted(found, said), rendered_of(decision), extra)

    def _deploy(
        self, decision: Deploy, now: datetime, rendered: dict[str, Any], extra: dict[str, Any]
    ) -> DecisionRecord:
        """Read the facts, judge the candidate (pure), start it only when it passes."""
        facts = self.deployments.candidate_facts(decision.plan)
        judged = gate.judge(decision.plan.gate, facts)
        seen = {"gate": judged.gate.as_dict() if judged.gate else None, "candidate": facts.as_dict()}
        log.info("gate model=%s candidate=%s: %s: %s", decision.model, facts.candidate, judged.next, judged.why)
        if judged.next == "skip":  # a registry version not there yet, a run not as told: not final, like a guard's
            absent = "not_in_registry" if decision.plan.source == "registry" else "not_as_told"
            later: dict[str, Any] = {"guard": absent} if facts.candidate_absent else {}
            return self.record(decision, "skipped", now, judged.why, rendered=rendered, **seen, **extra, **later)
        if judged.next == "fail":
            return self.record(
                decision, "failed", now, f"{decision.reason}; failed: {judged.why}", rendered=rendered, **seen, **extra
            )
        waits = self._waits(decision, now, rendered, {**seen, **extra}, f"{decision.reason}; {judged.why}")
        if waits is not None:
            return waits
        self._still_ours(decision, now)
        result = self.deployments.start_deploy(decision.plan, facts)
        return self._recorded(decision, now, result, rendered, {**seen, **extra})

    def _unworthy(
        self, decision: Retrain, now: datetime, rendered: dict[str, Any], extra: dict[str, Any]
    ) -> DecisionRecord | None:
        """The ``skipped`` record of a retrain its checks find not worth submitting (:mod:`handlers.worthiness`);
        None when it goes ahead, with what was judged added to ``extra`` for its record."""
        judged = worthiness.judge(decision.job, self.jobs.retrain_facts(decision.job)) if decision.job.checks else None
        extra.update(judged.details if judged else {})
        if judged is None or judged.skip is None:
            return None
        refused = {"guard": judged.guard} if judged.guard else {}  # a breach not borne out: not final, as a run's
        return self.record(
            decision, "skipped", now, judged.skip, rendered=rendered, **extra, **refused, gives_back=True
        )

    def _waits(
        self, decision: Retrain | Deploy, now: datetime, rendered: dict[str, Any], extra: dict[str, Any], why: str
    ) -> DecisionRecord | None:
        """The ``pending`` record of a decision whose action waits for a person (``retrain.approval``,
        ``deploy.approval``), with the plan it would carry out; None when none is asked or it was approved."""
        kind = guards.RETRAIN if isinstance(decision, Retrain) else guards.ROLLOUT
        approval = self.limits(decision.model).of(kind).approval
        if approval is None or (extra.get("approval") or {}).get("approved_by"):
            return None
        asked = approval_rules.asked(decision.id, approval, now)
        said = f"{why}; waits for approval until {asked['expires']}: approve or reject it"
        return self.record(
            decision, "pending", now, said, job=job_of(rendered), rendered=rendered, **{**extra, "approval": asked}
        )

    def _recorded(
        self,
        decision: Retrain | Deploy,
        now: datetime,
        result: ActionResult,
        rendered: dict[str, Any],
        extra: dict[str, Any],
    ) -> DecisionRecord:
        return self.record(
            decision,
            result.outcome,
            now,
            job=result.job or job_of(rendered),
            rendered=rendered,
            **{**result.details, **extra},
        )
