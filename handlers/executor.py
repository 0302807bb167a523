"""The executor: the one place that carries a decision out, for the event path, the manual path and
the reconciler alike (DESIGN.md, "executor").

Reserve, act, confirm: a decision takes its model's slot in the ledger (an atomic check of cooldown,
single-flight and daily budget), is recorded ``reserved`` with the plan it renders, acts through the
ports under a name derived from its key, has its outcome recorded, and settles the slot. A crash
anywhere in between is repaired by the redelivery (the same event gives the same decision, which
resumes its own reservation and adopts the job of the same name) or by the reconciler, which carries
the reserved record out through :meth:`Executor.act`.

Every decision record is written here (:meth:`Executor.write`), bounded to what every ledger
stores, with one log line that says what and why. Expected failures of an action (a
:class:`PermanentError`) end in a recorded ``failed`` decision; a :class:`TransientError` leaves the
reservation as it is, for the redelivery or the next reconciler pass.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers import approval_rules, guards, jobnames, newdata, pins, worthiness
from handlers.acts import Acts, TakenOver
from handlers.claims import LEASE
from handlers.errors import PermanentError, TransientError
from handlers.guards import Limits
from handlers.plans import Collect, Decision, Deploy, Retrain, job_of, rendered_of
from handlers.ports import Ledger
from handlers.preview import Preview, cooldown_of, preview
from handlers.records import DecisionRecord, Flight, ModelState, holds, iso, span
from handlers.rollout.effects import RolloutEffects
from handlers.rollout.progress import Transition
from handlers.rollout.retire import Retirement
from handlers.rollout.smoke import Scoring
from handlers.workspace_ports import Deployments, Jobs

if TYPE_CHECKING:
    from handlers.rollout.compare import BatchRuns
    from handlers.rollout_rules import RolloutRule

log = logging.getLogger(__name__)

# A failed record that frees its slot without giving back the cooldown and budget it took (the
# action may have run): set by whoever releases a hold it cannot finish, read when it is settled.
KEEPS_BUDGET = "keeps_budget"


class Executor(Acts):
    """Records, acts, settles. ``limits(model)`` gives a model's retrain cooldown and budget."""

    def __init__(
        self,
        ledger: Ledger,
        jobs: Jobs,
        deployments: Deployments,
        limits: Callable[[str], Limits],
        job_name_key: bytes | None = None,
        scoring: Scoring | None = None,
        rollout_rule: Callable[[str], RolloutRule] | None = None,
        batch_runs: BatchRuns | None = None,
        lease: timedelta = LEASE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``job_name_key``: the secret the retraining jobs are named with (:mod:`handlers.jobnames`);
        None keeps the plan's own name (a digest of public inputs: tests and tools only). ``scoring``
        invokes deployments for a smoke test of the model's ``rollout_rule``; ``lease``: the reconciler's;
        ``clock``: the worker's, on which an act tells whether it has held its reservation so long that another
        worker may have taken it over (:meth:`_still_ours`; None: never asks)."""
        self.ledger = ledger
        self.jobs = jobs
        self.deployments = deployments
        self.limits = limits
        self.job_name_key = job_name_key
        self.lease = lease
        self.clock = clock
        self.rollouts = RolloutEffects(
            ledger, deployments, lambda record: self.write(self.logged(record)), scoring, rollout_rule, batch_runs
        )

    # ------------------------------------------------------------------ records

    def record(
        self,
        decision: Decision,
        outcome: str,
        now: datetime,
        reason: str | None = None,
        job: dict[str, Any] | None = None,
        **details: Any,
    ) -> DecisionRecord:
        """The record of ``decision`` with ``outcome``, bounded and logged, not yet written."""
        return self.logged(
            DecisionRecord(
                id=decision.id,
                model=decision.model,
                action=decision.action,
                outcome=outcome,
                reason=reason or decision.reason,
                trigger=decision.trigger.as_dict(),
                at=iso(now),
                job=job,
                details={k: v for k, v in {**getattr(decision, "details", {}), **details}.items() if v is not None},
            )
        )

    @staticmethod
    def logged(record: DecisionRecord) -> DecisionRecord:
        """``record`` within the ledgers' bounds, with the one log line of a decision."""
        rec = record.bounded()
        log.info(
            "decision %s model=%s action=%s outcome=%s event_id=%s job=%s: %s",
            rec.id,
            rec.model,
            rec.action,
            rec.outcome,
            rec.trigger.get("event_id"),
            (rec.job or {}).get("name"),
            rec.reason[:500],
        )
        return rec

    def write(self, record: DecisionRecord) -> DecisionRecord:
        """Write ``record`` (bounded) to the ledger: the one writer of decision records."""
        rec = record.bounded()
        stored = self.ledger.put_decision(rec)
        self._kept(rec, stored)
        return stored

    @staticmethod
    def _kept(rec: DecisionRecord, stored: DecisionRecord) -> None:
        """Say so when the record stored is not ``rec`` (a final one stood)."""
        if stored.outcome != rec.outcome or stored.at != rec.at:
            log.info(
                "decision %s model=%s: recorded already as %s at %s; kept, not replaced by %s",
                rec.id,
                rec.model,
                stored.outcome,
                stored.at,
                rec.outcome,
            )

    def recorded(self, decision: Decision) -> DecisionRecord | None:
        """The final record already under ``decision``'s id (anything past ``reserved``), or None: what a
        redelivery of its event, or a retried request, answers with instead of deciding again. When
        the decision still holds its model's slot as reserved (its worker died after recording the
        outcome, before settling), the slot is settled by that record first. A keyed deploy decision (a
        run's, a registry version's) that a guard refused, or whose registry version was not there yet,
        is not final (:meth:`_judged_already`): it is judged again."""
        done = self.ledger.get_decision(decision.id, decision.model)
        if done is None or done.outcome == "reserved":
            return None
        if isinstance(decision, Deploy) and decision.plan.keyed and "guard" in done.details:
            return None
        model = decision.model
        if model is not None:
            for kind, held in self.ledger.get_model(model).flights.items():
                if held.decision == decision.id and held.status == "reserved":
                    self.settle(model, kind, done)
        log.info(
            "decision %s model=%s event_id=%s: recorded already (outcome %s, job %s); answered as recorded",
            decision.id,
            decision.model,
            decision.trigger.event_id,
            done.outcome,
            (done.job or {}).get("name"),
        )
        return done

    # ------------------------------------------------------------------ carrying out

    def carry_out(self, decision: Retrain | Deploy, now: datetime, unwritten: list[DecisionRecord]) -> DecisionRecord:
        """Reserve, act, confirm. What reserves nothing (a refusal by the guards, a dry-run preview)
        goes to ``unwritten``, to be written with the event's completion, as skips are."""
        if decision.dry_run:  # a preview: the guards are consulted, nothing is reserved or submitted
            unwritten.append(self.preview(decision, now).record)
            return unwritten[-1]
        kind = guards.RETRAIN if isinstance(decision, Retrain) else guards.ROLLOUT
        limits = self.limits(decision.model).of(kind)
        decision = self.named(decision)
        model = decision.model
        if (isinstance(decision, Deploy) and decision.plan.keyed) or (isinstance(decision, Retrain) and decision.once):
            judged = self._judged_already(decision, kind)
            if judged is not None:
                return judged
        fresh: list[DecisionRecord] = []  # the reserved record, made (and logged) once

        def reserved(verdict: guards.Verdict) -> DecisionRecord | None:
            """The record written with the slot it takes, in one write: a first reservation's (a
            resumed one, or one that supersedes a decision waiting for approval, is written after)."""
            if not verdict.granted or verdict.resumed or verdict.supersedes:
                return None
            if not fresh:
                rendered = rendered_of(decision)
                fresh.append(self.record(decision, "reserved", now, job=job_of(rendered), rendered=rendered))
            return fresh[0]

        verdict, stored = self.ledger.reserve(
            model,
            lambda s: guards.reserve(
                s, kind, decision.id, now, cooldown_of(decision, limits), limits.budget, decision.force, limits.windows
            ),
            reserved,
        )
        if stored is not None:  # reserved and recorded in one write, or a final record stood (nothing taken)
            if stored.outcome != "reserved":
                log.info("decision %s model=%s: recorded already as %s; kept", decision.id, model, stored.outcome)
                return stored
            return self.act(decision, now)
        if not verdict.granted:
            rec = self.record(decision, "skipped", now, verdict.reason, guard=verdict.code, until=verdict.until)
            unwritten.append(rec)
            return rec
        if verdict.supersedes:  # a decision waited for approval in this slot: said in both records (again, resumed)
            self.supersede(verdict.supersedes, decision.id, now, model)
            took = f"supersedes decision {verdict.supersedes}, which waited for approval"
            decision = replace(decision, reason=f"{decision.reason}; {took}")
        if verdict.resumed:  # reserved by an earlier delivery of this event, whose worker died
            done = self.ledger.get_decision(decision.id, decision.model)
            if done is not None and done.outcome != "reserved":  # it acted and recorded the outcome
                if verdict.code == "resumed":  # ... but died before confirming it
                    self.settle(model, kind, done)
                log.info(
                    "decision %s model=%s event_id=%s: carried out already (outcome %s, job %s); not acting again",
                    decision.id,
                    model,
                    decision.trigger.event_id,
                    done.outcome,
                    (done.job or {}).get("name"),
                )
                return done
            decision = jobnames.named_as_reserved(decision, done)
            if isinstance(decision, Retrain):  # and the data versions it pinned
                decision = pins.as_reserved(decision, done)
            approved = dict(done.details.get("approval") or {}) if done is not None else {}
            # taken over as the reconciler takes it over, once its worker held it a lease, by one resumer a lease
            take = functools.partial(guards.take_over, kind=kind, decision_id=decision.id, now=now, lease=self.lease)
            if verdict.code == "resumed" and not self.ledger.update_model(model, take):
                raise TransientError(approval_rules.still_acting(decision.id, approved, self.lease))
            if done is not None and approved.get("approved_by"):  # approved, then its worker died: on as approved
                done = self.taken_over(model, kind, done, now)
                if not holds(done, now):
                    return done
                said = replace(decision, reason=done.reason)  # said as recorded
                return self.act(said, now, resumed=True, approval=approved)
        rendered = rendered_of(decision)
        stored = self.write(
            self.record(
                decision,
                "reserved",
                now,
                job=job_of(rendered),
                rendered=rendered,
                resumed=verdict.resumed or None,
            )
        )
        if not holds(stored, now):  # a final record was there, or another worker's newer reservation: it stands
            if not verdict.resumed and stored.outcome != "reserved":  # the slot just taken goes back, with its budget
                self.ledger.update_model(
                    model, lambda s: guards.confirm(s, kind, decision.id, "failed", None, give_back=True)
                )
            return stored
        return self.act(decision, now, resumed=verdict.resumed)

    def supersede(self, old_id: str, newer: str, now: datetime, model: str | None = None) -> None:
        """Record the decision ``old_id``, which waited for approval, superseded by ``newer`` (which took
        its slot); a record no longer pending (said already, or released first) stands."""
        old = self.ledger.get_decision(old_id, model)
        if old is not None and old.outcome == "pending":
            self.write(approval_rules.superseded(old, newer, now))

    def named(self, decision: Retrain | Deploy) -> Retrain | Deploy:
        """``decision`` with its job or candidate deployment named under the key (:mod:`handlers.jobnames`)."""
        return jobnames.named(decision, self.job_name_key)

    def preview(
        self, decision: Retrain | Deploy, now: datetime, *, check_guards: bool = True, judge_always: bool = False
    ) -> Preview:
        """A dry run of ``decision`` (:func:`handlers.preview.preview`): nothing reserved, submitted or written."""
        return preview(self, decision, now, check_guards=check_guards, judge_always=judge_always)

    def _judged_already(self, decision: Retrain | Deploy, kind: str) -> DecisionRecord | None:
        """The recorded outcome of a run's deploy decision that was carried out before, from another
        event about the same run (its RunCompleted, or the reconciler that caught the completion when
        the event was late): a candidate is judged, and deployed, once; so is the retrain an upstream
        run starts (:attr:`Retrain.once`). None when it must (still) be
        carried out: never recorded, only reserved, refused by a guard, or holding the slot itself
        (the resume path finishes that one)."""
        done = self.ledger.get_decision(decision.id, decision.model)
        if done is None or done.outcome == "reserved" or "guard" in done.details:
            return None
        held = self.ledger.get_model(decision.model).flights.get(kind)
        if held is not None and held.decision == decision.id and held.status == "reserved":
            return None
        log.info(
            "decision %s model=%s event_id=%s: decided already (outcome %s); not acting again",
            decision.id,
            decision.model,
            decision.trigger.event_id,
            done.outcome,
        )
        return done

    def act(self, decision: Retrain | Deploy, now: datetime, *, resumed: bool = False, **extra: Any) -> DecisionRecord:
        """Act on a reserved decision, record the outcome, settle the slot: the one path, for a first
        delivery, a redelivery and the reconciler alike. ``resumed``: its reservation was made by a worker that
        died, which may have acted (a retrain's job or a deploy's candidate deployment found is adopted before anything
        is judged again: :meth:`_resumed`, :meth:`_resumed_deploy`). A TransientError leaves the reservation as it is, for the redelivery or the next
        reconciler pass."""
        rendered = rendered_of(decision)
        kind = guards.RETRAIN if isinstance(decision, Retrain) else guards.ROLLOUT
        try:
            if isinstance(decision, Retrain):
                rec = self._resumed(decision, now, extra) if resumed else None
                if rec is None:
                    decision = self._pinned(decision)  # its @latest data, to versions (handlers.pins)
                    rendered = rendered_of(decision)
                    rec = (
                        self._unworthy(decision, now, rendered, extra)
                        or self._waits(decision, now, rendered, extra, decision.reason)
                        or self._submitted(decision, now, extra)
                    )
            else:
                rec = self._resumed_deploy(decision, now, extra) if resumed else None
                rec = rec or self._deploy(decision, now, rendered, extra)
        except PermanentError as exc:
            rec = self.record(decision, "failed", now, f"{decision.reason}; failed: {exc}", rendered=rendered, **extra)
        except TakenOver as taken:  # another worker carries it out (or has): its record is the answer
            return taken.record
        except TransientError:  # this worker stops: the next resumer need not wait out the lease
            self._let_go(decision.model, kind, decision.id, now)
            raise
        return self.settled(decision.model, kind, rec)

    def collect(self, decision: Collect, now: datetime) -> DecisionRecord:
        """Count a new blob into its model's burst (:mod:`handlers.newdata`); the record (not written yet,
        like a skip's) says which burst and when its retrain may start."""
        burst = self.ledger.update_model(decision.model, lambda s: newdata.collected(s, decision, now))
        why = (
            f"{decision.reason}; counted into burst {burst['id']} ({burst['blobs']} blob(s) since {burst['first']}): "
            f"one retrain starts once no new blob has come for {span(decision.settle)}"
        )
        return self.record(decision, "skipped", now, why, burst=burst["id"], blobs=burst["blobs"])

    # ------------------------------------------------------------------ rollouts: traffic, monitors, deletions

    def transition(self, model: str, flight: Flight, pending: Transition, now: datetime) -> dict[str, Any]:
        """Carry out the rollout transition written ahead into ``flight`` (decided by the stepper or an
        operator): its traffic, its record, its commit (:meth:`RolloutEffects.transition`)."""
        return self.rollouts.transition(model, flight, pending, now)

    def retire(self, model: str, retirement: Retirement, now: datetime) -> DecisionRecord:
        """Delete a deployment the retirement rules chose, recorded (:meth:`RolloutEffects.retire`)."""
        return self.rollouts.retire(model, retirement, now)

    # ------------------------------------------------------------------ slots

    def settle(self, model: str, kind: str, record: DecisionRecord) -> None:
        """Bring the model's slot in line with ``record``'s outcome: ``submitted`` keeps it (with its
        job), anything else frees it; ``failed`` gives back the cooldown and budget the reservation
        took, unless the record says it keeps them (:data:`KEEPS_BUDGET`)."""
        self.ledger.update_model(model, lambda s: (_confirmed(s, kind, record), None))

    def settled(self, model: str, kind: str, record: DecisionRecord) -> DecisionRecord:
        """Write ``record`` and bring the model's slot in line with the record stored (as :meth:`settle`
        does), in one write of the ledger."""
        rec = record.bounded()
        stored = self.ledger.record_and_update(model, rec, lambda s, r: _confirmed(s, kind, r))
        self._kept(rec, stored)
        return stored

    def release(self, model: str, kind: str, record: DecisionRecord, held: Flight | None = None) -> DecisionRecord:
        """Record why a hold is released and free the slot, in one write of the ledger. ``held``: the
        hold, when ``record`` is not its own decision but one of its own id: the hold is freed
        whatever the record says."""
        if held is None:
            return self.settled(model, kind, record)
        rec = record.bounded()
        stored = self.ledger.record_and_update(
            model, rec, lambda s, _: guards.release(s, kind, held.decision, held.job)[0]
        )
        self._kept(rec, stored)
        return stored


def _confirmed(state: ModelState, kind: str, record: DecisionRecord) -> ModelState | None:
    """The model's state with its slot in line with ``record``'s outcome (:func:`handlers.guards.confirm`),
    or None when nothing changes."""
    job_name = (record.job or {}).get("name")
    give_back, skipped = not record.details.get(KEEPS_BUDGET), bool(record.details.get(worthiness.GIVES_BACK))
    return guards.confirm(state, kind, record.id, record.outcome, job_name, give_back, skipped)[0]
