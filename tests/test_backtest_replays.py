"""``retrain backtest`` replays what the service itself decides besides ``decide()``: a retrain's checks
before submission (a ``veto`` signal in its monitor run, the worthiness of the champion's data), judged
on what the record of the same decision kept, and the retrains the reconciler started (model age, new
data-asset versions), decided again by the draft's rules at the moments they were recorded. Replayed
through the policy that recorded them, the answer is what the service did: no difference."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from handlers.backtest import backtest
from handlers.backtest_report import Report
from handlers.policy import Policy
from handlers.records import iso
from tests.azure_world import DATASET, DRIFT_SAMPLE, AzureWorld, in_workspace
from tests.builders import (
    EXAMPLE_POLICY,
    MODEL,
    NOW,
    STORAGE,
    blob_event,
    breach_event,
    with_classes,
    with_retrain,
    with_retrain_on,
)
from tests.fakes import Clock, RecordingActions
from tests.ledgers import LedgerSpec
from tests.world import World


def replay(world: World, draft: Policy) -> Report:
    """``draft`` over what ``world`` recorded since a day before its clock."""
    now = world.worker.clock()
    return backtest(world.ledger, draft, "draft.yaml", world.worker.service.workspaces, now - timedelta(days=2), now)


def differences(report: Report, model: str = MODEL) -> list[tuple[str, list[str], list[str]]]:
    entry = report.models[model]
    return [(d.event_id, [o.label for o in d.recorded], [o.label for o in d.draft]) for d in entry.differences]


def monitor_day(tmp_path: Path, policy: Policy, actions: RecordingActions, hours: list[float]) -> World:
    """Breaches of the regression model's monitor (one monitor run) at ``hours`` after NOW."""
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), policy=policy, actions=actions, clock=Clock(NOW))
    for i, hour in enumerate(hours):
        world.clock.now = NOW + timedelta(hours=hour)
        world.deliver(breach_event("feature-drift", "diabetes-monitor", event_id=f"e{i + 1}"))
    return world


# --------------------------------------------------------------------------- worthiness and the veto


def test_retrains_found_not_worth_it_replay_as_recorded_and_a_draft_without_the_check_starts_them(
    tmp_path: Path,
) -> None:
    actions = RecordingActions(trained_on={DATASET: "2"}, latest={DATASET: "2"})  # the champion saw the latest data
    world = monitor_day(tmp_path, EXAMPLE_POLICY, actions, [0, 1])
    actions.latest = {DATASET: "3"}  # new data lands
    world.clock.now = NOW + timedelta(hours=2)
    world.deliver(breach_event("feature-drift", "diabetes-monitor", event_id="e3"))
    world.clock.now = NOW + timedelta(hours=3)
    outcomes = [(r.outcome, r.reason[:13]) for r in reversed(world.ledger.decisions(MODEL, 10))]
    assert outcomes == [("skipped", "not worth it:"), ("skipped", "not worth it:"), ("submitted", "The signal 'f")]

    same = replay(world, EXAMPLE_POLICY)  # before, each skip replayed as a start: e1 started, e2 and e3 refused
    assert differences(same) == [] and same.unchecked == []
    assert same.models[MODEL].counts(same.models[MODEL].draft) == {"retrain skipped": 2, "retrain started": 1}

    anyway = replay(world, with_retrain({"worthiness": False}))
    assert differences(anyway) == [
        ("e1", ["retrain skipped"], ["retrain started"]),
        ("e2", ["retrain skipped"], ["retrain refused (cooldown)"]),
        ("e3", ["retrain started"], ["retrain refused (cooldown)"]),
    ]


def test_a_vetoed_retrain_replays_as_recorded_and_each_drafts_veto_is_judged_on_the_breaches_found(
    tmp_path: Path,
) -> None:
    breached = RecordingActions(breaches={"monitor-run-1": ["feature-drift", "data-quality"]})
    vetoing = with_classes({"feature-drift": "retrain", "data-quality": "veto"})
    world = monitor_day(tmp_path, vetoing, breached, [0])
    [vetoed] = world.ledger.decisions(MODEL, 5)
    assert vetoed.outcome == "skipped" and vetoed.details["incident"] == "veto"

    assert differences(replay(world, vetoing)) == []  # before: the veto was not replayed, the retrain started
    unvetoed = replay(world, EXAMPLE_POLICY)
    assert differences(unvetoed) == [("e1", ["retrain skipped"], ["retrain started"])]
    other = replay(world, with_classes({"feature-drift": "retrain", "label-shift": "veto"}))  # not breached in it
    assert differences(other) == [("e1", ["retrain skipped"], ["retrain started"])]
    assert other.unchecked == [vetoed.id]  # judged on the breaches found; its worthiness was never read (vetoed first)


