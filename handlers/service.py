"""The service: runs one signal through claim -> decide -> guard -> act -> record.

Reserve, act, confirm: a decision takes its model's slot in the ledger before it acts, acts
under a name derived from its key, then records the outcome. A crash anywhere in between is
repaired by redelivery (the same event gives the same decision, which resumes its own
reservation and adopts the job of the same name) or by the reconciler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers import guards
from handlers.decisions import Decision, Deploy, Promote, Retrain, Rollback, Skip, decide
from handlers.errors import Conflict, Forbidden, NotFound, PermanentError, TransientError
from handlers.ports import Actions, Health, Ledger
from handlers.reconcile import RECONCILER, Reconciler, ReconcileReport
from handlers.records import DecisionRecord, ModelState, iso
from handlers.signals import Envelope, ManualRequest, RunFinished, Signal, ValidationRequest, to_signal, workspace_key

if TYPE_CHECKING:
    from handlers.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class EventResult:
    event_id: str
    status: str  # processed, duplicate, validation
    decisions: list[DecisionRecord] = field(default_factory=list)
    validation_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "status": self.status,
            "decisions": [d.to_dict() for d in self.decisions],
        }


class RetrainService:
    def __init__(
        self,
        policy: Policy,
        ledger: Ledger,
        actions: Actions,
        clock: Callable[[], datetime],
        workspaces: Iterable[str],
        allow_force: bool = False,
        lease: timedelta = timedelta(seconds=60),
        retention: timedelta = timedelta(days=30),
        job_grace: timedelta = timedelta(minutes=15),
        health: Health | None = None,
    ) -> None:
        """``job_grace``: how long a submitted retraining job holds its model's slot before the
        reconciler asks the workspace whether its run ended with an event that never arrived (a run
        rarely ends sooner, and its event normally comes first)."""
        self.policy = policy
        self.ledger = ledger
        self.actions = actions
        self.clock = clock
        self.workspaces = frozenset(workspace_key(w) for w in workspaces)
        self.allow_force = allow_force
        self.lease = lease
        self.retention = retention
        self.job_grace = job_grace
        self.health = health  # the rollout health check; None: no data (the policy's on_no_traffic applies)
        # Purging scans the ledger's tables (Table Storage has no TTL and no secondary index): at most
        # once per ``purge_every`` per worker, not on every reconciler tick. Efficiency, not correctness.
        self.purge_every = timedelta(hours=1)
        self.last_purge: datetime | None = None

    # ------------------------------------------------------------------ events

    def handle_envelope(self, env: Envelope) -> EventResult:
        return self.handle(to_signal(env, self.workspaces))

    def handle(self, signal: Signal) -> EventResult:
        trigger = signal.trigger
        if isinstance(signal, ValidationRequest):
            return EventResult(trigger.event_id, "validation", validation_code=signal.validation_code)
        now = self.clock()
        claim = self.ledger.claim_event(trigger, now, self.lease)
        if claim.status == "done":
            log.info("duplicate delivery event_id=%s type=%s: already decided", trigger.event_id, trigger.event_type)
            found = [self.ledger.get_decision(d) for d in claim.decisions]
            return EventResult(trigger.event_id, "duplicate", [d for d in found if d is not None])
        if claim.status == "busy":
            raise TransientError(f"event {trigger.event_id} is being processed by another instance; retry later")
        try:
            self._observe(signal)
            records, unwritten = [], []
            for decision in decide(signal, self.policy, now):
                if isinstance(decision, Skip):  # no reservation: written with the event's completion
                    unwritten.append(self._record(decision, "skipped", now, write=False, **decision.details))
                    records.append(unwritten[-1])
                else:
                    records.append(self._carry_out(decision, now, unwritten))
        except TransientError:
            self._abandon(signal)
            raise
        self.ledger.finish_event(trigger, [r.id for r in records], now, unwritten)
        return EventResult(trigger.event_id, "processed", records)

    def _abandon(self, signal: Signal) -> None:
        try:
            self.ledger.abandon_event(signal.trigger)
        except TransientError:
            log.warning(
                "could not release the claim on event_id=%s; it expires with its lease", signal.trigger.event_id
            )

    def _observe(self, signal: Signal) -> None:
        """Facts that change state whatever is decided: a run of ours has finished."""
        if isinstance(signal, RunFinished) and signal.started_by_service and not signal.is_child:
            from handlers.keys import ci_get
            from handlers.signals import TAG_DECISION, TAG_MODEL

            model = str(ci_get(signal.run_tags, TAG_MODEL) or "")
            decision = str(ci_get(signal.run_tags, TAG_DECISION) or "")
            if model:
                released = self.ledger.update_model(
                    model, lambda s: guards.release(s, guards.RETRAIN, decision, signal.run_id)
                )
                if released:
                    log.info("released retrain hold model=%s job=%s status=%s", model, signal.run_id, signal.status)

    # ------------------------------------------------------------------ manual

    def manual(self, request: ManualRequest) -> DecisionRecord:
        """A manual request; raises NotFound (404), InvalidInput (400) or Conflict (409)."""
        if request.model not in self.policy.models:
            raise NotFound(f"model {request.model!r} is not in the policy; known: {', '.join(self.policy.models)}")
        if request.force and not self.allow_force:
            raise Forbidden("force is not allowed: set RETRAIN_ALLOW_FORCE=true to let callers force")
        result = self.handle(request)
        record = result.decisions[0]
        if record.outcome == "skipped" and record.details.get("guard") in ("cooldown", "in_flight", "budget"):
            raise Conflict(record.reason)
        return record

    # ------------------------------------------------------------------ acting

    def _record(
        self,
        decision: Decision,
        outcome: str,
        now: datetime,
        reason: str | None = None,
        job: dict[str, Any] | None = None,
        write: bool = True,
        **details: Any,
    ) -> DecisionRecord:
        rec = DecisionRecord(
            id=decision.id,
            model=decision.model,
            action=decision.action,
            outcome=outcome,
            reason=reason or decision.reason,
            trigger=decision.trigger.as_dict(),
            at=iso(now),
            job=job,
            details={k: v for k, v in details.items() if v is not None},
        )
        if write:
            self.ledger.put_decision(rec)
        log.info(
            "decision %s model=%s action=%s outcome=%s event_id=%s job=%s: %s",
            rec.id,
            rec.model,
            rec.action,
            rec.outcome,
            decision.trigger.event_id,
            (job or {}).get("name"),
            rec.reason,
        )
        return rec

    def _carry_out(self, decision: Decision, now: datetime, unwritten: list[DecisionRecord]) -> DecisionRecord:
        if isinstance(decision, Retrain):
            cooldown, budget = self.policy.cooldown(decision.model), self.policy.daily_budget(decision.model)
            return self._reserved_action(decision, guards.RETRAIN, now, cooldown, budget, unwritten)
        if isinstance(decision, Deploy):
            return self._reserved_action(decision, guards.ROLLOUT, now, None, None, unwritten)
        if isinstance(decision, (Rollback, Promote)):
            # No route or signal produces these yet: rollouts and their steps belong to the reconciler.
            raise PermanentError(f"{decision.action} is not carried out by this version of the service")
        raise AssertionError(f"unhandled decision {decision!r}")

    def _reserved_action(
        self,
        decision: Retrain | Deploy,
        kind: str,
        now: datetime,
        cooldown: timedelta | None,
        budget: int | None,
        unwritten: list[DecisionRecord],
    ) -> DecisionRecord:
        """Reserve, act, confirm. What reserves nothing (a refusal by the guards, a dry-run preview)
        goes to ``unwritten``, to be written with the event's completion, as skips are."""
        model, rendered = decision.model, _rendered(decision)
        if decision.dry_run:  # a preview: the guards are consulted, nothing is reserved or submitted
            verdict = guards.check(
                self.ledger.get_model(model), kind, decision.id, now, cooldown, budget, decision.force
            )
            if not verdict.granted:
                rec = self._record(
                    decision, "skipped", now, verdict.reason, write=False, guard=verdict.code, dry_run=True
                )
            else:
                rec = self._record(
                    decision, "planned", now, job=_job_of(rendered), rendered=rendered, write=False, dry_run=True
                )
            unwritten.append(rec)
            return rec
        if isinstance(decision, Deploy) and decision.plan.source == "run":
            judged = self._judged_already(decision, kind)
            if judged is not None:
                return judged
        verdict = self.ledger.update_model(
            model, lambda s: guards.reserve(s, kind, decision.id, now, cooldown, budget, decision.force)
        )
        if not verdict.granted:
            rec = self._record(
                decision, "skipped", now, verdict.reason, write=False, guard=verdict.code, until=verdict.until
            )
            unwritten.append(rec)
            return rec
        if verdict.resumed:  # reserved by an earlier delivery of this event, whose worker died
            done = self.ledger.get_decision(decision.id)
            if done is not None and done.outcome != "reserved":  # it acted and recorded the outcome
                if verdict.code == "resumed":  # ... but died before confirming it
                    self.hold_outcome(model, kind, done)
                log.info(
                    "decision %s model=%s event_id=%s: carried out already (outcome %s, job %s); not acting again",
                    decision.id,
                    model,
                    decision.trigger.event_id,
                    done.outcome,
                    (done.job or {}).get("name"),
                )
                return done
        self._record(
            decision, "reserved", now, job=_job_of(rendered), rendered=rendered, resumed=verdict.resumed or None
        )
        return self.act(decision, kind, now)

    def _judged_already(self, decision: Deploy, kind: str) -> DecisionRecord | None:
        """The recorded outcome of a run's deploy decision that was carried out before, from another
        event about the same run (its RunCompleted, or the reconciler that caught the completion when
        the event was late): a candidate is judged, and deployed, once. None when it must (still) be
        carried out: never recorded, only reserved, refused by a guard, or holding the slot itself
        (the resume path below finishes that one)."""
        done = self.ledger.get_decision(decision.id)
        if done is None or done.outcome == "reserved" or "guard" in done.details:
            return None
        held = self.ledger.get_model(decision.model).flights.get(kind)
        if held is not None and held.decision == decision.id and held.status == "reserved":
            return None
        log.info(
            "decision %s model=%s event_id=%s: run %s was judged already (outcome %s); not acting again",
            decision.id,
            decision.model,
            decision.trigger.event_id,
            decision.plan.run_id,
            done.outcome,
        )
        return done

    def act(self, decision: Retrain | Deploy, kind: str, now: datetime, **extra: Any) -> DecisionRecord:
        """Act on a reserved decision, record the outcome, confirm it: the one path, for a first
        delivery, a redelivery and the reconciler alike. A TransientError leaves the reservation
        as it is, for the redelivery or the next reconciler pass."""
        rendered = _rendered(decision)
        try:
            if isinstance(decision, Retrain):
                result = self.actions.submit_retrain(decision.job)
            else:
                result = self.actions.start_deploy(decision.plan)
        except PermanentError as exc:
            rec = self._record(decision, "failed", now, f"{decision.reason}; failed: {exc}", rendered=rendered, **extra)
        else:
            reason = str(result.details.get("reason") or decision.reason)
            rec = self._record(
                decision,
                result.outcome,
                now,
                reason,
                job=result.job or (_job_of(rendered) if result.outcome in ("submitted", "planned") else None),
                rendered=rendered,
                **{**{k: v for k, v in result.details.items() if k != "reason"}, **extra},
            )
        self.hold_outcome(decision.model, kind, rec)
        return rec

    # ------------------------------------------------------------------ reconciler

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        """One pass of the reconciler (:class:`handlers.reconcile.Reconciler`)."""
        return Reconciler(self).run(now or self.clock())

    def hold_outcome(self, model: str, kind: str, record: DecisionRecord) -> None:
        """Bring the model's slot in line with ``record``'s outcome."""
        if record.details.get("released_by") == RECONCILER and not record.details.get("gave_back"):
            self.ledger.update_model(model, lambda s: guards.release(s, kind, record.id, None))
            return
        job_name = (record.job or {}).get("name")
        self.ledger.update_model(model, lambda s: guards.confirm(s, kind, record.id, record.outcome, job_name))

    # ------------------------------------------------------------------ reading

    def model_views(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [self.model_view(name, self.ledger.get_model(name), now) for name in self.policy.models]

    def model_view(self, name: str, state: ModelState, now: datetime) -> dict[str, Any]:
        last = self.ledger.decisions(name, 1)
        until = guards.cooldown_until(state, self.policy.cooldown(name))
        in_cooldown = until is not None and now < until
        flights = {
            k: {"decision": f.decision, "status": f.status, "job": f.job, "since": f.since}
            for k, f in state.flights.items()
        }
        status = (
            "retraining"
            if "retrain" in flights
            else "rolling out"
            if "rollout" in flights
            else "cooldown"
            if in_cooldown
            else "idle"
        )
        budget = self.policy.daily_budget(name)
        used = state.budget_used if state.budget_day == now.date().isoformat() else 0
        return {
            "model": name,
            "state": status,
            "in_flight": flights,
            "cooldown_until": iso(until) if in_cooldown and until else None,
            "budget": {"used_today": used, "daily": budget},
            "last_decision": last[0].summary() if last else None,
        }


def _rendered(decision: Retrain | Deploy) -> dict[str, Any]:
    return decision.job.as_dict() if isinstance(decision, Retrain) else decision.plan.as_dict()


def _job_of(rendered: dict[str, Any]) -> dict[str, Any] | None:
    if rendered.get("type") == "pipeline":
        return {"name": rendered["name"], "url": None}
    if "deployment" in rendered:
        return {"name": f"{rendered['endpoint']}/{rendered['deployment']}", "url": None}
    return None
