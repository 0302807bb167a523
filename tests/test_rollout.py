"""Rollouts end to end: a candidate that passed the gate is moved through the policy's steps by
reconciler passes, through the real Azure ML SDK against the fake ARM and the real
``LogsQueryClient`` against a fake Log Analytics query API, on each ledger.

The example policy rolls ``sklearn_regression_model`` out in steps of [10, 50, 100] with a bake of
10 minutes, and the default health rule (at least 20 requests, at most 5% 5xx; without traffic,
bake on up to 30 minutes, then roll back).
"""

from __future__ import annotations

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

    def __init__(self, azure: AzureWorld) -> None:
        self.azure = azure
        [self.deploy] = azure.deliver(azure.finished_run(r2="0.61")).decisions
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
