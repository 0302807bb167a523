"""The service end to end in-process: SQLite ledger, a recording Actions fake, an injected clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.errors import Conflict, Forbidden, NotFound, PermanentError, TransientError
from tests.builders import MODEL, WORKSPACE, drift_event, ours, run_event
from tests.conftest import load_sample
from tests.ledgers import LedgerSpec
from tests.world import World


def sqlite_world(path: Path, allow_force: bool = False) -> World:
    return World(LedgerSpec("sqlite", str(path)), allow_force=allow_force)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return sqlite_world(tmp_path / "ledger.db")


def test_drift_event_submits_one_retraining_job(world: World) -> None:
    result = world.deliver(drift_event(event_id="e1"))
    [rec] = result.decisions
    assert (rec.action, rec.outcome, rec.model) == ("retrain", "submitted", MODEL)
    assert world.actions.submissions == [rec.job["name"]]  # type: ignore[index]
    assert world.ledger.get_model(MODEL).flights["retrain"].job == rec.job["name"]  # type: ignore[index]


def test_duplicate_delivery_submits_one_job(world: World) -> None:
    e = drift_event(event_id="e1")
    first = world.deliver(e)
    again = world.deliver(e)
    assert again.status == "duplicate" and [d.id for d in again.decisions] == [d.id for d in first.decisions]
    assert len(world.actions.submissions) == 1


def test_new_event_inside_cooldown_is_skipped_naming_the_cooldown(world: World) -> None:
    world.deliver(drift_event(event_id="e1"))
    world.deliver(
        run_event(
            run_id=world.actions.submissions[0],
            tags=ours(decision=world.ledger.decisions(MODEL)[0].id),
            status="Failed",
        )
    )
    world.clock.advance(hours=1)
    [rec] = world.deliver(drift_event(event_id="e2")).decisions
    assert rec.outcome == "skipped" and "cooldown until" in rec.reason and rec.details["guard"] == "cooldown"
    assert len(world.actions.submissions) == 1


def test_drift_while_a_retrain_is_in_flight_is_skipped_as_in_flight(world: World) -> None:
    world.deliver(drift_event(event_id="e1"))
    world.clock.advance(hours=7)  # cooldown over, but the job is still running
    [rec] = world.deliver(drift_event(event_id="e2")).decisions
    assert rec.details["guard"] == "in_flight" and world.actions.submissions[0] in rec.reason


def test_completion_of_our_run_releases_the_hold_and_starts_a_deploy(world: World) -> None:
    [sub] = world.deliver(drift_event(event_id="e1")).decisions
    job = sub.job["name"]  # type: ignore[index]
    [dep] = world.deliver(run_event(run_id=job, tags=ours(decision=sub.id))).decisions
    assert (dep.action, dep.outcome) == ("deploy", "submitted")
    assert world.actions.deployments[0].run_id == job
    state = world.ledger.get_model(MODEL)
    assert "retrain" not in state.flights and "rollout" in state.flights
    world.clock.advance(hours=7)
    [again] = world.deliver(drift_event(event_id="e2")).decisions
    assert again.outcome == "submitted" and len(world.actions.submissions) == 2


def test_completion_of_our_run_never_starts_another_retrain(world: World) -> None:
    [sub] = world.deliver(drift_event(event_id="e1")).decisions
    world.deliver(run_event(run_id=sub.job["name"], tags=ours(decision=sub.id)))  # type: ignore[index]
    assert len(world.actions.submissions) == 1


def test_permanent_failure_is_recorded_and_gives_back_the_cooldown(world: World) -> None:
    world.actions.fail_with = PermanentError("pipeline component 'diabetes-retrain:3' not found")
    [rec] = world.deliver(drift_event(event_id="e1")).decisions
    assert rec.outcome == "failed" and "not found" in rec.reason
    assert world.ledger.get_model(MODEL).flights == {}
    world.actions.fail_with = None
    [ok] = world.deliver(drift_event(event_id="e2")).decisions
    assert ok.outcome == "submitted"


def test_transient_failure_raises_for_redelivery_then_completes_once(world: World) -> None:
    e = drift_event(event_id="e1")
    world.actions.fail_with = TransientError("503 from Azure ML")
    with pytest.raises(TransientError):
        world.deliver(e)
    assert world.ledger.get_model(MODEL).flights["retrain"].status == "reserved"
    world.actions.fail_with = None
    [rec] = world.deliver(e).decisions  # Event Grid redelivers the same event
    assert rec.outcome == "submitted" and rec.details.get("adopted") is False
    assert len(set(world.actions.submissions)) == 1


def test_every_event_is_recorded_with_a_reason(world: World) -> None:
    for raw in (drift_event(monitor="nobody"), run_event(experiment="other"), drift_event(topic=WORKSPACE + "x")):
        [rec] = world.deliver(raw).decisions
        assert rec.outcome == "skipped" and rec.reason
    assert len(world.ledger.decisions(limit=10)) == 3


def test_manual_retrain_of_unknown_model_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="'nope' is not in the policy"):
        world.manual(model="nope")


def test_manual_dry_run_renders_the_job_and_changes_nothing(world: World) -> None:
    rec = world.manual(dry_run=True)
    assert rec.outcome == "planned" and rec.details["rendered"]["component"] == "diabetes-retrain:3"
    assert world.actions.submissions == [] and world.ledger.get_model(MODEL).last_retrain_at is None


def test_manual_retrain_in_cooldown_is_a_conflict_unless_forced(tmp_path: Path) -> None:
    w = sqlite_world(tmp_path / "l.db", allow_force=True)
    w.manual()
    w.clock.advance(minutes=1)
    with pytest.raises(Conflict, match="in flight"):
        w.manual()
    assert w.manual(force=True).outcome == "submitted"


def test_force_is_refused_unless_allowed(world: World) -> None:
    with pytest.raises(Forbidden, match="RETRAIN_ALLOW_FORCE"):
        world.manual(force=True)


def test_daily_budget_stops_retrains(tmp_path: Path) -> None:
    w = sqlite_world(tmp_path / "l.db", allow_force=True)
    for _ in range(3):
        w.manual(force=True)
    with pytest.raises(Conflict, match="daily retrain budget used up"):
        w.manual(force=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=60))
def test_a_storm_of_drift_events_inside_the_cooldown_starts_one_retrain(
    tmp_path_factory: pytest.TempPathFactory, ids: list[int]
) -> None:
    w = sqlite_world(tmp_path_factory.mktemp("storm") / "l.db")
    for i in ids:  # any mix of new events and redeliveries, in any order
        w.deliver(drift_event(event_id=f"e{i}"))
        w.clock.advance(seconds=30)
    assert len(set(w.actions.submissions)) == 1
    assert len(w.ledger.decisions(MODEL, limit=1000)) == len(set(ids))


def test_a_validation_event_that_reaches_the_service_is_recorded_as_a_skip_like_any_other(world: World) -> None:
    """The webhook answers Event Grid's handshake itself (tests/test_http_api.py); a validation event
    that reaches the service anyway (a replayed dead letter, a file given to the bench) is an event it
    does not act on: one recorded skip that says so, and done."""
    [raw] = load_sample("Microsoft.EventGrid.SubscriptionValidationEvent.eventgrid.json")
    result = world.deliver(raw)
    [rec] = result.decisions
    assert result.status == "processed" and (rec.action, rec.outcome) == ("none", "skipped")
    assert "handshake, answered by the webhook" in rec.reason
    assert world.deliver(raw).decisions == [rec] and world.actions.submissions == []
