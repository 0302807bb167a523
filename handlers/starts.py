"""Carrying out a decision the reconciler made (a settled burst of new data, an old champion, a new
data-asset version, a registry version no notification told of): once, through the same guards as any.

The decision is keyed by what it is about, so a pass that dies anywhere is repeated by the next one (or
another worker) without a second job: a record already final for it answers. One only reserved is the
reserving worker's until its lease ends, then the reconciler's repair resumes it: left alone here. A
guard's refusal is recorded (the first one stands) and leaves the decision waiting: the next pass tries
again, and it starts once the guards allow it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

from handlers.plans import Deploy, Retrain, Skip
from handlers.records import DecisionRecord

if TYPE_CHECKING:  # annotations only: the pure rules that import handlers.pickup do not load the executor
    from handlers.executor import Executor
    from handlers.ports import Ledger


def made(ledger: Ledger, decision_id: str, model: str | None = None) -> DecisionRecord | None:
    """The final record of a decision made already (started, failed, waiting for a person, or skipped for
    good); None when it is still to be made: never recorded, only reserved, or refused by a guard.
    ``model``: the model it concerns, when known (one read)."""
    done = ledger.get_decision(decision_id, model)
    if done is None or done.outcome == "reserved" or "guard" in done.details:
        return None
    return done


class Started(NamedTuple):
    """What :func:`start` came to: ``made`` (``record`` is the final one made before, nothing done now),
    ``reserved`` (another worker holds it, nothing done now), ``started`` (carried out now, ``record`` its
    outcome) or ``waits`` (a guard refused it now, ``record`` the refusal)."""

    record: DecisionRecord
    status: Literal["made", "reserved", "started", "waits"]

    @property
    def now(self) -> bool:
        """Whether this call carried the decision out (or had it refused)."""
        return self.status in ("started", "waits")


def start(executor: Executor, ledger: Ledger, decision: Retrain | Deploy | Skip, now: datetime) -> Started:
    """Carry ``decision`` out once, reading its record once."""
    done = ledger.get_decision(decision.id, decision.model)
    if done is not None and "guard" not in done.details:
        return Started(done, "reserved" if done.outcome == "reserved" else "made")
    if isinstance(decision, Skip):
        return Started(executor.write(executor.record(decision, "skipped", now, **decision.details)), "started")
    refused: list[DecisionRecord] = []
    record = executor.carry_out(decision, now, refused)
    if not refused:
        return Started(record, "started")
    why = f"{decision.reason}; waits: {record.reason}"  # a guard said not now
    guard = {k: v for k, v in record.details.items() if k in ("guard", "until")}
    waits = executor.record(decision, "skipped", now, why, **guard)
    executor.write(waits)  # the ledger keeps the first refusal; the pass reports this one
    return Started(waits, "waits")
