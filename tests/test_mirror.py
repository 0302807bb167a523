"""The shadow stage (``deploy.rollout.mirror``) end to end: the real Azure ML SDK against the fake ARM,
which refuses what Azure ML refuses (more than 50% mirrored, two mirrored deployments, one deployment
live and mirrored), and the real health clients against the fake sources, which report the mirrored
copies of requests under the shadow deployment's name, as Azure Monitor does.

The example policy with ``mirror: {percent: 10, bake: 10m}``: once provisioned, the candidate gets
10% of the endpoint's requests mirrored to it, none live; judged after its bake against ``blue``, it
goes on to the steps [10, 50, 100] or is rolled back with its traffic never live.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app import runtime
from function_app.localhost import Host
from handlers import guards
from handlers.policy import Policy
from handlers.policy_file import parse_policy
from handlers.records import DecisionRecord, from_iso, iso
from handlers.rollout_rules import DEFAULT_LAG, MirrorRule
from handlers.signals import OperatorRequest, Trigger
from tests.azure_world import ENDPOINT, MODEL, WORKSPACE_ID, AzureWorld
from tests.builders import EXAMPLE_POLICY
from tests.conftest import REPO, Client
from tests.crashes import DiesAfterSettingTraffic, WorkerDied
from tests.ledgers import LedgerSpec
from tests.rollouts import Reads

BAKE = timedelta(minutes=10)
SOURCES = pytest.mark.parametrize("shadow", ["logs", "metrics"], indirect=True)


def with_mirror(percent: int = 10, bake: str = "10m") -> Policy:
    """The example policy, its model's rollout with a shadow stage."""
    mp = EXAMPLE_POLICY.models[MODEL]
    assert mp.deploy is not None
    rollout = mp.deploy.rollout.model_copy(
        update={"mirror": MirrorRule.model_validate({"percent": percent, "bake": bake})}
    )
    deploy = mp.deploy.model_copy(update={"rollout": rollout})
    models = {**EXAMPLE_POLICY.models, MODEL: mp.model_copy(update={"deploy": deploy})}
    return EXAMPLE_POLICY.model_copy(update={"models": models})


class Shadowed(Reads):
    """A candidate deployed from a finished run under the mirror policy, provisioned."""

    def __init__(self, azure: AzureWorld) -> None:
        self.azure = azure
        [self.deploy] = azure.deliver(azure.finished_run(r2="0.61")).decisions
        assert self.deploy.outcome == "submitted"
        self.name = str(self.deploy.details["rendered"]["deployment"])
        azure.provisioned()
        self.lag = DEFAULT_LAG[azure.source]

    def state(self, **service: Any) -> str:
        [entry] = self.azure.new_worker(**service).reconcile().rollouts
        return str(entry["state"])

    def started(self) -> datetime:
        at = from_iso(self.flight_data()["step_started"])
        assert at is not None
        return at

    def flight_data(self) -> dict[str, Any]:
        flight = self.azure.service.ledger.get_model(MODEL).flights[guards.ROLLOUT]
        return dict(flight.data["rollout"])

    def traffic(self) -> tuple[dict[str, int], dict[str, int]]:
        props = self.azure.arm.endpoints[ENDPOINT]["properties"]
        return dict(props["traffic"]), dict(props.get("mirrorTraffic") or {})

    def serve(self, minutes: int, requests: int = 600, failing: float = 0.0) -> None:
        """``requests`` a minute sent to the endpoint for the stage's first ``minutes``."""
        for m in range(minutes):
            when = self.started() + timedelta(minutes=m, seconds=30)
            self.azure.serve_endpoint(when, requests, failing={self.name: failing})

    def bake(self) -> None:
        self.azure.now.now = self.started() + BAKE + self.lag

    def released(self) -> bool:
        return guards.ROLLOUT not in self.azure.service.ledger.get_model(MODEL).flights


@pytest.fixture
def shadow(
    request: pytest.FixtureRequest, ledger_spec: LedgerSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shadowed]:
    monkeypatch.chdir(tmp_path)  # not a git repository, as on Azure
    world = AzureWorld(tmp_path, ledger_spec, source=getattr(request, "param", "logs"), policy=with_mirror())
    yield Shadowed(world)
    world.close()
    assert world.arm.unexpected == [] and world.logs.unexpected == [] and world.metrics.unexpected == []


