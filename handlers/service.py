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
from handlers.ports import Actions, Ledger
from handlers.reconcile import (
    RECONCILER,
    ReconcileReport,
    decision_from_record,
    job_missing_record,
    missed_run,
    release_record,
)
from handlers.records import DecisionRecord, Flight, ModelState, iso
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
                    self._hold_outcome(model, kind, done)
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
        return self._act(decision, kind, now)

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

    def _act(self, decision: Retrain | Deploy, kind: str, now: datetime, **extra: Any) -> DecisionRecord:
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
        job_name = (rec.job or {}).get("name")
        self.ledger.update_model(decision.model, lambda s: guards.confirm(s, kind, decision.id, rec.outcome, job_name))
        return rec

    # ------------------------------------------------------------------ reconciler

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        """One pass of the reconciler: finish each action whose worker died between reserve and
        confirm (a reservation older than the lease), release a hold that nothing can finish, with
        a recorded reason, catch the end of each retraining run past ``job_grace`` whose event was
        missed, and purge records older than the retention."""
        now = now or self.clock()
        report = ReconcileReport(iso(now))
        for state in self.ledger.list_models():
            for kind, flight in sorted(state.flights.items()):
                if guards.stale(flight, now, self.lease):
                    report.found.append(
                        {"model": state.model, "kind": kind, "decision": flight.decision, "since": flight.since}
                    )
                    work = self._resume
                elif kind == guards.RETRAIN and guards.overdue(flight, now, self.job_grace):
                    work = self._catch_missed_run
                else:
                    continue
                try:
                    work(state.model, kind, flight, now, report)
                except TransientError as exc:
                    self._defer(report, state.model, kind, flight, exc)
        report.purged = self.ledger.purge(now - self.retention)
        log.info(
            "reconciled at %s: %d stale reservation(s), %d resumed, %d released, %d submitted job(s) checked, "
            "%d decision(s) for runs whose event was missed, %d deferred, %d record(s) purged",
            report.at,
            len(report.found),
            len(report.resumed),
            len(report.released),
            len(report.checked),
            len(report.caught),
            len(report.deferred),
            report.purged,
        )
        return report

    @staticmethod
    def _defer(report: ReconcileReport, model: str, kind: str, flight: Flight, exc: Exception) -> None:
        log.warning(
            "reconciler: decision %s model=%s kind=%s deferred to the next pass: %s", flight.decision, model, kind, exc
        )
        report.deferred.append({"model": model, "decision": flight.decision, "error": str(exc)})

    def _catch_missed_run(self, model: str, kind: str, flight: Flight, now: datetime, report: ReconcileReport) -> None:
        """A retraining job submitted at least ``job_grace`` ago still holds the slot: ask how it stands.
        Ended: handle the signal its missed event would have given (the hold is released and a
        completed run judged, as the event would have done). Gone: release the hold, recorded. Still
        running: nothing. A refusal by Azure (PermanentError) is deferred like a transient failure:
        without the job's status, the hold stays rather than being released on a guess."""
        job = str(flight.job)
        try:
            info = self.actions.job_status(job)
        except PermanentError as exc:
            self._defer(report, model, kind, flight, exc)
            return
        report.checked.append(
            {"model": model, "decision": flight.decision, "job": job, "status": info.status if info else "missing"}
        )
        if info is None:
            rec = job_missing_record(model, flight, now)
            self.ledger.put_decision(rec)  # recorded first: a crash before the release repeats both
            self.ledger.update_model(model, lambda s: guards.release(s, kind, flight.decision, job))
            log.warning("reconciler: released retrain hold of model=%s: job %s does not exist", model, job)
            report.released.append(rec)
            return
        if not info.terminal:
            log.info("reconciler: job %s of model=%s is %s; its hold stays", job, model, info.status)
            return
        log.warning(
            "reconciler: job %s of model=%s ended %s and no event told of it; handling it as that event",
            job,
            model,
            info.status,
        )
        result = self.handle(missed_run(model, flight, info, min(self.workspaces, default="")))
        # The signal released the hold; this makes sure of it, whatever the job's tags say.
        self.ledger.update_model(model, lambda s: guards.release(s, kind, flight.decision, job))
        report.caught.extend(result.decisions)

    def _resume(self, model: str, kind: str, flight: Flight, now: datetime, report: ReconcileReport) -> None:
        if not self.ledger.update_model(model, lambda s: guards.take_over(s, kind, flight.decision, now, self.lease)):
            log.info("reconciler: decision %s model=%s was finished or taken over meanwhile", flight.decision, model)
            return
        try:
            record = self.ledger.get_decision(flight.decision)
        except (KeyError, TypeError, ValueError) as exc:
            why = f"its decision record cannot be read ({type(exc).__name__}: {exc}); it may have acted"
            report.released.append(self._release(model, kind, flight, now, why, give_back=False))
            return
        if record is None:  # the reserved record is written before acting: without it, nothing was done
            why = "it has no decision record (the worker stopped between reserving and recording, before acting)"
            report.released.append(self._release(model, kind, flight, now, why, give_back=True))
            return
        if record.outcome != "reserved":  # the outcome was recorded; only its confirmation was lost
            self._hold_outcome(model, kind, record)
            log.info("reconciler: decision %s model=%s confirmed as recorded: %s", record.id, model, record.outcome)
            report.resumed.append(record)
            return
        try:
            decision = decision_from_record(record, model, kind)
        except (KeyError, TypeError, ValueError) as exc:
            why = f"its reserved record holds no plan this version can act on ({type(exc).__name__}: {exc}); it may have acted"
            report.released.append(self._release(model, kind, flight, now, why, give_back=False))
            return
        report.resumed.append(self._act(decision, kind, now, resumed_by=RECONCILER))

    def _release(
        self, model: str, kind: str, flight: Flight, now: datetime, why: str, give_back: bool
    ) -> DecisionRecord:
        """Record why, then free the slot: a crash in between leaves a record the next pass honours."""
        rec = release_record(model, kind, flight, now, why, give_back)
        self.ledger.put_decision(rec)
        self._hold_outcome(model, kind, rec)
        log.warning("reconciler: released %s hold of model=%s decision %s: %s", kind, model, rec.id, why)
        return rec

    def _hold_outcome(self, model: str, kind: str, record: DecisionRecord) -> None:
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
