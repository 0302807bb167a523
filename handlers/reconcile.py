"""The reconciler's pieces that need no ledger: its report, and turning a reserved decision's record
back into the decision it was, so that the service can carry it out the way it first tried to.

A reservation whose worker died between reserve and confirm holds its model's slot until someone
finishes it. The event's redelivery does (the same event gives the same decision, which resumes its
reservation), and so does :meth:`handlers.service.RetrainService.reconcile`, from the record alone,
for an event that is never redelivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from handlers import guards
from handlers.decisions import Deploy, DeployPlan, JobPlan, Retrain
from handlers.records import DecisionRecord, Flight, iso
from handlers.signals import Trigger

ACTIONS = {guards.RETRAIN: "retrain", guards.ROLLOUT: "deploy"}  # the decision action that holds each slot
RECONCILER = "reconciler"


@dataclass
class ReconcileReport:
    """One pass: the stale reservations it found, what it resumed (carried out, or confirmed from an
    outcome already recorded), what it released, what a transient failure left for the next pass,
    and how many old records it purged."""

    at: str
    found: list[dict[str, str]] = field(default_factory=list)
    resumed: list[DecisionRecord] = field(default_factory=list)
    released: list[DecisionRecord] = field(default_factory=list)
    deferred: list[dict[str, str]] = field(default_factory=list)
    purged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "found": list(self.found),
            "resumed": [r.to_dict() for r in self.resumed],
            "released": [r.to_dict() for r in self.released],
            "deferred": list(self.deferred),
            "purged": self.purged,
        }


def decision_from_record(record: DecisionRecord, model: str, kind: str) -> Retrain | Deploy:
    """The decision a reserved record was written for, with the plan it rendered. Raises KeyError,
    TypeError or ValueError when the record does not hold a plan this version can act on."""
    if ACTIONS.get(kind) != record.action:
        raise ValueError(f"a {record.action!r} decision does not hold the {kind} slot")
    rendered = record.details["rendered"]
    t = record.trigger
    trigger = Trigger(str(t["source"]), str(t["event_id"]), str(t["event_type"]))
    if kind == guards.RETRAIN:
        return Retrain(record.id, model, record.reason, trigger, JobPlan.from_dict(rendered))
    return Deploy(record.id, model, record.reason, trigger, DeployPlan.from_dict(rendered))


def release_record(model: str, kind: str, flight: Flight, now: datetime, why: str, give_back: bool) -> DecisionRecord:
    """The decision that explains why the reconciler released a hold instead of finishing its action."""
    consequence = (
        "the cooldown and budget it took are given back" if give_back else "the cooldown and budget it took stand"
    )
    return DecisionRecord(
        id=flight.decision,
        model=model,
        action=ACTIONS.get(kind, kind),
        outcome="failed",
        reason=f"reconciler released the {kind} hold reserved at {flight.since}: {why}; nothing was resumed and {consequence}",
        trigger={"source": RECONCILER, "event_id": flight.decision, "event_type": "Tick"},
        at=iso(now),
        details={"released_by": RECONCILER, "gave_back": give_back, "reserved_since": flight.since},
    )
