"""After a rollout: a promotion moves the model monitor to the new deployment; the demoted and the rolled
back deployments are deleted after ``retire_after`` (a decision each), never while traffic reaches them."""

from __future__ import annotations

import json

from tests.azure_world import ENDPOINT, MODEL, WORKSPACE_ID
from tests.builders import drift_event
from tests.rollouts import Rollout, promote, roll_back


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
