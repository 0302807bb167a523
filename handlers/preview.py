"""A dry run: what carrying a decision out would do (:meth:`handlers.executor.Executor.preview`), what a
dry-run request records and ``retrain explain`` shows. Reads only: nothing is reserved, registered,
submitted or written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from handlers import gate, guards, pins, worthiness
from handlers.errors import PermanentError, TransientError
from handlers.plans import Deploy, Retrain, job_of, rendered_of
from handlers.ports import Ledger
from handlers.records import DecisionRecord
from handlers.workspace_ports import Deployments, Jobs


class Executor(Protocol):
    """What a preview uses of :class:`handlers.executor.Executor` (no import of it: no circle)."""

    ledger: Ledger
    jobs: Jobs
    deployments: Deployments
    limits: Callable[[str], Any]

    def named(self, decision: Retrain | Deploy) -> Retrain | Deploy: ...

    def record(
        self,
        decision: Retrain | Deploy,
        outcome: str,
        now: datetime,
        reason: str | None = None,
        job: dict[str, Any] | None = None,
        **details: Any,
    ) -> DecisionRecord: ...


def cooldown_of(decision: Retrain | Deploy, limits: Any) -> Any:
    """The cooldown that holds ``decision`` back: none for an urgent retrain (a ``retrain_now`` signal's)."""
    return None if isinstance(decision, Retrain) and decision.urgent else limits.cooldown


@dataclass(frozen=True)
class Preview:
    """What carrying ``decision`` out would do, as :meth:`Executor.preview` found it: the decision as it
    would be carried out (named), what it would render, the guards' verdict (None: not checked), a
    deploy's gate verdict (None: not judged), the error reading the candidate's facts, if any, and
    the record a dry run records."""

    decision: Retrain | Deploy
    rendered: dict[str, Any]
    verdict: guards.Verdict | None
    judged: gate.CandidateVerdict | None
    error: PermanentError | None
    record: DecisionRecord


def preview(
    executor: Executor,
    decision: Retrain | Deploy,
    now: datetime,
    *,
    check_guards: bool = True,
    judge_always: bool = False,
) -> Preview:
    """A dry run: what the guards say and, for a deploy, the gate's verdict on what the workspace
    holds now; nothing is reserved, registered or submitted, nothing written. The record is what a
    dry-run request records. ``check_guards=False``: the ledger is not read (the guards are not
    checked); ``judge_always``: a deploy's gate is judged even when a guard refuses it (what
    ``retrain explain`` shows; the record stays the guard's skip)."""
    kind = guards.RETRAIN if isinstance(decision, Retrain) else guards.ROLLOUT
    limits = executor.limits(decision.model).of(kind)
    decision = executor.named(decision)
    rendered = rendered_of(decision)
    verdict = None
    if check_guards:
        state = executor.ledger.get_model(decision.model)
        verdict = guards.check(
            state, kind, decision.id, now, cooldown_of(decision, limits), limits.budget, decision.force, limits.windows
        )
    refused = None
    if verdict is not None and not verdict.granted:
        refused = executor.record(decision, "skipped", now, verdict.reason, guard=verdict.code, dry_run=True)
        if not (judge_always and isinstance(decision, Deploy)):
            return Preview(decision, rendered, verdict, None, None, refused)
    if not isinstance(decision, Deploy):
        try:  # the versions its @latest data would be pinned to now (a backend that reads no workspace: not pinned)
            pinned = pins.pin(decision.job, executor.jobs if isinstance(executor.jobs, pins.AssetVersions) else None)
        except TransientError as exc:  # a delivery would wait (redelivered); a preview says so
            pinned = pins.pin(decision.job, None, f"not pinned: it would wait: {exc}"[:500])
        except PermanentError as exc:
            failed = executor.record(
                decision, "failed", now, f"{decision.reason}; failed: {exc}", rendered=rendered, dry_run=True
            )
            return Preview(decision, rendered, verdict, None, exc, refused or failed)
        decision = replace(decision, job=pinned)
        rendered = rendered_of(decision)
        worth = worthiness.Judged(None, {})
        if decision.job.checks and refused is None:  # what its checks find now (a veto, the champion's data)
            try:
                worth = worthiness.judge(decision.job, executor.jobs.retrain_facts(decision.job))
            except TransientError as exc:  # a delivery would wait (redelivered); a preview says so
                worth = worthiness.Judged(None, {"worthiness": {"judged": False, "why": f"it would wait: {exc}"}})
        if worth.skip is not None:
            said = executor.record(
                decision, "skipped", now, worth.skip, rendered=rendered, dry_run=True, **worth.details
            )
            return Preview(decision, rendered, verdict, None, None, said)
        planned = executor.record(
            decision, "planned", now, job=job_of(rendered), rendered=rendered, dry_run=True, **worth.details
        )
        return Preview(decision, rendered, verdict, None, None, refused or planned)
    try:
        facts = executor.deployments.candidate_facts(decision.plan)
    except PermanentError as exc:
        failed = executor.record(
            decision, "failed", now, f"{decision.reason}; failed: {exc}", rendered=rendered, dry_run=True
        )
        return Preview(decision, rendered, verdict, None, exc, refused or failed)
    judged = gate.judge(decision.plan.gate, facts)
    extra: dict[str, Any] = {"gate": judged.gate.as_dict() if judged.gate else None, "candidate": facts.as_dict()}
    if judged.next != "deploy":
        outcome = "skipped" if judged.next == "skip" else "failed"
        rec = executor.record(decision, outcome, now, judged.why, rendered=rendered, dry_run=True, **extra)
    else:
        rec = executor.record(decision, "planned", now, job=job_of(rendered), rendered=rendered, dry_run=True, **extra)
    return Preview(decision, rendered, verdict, judged, None, refused or rec)
