"""What the ledger contract's files (tests/test_ledger_contract*.py) share: a fixed time and lease, and
small builders of the triggers and decision records they write. The ``ledger`` fixture they run on
(each ledger, for a test marked ``both_ledgers``) is in tests/conftest.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers.records import DecisionRecord, iso
from handlers.signals import Trigger

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
TOPIC = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w"


def trig(event_id: str, event_type: str = "Microsoft.MachineLearningServices.DatasetDriftDetected") -> Trigger:
    return Trigger(TOPIC, event_id, event_type)


def record(decision_id: str, model: str | None = "m1", outcome: str = "skipped", at: datetime = NOW) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id,
        model=model,
        action="retrain",
        outcome=outcome,
        reason=f"reason of {decision_id}",
        trigger={"source": TOPIC, "event_id": decision_id, "event_type": "x"},
        at=iso(at),
    )
