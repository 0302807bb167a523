"""Which decision records notify, and under which id (handlers/notify.py: pure)."""

from __future__ import annotations

import pytest

from handlers.notify import notification_id, notification_of
from handlers.records import DecisionRecord


def rec(action: str, outcome: str, **details: object) -> DecisionRecord:
    return DecisionRecord(
        id=f"{action}-1",
        model="churn",
        action=action,
        outcome=outcome,
        reason="why",
        trigger={"source": "http", "event_id": "e1", "event_type": "x"},
        at="2026-12-02T05:00:00.000Z",
        details=dict(details),
    )


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        ("retrain", "submitted"),
        ("deploy", "submitted"),
        ("deploy", "failed"),
        ("none", "failed"),
        ("rollout", "submitted"),  # a step
        ("rollout", "skipped"),  # a held rollout
        ("promote", "submitted"),
        ("rollback", "submitted"),
        ("rollback", "failed"),
        ("retire", "submitted"),
        ("pause", "submitted"),
    ],
)
def test_a_decision_that_changes_something_or_fails_notifies(action: str, outcome: str) -> None:
    note = notification_of(rec(action, outcome))
    assert note is not None
    assert (note.type, note.subject, note.time) == (
        f"retrain.decision.{action}.{outcome}",
        "churn",
        rec(action, outcome).at,
    )
    assert note.data == rec(action, outcome).to_dict()


@pytest.mark.parametrize(
    ("action", "outcome"),
    [("retrain", "reserved"), ("retrain", "planned"), ("retrain", "skipped"), ("none", "skipped")],
)
def test_a_reservation_a_plan_or_a_skip_does_not_notify(action: str, outcome: str) -> None:
    assert notification_of(rec(action, outcome)) is None


def test_a_dry_run_does_not_notify_even_when_it_fails() -> None:
    assert notification_of(rec("deploy", "failed", dry_run=True)) is None


def test_the_id_is_stable_per_decision_and_outcome() -> None:
    first = notification_of(rec("retrain", "submitted"))
    again = notification_of(rec("retrain", "submitted"))
    assert first is not None and again is not None and first.id == again.id == notification_id("retrain-1", "submitted")
    assert notification_id("retrain-1", "failed") != first.id
    assert notification_id("retrain-2", "submitted") != first.id