@SOURCES
def test_a_healthy_shadow_goes_mirror_then_10_50_100_and_is_promoted(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name

    assert shadow.state() == "mirroring"
    assert shadow.traffic() == ({"blue": 100}, {cand: 10})  # mirrored, no live traffic
    assert shadow.state() == "mirroring"  # nothing to read yet
    [view] = [m for m in azure.new_worker().models() if m["model"] == MODEL]  # GET /api/models
    rollout = view["in_flight"]["rollout"]
    assert (rollout["stage"], rollout["mirror"]["percent"], rollout["traffic"]) == ("shadow", 10, {"blue": 100})
    assert from_iso(rollout["bake_until"]) == shadow.started() + BAKE
    shadow.serve(minutes=10)  # 600 a minute to blue, a copy of 60 of them to the candidate
    shadow.bake()
    assert shadow.state() == "stepped"
    assert shadow.traffic() == ({"blue": 90, cand: 10}, {})  # the mirror cleared with the first step
    for state in ("stepped", "stepped", "promoted"):
        shadow.serve(minutes=10)
        shadow.bake()
        assert shadow.state() == state

    assert shadow.released()
    assert azure.arm.endpoint_puts == [
        ({"blue": 100}, {cand: 10}),  # the mirror set, the live split unchanged
        ({"blue": 90, cand: 10}, {}),  # cleared, then live
        ({"blue": 50, cand: 50}, {}),
        ({cand: 100}, {}),
    ]
    [mirror, *steps] = sorted(shadow.records("rollout"), key=lambda r: r.at)
    assert mirror.details["mirror"] == {cand: 10} and mirror.details["traffic"] is None
    assert "shadow stage" in mirror.reason and "live traffic stays {blue: 100%}" in mirror.reason
    first = next(r for r in steps if r.details["step"] == 0)
    health = first.details["health"]
    assert first.details["mirror"] == {} and first.details["from_step"] == -1
    assert (health["status"], health["candidate"]["requests"], health["candidate"]["failures"]) == ("healthy", 600, 0)
    assert health["baseline"]["deployment"] == "blue" and health["baseline"]["requests"] == 6000
    assert "in its shadow stage (10% mirrored" in first.reason
    assert [r.outcome for r in shadow.records("promote")] == ["submitted"]


@SOURCES
def test_a_failing_shadow_is_rolled_back_and_its_traffic_is_never_live(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    assert shadow.state() == "mirroring"
    shadow.serve(minutes=1, failing=1.0)  # a broken scoring script: every mirrored copy fails
    azure.now.now = shadow.started() + timedelta(minutes=1) + shadow.lag

    assert shadow.state() == "rolled_back"  # fail fast, before the bake is over

    assert shadow.released() and shadow.traffic() == ({"blue": 100}, {})
    assert azure.arm.endpoint_puts == [({"blue": 100}, {cand: 10}), ({"blue": 100}, {})]
    assert all(cand not in live for live, _ in azure.arm.endpoint_puts)  # never live
    [rollback] = shadow.records("rollback")
    health = rollback.details["health"]
    assert (health["candidate"]["requests"], health["candidate"]["failures"]) == (60, 60)
    assert health["final"] is False and rollback.details["mirror"] == {} and rollback.details["traffic"] is None
    assert "its traffic was never live" in rollback.reason


@SOURCES
def test_a_shadow_slower_than_the_live_deployment_is_rolled_back_on_its_latency(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    assert shadow.state() == "mirroring"
    for m in range(10):  # no failures, but the shadow answers in 200 ms where blue answers in 40
        azure.serve_endpoint(shadow.started() + timedelta(minutes=m, seconds=30), 600, ms={cand: 200, "blue": 40})
    shadow.bake()

    assert shadow.state() == "rolled_back"

    health = shadow.records("rollback")[0].details["health"]
    assert health["candidate"]["failures"] == 0 and health["latency_ratio"] == pytest.approx(5.0)
    assert shadow.traffic() == ({"blue": 100}, {}) and all(cand not in t for t, _ in azure.arm.endpoint_puts)


def test_a_mirror_azure_refuses_is_a_rollback_whose_traffic_was_never_live(shadow: Shadowed) -> None:
    azure = shadow.azure
    azure.arm.fail(400, method="PUT", path=r"^onlineEndpoints/[^/]+$", code="UserError", message="Mirroring refused")

    assert shadow.state() == "rolled_back"

    [rollback] = shadow.records("rollback")
    assert "Mirroring refused" in rollback.details["refused"] and rollback.details["mirror"] == {}
    assert shadow.traffic() == ({"blue": 100}, {}) and shadow.released()
    assert azure.arm.endpoint_puts == []  # the refused update changed nothing; nothing else needed sending


def test_a_rolled_back_shadow_is_retired_after_retire_after(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    assert shadow.state() == "mirroring"
    shadow.serve(minutes=1, failing=1.0)
    azure.now.now = shadow.started() + timedelta(minutes=1) + shadow.lag
    assert shadow.state() == "rolled_back"
    azure.provisioned()
    assert azure.new_worker().reconcile().retired == []  # kept for retire_after (24h)
    azure.now.advance(days=2)

    [retired] = azure.new_worker().reconcile().retired

    assert retired.details["deployment"] == cand and "rolled back" in retired.reason
    assert len(azure.arm.requests_to("DELETE")) == 1


@pytest.mark.both_ledgers
def test_a_crash_between_setting_the_mirror_and_recording_it_sends_nothing_twice(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    with pytest.raises(WorkerDied):
        shadow.state(actions=DiesAfterSettingTraffic(azure.actions))
    assert azure.arm.endpoint_puts == [({"blue": 100}, {cand: 10})]
    assert shadow.flight_data()["pending"]["mirror"] == {cand: 10}

    assert shadow.state() == "mirroring"  # the same transition, carried out by the next pass

    assert azure.arm.endpoint_puts == [({"blue": 100}, {cand: 10})]  # read again, found so, not sent again
    data = shadow.flight_data()
    assert data["pending"] is None and data["mirror"]["percent"] == 10 and data["step"] == -1
    [mirror] = shadow.records("rollout")
    assert mirror.details["mirror"] == {cand: 10}
    assert shadow.state() == "mirroring"  # baking: no second mirror transition
    assert len(shadow.records("rollout")) == 1


def test_a_crash_between_clearing_the_mirror_with_the_first_step_and_recording_it_sends_nothing_twice(
    shadow: Shadowed,
) -> None:
    azure, cand = shadow.azure, shadow.name
    assert shadow.state() == "mirroring"
    shadow.serve(minutes=10)
    shadow.bake()
    with pytest.raises(WorkerDied):
        shadow.state(actions=DiesAfterSettingTraffic(azure.actions))
    assert shadow.traffic() == ({"blue": 90, cand: 10}, {})

    assert shadow.state() == "stepped"  # the pending step, carried out again: found so, not sent again

    assert azure.arm.endpoint_puts == [({"blue": 100}, {cand: 10}), ({"blue": 90, cand: 10}, {})]
    data = shadow.flight_data()
    assert (data["pending"], data["step"], data.get("mirror")) == (None, 0, None)
    assert len([r for r in shadow.records("rollout") if r.details["step"] == 0]) == 1


def operate(shadow: Shadowed, action: str) -> DecisionRecord:
    trigger = Trigger("http", f"op-{action}-1", f"OperatorRequest.{action}", {"kind": "user", "name": "ana"})
    return shadow.azure.new_worker().operate(OperatorRequest(trigger, MODEL, action, "checking"))


def test_an_operator_rollback_in_the_shadow_stage_clears_the_mirror(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    assert shadow.state() == "mirroring"
    azure.provisioned()  # the mirror's update is done

    record = operate(shadow, "rollback")

    assert record.action == "rollback" and record.outcome == "submitted"
    assert "mirror cleared, its traffic was never live" in record.reason
    assert shadow.traffic() == ({"blue": 100}, {}) and shadow.released()
    assert azure.arm.endpoint_puts == [({"blue": 100}, {cand: 10}), ({"blue": 100}, {})]


def test_pause_holds_the_mirror_and_promote_clears_it_with_the_live_traffic(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    assert shadow.state() == "mirroring"
    azure.provisioned()

    paused = operate(shadow, "pause")
    assert f"10% mirrored to {cand}" in paused.reason and shadow.state() == "paused"
    assert shadow.traffic() == ({"blue": 100}, {cand: 10})  # held
    operate(shadow, "resume")
    promoted = operate(shadow, "promote")

    assert promoted.action == "promote" and "mirror cleared" in promoted.reason
    assert shadow.traffic() == ({cand: 100}, {}) and shadow.released()
    assert azure.arm.endpoint_puts[-1] == ({cand: 100}, {})


def test_the_shadow_collects_into_its_own_data_assets_not_the_live_ones(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    collections = azure.arm.deployments[(ENDPOINT, cand)]["properties"]["dataCollector"]["collections"]
    ids = {name: str(c["dataId"]) for name, c in collections.items()}
    assert ids == {
        name: azure.arm.arm_id("data", f"{ENDPOINT}-{cand}-{name}", "versions", "1")
        for name in ("model_inputs", "model_outputs")
    }
    assert not any("-blue-" in i for i in ids.values())
    assert shadow.deploy.details["collects_into"] == [
        f"{ENDPOINT}-{cand}-model_inputs",
        f"{ENDPOINT}-{cand}-model_outputs",
    ]


def test_after_a_shadowed_promotion_the_monitor_reads_what_the_new_deployment_collects(shadow: Shadowed) -> None:
    azure, cand = shadow.azure, shadow.name
    azure.arm.add_monitor("diabetes-drift", ENDPOINT, "blue")
    assert shadow.state() == "mirroring"
    for state in ("stepped", "stepped", "stepped", "promoted"):  # the shadow stage, 10%, 50%, 100%
        shadow.serve(minutes=10)
        shadow.bake()
        assert shadow.state() == state

    definition = azure.arm.schedules["diabetes-drift"]["properties"]["action"]["monitorDefinition"]
    assert definition["monitoringTarget"]["deploymentId"] == azure.arm.arm_id(
        "onlineEndpoints", ENDPOINT, "deployments", cand
    )
    production = definition["signals"]["feature-drift"]["productionData"]
    assert production["uri"] == azure.arm.arm_id("data", f"{ENDPOINT}-{cand}-model_inputs", "versions", "1")
    reference = definition["signals"]["feature-drift"]["referenceData"]
    assert reference["uri"] == azure.arm.arm_id("data", "diabetes-training", "versions", "1")  # left alone
    [promoted] = shadow.records("promote")
    assert promoted.details["monitors"] == [
        {"schedule": "diabetes-drift", "from": "blue", "to": cand, "outcome": "retargeted"}
    ]


def test_an_alert_guard_fired_in_the_shadow_stage_rolls_it_back_and_clears_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import main

    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    rollout = raw["models"][MODEL]["deploy"]["rollout"]
    rollout.update(mirror={"percent": 20}, guards={"alerts": ["diabetes-endpoint-5xx"]})
    azure = AzureWorld(tmp_path, policy=parse_policy(yaml.safe_dump(raw)))
    shadow = Shadowed(azure)
    assert shadow.state() == "mirroring" and shadow.traffic() == ({"blue": 100}, {shadow.name: 20})
    azure.provisioned()
    alert = json.loads((REPO / "examples" / "events" / "alert.common-schema.json").read_text())
    alert["data"]["essentials"].update(
        alertId="/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/a1",
        alertRule="diabetes-endpoint-5xx",
        alertTargetIDs=[f"{WORKSPACE_ID}/onlineEndpoints/{ENDPOINT}"],
        firedDateTime=iso(azure.now()).replace("+00:00", ".0000000Z"),
    )
    runtime.set_retrainer(azure.worker)
    try:
        status, _, out = Client(Host(main.app)).call("POST", "/api/alerts", alert)
    finally:
        runtime.set_retrainer(None)

    assert status == 200, out
    [rollback] = shadow.records("rollback")
    assert rollback.trigger["caller"]["rule"] == "diabetes-endpoint-5xx"
    assert "mirror cleared, its traffic was never live" in rollback.reason
    assert shadow.traffic() == ({"blue": 100}, {}) and shadow.released()
    azure.close()
