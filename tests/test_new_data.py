"""New data as a trigger (retrain.on.data): BlobCreated events of the storage accounts and prefixes the
policy names are counted into a burst, and the reconciler starts one retrain once the burst has settled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from handlers import newdata
from handlers.decisions import decide
from handlers.envelopes import envelope_from_dict, to_signal
from handlers.errors import TransientError
from handlers.plans import Collect, Skip
from handlers.policy_file import PolicyError, parse_policy
from handlers.records import ModelState, iso
from handlers.signals import BlobCreated, Trigger
from tests.builders import MODEL, NEW_DATA, NOW, SCOPE, STORAGE, blob_event, cloud, event, run_event, with_retrain_on
from tests.conftest import load_sample
from tests.crashes import DiesAfterActing, LedgerThatDies, WorkerDied
from tests.ledgers import LedgerSpec
from tests.world import World

OTHER = STORAGE.replace("/mydata", "/otherdata")


def signal_of(raw: dict[str, Any]) -> Any:
    return to_signal(envelope_from_dict(raw), SCOPE)


# --------------------------------------------------------------------------- the wire: both schemas


@pytest.mark.parametrize("sample", ["eventgrid", "cloudevents"])
def test_microsofts_published_blob_created_sample_reads_as_a_blob_of_its_account_in_both_schemas(sample: str) -> None:
    [raw] = load_sample(f"Microsoft.Storage.BlobCreated.{sample}.json")
    signal = signal_of(raw)
    assert isinstance(signal, BlobCreated)
    assert signal.account.endswith("/providers/Microsoft.Storage/storageAccounts/jolovstorage")
    assert (signal.container, signal.blob) == ("gaocontainer", "Template1.xlsx")
    assert signal.trigger.event_id == "beb21a5e-401e-002b-3749-928517060431"


def test_a_blob_event_in_either_schema_makes_the_same_collect_decision() -> None:
    raw = blob_event("diabetes/2026-11-25/part-0001.csv", event_id="blob-1")
    [grid] = decide(signal_of(raw), NEW_DATA, SCOPE)
    [ce] = decide(signal_of(cloud(raw)), NEW_DATA, SCOPE)
    assert isinstance(grid, Collect) and grid == ce
    assert (grid.model, grid.blob, grid.settle) == (
        MODEL,
        "training/diabetes/2026-11-25/part-0001.csv",
        timedelta(minutes=5),
    )


def test_a_blob_event_without_a_blob_subject_is_a_recorded_skip_that_says_so() -> None:
    raw = event(
        "Microsoft.Storage.BlobCreated", {"url": "x"}, topic=STORAGE, subject="/blobServices/default/containers/x"
    )
    [decision] = decide(signal_of(raw), NEW_DATA, SCOPE)
    assert isinstance(decision, Skip)
    assert "without a blob subject" in decision.reason


# --------------------------------------------------------------------------- the trust boundary


def test_a_blob_of_another_storage_account_is_a_recorded_skip_naming_the_key_to_set() -> None:
    [decision] = decide(signal_of(blob_event("diabetes/a.csv", account=OTHER)), NEW_DATA, SCOPE)
    assert isinstance(decision, Skip) and decision.model is None
    assert "otherdata" in decision.reason and "models.<model>.retrain.on.data.blobs" in decision.reason


@pytest.mark.parametrize(
    ("container", "blob"),
    [
        ("training", "churn/a.csv"),
        ("training", "Diabetes/a.csv"),
        ("scratch", "diabetes/a.csv"),
        ("training", "diabetes"),
        ("training", "diabetes2/a.csv"),
        ("training", "diabetes-scratch/a.csv"),
    ],
)
def test_a_blob_outside_the_named_containers_and_prefixes_is_a_recorded_skip_of_the_model(
    container: str, blob: str
) -> None:
    [decision] = decide(signal_of(blob_event(blob, container=container)), NEW_DATA, SCOPE)
    assert isinstance(decision, Skip) and decision.model == MODEL
    assert "outside what models.sklearn_regression_model.retrain.on.data.blobs names" in decision.reason
    assert "training/diabetes/, labels/" in decision.reason


def test_a_whole_container_named_with_an_empty_prefix_takes_every_blob_in_it() -> None:
    [decision] = decide(signal_of(blob_event("any/depth/file.parquet", container="labels")), NEW_DATA, SCOPE)
    assert isinstance(decision, Collect)


def test_blob_events_concern_nobody_when_no_model_retrains_on_new_data() -> None:
    [decision] = decide(signal_of(blob_event("diabetes/a.csv")), with_retrain_on({}), SCOPE)
    assert isinstance(decision, Skip) and "no model's retrain.on.data.blobs names" in decision.reason


# --------------------------------------------------------------------------- the burst, as pure rules


def collect(event_id: str, blob: str = "training/diabetes/a.csv") -> Collect:
    trigger = Trigger(STORAGE, event_id, "Microsoft.Storage.BlobCreated")
    return Collect(f"co-{event_id}", MODEL, "new data", trigger, blob, timedelta(minutes=5))


def test_a_burst_opens_with_its_first_blob_and_keeps_the_time_of_its_last() -> None:
    state, first = newdata.collected(ModelState(MODEL), collect("e1"), NOW)
    state, burst = newdata.collected(state, collect("e2", "training/diabetes/b.csv"), NOW + timedelta(seconds=40))
    assert burst["id"] == first["id"] and burst["blobs"] == 2
    assert (burst["first"], burst["last"], burst["latest"]) == (
        iso(NOW),
        iso(NOW + timedelta(seconds=40)),
        "training/diabetes/b.csv",
    )
    # a late delivery of an earlier blob does not move the burst's end back
    _, late = newdata.collected(state, collect("e0"), NOW)
    assert late["last"] == iso(NOW + timedelta(seconds=40))


def test_a_burst_settles_only_once_no_blob_has_come_for_the_settle_window() -> None:
    _, burst = newdata.collected(ModelState(MODEL), collect("e1"), NOW)
    settle = timedelta(minutes=5)
    assert not newdata.settled(burst, settle, NOW + settle - timedelta(seconds=1))
    assert newdata.settled(burst, settle, NOW + settle)
    assert not newdata.settled(None, settle, NOW + settle)


def test_clearing_a_burst_keeps_the_blobs_that_came_after_it_was_seen_as_a_burst_of_their_own() -> None:
    state, seen = newdata.collected(ModelState(MODEL), collect("e1"), NOW)
    later, _ = newdata.collected(state, collect("e2"), NOW + timedelta(minutes=6))
    cleared, changed = newdata.cleared(later, seen)
    assert changed and cleared is not None and cleared.burst is not None
    assert cleared.burst["id"] != seen["id"] and cleared.burst["blobs"] == 1
    assert cleared.burst["last"] == iso(NOW + timedelta(minutes=6))
    gone, _ = newdata.cleared(state, seen)
    assert gone is not None and gone.burst is None
    assert newdata.cleared(ModelState(MODEL), seen) == (None, False)


# --------------------------------------------------------------------------- end to end, on both ledgers


def deliver_all(world: World, raws: list[dict[str, Any]], worker: Any = None) -> list[str]:
    statuses = []
    for raw in raws:
        world.clock.advance(seconds=0.12)
        statuses.append(world.deliver(raw, worker).status)
    return statuses


def burst_of(world: World) -> dict[str, Any] | None:
    return world.ledger.get_model(MODEL).burst


@pytest.mark.both_ledgers
def test_a_burst_of_500_blobs_in_a_minute_starts_one_retrain_after_the_settle_window(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec, policy=NEW_DATA)
    raws = [blob_event(f"diabetes/2026-11-25/part-{i:04}.csv", event_id=f"blob-{i}") for i in range(500)]
    assert deliver_all(world, raws) == ["processed"] * 500
    assert deliver_all(world, raws[:40]) == ["duplicate"] * 40  # Event Grid delivers at least once
    last = world.clock.now - timedelta(seconds=40 * 0.12)
    burst = burst_of(world)
    assert burst is not None and burst["blobs"] == 500 and burst["last"] == iso(last)
    [record] = world.ledger.decisions(MODEL, 1)
    assert record.action == "collect" and record.outcome == "skipped" and "500 blob(s)" in record.reason

    world.clock.now = last + timedelta(minutes=4, seconds=59)
    assert world.reconcile().started == [] and world.actions.submissions == []

    world.clock.now = last + timedelta(minutes=5)
    [started] = world.reconcile().started
    assert (started.action, started.outcome) == ("retrain", "submitted")
    assert "500 blob(s)" in started.reason and "none since for 5m" in started.reason
    assert world.actions.submissions == [started.job["name"]]  # type: ignore[index]
    assert burst_of(world) is None
    assert world.flights()["retrain"].decision == started.id

    world.clock.advance(minutes=10)
    assert world.reconcile().started == [] and len(world.actions.submissions) == 1
    assert deliver_all(world, raws[-5:]) == ["duplicate"] * 5 and burst_of(world) is None


@pytest.mark.both_ledgers
def test_a_worker_killed_mid_window_and_redeliveries_still_make_one_retrain(ledger_spec: LedgerSpec) -> None:
    world = World(ledger_spec, policy=NEW_DATA)
    raws = [blob_event(f"diabetes/part-{i:04}.csv", event_id=f"blob-{i}") for i in range(500)]
    deliver_all(world, raws[:250])
    dying = world.new_worker(ledger=LedgerThatDies(ledger_spec.open(), "confirm"))
    with pytest.raises(WorkerDied):  # counted into the burst, then the worker died before finishing the event
        world.deliver(raws[250], dying)
    other = world.new_worker()
    with pytest.raises(TransientError):  # its claim is held for the lease: Event Grid delivers it again later
        world.deliver(raws[250], other)
    assert deliver_all(world, raws[251:], other) == ["processed"] * 249
    assert deliver_all(world, raws[100:150], other) == ["duplicate"] * 50
    world.clock.advance(seconds=61)
    assert world.deliver(raws[250], other).status == "processed"  # the redelivery, after the lease
    last = world.clock.now
    burst = burst_of(world)
    # the blob whose worker died is counted on each delivery: the count is of deliveries, the end is exact
    assert burst is not None and burst["blobs"] == 501 and burst["last"] == iso(last)

    world.clock.now = last + timedelta(minutes=3)
    assert world.reconcile().started == []
    world.clock.now = last + timedelta(minutes=5)
    [started] = other.reconcile(world.clock.now).started
    assert started.outcome == "submitted" and len(world.actions.submissions) == 1


@pytest.mark.both_ledgers
def test_a_reconciler_that_dies_after_starting_the_retrain_leaves_the_next_pass_one_job(
    ledger_spec: LedgerSpec,
) -> None:
    world = World(ledger_spec, policy=NEW_DATA)
    deliver_all(world, [blob_event(f"diabetes/{i}.csv") for i in range(3)])
    world.clock.advance(minutes=6)
    dying = world.new_worker(ledger=LedgerThatDies(ledger_spec.open(), "outcome"))
    with pytest.raises(WorkerDied):  # the job is submitted and recorded; the slot and the burst not yet
        dying.reconcile(world.clock.now)
    assert len(world.actions.submissions) == 1 and burst_of(world) is not None
    report = world.reconcile()
    [again] = report.started
    assert again.outcome == "submitted" and len(world.actions.submissions) == 1
    assert burst_of(world) is None
    world.clock.advance(minutes=2)  # the reservation's lease has passed: the next pass confirms it as recorded
    world.reconcile()
    assert world.flights()["retrain"].status == "submitted"


def test_a_reconciler_that_dies_after_submitting_leaves_the_retrain_to_the_repair_once_its_lease_ends(
    tmp_path: Any,
) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), policy=NEW_DATA)
    deliver_all(world, [blob_event(f"diabetes/{i}.csv") for i in range(3)])
    world.clock.advance(minutes=6)
    with pytest.raises(WorkerDied):  # the job is submitted; its decision is only reserved
        world.new_worker(DiesAfterActing(world.actions)).reconcile(world.clock.now)
    [reserved] = [r for r in world.ledger.decisions(MODEL, 10) if r.action == "retrain"]
    assert reserved.outcome == "reserved" and len(world.actions.submissions) == 1
    assert world.reconcile().started == [] and burst_of(world) is not None  # the dead worker's until its lease ends
    world.clock.advance(minutes=2)
    report = world.reconcile()  # the repair resumes it (adopting the job), then the burst is cleared with it
    [resumed] = report.resumed
    assert resumed.id == reserved.id and resumed.outcome == "submitted"
    assert [r.id for r in report.started] == [reserved.id] and burst_of(world) is None
    assert set(world.actions.submissions) == {reserved.job["name"]}  # submitted again by its name: the one job


def test_new_data_while_a_retrain_is_in_flight_waits_recorded_and_starts_once_the_guards_allow(tmp_path: Any) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), policy=NEW_DATA)
    manual = world.manual(reason="by hand")
    deliver_all(world, [blob_event("diabetes/new.csv")])
    world.clock.advance(minutes=6)
    [waits] = world.reconcile().started
    assert waits.outcome == "skipped" and waits.details["guard"] == "in_flight"
    assert "waits: a retrain is already in flight" in waits.reason and burst_of(world) is not None
    job = manual.job["name"]
    world.deliver(run_event(run_id=job, status="Failed", tags={"retrain_model": MODEL, "retrain_decision": manual.id}))
    [cooling] = world.reconcile().started
    assert cooling.details["guard"] == "cooldown" and burst_of(world) is not None
    world.clock.advance(hours=6)
    [started] = world.reconcile().started
    assert started.id == waits.id and started.outcome == "submitted"
    assert world.actions.submissions == [job, started.job["name"]] and burst_of(world) is None


def test_blobs_of_other_accounts_and_prefixes_never_open_a_burst(tmp_path: Any) -> None:
    world = World(LedgerSpec("sqlite", str(tmp_path / "ledger.db")), policy=NEW_DATA)
    results = [world.deliver(blob_event("diabetes/a.csv", account=OTHER)), world.deliver(blob_event("churn/a.csv"))]
    assert [r.decisions[0].outcome for r in results] == ["skipped", "skipped"]
    world.clock.advance(hours=1)
    assert burst_of(world) is None and world.reconcile().started == [] and world.actions.submissions == []


# --------------------------------------------------------------------------- the policy


@pytest.mark.parametrize(
    ("on", "says"),
    [
        ("data: {blobs: [{account: mydata, container: training}]}", "is not a storage account resource id"),
        (f"data: {{blobs: [{{account: '{STORAGE}', container: Training}}]}}", "is not a blob container name"),
        (f"data: {{blobs: [{{account: '{STORAGE}', container: training, prefix: /diabetes/}}]}}", "write 'diabetes/'"),
        (
            f"data: {{blobs: [{{account: '{STORAGE}', container: training, prefix: diabetes}}]}}",
            "prefix 'diabetes' names a folder: write 'diabetes/' ('diabetes' would also take 'diabetes2/...'",
        ),
        (
            f"data: {{blobs: [{{account: '{STORAGE}', container: training, prefix: 'in/diabetes-'}}]}}",
            "or 'in/' for the whole folder",
        ),
        (
            f"data: {{blobs: [{{account: '{STORAGE}', container: training}}], settle: 5s}}",
            "settle must be from 30s to 1d",
        ),
        (
            f"data: {{blobs: [{{account: '{STORAGE}', container: training}}], settle: 10m, max_wait: 5m}}",
            "max_wait 0:05:00 must be from settle (0:10:00) to 7d",
        ),
        (
            f"data: {{blobs: [{{account: '{STORAGE}', container: training}}], max_wait: 8d}}",
            "remove max_wait to wait for a quiet settle window",
        ),
        ("data: {blobs: []}", "blobs"),
        ("files: []", "files"),
    ],
)
def test_a_bad_retrain_on_section_names_the_key_and_the_fix(on: str, says: str) -> None:
    text = f"""
version: 1
models:
  churn:
    retrain:
      pipeline: train:1
      on: {{{on}}}
"""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert "models.churn.retrain.on" in str(caught.value) and says in str(caught.value)
