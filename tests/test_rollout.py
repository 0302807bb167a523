"""Rollouts end to end: a candidate that passed the gate is moved through the policy's steps by
reconciler passes, through the real Azure ML SDK against the fake ARM, on SQLite (a crash on both ledgers), and judged on
each health source: the real ``LogsQueryClient`` against the fake Log Analytics query API, and the
real ``MetricsClient`` against the fake metrics batch API.

The example policy rolls ``sklearn_regression_model`` out in steps of [10, 50, 100] with a bake of
10 minutes, and the default health rule (failures: 5xx, 408, 424, model 5xx; at most 5%, at least 20
requests, not worse than the live deployment ``blue`` at confidence 0.99; without traffic, bake on up
to 30 minutes, then roll back). A step's window ends the source's lag (logs 5m, metrics 3m) before
now, so a step's last look is a bake and a lag after it began.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from handlers import guards
from handlers.records import from_iso
from tests.azure_world import ENDPOINT, MODEL
from tests.crashes import DiesAfterSettingTraffic, WorkerDied
from tests.rollouts import BAKE, SOURCES, Rollout


@SOURCES
def test_a_healthy_candidate_goes_10_50_100_and_is_promoted(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name

    assert rollout.state() == "stepped"
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 90, cand: 10}
    assert rollout.state() == "baking"  # the same minute: nothing to read yet, no traffic change
    rollout.serve(minutes=10, ok=10, blue={"ok": 90, "errors": 1})
    rollout.bake()
    assert rollout.state() == "stepped"
    rollout.serve(minutes=10, ok=20, blue={"ok": 20})
    rollout.bake()
    assert rollout.state() == "stepped"
    rollout.serve(minutes=10, ok=30, ms=55)
    rollout.bake()
    report = rollout.reconcile()

    assert [r["state"] for r in report.rollouts] == ["promoted"]
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}, {"blue": 50, cand: 50}, {cand: 100}]
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {cand: 100}
    assert rollout.released()
    promote = rollout.record("promote")
    assert promote.outcome == "submitted" and promote.details["deploy_decision"] == rollout.deploy.id
    health = promote.details["health"]
    assert (health["status"], health["candidate"]["requests"], health["candidate"]["failures"]) == ("healthy", 300, 0)
    assert health["candidate"]["p95_ms"] == 55.0 and health["final"] is True
    assert health["source"] == azure.source and cand in health["request"]
    steps = [r for r in azure.service.ledger.decisions(MODEL, 50) if r.action == "rollout"]
    assert sorted(r.details["traffic"][cand] for r in steps) == [10, 50, 100]
    first = next(r for r in steps if r.details["traffic"][cand] == 50).details["health"]
    assert first["baseline"]["deployment"] == "blue" and first["baseline"]["failures"] == 10  # the same window
    assert first["p_value"] is not None and first["test"].startswith("minutes-")  # compared minute by minute
    # each step was judged once, at its last look, over its whole bake; each read reaches back to the
    # rollout's start (the earlier steps' minutes count in the comparison with the baseline)
    windows = [w for i, w in enumerate(rollout.windows()) if i == 0 or w != rollout.windows()[i - 1]]  # per read
    assert windows[0] == BAKE and windows[1] > windows[0] + BAKE and windows[2] > windows[1] + BAKE
    judged = [r.details["health"] for r in steps if "health" in r.details] + [health]
    assert [h["baked_s"] for h in judged] == [600.0, 600.0, 600.0]
    assert rollout.reconcile().rollouts == []  # nothing in flight any more


@SOURCES
def test_each_step_weighs_the_baseline_s_hour_before_the_rollout(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    assert rollout.state() == "stepped"
    since = from_iso(rollout.azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT].since)
    assert since is not None
    for m in range(90):  # the live deployment alone, from long before the rollout began
        azure.serve(since - timedelta(minutes=90 - m, seconds=-30), "blue", ok=98, errors=2)
    rollout.serve(minutes=10, ok=10, blue={"ok": 89, "errors": 1})
    rollout.bake()

    assert rollout.state() == "stepped"

    health = next(r for r in azure.service.ledger.decisions(MODEL, 50) if r.details.get("traffic", {}).get(cand) == 50)
    health = health.details["health"]
    assert "the baseline's 60 minute(s) before the rollout (120 failure(s) of 6000)" in health["note"]
    assert health["comparison"]["reference"] >= 70  # the hour before and the step's minutes
    assert health["baseline"]["served"] == 900  # the step's counts are the step's


@SOURCES
def test_424_and_408_failures_roll_back(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    rollout.state()
    rollout.serve(ok=10, model_errors=60, timeouts=30, blue={"ok": 540, "errors": 5})
    rollout.bake()

    assert rollout.state() == "rolled_back"

    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}, {"blue": 100}] and rollout.released()
    rollback = rollout.record("rollback")
    candidate = rollback.details["health"]["candidate"]
    assert (
        candidate["requests"],
        candidate["failures"],
        candidate["by_class"]["424"],
        candidate["by_class"]["408"],
    ) == (
        100,
        90,
        60,
        30,
    )
    assert "rolled back at step 1 of 3 (10%)" in rollback.reason and "traffic back to {blue: 100%}" in rollback.reason


@SOURCES
def test_a_candidate_worse_than_its_baseline_but_under_the_absolute_limit_rolls_back(rollout: Rollout) -> None:
    azure = rollout.azure
    rollout.state()
    rollout.serve(minutes=10, ok=58, model_errors=1, timeouts=1, blue={"ok": 534, "errors": 3, "model_errors": 3})
    rollout.bake()

    assert rollout.state() == "rolled_back"

    health = rollout.record("rollback").details["health"]
    assert health["candidate"]["failure_rate"] < health["limits"]["max_error_rate"]  # 3.3% < 5%
    assert health["baseline"]["deployment"] == "blue" and health["baseline"]["failures"] == 60
    assert health["p_value"] < health["alpha"] and "worse than the baseline" in health["why"]
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100} and rollout.released()


@SOURCES
def test_a_candidate_as_good_as_a_4_percent_baseline_is_promoted(rollout: Rollout) -> None:
    rollout.state()
    rollout.serve(
        minutes=10, ok=58, model_errors=1, errors=1, blue={"ok": 518, "model_errors": 12, "timeouts": 5, "errors": 5}
    )
    rollout.bake()
    assert rollout.state() == "stepped"
    rollout.serve(
        minutes=10, ok=290, model_errors=5, errors=5, blue={"ok": 288, "model_errors": 7, "timeouts": 3, "errors": 2}
    )
    rollout.bake()
    assert rollout.state() == "stepped"
    rollout.serve(minutes=10, ok=580, model_errors=10, errors=10)
    rollout.bake()

    assert rollout.state() == "promoted"

    steps = sorted(
        (r for r in rollout.azure.service.ledger.decisions(MODEL, 50) if r.action == "rollout"),
        key=lambda r: r.details["step"],
    )
    for step in steps[1:]:  # the judged steps: as good as the baseline, within the limits
        health = step.details["health"]
        assert health["status"] == "healthy" and health["p_value"] > health["alpha"]
        assert health["baseline"]["failure_rate"] >= 0.04
    assert rollout.record("promote").details["health"]["candidate"]["failure_rate"] == pytest.approx(20 / 600)


@SOURCES
def test_a_step_where_every_request_failed_rolls_back_before_min_requests(rollout: Rollout) -> None:
    azure = rollout.azure
    rollout.state()
    rollout.serve(model_errors=4, timeouts=2, errors=1, blue={"ok": 540})
    azure.now.now = rollout.started() + rollout.lag + timedelta(minutes=2)  # two minutes of traffic in, mid-bake

    assert rollout.state() == "rolled_back"

    health = rollout.record("rollback").details["health"]
    assert health["candidate"]["served"] == 7 < health["limits"]["min_requests"] and health["final"] is False
    assert "every one of its 7 request(s) failed" in health["why"]
    assert rollout.windows()[-1] == timedelta(minutes=2) and rollout.released()


@SOURCES
def test_a_failing_step_is_judged_on_each_pass_and_rolled_back_before_its_bake_ends(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    rollout.state()
    rollout.serve(minutes=10, ok=10, blue={"ok": 90})
    rollout.bake()
    assert rollout.state() == "stepped"
    azure.now.now = rollout.started() + rollout.lag + timedelta(minutes=1)
    assert rollout.state() == "baking"  # an interim look, nothing served yet: bake on
    rollout.serve(minutes=2, ok=40, errors=10, blue={"ok": 50})
    azure.now.now = rollout.started() + rollout.lag + timedelta(minutes=2)

    assert rollout.state() == "rolled_back"

    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}, {"blue": 50, cand: 50}, {"blue": 100}]
    rollback = rollout.record("rollback")
    assert "rolled back at step 2 of 3 (50%)" in rollback.reason and "before the end of the bake" in rollback.reason
    assert rollback.details["health"]["final"] is False and rollback.details["traffic"] == {"blue": 100}


@pytest.mark.both_ledgers
@SOURCES
def test_a_crash_between_setting_traffic_and_recording_it_ends_in_the_same_state(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    with pytest.raises(WorkerDied):
        rollout.reconcile(actions=DiesAfterSettingTraffic(azure.actions))
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}]
    assert rollout.flight_data()["pending"]["target"] == {"blue": 90, cand: 10}

    assert rollout.state() == "stepped"

    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}]  # read again, found so, not sent again
    data = rollout.flight_data()
    assert (data["pending"], data["step"], data["traffic"]) == (None, 0, {"blue": 90, cand: 10})
    [step] = [r for r in azure.service.ledger.decisions(MODEL, 50) if r.action == "rollout"]
    assert step.details["traffic"] == {"blue": 90, cand: 10}
    assert rollout.state() == "baking"


@SOURCES
def test_a_transient_503_from_the_health_source_defers_without_a_transition(rollout: Rollout) -> None:
    azure = rollout.azure
    rollout.state()
    rollout.serve(minutes=10, ok=10)
    rollout.bake()
    before = rollout.flight_data()
    fake = azure.logs if azure.source == "logs" else azure.metrics
    fake.fail(503, times=1000)

    report = rollout.reconcile()

    assert report.rollouts == [] and len(report.deferred) == 1
    assert ("Log Analytics" if azure.source == "logs" else "platform metrics") in report.deferred[0]["error"]
    assert rollout.flight_data() == before and len(azure.arm.traffic_puts) == 1
    fake.faults.clear()
    assert rollout.state() == "stepped"  # once the service answers again


@SOURCES
def test_without_traffic_the_step_bakes_on_then_the_default_policy_rolls_back(rollout: Rollout) -> None:
    azure = rollout.azure
    rollout.state()
    rollout.bake()
    assert rollout.state() == "waiting_for_traffic"
    azure.now.advance(minutes=10)
    assert rollout.state() == "waiting_for_traffic"
    azure.now.advance(minutes=10)  # three bakes without 20 requests

    assert rollout.state() == "rolled_back"

    rollback = rollout.record("rollback")
    assert "0 failure(s) of 0 request(s) is less traffic than min_requests 20" in rollback.reason
    assert "on_no_traffic is rollback" in rollback.reason
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100} and rollout.released()


@SOURCES
def test_a_deployment_whose_provisioning_failed_is_rolled_back_without_touching_traffic(rollout: Rollout) -> None:
    azure = rollout.azure
    azure.arm.provision(ENDPOINT, rollout.name, "Creating")
    assert rollout.state() == "provisioning"
    azure.arm.provision(ENDPOINT, rollout.name, "Failed")

    assert rollout.state() == "rolled_back"

    assert azure.arm.traffic_puts == [] and rollout.released()
    rollback = rollout.record("rollback")
    assert "the deployment ended provisioning Failed" in rollback.reason
    assert rollback.details["provisioning"] == "Failed" and rollback.details["traffic"] is None
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100}


def test_a_409_on_the_traffic_update_is_retried_and_never_turns_a_step_into_a_rollback(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    busy = "Operation is in progress on this endpoint; try again later"
    azure.arm.fail(409, method="PUT", path=r"^onlineEndpoints/[^/]+$", code="Conflict", message=busy)
    assert rollout.state() == "stepped"  # retried within the budget
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}] and len(azure.clock.slept) == 1

    rollout.bake()
    rollout.serve(ok=100)
    azure.arm.fail(409, method="PUT", path=r"^onlineEndpoints/[^/]+$", times=1000, code="Conflict", message=busy)
    report = rollout.reconcile()
    assert report.rollouts == [] and "409" in report.deferred[0]["error"]  # left for the next pass
    assert [r.action for r in azure.service.ledger.decisions(MODEL, 50)].count("rollback") == 0
    azure.arm.faults.clear()
    assert rollout.state() == "stepped"
