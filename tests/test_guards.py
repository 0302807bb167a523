"""The guard rules, as pure functions over a model's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers import guards
from handlers.records import ModelState

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
H6 = timedelta(hours=6)


def reserved(decision: str = "d1", at: datetime = NOW) -> ModelState:
    state, verdict = guards.reserve(ModelState("m"), guards.RETRAIN, decision, at, H6, 3)
    assert state is not None and verdict.granted
    return state


def test_first_reservation_takes_the_slot_the_cooldown_and_one_budget() -> None:
    s = reserved()
    assert s.flights["retrain"].decision == "d1" and s.budget_used == 1 and s.last_retrain_at


def test_second_decision_is_refused_while_the_first_is_in_flight() -> None:
    _, v = guards.reserve(reserved(), guards.RETRAIN, "d2", NOW + timedelta(hours=7), H6, 3)
    assert (v.granted, v.code) == (False, "in_flight")


def test_same_decision_resumes_its_own_reservation() -> None:
    new, v = guards.reserve(reserved(), guards.RETRAIN, "d1", NOW, H6, 3)
    assert v.resumed and new is None


def test_cooldown_refuses_after_the_flight_ended_and_names_the_end() -> None:
    s, _ = guards.confirm(reserved(), guards.RETRAIN, "d1", "planned", None)
    assert s is not None
    _, v = guards.reserve(s, guards.RETRAIN, "d2", NOW + timedelta(hours=1), H6, 3)
    assert v.code == "cooldown" and "until 2026-11-25T16:00:00.000Z" in v.reason
    _, later = guards.reserve(s, guards.RETRAIN, "d3", NOW + timedelta(hours=6, seconds=1), H6, 3)
    assert later.granted


def test_budget_is_per_utc_day() -> None:
    s = ModelState("m", budget_day=NOW.date().isoformat(), budget_used=3)
    _, v = guards.reserve(s, guards.RETRAIN, "d", NOW, None, 3)
    assert v.code == "budget"
    _, tomorrow = guards.reserve(s, guards.RETRAIN, "d", NOW + timedelta(days=1), None, 3)
    assert tomorrow.granted


def test_force_passes_cooldown_and_flight_but_not_budget() -> None:
    _, v = guards.reserve(reserved(), guards.RETRAIN, "d2", NOW, H6, 3, force=True)
    assert v.granted
    full = ModelState("m", budget_day=NOW.date().isoformat(), budget_used=3)
    _, v = guards.reserve(full, guards.RETRAIN, "d2", NOW, H6, 3, force=True)
    assert v.code == "budget"


def test_failed_action_gives_back_cooldown_and_budget() -> None:
    s, _ = guards.confirm(reserved(), guards.RETRAIN, "d1", "failed", None)
    assert s is not None and "retrain" not in s.flights and s.budget_used == 0 and s.last_retrain_at is None


def test_submitted_keeps_the_slot_until_the_run_finishes() -> None:
    s, _ = guards.confirm(reserved(), guards.RETRAIN, "d1", "submitted", "job-1")
    assert s is not None and s.flights["retrain"].job == "job-1"
    freed, ok = guards.release(s, guards.RETRAIN, None, "job-1")
    assert ok and freed is not None and "retrain" not in freed.flights
    same, ok = guards.release(s, guards.RETRAIN, "other", "other-job")
    assert not ok and same is None


def test_a_confirmed_decision_is_done_not_resumed_and_takes_nothing_more() -> None:
    s, _ = guards.confirm(reserved(), guards.RETRAIN, "d1", "submitted", "job-1")
    assert s is not None
    new, v = guards.reserve(s, guards.RETRAIN, "d1", NOW, H6, 3)
    assert (new, v.code, v.granted, v.resumed) == (None, "done", True, True) and "job-1" in v.reason


def test_a_reservation_is_stale_once_its_lease_has_passed_and_only_while_reserved() -> None:
    lease = timedelta(seconds=60)
    flight = reserved().flights["retrain"]
    assert not guards.stale(flight, NOW + lease - timedelta(milliseconds=1), lease)
    assert guards.stale(flight, NOW + lease, lease)
    s, _ = guards.confirm(reserved(), guards.RETRAIN, "d1", "submitted", "job-1")
    assert s is not None and not guards.stale(s.flights["retrain"], NOW + timedelta(days=1), lease)


def test_a_stale_reservation_is_taken_over_once_per_lease() -> None:
    lease = timedelta(seconds=60)
    later = NOW + lease
    taken, ok = guards.take_over(reserved(), guards.RETRAIN, "d1", later, lease)
    assert ok and taken is not None and taken.flights["retrain"].since == reserved().flights["retrain"].since
    assert guards.take_over(taken, guards.RETRAIN, "d1", later + timedelta(seconds=59), lease) == (None, False)
    assert guards.take_over(taken, guards.RETRAIN, "d1", later + lease, lease)[1]
    assert guards.take_over(reserved(), guards.RETRAIN, "other", later, lease) == (None, False)


def test_a_reservation_let_go_by_its_holder_is_stale_at_once_and_only_its_holder_lets_it_go() -> None:
    """A worker that met a transient failure lets its reservation go (the next resumer need not wait a lease);
    one whose reservation was taken over since (it stalled) lets nothing go: the worker that took it over keeps
    its lease while it acts."""
    lease = timedelta(seconds=60)
    let, ok = guards.let_go(reserved(), guards.RETRAIN, "d1", NOW)  # reserved at NOW by the worker letting it go
    assert ok and let is not None and guards.stale(let.flights["retrain"], NOW, lease)
    taken, _ = guards.take_over(let, guards.RETRAIN, "d1", NOW + timedelta(seconds=1), lease)  # at once
    assert taken is not None and guards.LET_GO not in taken.flights["retrain"].data
    assert not guards.stale(taken.flights["retrain"], NOW + timedelta(seconds=2), lease)
    assert guards.let_go(taken, guards.RETRAIN, "d1", NOW) == (None, False)  # the first worker, stalled: not its own
    again, ok = guards.let_go(taken, guards.RETRAIN, "d1", NOW + timedelta(seconds=1))  # the resumer's failure
    assert ok and again is not None and guards.stale(again.flights["retrain"], NOW + timedelta(seconds=2), lease)
    assert guards.let_go(reserved(), guards.RETRAIN, "other", NOW) == (None, False)
