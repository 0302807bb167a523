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

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers import guards
from handlers.reconcile import ReconcileReport
from handlers.records import DecisionRecord, from_iso
from handlers.rollout_rules import DEFAULT_LAG
from tests.azure_world import ENDPOINT, MODEL, SUB, WORKSPACE_ID, AzureWorld
from tests.builders import EXAMPLE_POLICY, drift_event
from tests.crashes import DiesAfterSettingTraffic, WorkerDied
from tests.fake_metrics import MONITORING_READER
from tests.ledgers import LedgerSpec

BAKE = timedelta(minutes=10)

SOURCES = pytest.mark.parametrize("azure", ["logs", "metrics"], indirect=True)  # each test on each source


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
        self.lag = DEFAULT_LAG[azure.source]

    def reconcile(self, **service: Any) -> ReconcileReport:
        return self.azure.new_worker(**service).reconcile()

    def state(self, **service: Any) -> str:
        [entry] = self.reconcile(**service).rollouts
        return str(entry["state"])

    def started(self) -> datetime:
        at = from_iso(self.flight_data()["step_started"])
        assert at is not None
        return at

    def serve(self, *, minutes: int = 1, blue: dict[str, int] | None = None, **candidate: int) -> None:
        """Requests in each of the step's first ``minutes``: the candidate's, and the live ``blue``'s."""
        for m in range(minutes):
            when = self.started() + timedelta(minutes=m, seconds=30)
            self.azure.serve(when, self.name, **candidate)
            if blue:
                self.azure.serve(when, "blue", **blue)

    def bake(self) -> None:
        """To the step's last look: its bake and the source's lag after it began."""
        self.azure.now.now = self.started() + BAKE + self.lag

    def flight_data(self) -> dict[str, Any]:
        flight = self.azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT]
        return dict(flight.data["rollout"])

    def released(self) -> bool:
        return guards.ROLLOUT not in self.azure.service.ledger.get_model(MODEL).flights

    def record(self, kind: str) -> DecisionRecord:
        found = [r for r in self.azure.service.ledger.decisions(MODEL, 50) if r.action == kind]
        assert len(found) == 1, [r.id for r in found]
        return found[0]

    def windows(self) -> list[timedelta]:
        """The length of each window the source was asked about (the baseline's history before it aside:
        the logs query's ``window_start``, the metrics' latency request, which reads the window only)."""
        if self.azure.source == "logs":
            spans = []
            for c in self.azure.logs.calls:
                start, end = c.body["timespan"].split("/")
                history = re.search(r"let window_start = datetime\(([^)]+)\);", c.body["query"])
                spans.append([history.group(1) if history else start, end])
        else:
            calls = [c for c in self.azure.metrics.calls if c.query["metricnames"] == "RequestLatency_P95"]
            spans = [[c.query["starttime"], c.query["endtime"]] for c in calls]
        out = []
        for start, end in spans:
            a, b = from_iso(start), from_iso(end)
            assert a is not None and b is not None
            out.append(b - a)
        return out


@pytest.fixture
def rollout(azure: AzureWorld) -> Rollout:
    return Rollout(azure)


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


# --------------------------------------------------------------------------- choosing the source


def healthy_rollout(rollout: Rollout, source: str | None = None) -> None:
    """Serve a healthy candidate (and blue) in ``source`` through every step, to the promotion."""
    for per_minute in (10, 20, 30):
        for m in range(10):
            when = rollout.started() + timedelta(minutes=m, seconds=30)
            rollout.azure.serve(when, rollout.name, ok=per_minute, source=source)
            rollout.azure.serve(when, "blue", ok=100 - per_minute, source=source)
        rollout.bake()
        rollout.state()


