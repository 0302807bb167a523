"""The service: runs one signal through claim -> decide -> carry out -> record.

Every claimed event ends in recorded decisions and is marked done, whatever goes wrong with it, except
a transient failure (a dependency that may answer later), which gives the claim back and is raised so
that Event Grid redelivers. Carrying decisions out is the executor's (:mod:`handlers.executor`); the
reconciler (:mod:`handlers.reconcile`) is an object of its own that hands missed runs to
:meth:`RetrainService.handle`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from handlers import guards, recorded, upstream
from handlers.claims import LEASE, Claims
from handlers.decisions import decide
from handlers.envelopes import Envelope, to_signal, workspace_key
from handlers.errors import Conflict, Forbidden, PermanentError
from handlers.executor import Executor
from handlers.inputs import check_manual
from handlers.keys import ci_get
from handlers.plans import Collect, Skip, decision_id
from handlers.ports import Ledger
from handlers.records import DecisionRecord, iso
from handlers.signals import TAG_DECISION, TAG_MODEL, AlertFired, ManualRequest, RunFinished, Signal

if TYPE_CHECKING:
    from handlers.plans import Decision
    from handlers.policy import Policy
    from handlers.rollout.watch import AlertWatch

log = logging.getLogger(__name__)


@dataclass
class EventResult:
    event_id: str
    status: str  # processed or duplicate
    decisions: list[DecisionRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "status": self.status,
            "decisions": [d.to_dict() for d in self.decisions],
        }


def verified(signal: Signal, ledger: Ledger) -> Signal:
    """Provenance from the ledger: a run that carries this service's decision tag is ours only when
    the ledger holds that retraining decision, for the model the run names, recorded ``submitted``
    (the backend submitted or adopted it as its own), and its job is the run. A tag alone is what
    anyone who can submit a job in the workspace can write; a ``reserved`` record names the job
    before it exists, and a ``failed`` one may name a job someone else created under that name."""
    if not isinstance(signal, RunFinished) or not signal.claims_service:
        return signal
    decision = str(ci_get(signal.run_tags, TAG_DECISION) or "")
    model = str(ci_get(signal.run_tags, TAG_MODEL) or "")
    record = ledger.get_decision(decision, model or None) if decision.startswith("re-") and len(decision) < 64 else None
    ours = (
        record is not None
        and record.action == "retrain"
        and record.outcome == "submitted"
        and record.model == model
        and (record.job or {}).get("name") == signal.run_id
    )
    if not ours:
        log.warning(
            "run %s claims decision %s of this service, which the ledger does not confirm; not treated as ours",
            signal.run_id[:200],
            decision[:80],
        )
    return replace(signal, ours=ours)


def _after_guards(decisions: list[Decision], rolled_back: dict[str, str]) -> list[Decision]:
    """An alert's retraining decisions once its rollout guards have answered: the guards spoke for the
    models no retraining rule listens to (no "no model listens" skip), and a model whose rollout the
    alert rolled back is not retrained on it too (the guard wins during a rollout; with none in flight
    the same rule may retrain)."""
    out: list[Decision] = []
    for d in decisions:
        if d.model is None:
            continue
        rollback = rolled_back.get(d.model)
        if rollback is None or isinstance(d, Skip):
            out.append(d)
            continue
        why = f"not retrained on this alert: it rolled back the rollout in flight ({rollback}); the rollout guard wins"
        out.append(Skip(d.id, d.model, why, d.trigger, details={"rolled_back": rollback}))
    return out


class RetrainService:
    def __init__(
        self,
        policy: Policy,
        ledger: Ledger,
        executor: Executor,
        clock: Callable[[], datetime],
        workspaces: Iterable[str],
        allow_force: bool = False,
        lease: timedelta = LEASE,
        watch: AlertWatch | None = None,
    ) -> None:
        """``watch``: the rollouts' alert guards (:mod:`handlers.rollout.watch`), asked first about each alert."""
        self.policy = policy
        self.watch = watch
        self.ledger = ledger
        self.executor = executor
        self.clock = clock
        self.workspaces = frozenset(workspace_key(w) for w in workspaces)
        self.allow_force = allow_force
        self.lease = lease
        self.claims = Claims(ledger, lease)

    # ------------------------------------------------------------------ events

    def handle_envelope(self, env: Envelope) -> EventResult:
        return self.handle(to_signal(env, self.workspaces))

    def handle(self, signal: Signal) -> EventResult:
        """Claim the event, decide, carry out, finish. Raises TransientError only (the claim given
        back): everything else that goes wrong after the claim is a recorded ``failed`` decision."""
        trigger = signal.trigger
        now = self.clock()
        model: str | None = getattr(signal, "model", None)  # what a failure is about, as far as known
        # An upstream run read from the workspace before the claim, so that the claim keeps what the
        # workspace said with the signal (a backtest replays it as it was decided)
        signal = upstream.confirmed(signal, self.policy, self.executor.jobs)

        def work(again: bool) -> tuple[list[DecisionRecord], list[DecisionRecord]]:
            """``again``: an earlier delivery took the claim and never finished it."""
            nonlocal signal, model
            records: list[DecisionRecord] = []
            unwritten: list[DecisionRecord] = []
            try:
                signal = verified(signal, self.ledger)
                self._observe(signal)
                decisions = decide(signal, self.policy, self.workspaces)
                if isinstance(signal, AlertFired) and self.watch is not None and self.watch.guarding(signal):
                    watched = self.watch.handle(signal, now, again)
                    records.extend(watched.records)
                    unwritten.extend(watched.unwritten)
                    decisions = _after_guards(decisions, watched.rolled_back)
                for decision in decisions:
                    model = decision.model
                    recorded = self.executor.recorded(decision) if again else None
                    if recorded is not None:  # decided before: the record stands, whatever the guards say now
                        records.append(recorded)
                    elif isinstance(decision, Skip):  # no reservation: written with the event's completion
                        unwritten.append(self.executor.record(decision, "skipped", now, **decision.details))
                        records.append(unwritten[-1])
                    elif isinstance(decision, Collect):  # new data: counted into the model's burst
                        unwritten.append(self.executor.collect(decision, now))
                        records.append(unwritten[-1])
                    else:
                        records.append(self.executor.carry_out(decision, now, unwritten))
            except PermanentError as exc:
                failure = self._failure(signal, model, records, now, exc)
                records.append(failure)
                unwritten.append(failure)
            return records, unwritten

        busy = f"event {trigger.event_id} is being processed by another instance; retry later"
        answer = self.claims.run(trigger, now, work, busy=busy, signal=recorded.encode(signal))
        return EventResult(trigger.event_id, answer.status, answer.records)

    def _failure(
        self, signal: Signal, model: str | None, records: list[DecisionRecord], now: datetime, exc: PermanentError
    ) -> DecisionRecord:
        """The recorded answer to an event whose handling failed for good after its claim."""
        trigger = signal.trigger
        log.warning("event_id=%s type=%s failed for good: %s", trigger.event_id, trigger.event_type, exc)
        return self.executor.logged(
            DecisionRecord(
                id=decision_id("fail", model, trigger),
                model=model,
                action="none",
                outcome="failed",
                reason=f"the event could not be handled: {exc}",
                trigger=trigger.as_dict(),
                at=iso(now),
                details={"error": type(exc).__name__, "decided_before": [r.id for r in records] or None},
            )
        )

    def _observe(self, signal: Signal) -> None:
        """Facts that change state whatever is decided: a run of ours has finished."""
        if isinstance(signal, RunFinished) and signal.ours and not signal.is_child:
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
        """A manual request; raises NotFound (404), InvalidInput (400), Forbidden (403) or Conflict
        (409), all before the request is claimed, except Conflict, which a guard decides, and
        KeyReused (422), which the claim finds: its Idempotency-Key is bound to another request."""
        check_manual(request, self.policy)
        if request.force and not self.allow_force:
            raise Forbidden("force is not allowed: set RETRAIN_ALLOW_FORCE=true to let callers force")
        before = self.claims.legacy(request.trigger)  # a key claimed before claim channels
        record = before[0] if before else self.handle(request).decisions[0]
        if record.outcome == "skipped" and record.details.get("guard") in ("cooldown", "in_flight", "budget"):
            raise Conflict(record.reason)
        return record
