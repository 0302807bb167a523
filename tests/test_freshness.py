"""Retrains the reconciler starts without an event: a champion older than retrain.max_age, and new versions
of the data assets retrain.on.data.assets names. The champion and the versions are read through the real
Azure ML SDK from the fake ARM (Data Versions - List, paged; the model version's systemData.createdAt)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from handlers.freshness import AssetVersion, Champion, age_retrain, newer, periods
from handlers.plans import Retrain
from handlers.policy_file import PolicyError, parse_policy
from handlers.records import DecisionRecord, iso
from handlers.signals import Trigger
from tests.azure_world import DATASET, ENDPOINT, AzureWorld
from tests.builders import MODEL, with_retrain, with_retrain_on
from tests.ledgers import LedgerSpec

AGE = with_retrain({"max_age": "30d"})
ASSETS = with_retrain_on({"data": {"assets": [DATASET, "fresh-labels"]}})
SWITCH = Trigger("cli", "sw-1", "ManualRequest.freeze", (("kind", "command line"),), channel="operator")


def champion_created(world: AzureWorld, days_ago: float) -> str:
    at = iso(world.now.now - timedelta(days=days_ago))
    world.arm.models[(MODEL, "3")]["systemData"]["createdAt"] = at
    return at


def retrains(world: AzureWorld) -> list[DecisionRecord]:
    return [r for r in world.ledger.decisions(MODEL, 50) if r.action == "retrain"]


def job_puts(world: AzureWorld) -> list[str]:
    return [c.path.rsplit("/", 1)[-1] for c in world.arm.job_puts]


def ended(world: AzureWorld, record: DecisionRecord, hours: float = 7) -> None:
    """The retrain's job failed (the reconciler finds it after its grace), and its cooldown passes."""
    world.arm.set_job_status(record.job["name"], "Failed")
    world.now.advance(minutes=20)
    world.reconcile()
    assert world.flights() == {}
    world.now.advance(hours=hours)


# --------------------------------------------------------------------------- model age


def test_periods_count_whole_ages_of_the_champion() -> None:
    created = datetime.fromisoformat("2026-10-01T00:00:00+00:00")
    assert [periods(created, timedelta(days=30), created + timedelta(days=d)) for d in (29, 30, 59, 61)] == [0, 1, 1, 2]


def test_an_age_retrain_is_decided_only_for_an_old_champion_once_per_age() -> None:
    mp = AGE.models[MODEL]
    now = datetime(2026, 12, 1, tzinfo=UTC)

    def champion(days: float | None) -> Champion:
        created = None if days is None else now - timedelta(days=days)
        return Champion(f"{ENDPOINT}/blue", AssetVersion(MODEL, "3", created))

    assert age_retrain(MODEL, mp, champion(29), timedelta(days=30), now) is None
    assert age_retrain(MODEL, mp, champion(None), timedelta(days=30), now) is None
    first, again, second = (age_retrain(MODEL, mp, champion(d), timedelta(days=30), now) for d in (31, 59, 61))
    assert isinstance(first, Retrain) and isinstance(again, Retrain) and isinstance(second, Retrain)
    assert first.id == again.id != second.id and "31d ago, older than retrain.max_age 30d" in first.reason


@pytest.mark.both_ledgers
def test_a_champion_older_than_max_age_gets_one_retrain_per_age_not_one_per_pass(
    tmp_path: Path, ledger_spec: LedgerSpec
) -> None:
    world = AzureWorld(tmp_path, ledger_spec, policy=AGE)
    created = champion_created(world, 40)
    [started] = world.reconcile().started
    assert started.outcome == "submitted" and started.trigger["event_type"] == "retrain.max_age"
    assert started.reason == (
        f"model age: the champion {MODEL}:3 ({ENDPOINT}/blue) was created {created}, 40d ago, "
        "older than retrain.max_age 30d"
    )
    world.now.advance(hours=2)
    assert world.reconcile().started == []  # its retrain runs
    ended(world, started)
    assert world.reconcile().started == []  # this champion's retrain of this age was made
    assert [r.id for r in retrains(world)] == [started.id] and len(job_puts(world)) == 1
    world.now.advance(days=30)  # still the champion, 70 days old: its second age
    [second] = world.reconcile().started
    assert second.outcome == "submitted" and second.id != started.id and len(job_puts(world)) == 2


def test_a_young_champion_and_an_endpoint_serving_nothing_start_nothing(tmp_path: Path) -> None:
    world = AzureWorld(tmp_path, policy=AGE)
    champion_created(world, 29)
    assert world.reconcile().started == []
    world.arm.endpoints[ENDPOINT]["properties"]["traffic"] = {}
    world.now.advance(days=5)
    assert world.reconcile().started == [] and job_puts(world) == []


def test_an_old_champion_waits_for_the_guards_recorded_once_and_starts_when_they_allow(tmp_path: Path) -> None:
    world = AzureWorld(tmp_path, policy=AGE)
    champion_created(world, 31)
    world.worker.freeze(True, SWITCH, "release week", models=[MODEL])
    [waits] = world.reconcile().started
    assert waits.outcome == "skipped" and waits.details["guard"] == "frozen"
    assert waits.reason.startswith("model age: the champion") and "; waits: " in waits.reason
    for _ in range(3):
        world.now.advance(hours=1)
        world.reconcile()
    assert [(r.id, r.outcome) for r in retrains(world)] == [(waits.id, "skipped")]
    world.worker.freeze(False, SWITCH, "release done", models=[MODEL])
    [started] = world.reconcile().started
    assert (started.id, started.outcome) == (waits.id, "submitted") and len(job_puts(world)) == 1


