"""Rollouts end to end: a candidate that passed the gate is moved through the policy's steps by
reconciler passes, through the real Azure ML SDK against the fake ARM and the real
``LogsQueryClient`` against a fake Log Analytics query API, on each ledger.

The example policy rolls ``sklearn_regression_model`` out in steps of [10, 50, 100] with a bake of
10 minutes, and the default health rule (at least 20 requests, at most 5% 5xx; without traffic,
bake on up to 30 minutes, then roll back).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from handlers import guards
from handlers.reconcile import ReconcileReport
from handlers.records import DecisionRecord, from_iso
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.crashes import DiesAfterSettingTraffic, WorkerDied

BAKE = timedelta(minutes=10)


class Rollout:
    """A candidate deployed from a finished run, provisioned, and the passes that move it on."""

    def __init__(
        self, azure: AzureWorld, run_id: str = "retrain-sklearn-regression-model-0123456789abcdef", r2: str = "0.61"
    ) -> None:
        self.azure = azure
        [self.deploy] = azure.deliver(azure.finished_run(r2=r2, run_id=run_id)).decisions
        assert self.deploy.outcome == "submitted"
        self.name = str(self.deploy.details["rendered"]["deployment"])
        azure.provisioned()

    def reconcile(self, **service: Any) -> ReconcileReport:
        return self.azure.new_worker(**service).reconcile()

    def state(self, **service: Any) -> str:
        [entry] = self.reconcile(**service).rollouts
        return str(entry["state"])

    def serve(self, *, ok: int, errors: int = 0, ms: int = 40) -> None:
        """Requests the candidate answered a minute ago (inside the current bake window)."""
        when = self.azure.now() - timedelta(minutes=1)
        self.azure.logs.serve(when, ENDPOINT, self.name, ok=ok, errors=errors, ms=ms)

    def bake(self) -> None:
        self.azure.now.advance(seconds=BAKE.total_seconds())

    def flight_data(self) -> dict[str, Any]:
        flight = self.azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT]
        return dict(flight.data["rollout"])

    def released(self) -> bool:
        return guards.ROLLOUT not in self.azure.service.ledger.get_model(MODEL).flights

    def record(self, kind: str) -> DecisionRecord:
        found = [r for r in self.azure.service.ledger.decisions(MODEL, 50) if r.action == kind]
        assert len(found) == 1, [r.id for r in found]
        return found[0]


@pytest.fixture
def rollout(azure: AzureWorld) -> Rollout:
    return Rollout(azure)


def test_a_healthy_candidate_goes_10_50_100_and_is_promoted(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name

    assert rollout.state() == "stepped"
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 90, cand: 10}
    assert rollout.state() == "baking"  # the same minute: no health check, no traffic change
    rollout.bake()
    rollout.serve(ok=100, errors=1)
    assert rollout.state() == "stepped"
    rollout.bake()
    rollout.serve(ok=200)
    assert rollout.state() == "stepped"
    rollout.bake()
    rollout.serve(ok=300, ms=55)
    report = rollout.reconcile()

    assert [r["state"] for r in report.rollouts] == ["promoted"]
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}, {"blue": 50, cand: 50}, {cand: 100}]
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {cand: 100}
    assert rollout.released()
    promote = rollout.record("promote")
    assert promote.outcome == "submitted" and promote.details["deploy_decision"] == rollout.deploy.id
    health = promote.details["health"]
    assert (health["status"], health["requests"], health["errors"], health["p95_ms"]) == ("healthy", 300, 0, 55.0)
    assert (health["source"], health["query"]) == ("log-analytics", "aml_online_endpoint_traffic")
    steps = [r for r in azure.service.ledger.decisions(MODEL, 50) if r.action == "rollout"]
    assert sorted(r.details["traffic"][cand] for r in steps) == [10, 50, 100]
    # each health check asked about the candidate over its own step's bake window, nothing else
    windows = [c.body["timespan"] for c in azure.logs.calls]
    assert len(windows) == 3 and all(c.status == 200 for c in azure.logs.calls)
    for window in windows:
        start, end = (from_iso(t) for t in window.split("/"))
        assert start is not None and end is not None and end - start == BAKE
    assert f'let deployment_name = "{cand}";' in azure.logs.calls[0].body["query"]
    assert rollout.reconcile().rollouts == []  # nothing in flight any more


def test_a_5xx_heavy_reading_at_50_percent_rolls_back_to_the_original_traffic(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    rollout.state()
    rollout.bake()
    rollout.serve(ok=50)
    assert rollout.state() == "stepped"
    rollout.bake()
    rollout.serve(ok=80, errors=20)

    assert rollout.state() == "rolled_back"

    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}, {"blue": 50, cand: 50}, {"blue": 100}]
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100}
    assert rollout.released()
    rollback = rollout.record("rollback")
    assert "rolled back at step 2 of 3 (50%)" in rollback.reason
    assert "20 5xx of 100 request(s) (20.0%) is above max_error_rate 5.0%" in rollback.reason
    assert rollback.details["traffic"] == {"blue": 100}
    assert (rollback.details["health"]["errors"], rollback.details["health"]["error_rate"]) == (20, 0.2)


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


def test_a_transient_503_from_log_analytics_defers_without_a_transition(rollout: Rollout) -> None:
    azure = rollout.azure
    rollout.state()
    rollout.bake()
    rollout.serve(ok=100)
    before = rollout.flight_data()
    azure.logs.fail(503, times=1000)

    report = rollout.reconcile()

    assert report.rollouts == [] and len(report.deferred) == 1
    assert "Log Analytics" in report.deferred[0]["error"]
    assert rollout.flight_data() == before and len(azure.arm.traffic_puts) == 1
    azure.logs.faults.clear()
    assert rollout.state() == "stepped"  # once the service answers again


def test_without_traffic_the_step_bakes_on_then_the_default_policy_rolls_back(rollout: Rollout) -> None:
    azure = rollout.azure
    rollout.state()
    rollout.bake()
    assert rollout.state() == "waiting_for_traffic"
    rollout.bake()
    assert rollout.state() == "waiting_for_traffic"
    rollout.bake()  # three bakes without 20 requests

    assert rollout.state() == "rolled_back"

    rollback = rollout.record("rollback")
    assert "0 5xx of 0 request(s) is less traffic than min_requests 20" in rollback.reason
    assert "on_no_traffic is rollback" in rollback.reason
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100} and rollout.released()


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


def promote(rollout: Rollout) -> ReconcileReport:
    """Take the rollout through its three healthy steps to its promotion."""
    assert rollout.state() == "stepped"
    for ok in (100, 200):
        rollout.bake()
        rollout.serve(ok=ok)
        assert rollout.state() == "stepped"
    rollout.bake()
    rollout.serve(ok=300)
    report = rollout.reconcile()
    assert [r["state"] for r in report.rollouts] == ["promoted"]
    return report


def test_a_promotion_points_the_old_deployments_model_monitor_at_the_new_one(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    azure.arm.add_monitor("diabetes-drift", ENDPOINT, "blue")
    azure.arm.add_monitor("other-endpoint-drift", "churn-endpoint", "green", short_id=True)
    before = json.loads(json.dumps(azure.arm.schedules["diabetes-drift"]))

    promote(rollout)

    [put] = azure.arm.requests_to("PUT", r"^schedules/")
    assert put.path == "schedules/diabetes-drift" and put.status == 200
    target = put.body["properties"]["action"]["monitorDefinition"]["monitoringTarget"]
    assert target["deploymentId"] == azure.arm.arm_id("onlineEndpoints", ENDPOINT, "deployments", cand)
    # nothing else changed: the signals, compute and trigger go back as Azure ML stored them
    expected = json.loads(json.dumps(before))
    expected["properties"]["action"]["monitorDefinition"]["monitoringTarget"]["deploymentId"] = target["deploymentId"]
    for key in ("action", "trigger", "isEnabled", "displayName"):
        assert put.body["properties"][key] == expected["properties"][key], key
    promoted = rollout.record("promote")
    assert promoted.details["demoted"] == ["blue"]
    assert promoted.details["monitors"] == [
        {"schedule": "diabetes-drift", "from": "blue", "to": cand, "outcome": "retargeted"}
    ]
    assert "model monitors now targeting" in promoted.reason
    # the promoted deployment collects what the monitor reads
    collector = azure.arm.deployments[(ENDPOINT, cand)]["properties"]["dataCollector"]
    assert collector["collections"]["model_inputs"]["dataId"] == azure.arm.arm_id(
        "data", f"{ENDPOINT}-blue-model_inputs", "versions", "1"
    )


def test_the_demoted_deployment_is_deleted_after_retire_after_and_the_deletion_is_a_decision(
    rollout: Rollout,
) -> None:
    azure = rollout.azure
    promote(rollout)
    azure.provisioned()
    assert (ENDPOINT, "blue") in azure.arm.deployments
    azure.now.advance(hours=23)
    assert rollout.reconcile().retired == []  # kept at 0% for a fast rollback
    assert azure.arm.requests_to("DELETE") == []

    azure.now.advance(hours=1)
    report = rollout.reconcile()

    [retired] = report.retired
    [delete] = azure.arm.requests_to("DELETE")
    assert delete.path == f"onlineEndpoints/{ENDPOINT}/deployments/blue" and delete.status == 202
    assert (retired.action, retired.outcome, retired.job) == (
        "retire",
        "submitted",
        {"name": f"{ENDPOINT}/blue", "url": None},
    )
    assert "longer than retire_after 1d" in retired.reason
    assert azure.service.ledger.get_decision(retired.id) == retired
    azure.provisioned()
    assert (ENDPOINT, "blue") not in azure.arm.deployments
    assert rollout.reconcile().retired == [] and len(azure.arm.requests_to("DELETE")) == 1  # once


def test_a_demoted_deployment_that_has_traffic_again_is_never_deleted(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    promote(rollout)
    azure.provisioned()
    azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] = {cand: 100}
    azure.arm.endpoints[ENDPOINT]["properties"]["mirrorTraffic"] = {"blue": 10}  # an operator mirrors to it
    azure.now.advance(days=3)
    assert rollout.reconcile().retired == []
    assert azure.arm.requests_to("DELETE") == []


def test_a_second_promotion_keeps_only_keep_previous_deployments_at_zero(rollout: Rollout) -> None:
    azure, first = rollout.azure, rollout.name
    promote(rollout)
    azure.provisioned()
    azure.now.advance(hours=1)
    second = Rollout(azure, run_id="retrain-sklearn-regression-model-fedcba9876543210", r2="0.7")

    report = promote(second)  # the pass that promotes retires too, within retire_after of both demotions

    azure.provisioned()
    [retired] = report.retired
    assert retired.details["deployment"] == "blue" and "keep_previous is 1" in retired.reason
    assert (ENDPOINT, first) in azure.arm.deployments  # the previous one, kept for a fast rollback
    assert [c.path.rsplit("/", 1)[1] for c in azure.arm.requests_to("DELETE")] == ["blue"]


def test_a_409_on_the_traffic_update_is_retried_and_never_turns_a_step_into_a_rollback(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    busy = "Operation is in progress on this endpoint; try again later"
    azure.arm.fail("PUT", r"^onlineEndpoints/[^/]+$", 409, code="Conflict", message=busy)
    assert rollout.state() == "stepped"  # retried within the budget
    assert azure.arm.traffic_puts == [{"blue": 90, cand: 10}] and len(azure.clock.slept) == 1

    rollout.bake()
    rollout.serve(ok=100)
    azure.arm.fail("PUT", r"^onlineEndpoints/[^/]+$", 409, times=1000, code="Conflict", message=busy)
    report = rollout.reconcile()
    assert report.rollouts == [] and "409" in report.deferred[0]["error"]  # left for the next pass
    assert [r.action for r in azure.service.ledger.decisions(MODEL, 50)].count("rollback") == 0
    azure.arm.faults.clear()
    assert rollout.state() == "stepped"
