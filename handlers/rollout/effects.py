"""The effects of rollouts, carried out for the executor (:meth:`handlers.executor.Executor.transition`
and :meth:`~handlers.executor.Executor.retire`): a transition's traffic, the model monitors that
follow a promoted candidate, a transition's record and commit; a retired deployment's deletion and
its record. The stepper and the operator only decide; this is where Azure is changed for them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from handlers import lineage
from handlers.errors import PermanentError, TransientError
from handlers.ports import Ledger
from handlers.records import DecisionRecord, Flight, iso
from handlers.rollout import changes, compare, retire, smoke, smoke_outage, supersede
from handlers.rollout.compare import BatchRuns
from handlers.rollout.progress import ROLLOUT, RolloutProgress, Transition
from handlers.rollout.retire import Retirement
from handlers.rollout.smoke import Scored, Scoring, SmokeVerdict
from handlers.rollout.traffic import fmt
from handlers.rollout_rules import MAX_SMOKE_TIME, SmokeData
from handlers.workspace_ports import Deployments

if TYPE_CHECKING:
    from handlers.rollout_rules import RolloutRule, SmokeRule

log = logging.getLogger(__name__)
T = TypeVar("T")


class _WaitedOut(Exception):
    """A smoke test still deferred (a 401, a 429, its requests' file not readable) past ``smoke.max_wait``: its verdict."""

    def __init__(self, outcome: smoke_outage.Outcome) -> None:
        super().__init__(outcome.why)
        self.outcome = outcome


class RolloutEffects:
    """Changes Azure for a rollout through the ``deployments`` port and keeps the flight in the
    ``ledger``; ``write`` is the executor's one writer of decision records (bounded, logged). A smoke
    test invokes deployments through ``scoring`` with the sample requests of the model's ``rule``."""

    def __init__(
        self,
        ledger: Ledger,
        deployments: Deployments,
        write: Callable[[DecisionRecord], DecisionRecord],
        scoring: Scoring | None = None,
        rule: Callable[[str], RolloutRule] | None = None,
        batch_runs: BatchRuns | None = None,
    ) -> None:
        self.ledger = ledger
        self.deployments = deployments
        self.write = write
        self.scoring = scoring
        self.rule = rule
        self.batch_runs = batch_runs  # a batch comparison's jobs (handlers.rollout.compare)

    def transition(self, model: str, flight: Flight, pending: Transition, now: datetime) -> dict[str, Any]:
        """Carry out the rollout transition written ahead into ``flight`` (decided by the stepper or an
        operator): set its traffic (not sent again if the endpoint has it), record it, commit it
        (:func:`handlers.rollout.changes.commit`: an end of the rollout frees the slot). A refusal by
        Azure turns a step or promotion into a rollback; a refused rollback is recorded as failed
        and the slot freed, for an operator to look at. What it did, for the report."""
        endpoint = str(flight.job).partition("/")[0]
        decision = flight.decision
        outcome = "submitted"
        if pending.row.invokes == "smoke" and not supersede.judged(pending):  # a judged one is recorded as judged
            carried = pending
            verdict = self._smoke(model, flight, pending, now)
            if not verdict.passed:
                failed = Transition.of(
                    model,
                    flight,
                    "smoke-failed",
                    pending.step,
                    pending.from_step,
                    None,
                    f"rollout of {flight.job} rolled back before any traffic: {verdict.why}; the candidate keeps 0% "
                    "and the endpoint's traffic was never changed",
                    smoke=verdict.details,
                )
                if self.ledger.update_model(model, lambda s: changes.judge(s, decision, carried, failed)):
                    return self.transition(model, flight, failed, now)
                return self._superseded(model, flight)
            pending = replace(
                pending,
                reason=f"{pending.reason}: {verdict.why}",
                details={**pending.details, "smoke": verdict.details, supersede.JUDGED: iso(now)},
            )
            if not self.ledger.update_model(model, lambda s: changes.judge(s, decision, carried, pending)):
                return self._superseded(model, flight)
        if pending.row.invokes == "load":
            pending = self._load(model, flight, pending)
        if pending.row.invokes == "batch":
            started = self._compare(model, flight, pending)
            if started is None:
                return {"state": "changed_meanwhile"}
            if started.kind != pending.kind:
                return self.transition(model, flight, started, now)
            pending = started
        if pending.target is not None or pending.mirror is not None:
            if not self._still_pending(model, decision, pending):
                log.info("rollout %s model=%s: %s carried out by another pass meanwhile", flight.job, model, pending.id)
                return {"state": "changed_meanwhile"}
            try:
                target = None if pending.target is None else dict(pending.target)
                if pending.mirror is None:
                    changed = self.deployments.set_traffic(endpoint, target)
                else:  # the mirror traffic in the same update
                    changed = self.deployments.set_traffic(endpoint, target, dict(pending.mirror))
            except PermanentError as exc:
                if not pending.row.rolls_back:
                    now_held = self.ledger.get_model(model).flights.get(ROLLOUT)  # holds the start, if just written
                    held = RolloutProgress.of(now_held or flight)
                    original = None if held is None else held.original
                    replacement = pending.replaced_by_rollback(model, flight, original, str(exc))
                    if self.ledger.update_model(model, lambda s: changes.swap(s, decision, pending.id, replacement)):
                        return self.transition(model, flight, replacement, now)
                    return {"state": "changed_meanwhile"}
                outcome = "failed"
                pending = pending.failed(str(exc))
                changed = False
            log.info(
                "rollout %s model=%s: traffic %s, mirror %s (%s)",
                flight.job,
                model,
                fmt(pending.target),
                "as it is" if pending.mirror is None else fmt(pending.mirror),
                "sent" if changed else "already so",
            )
        if pending.row.then is None:  # the rollout ends: a batch comparison's jobs still running are canceled
            canceled = compare.cancel_running(
                self.batch_runs, (RolloutProgress.of(flight) or RolloutProgress()).compare
            )
            if any(not said.endswith("ended already") for said in canceled.values()):
                pending = replace(pending, details={**pending.details, "canceled": canceled})
        record = changes.record_of(model, flight, pending, now, outcome)
        if pending.row.promotes:
            record = self._shared(self._retargeted(record, endpoint, flight), endpoint, flight)
        record = self.write(record)
        self.ledger.update_model(model, lambda s: changes.commit(s, decision, pending.id, now))  # after the record
        state = "rollback_failed" if outcome == "failed" else pending.row.shows
        return {"state": state, "step": pending.step, "traffic": pending.target, "record": record.id}

    def _still_pending(self, model: str, decision: str, pending: Transition) -> bool:
        """Whether the rollout's flight still holds ``pending``, read just before its traffic is set: a pass that
        stalled after it read the flight may wake when another pass has carried the transition out and the rollout
        has moved on (a later step, an operator's rollback or promotion), and its traffic would undo that."""
        held = self.ledger.get_model(model).flights.get(ROLLOUT)
        progress = RolloutProgress.of(held) if held is not None and held.decision == decision else None
        return progress is not None and progress.pending is not None and progress.pending.id == pending.id

    def _superseded(self, model: str, flight: Flight) -> dict[str, Any]:
        """The smoke test's verdict dropped: an operator's transition took its place meanwhile
        (:mod:`handlers.rollout.supersede`), or the rollout moved on; nothing recorded."""
        log.info("rollout %s model=%s: the smoke test was superseded meanwhile; its verdict dropped", flight.job, model)
        return {"state": "changed_meanwhile"}

    def _scored(
        self,
        model: str,
        flight: Flight,
        pending: Transition,
        now: datetime,
        rule: SmokeRule,
        ask: Callable[[], T],
        defers: tuple[type[Exception], ...] = (TransientError, PermanentError),
    ) -> T:
        """``ask()`` (requests to deployments); a refusal (401) or throttling (429) defers the smoke test for up to
        ``smoke.max_wait`` from its first deferral (:func:`handlers.rollout.smoke_outage.refused`): kept in the
        pending transition (``details.deferred``), for the next pass and an operator's transition that supersedes
        it, then raised for the reconciler; past ``max_wait``, :class:`_WaitedOut`, the verdict that rolls back.
        ``defers``: the errors that defer it (the sample requests' read: only a TransientError)."""
        try:
            return ask()
        except defers as exc:
            outcome = smoke_outage.refused(rule, pending.details, str(exc), now)
            if not outcome.defer:
                raise _WaitedOut(outcome) from exc
            noted = replace(pending, details={**pending.details, smoke_outage.DEFERRED: outcome.waited})
            self.ledger.update_model(model, lambda s: changes.judge(s, flight.decision, pending, noted))
            raise

    def _smoke(self, model: str, flight: Flight, pending: Transition, now: datetime) -> SmokeVerdict:
        """The smoke test's verdict (:meth:`_smoked`); a 401 or 429 past ``smoke.max_wait`` is a failed one."""
        try:
            return self._smoked(model, flight, pending, now)
        except _WaitedOut as out:
            log.info("rollout %s model=%s: %s", flight.job, model, out.outcome.why)
            return SmokeVerdict(False, out.outcome.why, out.outcome.details)

    def _smoked(self, model: str, flight: Flight, pending: Transition, now: datetime) -> SmokeVerdict:
        """Send the policy's sample requests to the candidate (and to the champion the transition names,
        when the policy compares) and judge the answers (:func:`handlers.rollout.smoke.judge`). Run
        again by a pass that finds the transition pending: the requests read nothing back, and the
        record is written once, under the transition's id. A failure an outage may explain is judged
        with the live deployment's answers (:meth:`_outage`); raises TransientError when it defers."""
        rule = self.rule(model).smoke if self.rule is not None else None
        endpoint, _, candidate = str(flight.job).partition("/")
        if rule is None:
            return SmokeVerdict(True, "no smoke test: the policy no longer has deploy.rollout.smoke")
        if self.scoring is None:
            return SmokeVerdict(False, "smoke test failed: this backend cannot invoke deployments (a dry run)")
        timeout = rule.timeout.total_seconds()
        # each ask below, deferred (401, 429, a file not readable yet) as this smoke test's, up to its max_wait
        scored = functools.partial(self._scored, model, flight, pending, now, rule)
        try:  # a data asset's file not readable now defers it, bounded by max_wait as the requests are
            bodies = scored(lambda: self._requests(rule), (TransientError,))
        except PermanentError as exc:
            asset = rule.requests.data if isinstance(rule.requests, SmokeData) else None
            return SmokeVerdict(False, f"smoke test failed: no sample requests: {exc}", {"requests_from": asset})
        scoring, champion = self.scoring, pending.details.get("champion")
        answers = scored(lambda: [scoring.score(endpoint, candidate, b, timeout) for b in bodies])
        theirs = None
        if rule.champion is not None and champion:
            theirs = scored(lambda: [scoring.score(endpoint, str(champion), b, timeout) for b in bodies])
        verdict = smoke.judge(rule, candidate, answers, str(champion) if champion else None, theirs)
        log.info("rollout %s model=%s: %s", flight.job, model, verdict.why)
        if verdict.passed:
            return verdict
        failed = smoke_outage.suspects(rule, verdict, answers, theirs)
        if failed is None:  # the candidate's own failure: rolled back at once
            waited = pending.details.get(smoke_outage.WAITED)
            return replace(verdict, details={**verdict.details, smoke_outage.WAITED: waited}) if waited else verdict
        return self._outage(model, flight, pending, now, rule, verdict, (bodies, answers, theirs, failed))

    def _outage(
        self,
        model: str,
        flight: Flight,
        pending: Transition,
        now: datetime,
        rule: SmokeRule,
        verdict: SmokeVerdict,
        sent: tuple[list[Any], list[Scored], list[Scored] | None, list[int]],
    ) -> SmokeVerdict:
        """A smoke test whose every failed request an outage may explain: those requests sent to the live
        deployment (the champion's answers reused when the policy compared them), within what is left of
        the pass's smoke time, and judged (:func:`handlers.rollout.smoke_outage.decide`). A deferral is
        kept in the pending transition (the first one's time is never moved) and raised as a
        TransientError for the reconciler to report; a rollback is the verdict returned."""
        bodies, answers, theirs, failed = sent
        endpoint, _, candidate = str(flight.job).partition("/")
        live = pending.details.get("live", pending.details.get("champion"))
        if theirs is not None:
            asked = {i: theirs[i] for i in failed}
        else:
            ask = smoke_outage.to_ask(rule, failed, MAX_SMOKE_TIME) if live else []
            timeout = rule.timeout.total_seconds()
            scoring = self.scoring
            assert scoring is not None  # _smoked judges nothing without it
            asked = self._scored(
                model,
                flight,
                pending,
                now,
                rule,
                lambda: {i: scoring.score(endpoint, str(live), bodies[i], timeout) for i in ask},
            )
        waited, first = pending.details.get(smoke_outage.WAITED), smoke_outage.first_deferral(pending.details)
        outcome = smoke_outage.decide(rule, verdict, answers, str(live) if live else None, asked, waited, now, first)
        if not outcome.defer:
            log.info("rollout %s model=%s: %s", flight.job, model, outcome.why)
            return SmokeVerdict(False, outcome.why, outcome.details)
        noted = replace(pending, details={**pending.details, smoke_outage.WAITED: outcome.waited})
        self.ledger.update_model(model, lambda s: changes.judge(s, flight.decision, pending, noted))
        log.warning("rollout %s model=%s candidate %s: %s", flight.job, model, candidate, outcome.why)
        raise TransientError(f"rollout of {flight.job}: {outcome.why}")

    def _compare(self, model: str, flight: Flight, pending: Transition) -> Transition | None:
        """Start (or adopt) the comparison's batch jobs (:func:`handlers.rollout.compare.start`). The
        transition, with the jobs' names as Azure ML gave them (kept in the flight before it is committed);
        a ``compare-failed`` in its place when they cannot be started; None when the flight moved meanwhile."""
        endpoint = str(flight.job).partition("/")[0]
        decision = flight.decision
        try:
            jobs = compare.start(self.batch_runs, endpoint, pending)
        except PermanentError as exc:
            failed = Transition.of(
                model,
                flight,
                "compare-failed",
                pending.step,
                pending.from_step,
                None,
                f"batch rollout of {flight.job}: the comparison could not start: {exc}; not switched; the default "
                "stays as it was and the candidate is retired",
                compare={"data": pending.details.get("data"), "jobs": pending.details.get("jobs"), "error": str(exc)},
                batch=True,
            )
            swapped = self.ledger.update_model(model, lambda s: changes.swap(s, decision, pending.id, failed))
            return failed if swapped else None
        if jobs == pending.details.get("jobs"):
            return pending
        named = replace(pending, details={**pending.details, "jobs": jobs})  # the names Azure ML answered with
        return (
            named if self.ledger.update_model(model, lambda s: changes.swap(s, decision, pending.id, named)) else None
        )

    def _load(self, model: str, flight: Flight, pending: Transition) -> Transition:
        """Send ``pending``'s count of synthetic requests (the policy's sample requests in turn) to the
        candidate; what they were answered is for the record, the health source judges them."""
        rule = self.rule(model).smoke if self.rule is not None else None
        endpoint, _, candidate = str(flight.job).partition("/")
        if rule is None or self.scoring is None:
            return replace(pending, reason=f"{pending.reason}; none sent: no smoke requests or no way to invoke")
        statuses: dict[str, int] = {}
        count = int(pending.details.get("requests") or 0)
        try:
            bodies = self._requests(rule)
        except PermanentError as exc:
            return replace(pending, reason=f"{pending.reason}; none sent: {exc}")
        for i in range(count):
            answer = self.scoring.score(endpoint, candidate, bodies[i % len(bodies)], rule.timeout.total_seconds())
            key = str(answer.status) if answer.status is not None else "no answer"
            statuses[key] = statuses.get(key, 0) + 1
        log.info("rollout %s model=%s: synthetic load of %d request(s): %s", flight.job, model, count, statuses)
        return replace(pending, details={**pending.details, "answered": statuses})

    def _requests(self, rule: SmokeRule) -> list[Any]:
        """The sample requests: the policy's, or those of the data asset it names (read each time: a
        smoke test runs once a rollout, a load once a step)."""
        if isinstance(rule.requests, SmokeData):
            assert self.scoring is not None
            return self.scoring.samples(rule.requests)
        return list(rule.requests)

    def _retargeted(self, record: DecisionRecord, endpoint: str, flight: Flight) -> DecisionRecord:
        """Point each model-monitor schedule that watched a demoted deployment at the promoted one (a
        v2 monitor targets one deployment: left alone, it would watch a deployment at 0%), and say so
        in the promote decision. A schedule Azure refuses to change is recorded, for an operator;
        a transient failure leaves the promotion pending for the next pass, which finds the
        schedules already moved (and lists them as such)."""
        candidate = str(flight.job).partition("/")[2]
        moved: list[dict[str, Any]] = []
        for old in record.details.get("demoted") or []:
            for schedule in self.deployments.monitors_targeting(endpoint, str(old)):
                entry: dict[str, Any] = {"schedule": schedule, "from": old, "to": candidate}
                try:
                    self.deployments.retarget_monitor(schedule, endpoint, candidate)
                    entry["outcome"] = "retargeted"
                except PermanentError as exc:
                    entry.update(outcome="failed", error=f"{exc}; point its monitoring target at {candidate} by hand")
                moved.append(entry)
        named = {m["schedule"] for m in moved}
        for schedule in self.deployments.monitors_targeting(endpoint, candidate):
            if schedule not in named:
                moved.append({"schedule": schedule, "to": candidate, "outcome": "targets it already"})
        if not moved:
            return replace(record, details={**record.details, "monitors": []})
        said = ", ".join(f"{m['schedule']} ({m['outcome']})" for m in moved)
        return replace(
            record,
            reason=f"{record.reason}; model monitors now targeting {candidate}: {said}",
            details={**record.details, "monitors": moved},
        )

    def _shared(self, record: DecisionRecord, endpoint: str, flight: Flight) -> DecisionRecord:
        """An upstream (dev) environment's promotion, shared into its registry with its lineage
        (``models.<m>.environment``, :mod:`handlers.lineage`), and said in the promote record, whose
        notification carries it. A refusal is recorded for an operator (the promotion stands); a
        transient failure leaves the promotion pending for the next pass, which finds it shared already."""
        deploy = self.ledger.get_decision(flight.decision, record.model)
        registry = lineage.share_target(deploy)
        if registry is None or deploy is None:
            return record
        candidate = str(flight.job).partition("/")[2]
        try:
            shared = self.deployments.share_promoted(endpoint, candidate, registry, lineage.lineage(deploy, record.id))
        except PermanentError as exc:
            shared = {"registry": registry, "outcome": "failed", "error": f"{exc}; share it by hand"}
        said = f"shared into registry {registry}: {shared['outcome']}"
        return replace(record, reason=f"{record.reason}; {said}", details={**record.details, "shared": shared})

    def retire(self, model: str, retirement: Retirement, now: datetime) -> DecisionRecord:
        """Delete a deployment the retirement rules chose (:mod:`handlers.rollout.retire`) and record
        it as a ``retire`` decision, ``failed`` when Azure refuses."""
        try:
            self.deployments.delete_deployment(retirement.endpoint, retirement.deployment)
            record = retire.record_of(model, retirement, now, "submitted")
        except PermanentError as exc:
            record = retire.record_of(model, retirement, now, "failed", str(exc))
        return self.write(record)