# --------------------------------------------------------------------------- the reconciler's retrains


@pytest.mark.sdk
def test_an_age_retrain_the_reconciler_started_holds_the_slot_in_the_replay_as_it_did(tmp_path: Path) -> None:
    policy = with_retrain({"max_age": "30d"})
    world = AzureWorld(tmp_path, policy=policy)
    created = world.now.now - timedelta(days=40)
    world.arm.models[(MODEL, "3")]["systemData"]["createdAt"] = iso(created)
    [aged] = world.reconcile().started
    assert aged.outcome == "submitted" and aged.details["age"]["created"] == iso(created)
    world.now.advance(hours=1)
    [drift] = world.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert drift.details["guard"] == "in_flight"  # the age retrain's run is going
    world.now.advance(hours=1)

    same = replay(world, policy)  # before, the age retrain was not replayed: the drift retrain started
    assert same.reconciler == 1 and differences(same) == []
    older = replay(world, with_retrain({"max_age": "60d"}))
    [(age, was, would), (_, was_drift, would_drift)] = differences(older)
    assert (age, was, would) == (aged.trigger["event_id"], ["retrain started"], ["skipped"])
    assert (was_drift, would_drift) == (["retrain refused (in_flight)"], ["retrain started"])
    assert older.unchecked == [drift.id]  # refused when recorded: its worthiness was never read
    reasons = [o.reason for o in older.models[MODEL].draft]
    assert any("younger than the draft's retrain.max_age 60d" in r for r in reasons)
    none = replay(world, EXAMPLE_POLICY)
    assert "the draft sets no retrain.max_age" in none.models[MODEL].differences[0].draft[0].reason


@pytest.mark.sdk
def test_a_new_data_asset_version_retrain_is_replayed_only_while_the_draft_watches_the_asset(tmp_path: Path) -> None:
    policy = with_retrain_on({"data": {"assets": [DATASET]}})
    world = AzureWorld(tmp_path, policy=policy)
    world.reconcile()  # the first look: where watching starts
    world.now.advance(minutes=10)
    world.arm.add_data(DATASET, "3", created=iso(world.now.now))
    world.now.advance(minutes=5)
    [started] = world.reconcile().started
    assert started.outcome == "submitted" and started.trigger["event_id"] == f"data-asset:{DATASET}:3"
    world.now.advance(minutes=10)
    same = replay(world, policy)
    assert same.reconciler == 1 and differences(same) == []
    unwatched = replay(world, EXAMPLE_POLICY)
    [(event_id, was, would)] = differences(unwatched)
    assert (event_id, was, would) == (f"data-asset:{DATASET}:3", ["retrain started"], ["skipped"])
    assert f"the draft does not watch data asset {DATASET!r}" in unwatched.models[MODEL].draft[0].reason


def test_a_settled_burst_retrain_is_replayed_only_while_the_draft_retrains_on_new_blobs(tmp_path: Path) -> None:
    sources = [{"account": STORAGE, "container": "training", "prefix": "diabetes/"}]
    policy = with_retrain_on({"data": {"blobs": sources, "settle": "5m"}})
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), policy=policy, clock=Clock(NOW))
    for i in range(3):
        world.deliver(blob_event(f"diabetes/2026-11-25/part-{i}.csv", event_id=f"blob-{i}"))
    world.clock.now = NOW + timedelta(minutes=6)
    [started] = world.reconcile().started
    assert started.outcome == "submitted" and started.trigger["event_id"].startswith("burst:")
    world.clock.now = NOW + timedelta(minutes=10)
    same = replay(world, policy)
    assert same.reconciler == 1 and differences(same) == []
    deaf = replay(world, EXAMPLE_POLICY)
    [(_, was, would)] = [d for d in differences(deaf) if d[0] == started.trigger["event_id"]]
    assert (was, would) == (["retrain started"], ["skipped"])
    assert any("the draft does not retrain model" in o.reason for o in deaf.models[MODEL].draft)
