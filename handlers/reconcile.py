"""The reconciler: one pass over the ledger's work in flight, every few minutes (the timer function).

It is an object of its own, built once per worker (it keeps its purge clock), and receives what it
uses: the ledger, the executor (the one way a decision is carried out), the rollout stepper, the jobs
port and a ``handle`` function for the signals of runs whose event was missed; never the service.

A reservation whose worker died between reserve and confirm holds its model's slot until someone
finishes it. The event's redelivery does (the same event gives the same decision, which resumes its
reservation), and so does :meth:`Reconciler.run`, from the record alone (:func:`decision_from_record`),
for an event that is never redelivered.

A submitted retraining job holds its model's slot until its run ends: the run's RunCompleted or
RunStatusChanged event releases it (and makes a finished run a deploy candidate). When that event is
lost (dead-lettered, filtered out), the reconciler asks the workspace how the job stands and, if it
has ended, hands ``handle`` the :class:`RunFinished` signal the event would have carried
(:func:`missed_run`), under a trigger of its own whose id depends only on the job and its status.

Rollouts are moved on by one transition per pass (:class:`handlers.rollout.stepper.RolloutStepper`), and
the deployments that no longer serve (demoted by a promotion, or candidates rolled back or failed)
are deleted once the policy's ``deploy.retire_after`` has passed (:mod:`handlers.rollout.retire`
decides which, the executor deletes them and records it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers import guards
from handlers.claims import LEASE
from handlers.errors import PermanentError, TransientError
from handlers.executor import Executor
from handlers.holds import RECONCILER, decision_from_record, job_missing_record, missed_run, release_record
from handlers.ports import Ledger
from handlers.records import DecisionRecord, Flight, ModelState, holds, iso
from handlers.rollout import retire
from handlers.rollout.batch import Advances
from handlers.signals import Signal
from handlers.workspace_ports import Deployments, Jobs

if TYPE_CHECKING:
    from handlers.approvals import Approvals
    from handlers.pickup import RegistryPoll
    from handlers.settler import Settler
    from handlers.watcher import Watcher

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """One pass: the stale reservations it found, what it resumed (carried out, or confirmed from an
    outcome already recorded), what it released, the submitted jobs past their grace whose status it
    asked for (``checked``), the decisions made for the runs among them that had ended without their
    event reaching the service (``caught``), what a transient failure left for the next pass, and
    how many old records it purged. ``retired``: the ``retire`` decisions of the demoted deployments
    and the rolled-back or failed candidates it deleted (or failed to). ``rollouts``: each submitted rollout looked at, and what it
    did (``state``: provisioning, baking (with the interim look's ``why``), waiting_for_traffic, held,
    paused (an operator paused it: nothing is read or moved), stepped, promoted, rolled_back,
    rollback_failed, changed_meanwhile), with the record id of a transition."""

    at: str
    found: list[dict[str, str]] = field(default_factory=list)
    resumed: list[DecisionRecord] = field(default_factory=list)
    released: list[DecisionRecord] = field(default_factory=list)
    checked: list[dict[str, str]] = field(default_factory=list)
    caught: list[DecisionRecord] = field(default_factory=list)
    deferred: list[dict[str, str]] = field(default_factory=list)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    retired: list[DecisionRecord] = field(default_factory=list)
    # the retrains of settled bursts of new data, old champions and new data-asset versions (and their records)
    started: list[DecisionRecord] = field(default_factory=list)
    picked_up: list[DecisionRecord] = field(default_factory=list)  # registry versions polled (handlers.pickup)
    purged: int = 0
    notified: dict[str, Any] = field(default_factory=dict)  # the outbox drained after the pass (handlers/notify.py)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "found": list(self.found),
            "resumed": [r.to_dict() for r in self.resumed],
            "released": [r.to_dict() for r in self.released],
            "checked": list(self.checked),
            "caught": [r.to_dict() for r in self.caught],
            "deferred": list(self.deferred),
            "rollouts": list(self.rollouts),
            "retired": [r.to_dict() for r in self.retired],
            "started": [r.to_dict() for r in self.started],
            "picked_up": [r.to_dict() for r in self.picked_up],
            "purged": self.purged,
            "notified": dict(self.notified),
        }


@dataclass(frozen=True)
class RetireRule:
    """How a model's demoted deployments and rolled-back or failed candidates are retired (its
    policy's ``deploy``): ``keep_previous`` applies to demoted deployments only."""

    endpoint: str
    retire_after: timedelta
    keep_previous: int


class Reconciler:
    """One pass over the ledger's in-flight work (:meth:`run`), acting through the executor's own
    act -> record -> settle path, so there is one way to carry a decision out, whoever resumes it.

    ``handle`` is how a missed run's signal is handled (the service's :meth:`handle`); ``workspace``
    the workspace those signals come from. ``lease``: how long a reservation may go unconfirmed
    before it counts as its worker's death; ``job_grace``: how long a submitted retraining job holds
    its model's slot before the reconciler asks the workspace whether its run ended with an event
    that never arrived; ``retention``: how long records are kept."""

    def __init__(
        self,
        ledger: Ledger,
        executor: Executor,
        stepper: Advances,
        jobs: Jobs,
        handle: Callable[[Signal], Any],
        workspace: str,
        *,
        lease: timedelta = LEASE,
        job_grace: timedelta = timedelta(minutes=15),
        retention: timedelta = timedelta(days=30),
        purge_every: timedelta = timedelta(hours=1),
        deployments: Deployments | None = None,
        retiring: Callable[[str], RetireRule | None] = lambda model: None,
        approvals: Approvals | None = None,
        settler: Settler | None = None,
        watcher: Watcher | None = None,
        pickup: RegistryPoll | None = None,
    ) -> None:
        self.ledger = ledger
        self.executor = executor
        self.stepper = stepper
        self.jobs = jobs
        self.handle = handle
        self.workspace = workspace
        self.lease = lease
        self.job_grace = job_grace
        self.retention = retention
        # Purging scans the ledger's tables (Table Storage has no TTL and no secondary index): at most
        # once per ``purge_every`` per worker, not on every tick. Efficiency, not correctness.
        self.purge_every = purge_every
        self.last_purge: datetime | None = None
        self.deployments = deployments
        self.retiring = retiring
        self.approvals = approvals  # releases expired retrains and deploys waiting for approval
        self.settler = settler  # starts the retrain of a settled burst of new data
        self.watcher = watcher  # starts the retrains of old champions and new data-asset versions
        self.pickup = pickup  # polls the registries downstream models pick new versions up from

    def run(self, now: datetime) -> ReconcileReport:
        """One pass of the reconciler: finish each action whose worker died between reserve and
        confirm (a reservation older than the lease), release a hold that nothing can finish, with
        a recorded reason, catch the end of each retraining run past ``job_grace`` whose event was
        missed, move each rollout on by one transition, and purge records older than the retention."""
        report = ReconcileReport(iso(now))
        for state in self.ledger.list_models():
            moved = False  # a rollout of the model was worked on: it may have ended in this pass
            for kind, flight in sorted(state.flights.items()):
                if guards.stale(flight, now, self.lease):
                    report.found.append(
                        {"model": state.model, "kind": kind, "decision": flight.decision, "since": flight.since}
                    )
                    work = self._resume
                elif kind == guards.RETRAIN and guards.overdue(flight, now, self.job_grace):
                    work = self._catch_missed_run
                elif kind == guards.ROLLOUT and flight.status == "submitted" and flight.job:
                    work = self._advance_rollout
                elif flight.status == "pending" and self.approvals is not None:  # a retrain's or a deploy's
                    work = self.approvals.tend
                else:
                    continue
                moved = moved or kind == guards.ROLLOUT
                try:
                    work(state.model, kind, flight, now, report)
                except TransientError as exc:
                    self._defer(report, state.model, kind, flight, exc)
            if state.burst is not None and self.settler is not None:
                try:
                    started = self.settler.start(state, now)
                except TransientError as exc:
                    log.warning("reconciler: new data of model=%s deferred: %s", state.model, exc)
                    report.deferred.append({"model": state.model, "decision": "new data", "error": str(exc)})
                else:
                    report.started.extend([started] if started is not None else [])
            try:
                self._retire(state, now, report, moved)
            except (TransientError, PermanentError) as exc:  # a read refused or failing: the next pass retries
                log.warning("reconciler: retiring deployments of model=%s deferred: %s", state.model, exc)
                report.deferred.append({"model": state.model, "decision": "retire", "error": str(exc)})
        if self.watcher is not None:
            self._watch(now, report)
        self._poll_registries(now, report)
        if self.last_purge is None or now - self.last_purge >= self.purge_every:
            report.purged = self.ledger.purge(now - self.retention)
            self.last_purge = now
        log.info(
            "reconciled at %s: %d stale reservation(s), %d resumed, %d released, %d submitted job(s) checked, "
            "%d decision(s) for runs whose event was missed, %d rollout(s) advanced (%s), %d deferred, "
            "%d record(s) purged",
            report.at,
            len(report.found),
            len(report.resumed),
            len(report.released),
            len(report.checked),
            len(report.caught),
            len(report.rollouts),
            ", ".join(f"{r['deployment']}: {r['state']}" for r in report.rollouts) or "none",
            len(report.deferred),
            report.purged,
        )
        return report

    def _poll_registries(self, now: datetime, report: ReconcileReport) -> None:
        """The newest version each downstream model's upstream shared into its registry, picked up if no
        event told of it (and a newer one someone else registered with its lineage, a recorded skip) (:class:`handlers.pickup.RegistryPoll`); a read that fails waits for the next pass."""
        for model, registry, upstream in self.pickup.watched() if self.pickup is not None else ():
            try:
                assert self.pickup is not None
                records = self.pickup.poll(model, registry, upstream, now)
            except (TransientError, PermanentError) as exc:
                log.warning("reconciler: polling registry %s for model=%s deferred: %s", registry, model, exc)
                report.deferred.append({"model": model, "decision": f"registry {registry}", "error": str(exc)})
            else:
                report.picked_up.extend(records)

    def _watch(self, now: datetime, report: ReconcileReport) -> None:
        """Old champions and new data-asset versions (:class:`handlers.watcher.Watcher`), model by model;
        a read that fails is left to the next pass."""
        assert self.watcher is not None
        for state in self.watcher.states():
            try:
                report.started.extend(self.watcher.look(state, now))
            except (TransientError, PermanentError) as exc:
                log.warning("reconciler: the freshness of model=%s deferred: %s", state.model, exc)
                report.deferred.append({"model": state.model, "decision": "freshness", "error": str(exc)})

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
            info = self.jobs.job_status(job)
        except PermanentError as exc:
            self._defer(report, model, kind, flight, exc)
            return
        report.checked.append(
            {"model": model, "decision": flight.decision, "job": job, "status": info.status if info else "missing"}
        )
        if info is None:
            rec = self.executor.release(model, kind, job_missing_record(model, flight, now), held=flight)
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
        result = self.handle(missed_run(model, flight, info, self.workspace))
        # The signal released the hold; this makes sure of it, whatever the job's tags say.
        self.ledger.update_model(model, lambda s: guards.release(s, kind, flight.decision, job))
        report.caught.extend(result.decisions)

    def _retire(self, state: ModelState, now: datetime, report: ReconcileReport, moved: bool = False) -> None:
        """Delete the deployments a promotion of the model demoted and its rolled-back or failed
        candidates, once the rule says so (:mod:`handlers.rollout.retire`), each recorded as a ``retire``
        decision. One read of the model's decisions but its guards' refusals (``model_history``: in
        the Table ledger, its partition) says what waits and what was retired already, so no storm
        of refusals hides a promotion or a rollback from it; made only when something may be due
        (the model's ``retire_due``) or its rollout was worked on in this pass; nothing is asked of
        Azure while no demoted deployment waits and no rejected candidate is due. After the look, when the next one is due is noted in the
        model's state (a write only when that changes)."""
        model = state.model
        rule = self.retiring(model)
        if rule is None or self.deployments is None or not (moved or retire.due(state, now)):
            return
        records = self.ledger.model_history(model)
        keep = retire.in_flight(state)
        demoted, rejected = retire.waiting(model, rule.endpoint, records, keep, rule.retire_after, now)
        chosen: list[retire.Retirement] = []
        retired: set[str] = set()
        if demoted or rejected:
            found = self.deployments.list_deployments(rule.endpoint)
            chosen = retire.to_retire(
                rule.endpoint, found, demoted, rule.retire_after, rule.keep_previous, now, rejected
            )
        for one in chosen:
            written = self.executor.retire(model, one, now)
            report.retired.append(written)
            if written.outcome == "submitted":
                retired.add(one.deployment)
        due_next = retire.next_due(
            model, rule.endpoint, records, keep, rule.retire_after, now, {c.deployment for c in chosen}, retired
        )
        if due_next != state.retire_due:
            self.ledger.update_model(model, lambda s: retire.noted(s, state.retire_due, due_next))

    def _advance_rollout(self, model: str, kind: str, flight: Flight, now: datetime, report: ReconcileReport) -> None:
        """One transition of a submitted rollout. A read that Azure refuses (PermanentError) is
        deferred like a transient failure: nothing moves on a guess."""
        try:
            report.rollouts.append(self.stepper.advance(model, flight, now))
        except PermanentError as exc:
            self._defer(report, model, kind, flight, exc)

    def _resume(self, model: str, kind: str, flight: Flight, now: datetime, report: ReconcileReport) -> None:
        if not self.ledger.update_model(model, lambda s: guards.take_over(s, kind, flight.decision, now, self.lease)):
            log.info("reconciler: decision %s model=%s was finished or taken over meanwhile", flight.decision, model)
            return
        if flight.data.get("supersedes"):  # its worker may have died before saying so in the record it superseded
            self.executor.supersede(str(flight.data["supersedes"]), flight.decision, now, model)
        try:
            record = self.ledger.get_decision(flight.decision, model)
        except (KeyError, TypeError, ValueError) as exc:
            why = f"its decision record cannot be read ({type(exc).__name__}: {exc}); it may have acted"
            report.released.append(self._release(model, kind, flight, now, why, give_back=False))
            return
        if record is None:  # the reserved record is written before acting: without it, nothing was done
            why = "it has no decision record (the worker stopped between reserving and recording, before acting)"
            report.released.append(self._release(model, kind, flight, now, why, give_back=True))
            return
        if record.outcome != "reserved":  # the outcome was recorded; only its confirmation was lost
            self.executor.settle(model, kind, record)
            log.info("reconciler: decision %s model=%s confirmed as recorded: %s", record.id, model, record.outcome)
            report.resumed.append(record)
            return
        try:
            decision = decision_from_record(record, model, kind)
        except (KeyError, TypeError, ValueError) as exc:
            why = f"its reserved record holds no plan this version can act on ({type(exc).__name__}: {exc}); it may have acted"
            report.released.append(self._release(model, kind, flight, now, why, give_back=False))
            return
        record = self.executor.taken_over(model, kind, record, now)  # its worker may only have stalled
        if record.outcome != "reserved":  # ... and its outcome landed first: it stands
            report.resumed.append(record)
            return
        if not holds(record, now):  # another worker's newer reservation stands: it carries it out
            log.info("reconciler: decision %s model=%s was taken over by another worker meanwhile", record.id, model)
            return
        approval = record.details.get("approval") or None  # an approved decision goes on as approved
        report.resumed.append(self.executor.act(decision, now, resumed=True, resumed_by=RECONCILER, approval=approval))

    def _release(
        self, model: str, kind: str, flight: Flight, now: datetime, why: str, give_back: bool
    ) -> DecisionRecord:
        """Record why, then free the slot: a crash in between leaves a record the next pass honours."""
        rec = self.executor.release(model, kind, release_record(model, kind, flight, now, why, give_back))
        log.warning("reconciler: released %s hold of model=%s decision %s: %s", kind, model, rec.id, why)
        return rec
