"""Alert guards of rollouts (``deploy.rollout.guards.alerts``): a fired Azure Monitor alert posted to
``/api/alerts`` while the model has a rollout in flight rolls it back through the operator's path,
recorded with the alert; everything else is a recorded skip that says why. End to end through the app's
HTTP function, with the real Azure ML SDK against the fake ARM and the real ``LogsQueryClient`` against
the fake Log Analytics API."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from function_app import runtime
from function_app.localhost import Host
from handlers.errors import TransientError
from handlers.policy_file import parse_policy
from handlers.records import iso
from tests.azure_world import ENDPOINT, MODEL, WORKSPACE_ID, AzureWorld
from tests.conftest import REPO, Client
from tests.crashes import DiesAfterSettingTraffic, FinishFailsOnce, WorkerDied
from tests.ledgers import LedgerSpec
from tests.rollouts import Reads

GUARD = "diabetes-endpoint-5xx"  # a rollout guard only
BOTH = "diabetes-feature-drift"  # the example policy's retraining alert, made a rollout guard too
ALERT: dict[str, Any] = json.loads((REPO / "examples" / "events" / "alert.common-schema.json").read_text())
ENDPOINT_ID = f"{WORKSPACE_ID}/onlineEndpoints/{ENDPOINT}"


def guarded_policy(mirror: bool = False) -> Any:
    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    raw["models"][MODEL]["deploy"]["rollout"]["guards"] = {"alerts": [GUARD.upper(), BOTH]}
    if mirror:
        raw["models"][MODEL]["deploy"]["rollout"]["mirror"] = {"percent": 10, "bake": "10m"}
    return parse_policy(yaml.safe_dump(raw))


class Guarded(Reads):
    """A candidate rolled out to its first step (10%), or ``mirror``ed in its shadow stage, under a
    policy with alert guards, and the app."""

    def __init__(self, tmp_path: Path, mirror: bool = False) -> None:
        policy = guarded_policy(mirror)
        self.azure = AzureWorld(tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=policy)
        [self.deploy] = self.azure.deliver(self.azure.finished_run(r2="0.61")).decisions
        self.name = str(self.deploy.details["rendered"]["deployment"])
        self.azure.provisioned()
        [entry] = self.azure.new_worker().reconcile().rollouts
        assert entry["state"] == ("mirroring" if mirror else "stepped")
        import main

        runtime.set_retrainer(self.azure.worker)
        self.client = Client(Host(main.app))

    def alert(self, alert_id: str = "a1", **essentials: Any) -> dict[str, Any]:
        body = copy.deepcopy(ALERT)
        body["data"]["essentials"].update(
            {
                "alertId": f"/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/{alert_id}",
                "alertRule": GUARD,
                "severity": "Sev1",
                "signalType": "Metric",
                "alertTargetIDs": [ENDPOINT_ID],
                "firedDateTime": iso(self.azure.now()).replace("+00:00", ".0000000Z"),
                **essentials,
            }
        )
        return body

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        status, _, out = self.client.call("POST", "/api/alerts", body)
        assert status == 200, out
        return dict(out)


@pytest.fixture
def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guarded]:
    monkeypatch.chdir(tmp_path)
    world = Guarded(tmp_path)
    yield world
    runtime.set_retrainer(None)
    world.azure.close()
    assert world.azure.arm.unexpected == []


def test_a_fired_alert_during_a_rollout_rolls_it_back_recorded_with_the_alert(guarded: Guarded) -> None:
    assert guarded.traffic() == {"blue": 90, guarded.name: 10}
    guarded.azure.now.advance(minutes=2)

    answer = guarded.post(guarded.alert())

    [rolled] = answer["decisions"]
    assert (rolled["action"], rolled["outcome"], rolled["model"]) == ("rollback", "submitted", MODEL)
    assert rolled["details"]["traffic"] == {"blue": 100} and guarded.traffic() == {"blue": 100}
    caller = rolled["trigger"]["caller"]
    assert caller["kind"] == "alert" and caller["rule"] == GUARD and caller["severity"] == "Sev1"
    assert caller["alert_id"].endswith("/alerts/a1") and caller["fired"].startswith(iso(guarded.azure.now())[:16])
    assert rolled["trigger"]["channel"] == "alert" and rolled["trigger"]["event_id"] == "a1:fired"
    assert "rolled back at step 1 of 3 (10%)" in rolled["reason"] and f"alert '{GUARD}' fired" in rolled["reason"]
    assert not guarded.in_flight()
    assert guarded.azure.new_worker().reconcile().rollouts == []  # nothing left for the reconciler

    again = guarded.post(guarded.alert())  # the action group delivers it again

    assert again["status"] == "duplicate" and [d["id"] for d in again["decisions"]] == [rolled["id"]]
    assert [r.id for r in guarded.records("rollback")] == [rolled["id"]]
    assert guarded.azure.arm.traffic_puts.count({"blue": 100}) == 1


def test_a_second_alert_after_the_rollback_is_a_skip_never_a_rollback_to_the_kept_traffic(guarded: Guarded) -> None:
    guarded.post(guarded.alert("a1"))

    [skip] = guarded.post(guarded.alert("a2"))["decisions"]

    assert (skip["action"], skip["outcome"]) == ("none", "skipped") and "no rollout" in skip["reason"]
    assert skip["details"] == {"guard": "alert", "rule": GUARD}
    assert len(guarded.records("rollback")) == 1 and guarded.traffic() == {"blue": 100}


@pytest.mark.parametrize(
    ("essentials", "says"),
    [
        ({"monitorCondition": "Resolved"}, "resolved: only a fired alert rolls back"),
        (
            {"alertTargetIDs": ["/subscriptions/x/resourceGroups/y/providers/Microsoft.Web/sites/other"]},
            "alert_targets",
        ),
        ({"firedDateTime": "2020-01-01T00:00:00.0000000Z"}, "before the rollout"),
    ],
)
def test_a_resolved_foreign_or_stale_alert_of_the_guard_is_a_recorded_skip(
    guarded: Guarded, essentials: dict[str, Any], says: str
) -> None:
    [skip] = guarded.post(guarded.alert(**essentials))["decisions"]

    assert (skip["model"], skip["outcome"]) == (MODEL, "skipped") and says in skip["reason"], skip["reason"]
    assert guarded.in_flight() and guarded.traffic() == {"blue": 90, guarded.name: 10}


def test_an_alert_no_guard_names_leaves_the_rollout_alone(guarded: Guarded) -> None:
    [skip] = guarded.post(guarded.alert(alertRule="cpu-high"))["decisions"]

    assert skip["outcome"] == "skipped" and "no model in the policy listens to alert rule 'cpu-high'" in skip["reason"]
    assert guarded.in_flight()


def test_during_a_rollout_the_guard_wins_over_retraining_on_the_same_rule(guarded: Guarded) -> None:
    jobs = set(guarded.azure.arm.jobs)
    answer = guarded.post(guarded.alert(alertRule=BOTH))

    by_action = {d["action"]: d for d in answer["decisions"]}
    assert set(by_action) == {"rollback", "none"}
    assert "the rollout guard wins" in by_action["none"]["reason"]
    assert by_action["none"]["details"]["rolled_back"] == by_action["rollback"]["id"]
    assert set(guarded.azure.arm.jobs) == jobs  # no retraining submitted

    [retrained] = guarded.post(guarded.alert("a2", alertRule=BOTH))["decisions"]  # no rollout in flight now

    assert retrained["action"] == "retrain" and retrained["outcome"] == "submitted"  # and no guard skip beside it
    assert set(guarded.azure.arm.jobs) - jobs == {retrained["job"]["name"]}


@pytest.mark.parametrize("reconciled_first", [False, True])
def test_an_alert_whose_worker_died_after_setting_the_traffic_ends_in_one_rollback(
    guarded: Guarded, reconciled_first: bool
) -> None:
    dying = guarded.azure.new_worker(actions=DiesAfterSettingTraffic(guarded.azure.actions))
    with pytest.raises(WorkerDied):
        dying.alert(json.dumps(guarded.alert()).encode())
    assert guarded.traffic() == {"blue": 100} and guarded.records("rollback") == []  # set, not recorded
    guarded.azure.now.advance(minutes=2)  # the dead worker's claim on the alert expires with its lease
    if reconciled_first:  # the reconciler carries out the rollback the alert wrote ahead
        assert guarded.azure.new_worker().reconcile().rollouts[0]["state"] == "rolled_back"

    [rolled] = guarded.post(guarded.alert())["decisions"]  # the action group sends it again

    assert rolled["action"] == "rollback" and rolled["trigger"]["caller"]["rule"] == GUARD
    assert [r.id for r in guarded.records("rollback")] == [rolled["id"]] and not guarded.in_flight()
    assert guarded.azure.arm.traffic_puts.count({"blue": 100}) == 1


def test_an_alert_meeting_a_transition_being_carried_out_is_a_503_the_action_group_retries(guarded: Guarded) -> None:
    dying = guarded.azure.new_worker(actions=DiesAfterSettingTraffic(guarded.azure.actions))
    # the reconciler's next step dies after setting its traffic: the step stays pending
    for m in range(10):
        when = guarded.azure.now() + timedelta(minutes=m, seconds=30)
        guarded.azure.serve(when, guarded.name, ok=30)
        guarded.azure.serve(when, "blue", ok=30)
    guarded.azure.now.advance(minutes=15)
    with pytest.raises(WorkerDied):
        dying.reconcile()
    assert guarded.traffic() == {"blue": 50, guarded.name: 50}

    status, _, body = guarded.client.call("POST", "/api/alerts", guarded.alert())

    assert status == 503 and "being carried out" in json.dumps(body)
    guarded.azure.new_worker().reconcile()  # the step is finished
    [rolled] = guarded.post(guarded.alert())["decisions"]  # retried: the claim was given back
    assert rolled["action"] == "rollback" and guarded.traffic() == {"blue": 100}
    assert "at step 2 of 3 (50%)" in rolled["reason"]


def test_a_fired_alert_in_the_shadow_stage_rolls_back_with_the_candidate_never_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    guarded = Guarded(tmp_path, mirror=True)
    try:
        runtime.set_retrainer(guarded.azure.worker)
        props = guarded.azure.arm.endpoints[ENDPOINT]["properties"]
        assert guarded.traffic() == {"blue": 100} and props["mirrorTraffic"] == {guarded.name: 10}

        [rolled] = guarded.post(guarded.alert())["decisions"]

        assert rolled["action"] == "rollback" and rolled["trigger"]["caller"]["rule"] == GUARD
        props = guarded.azure.arm.endpoints[ENDPOINT]["properties"]
        assert guarded.traffic() == {"blue": 100} and not props.get("mirrorTraffic") and not guarded.in_flight()
        assert guarded.azure.arm.endpoint_puts[-1] == ({"blue": 100}, {})  # the mirror cleared, live as it was
    finally:
        runtime.set_retrainer(None)
        guarded.azure.close()


def test_an_alert_whose_claim_was_given_back_after_its_rollback_answers_with_that_rollback(guarded: Guarded) -> None:
    """Its claim given back (finishing it failed: 503), the action group's retry takes it again: the
    rollback the first delivery carried out answers, not "no rollout in flight", and the retraining
    on the same rule still gives way to it."""
    busy = guarded.azure.new_worker(ledger=FinishFailsOnce(guarded.azure.spec.open()))
    with pytest.raises(TransientError):
        busy.alert(json.dumps(guarded.alert(alertRule=BOTH)).encode())
    [first] = guarded.records("rollback")

    answer = guarded.post(guarded.alert(alertRule=BOTH))  # retried

    by_action = {d["action"]: d for d in answer["decisions"]}
    assert by_action["rollback"]["id"] == first.id and by_action["none"]["details"]["rolled_back"] == first.id
    assert len(guarded.records("rollback")) == 1 and guarded.records("retrain") == []