def test_without_a_log_analytics_workspace_a_healthy_candidate_is_promoted_from_platform_metrics(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    world = AzureWorld(tmp_path, ledger_spec, source="metrics", logs_workspace=False)
    assert world.settings.log_analytics_workspace_id is None
    rollout = Rollout(world)
    assert rollout.state() == "stepped"

    healthy_rollout(rollout)

    promote = rollout.record("promote")
    assert (
        promote.details["health"]["source"] == "metrics" and "RequestsPerMinute" in promote.details["health"]["request"]
    )
    assert world.logs.calls == [] and world.metrics.calls and world.metrics.unexpected == []
    assert world.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {rollout.name: 100}
    world.close()


def test_with_monitoring_reader_on_the_workspace_only_the_rollout_defers_and_says_which_role_is_missing(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The role as infra/ used to assign it (on the workspace): every read of the metrics batch API is
    401, so nothing is decided on a guess, and the deferral says what to grant where."""
    monkeypatch.chdir(tmp_path)
    world = AzureWorld(tmp_path, ledger_spec, source="metrics", logs_workspace=False)
    as_infra = world.metrics.principal
    assert as_infra is not None
    world.metrics.principal = as_infra.moved("Monitoring Reader", WORKSPACE_ID)
    rollout = Rollout(world)
    assert rollout.state() == "stepped"
    rollout.serve(minutes=10, ok=10)
    rollout.bake()
    before = rollout.flight_data()

    report = rollout.reconcile()

    assert report.rollouts == [] and len(report.deferred) == 1
    error = report.deferred[0]["error"]
    assert f"Monitoring Reader ({MONITORING_READER}) on the subscription {SUB} itself" in error and "401" in error
    assert rollout.flight_data() == before and [c.status for c in world.metrics.calls] == [401]
    world.metrics.principal = as_infra  # as infra/ assigns it now: on the subscription
    assert rollout.state() == "stepped"
    world.close()


def test_a_policy_s_health_source_overrides_the_setting(
    ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mp = EXAMPLE_POLICY.models[MODEL]
    assert mp.deploy is not None
    health = mp.deploy.rollout.health.model_copy(update={"source": "logs"})
    deploy = mp.deploy.model_copy(update={"rollout": mp.deploy.rollout.model_copy(update={"health": health})})
    policy = EXAMPLE_POLICY.model_copy(
        update={"models": {**EXAMPLE_POLICY.models, MODEL: mp.model_copy(update={"deploy": deploy})}}
    )
    world = AzureWorld(tmp_path, ledger_spec, source="metrics", policy=policy)
    rollout = Rollout(world)
    rollout.lag = DEFAULT_LAG["logs"]
    rollout.state()

    healthy_rollout(rollout, source="logs")

    assert rollout.record("promote").details["health"]["source"] == "logs"
    assert world.metrics.calls == [] and len(world.logs.calls) == 3
    world.close()


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


def test_the_demoted_deployment_is_retired_after_a_storm_of_refusals_pushed_its_promotion_out_of_the_trail(
    rollout: Rollout,
) -> None:
    azure = rollout.azure
    promote(rollout)
    azure.provisioned()
    [retrain] = azure.deliver(drift_event(event_id="storm-0", topic=WORKSPACE_ID)).decisions
    assert retrain.outcome == "submitted"
    for n in range(1, 251):  # refused: its retraining is in flight; more than the 200 newest decisions
        [refused] = azure.deliver(drift_event(event_id=f"storm-{n}", topic=WORKSPACE_ID)).decisions
        assert refused.outcome == "skipped" and refused.details.get("guard")
    assert "promote" not in {r.action for r in azure.service.ledger.decisions(MODEL, 200)}
    azure.now.advance(days=1)

    [retired] = rollout.reconcile().retired

    assert (retired.action, retired.outcome, retired.details["deployment"]) == ("retire", "submitted", "blue")
    [delete] = azure.arm.requests_to("DELETE")
    assert delete.path == f"onlineEndpoints/{ENDPOINT}/deployments/blue"


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


def roll_back(rollout: Rollout) -> DecisionRecord:
    """The candidate's first step fails (every request a 5xx) and the judge rolls it back."""
    assert rollout.state() == "stepped"
    rollout.serve(errors=30, blue={"ok": 300})
    rollout.bake()
    assert rollout.state() == "rolled_back"
    rollout.azure.provisioned()
    return rollout.record("rollback")


def test_a_rolled_back_candidate_is_deleted_after_retire_after_and_not_before(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    rollback = roll_back(rollout)
    assert azure.arm.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100}
    azure.now.advance(hours=23)
    assert rollout.reconcile().retired == []  # not before retire_after (24h in the example policy)
    assert azure.arm.requests_to("DELETE") == [] and (ENDPOINT, cand) in azure.arm.deployments

    azure.now.advance(hours=1)
    [retired] = rollout.reconcile().retired

    [delete] = azure.arm.requests_to("DELETE")
    assert delete.path == f"onlineEndpoints/{ENDPOINT}/deployments/{cand}" and delete.status == 202
    assert (retired.action, retired.outcome, retired.job) == (
        "retire",
        "submitted",
        {"name": f"{ENDPOINT}/{cand}", "url": None},
    )
    assert f"rolled back at {rollback.at} by {rollback.id}" in retired.reason
    assert "longer than retire_after 1d" in retired.reason
    azure.provisioned()
    assert (ENDPOINT, cand) not in azure.arm.deployments and (ENDPOINT, "blue") in azure.arm.deployments
    assert rollout.reconcile().retired == [] and len(azure.arm.requests_to("DELETE")) == 1  # once


def test_a_rolled_back_candidate_with_live_or_mirrored_traffic_is_never_deleted(rollout: Rollout) -> None:
    azure, cand = rollout.azure, rollout.name
    roll_back(rollout)
    props = azure.arm.endpoints[ENDPOINT]["properties"]
    props["traffic"] = {"blue": 80, cand: 20}  # an operator sends traffic back to it
    azure.now.advance(days=3)
    assert rollout.reconcile().retired == []
    props["traffic"], props["mirrorTraffic"] = {"blue": 100}, {cand: 10}  # ... or mirrors traffic to it
    azure.now.advance(days=3)
    assert rollout.reconcile().retired == []
    assert azure.arm.requests_to("DELETE") == [] and (ENDPOINT, cand) in azure.arm.deployments
    props["mirrorTraffic"] = {}  # once nothing reaches it, it goes
    [retired] = rollout.reconcile().retired
    assert retired.details["deployment"] == cand and len(azure.arm.requests_to("DELETE")) == 1


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
