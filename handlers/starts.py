"""Starting a retrain the reconciler decided (a settled burst of new data, an old champion, a new
data-asset version): once, through the same guards as any retrain.

The decision is keyed by what it is about, so a pass that dies anywhere is repeated by the next one (or
another worker) without a second job: a record already final for it answers. A guard's refusal is
recorded (the first one stands) and leaves the decision waiting: the next pass tries again, and it starts
once the guards allow it.
"""

from __future__ import annotations

from datetime import datetime

from handlers.executor import Executor
from handlers.plans import Retrain, Skip
from handlers.ports import Ledger
from handlers.records import DecisionRecord


def made(ledger: Ledger, decision_id: str) -> DecisionRecord | None:
    """The final record of a decision made already (started, failed, waiting for a person, or skipped for
    good); None when it is still to be made: never recorded, only reserved, or refused by a guard."""
    done = ledger.get_decision(decision_id)
    if done is None or done.outcome == "reserved" or "guard" in done.details:
        return None
    return done


def start(executor: Executor, ledger: Ledger, decision: Retrain | Skip, now: datetime) -> tuple[DecisionRecord, bool]:
    """Carry ``decision`` out once; the record, and whether it waits for the guards."""
    done = made(ledger, decision.id)
    if done is not None:
        return done, False
    if isinstance(decision, Skip):
        return executor.write(executor.record(decision, "skipped", now, **decision.details)), False
    refused: list[DecisionRecord] = []
    record = executor.carry_out(decision, now, refused)
    if not refused:
        return record, False
    why = f"{decision.reason}; waits: {record.reason}"  # a guard said not now
    guard = {k: v for k, v in record.details.items() if k in ("guard", "until")}
    waits = executor.record(decision, "skipped", now, why, **guard)
    executor.write(waits)  # the ledger keeps the first refusal; the pass reports this one
    return waits, True