# --------------------------------------------------------------------------- new data-asset versions


def version(v: str, day: int | None) -> AssetVersion:
    return AssetVersion(DATASET, v, None if day is None else datetime(2026, 11, day, tzinfo=UTC))


def test_newer_versions_are_those_created_after_the_baseline_oldest_first() -> None:
    found = [version("5", 24), version("2", 20), version("4", 23), version("x", None)]
    since = iso(datetime(2026, 11, 20, tzinfo=UTC))
    assert [v.version for v in newer(found, since, "2")] == ["4", "5", "x"]


@pytest.mark.both_ledgers
def test_each_new_data_asset_version_starts_one_retrain_found_by_the_reconciler(
    tmp_path: Path, ledger_spec: LedgerSpec
) -> None:
    world = AzureWorld(tmp_path, ledger_spec, policy=ASSETS)
    world.arm.data_page = 1  # Data Versions - List answers a page at a time: every page is read
    first = world.reconcile().started
    assert [r.outcome for r in first] == ["skipped", "skipped"]
    assert first[0].reason.startswith(
        f"watching data asset '{DATASET}' for new versions (retrain.on.data.assets) from {DATASET}:2"
    )
    assert "'fresh-labels' for new versions (retrain.on.data.assets): it has none yet" in first[1].reason
    assert world.reconcile().started == [] and job_puts(world) == []
    world.arm.add_data(DATASET, "3", created=iso(world.now.now))
    world.now.advance(minutes=5)
    [started] = world.reconcile().started
    assert started.outcome == "submitted" and started.trigger["event_type"] == "retrain.on.data.assets"
    assert started.reason.startswith(f"new data: data asset version {DATASET}:3, created ")
    world.now.advance(minutes=5)
    assert world.reconcile().started == []
    ended(world, started)
    assert world.reconcile().started == []
    world.arm.add_data(DATASET, "4", created=iso(world.now.now))
    world.arm.add_data(DATASET, "5", created=iso(world.now.now + timedelta(seconds=1)))
    world.now.advance(minutes=5)
    newest, covered = world.reconcile().started
    assert newest.outcome == "submitted" and newest.reason.endswith("; it covers 4, found with it")
    assert covered.outcome == "skipped" and covered.reason.startswith(
        f"new data: data asset version {DATASET}:4 is covered"
    )
    assert len(job_puts(world)) == 2


def test_the_first_version_of_an_asset_watched_before_it_existed_starts_a_retrain(tmp_path: Path) -> None:
    world = AzureWorld(tmp_path, policy=ASSETS)
    world.reconcile()
    world.arm.add_data("fresh-labels", "1", created=iso(world.now.now))
    world.now.advance(minutes=5)
    [started] = world.reconcile().started
    assert started.outcome == "submitted" and "fresh-labels:1" in started.reason


def test_the_mark_is_kept_in_the_model_state_so_purged_records_and_a_pass_that_died_change_nothing(
    tmp_path: Path,
) -> None:
    world = AzureWorld(tmp_path, policy=ASSETS)
    world.reconcile()
    assert world.ledger.get_model(MODEL).assets[DATASET]["version"] == "2"
    world.ledger.purge(world.now.now + timedelta(days=1))  # retention took the trail of the first look
    world.arm.add_data(DATASET, "3", created=iso(world.now.now))
    world.now.advance(minutes=5)
    [started] = world.reconcile().started
    assert started.outcome == "submitted" and world.ledger.get_model(MODEL).assets[DATASET]["version"] == "3"
    # a pass that died after starting it, before moving the mark: the next one moves it, starting nothing
    world.ledger.update_model(
        MODEL, lambda s: (replace(s, assets={**s.assets, DATASET: {"version": "2", "created": None}}), None)
    )
    ended(world, started)
    assert world.ledger.get_model(MODEL).assets[DATASET]["version"] == "3" and len(job_puts(world)) == 1


def test_a_failing_read_of_the_versions_is_deferred_to_the_next_pass(tmp_path: Path) -> None:
    world = AzureWorld(tmp_path, policy=ASSETS)
    world.arm.fail(403, method="GET", path=f"data/{DATASET}/versions")
    report = world.reconcile()
    assert report.started == [] and [d["decision"] for d in report.deferred] == ["freshness"]


# --------------------------------------------------------------------------- the policy keys


@pytest.mark.parametrize(
    ("retrain", "says"),
    [
        ("max_age: 10m", "max_age must be from 1h to 3650d"),
        ("max_age: soon", "max_age"),
        ("on: {data: {assets: ['azureml:x:1']}}", "write the name alone"),
        ("on: {data: {assets: [a, A]}}", "named twice"),
        ("on: {data: {settle: 5m}}", "names no new data"),
    ],
)
def test_a_bad_freshness_key_names_the_key_and_the_fix(retrain: str, says: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(f'models:\n  m:\n    deploy: {{endpoint: ep-1}}\n    retrain: {{pipeline: "p:1", {retrain}}}\n')
    assert says in str(caught.value) and "models.m.retrain" in str(caught.value)


def test_max_age_without_an_online_endpoint_says_to_name_one() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy('models:\n  m:\n    retrain: {pipeline: "p:1", max_age: 30d}\n')
    assert "retrain.max_age judges the champion" in str(caught.value) and "deploy.endpoint" in str(caught.value)
