"""Why did (or didn't) this event do something? The answer for one event id, from the ledger alone.

For each decision that answered an event of that id (whatever model it concerns, or none): what was
decided and why, the guard it met (cooldown, in flight, budget) and until when, and what it led to:
a retraining job, the deploy decision of that job's run, and the rollout steps of a deploy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handlers.plans import run_decision_id
from handlers.ports import Ledger
from handlers.records import DecisionRecord
from handlers.rollout.progress import ACTIONS

ROLLOUT_ACTIONS = ACTIONS | {"retire"}  # the decisions that follow a deploy decision, by its id


@dataclass
class Answer:
    """One decision for the event, and what followed from it."""

    decision: DecisionRecord
    guard: dict[str, Any] | None = None
    led_to: list[DecisionRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.to_dict(),
            "guard": self.guard,
            "led_to": [r.summary() | {"model": r.model, "job": r.job} for r in self.led_to],
        }


def why(ledger: Ledger, event_id: str, limit: int = 20) -> list[Answer]:
    """The answers for ``event_id``, newest first; empty when the ledger holds none (never received,
    or purged after the retention)."""
    answers = []
    for record in ledger.decisions(None, limit, event_id=event_id):
        guard = None
        if record.details.get("guard"):
            guard = {"guard": record.details["guard"], "until": record.details.get("until")}
        answers.append(Answer(record, guard, _led_to(ledger, record)))
    return answers


def _led_to(ledger: Ledger, record: DecisionRecord) -> list[DecisionRecord]:
    out: list[DecisionRecord] = []
    job = (record.job or {}).get("name")
    deploy: DecisionRecord | None = record if record.action == "deploy" else None
    if record.action == "retrain" and record.model and job and record.outcome == "submitted":
        deploy = ledger.get_decision(run_decision_id(record.model, str(job)), record.model)
        if deploy is not None:
            out.append(deploy)
    if deploy is not None and deploy.model and deploy.outcome == "submitted":
        steps = [
            r
            for r in ledger.decisions(deploy.model, 200)
            if r.action in ROLLOUT_ACTIONS and r.details.get("deploy_decision") == deploy.id
        ]
        out.extend(reversed(steps))  # in the order they happened
    return out
