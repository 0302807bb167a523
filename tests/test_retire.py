"""The retirement rules (handlers/retire.py) as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers import retire
from handlers.ports import DeploymentInfo
from handlers.records import DecisionRecord, iso

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def promoted(demoted: list[str], hours_ago: float, rid: str = "pr-1") -> DecisionRecord:
    return DecisionRecord(
        id=rid,
        model="m",
        action="promote",
        outcome="submitted",
        reason="promoted",
        trigger={"source": "reconciler", "event_id": rid, "event_type": "Tick"},
        at=iso(NOW - timedelta(hours=hours_ago)),
        details={"endpoint": "ep", "demoted": demoted},
    )


def idle(name: str, state: str = "Succeeded") -> DeploymentInfo:
    return DeploymentInfo(name, 0, 0, state)


def test_the_latest_demotion_of_each_deployment_counts() -> None:
    got = retire.demotions([promoted(["blue"], 30, "pr-1"), promoted(["blue"], 2, "pr-2")], "ep")
    assert (got["blue"].by, got["blue"].at) == ("pr-2", NOW - timedelta(hours=2))


def test_keep_previous_keeps_the_newest_demoted_and_retire_after_retires_every_one() -> None:
    demoted = retire.demotions([promoted(["blue"], 5, "pr-1"), promoted(["green"], 1, "pr-2")], "ep")
    deployments = [idle("blue"), idle("green"), DeploymentInfo("live", 100, 0, "Succeeded")]
    assert [r.deployment for r in retire.to_retire("ep", deployments, demoted, DAY, 1, NOW)] == ["blue"]
    assert retire.to_retire("ep", deployments, demoted, DAY, 2, NOW) == []
    later = NOW + DAY
    assert [r.deployment for r in retire.to_retire("ep", deployments, demoted, DAY, 2, later)] == ["green", "blue"]


def test_a_deployment_with_live_or_mirrored_traffic_or_being_deleted_is_never_chosen() -> None:
    demoted = retire.demotions([promoted(["a", "b", "c"], 48)], "ep")
    deployments = [
        DeploymentInfo("a", 10, 0, "Succeeded"),
        DeploymentInfo("b", 0, 20, "Succeeded"),
        idle("c", "Deleting"),
    ]
    assert retire.to_retire("ep", deployments, demoted, DAY, 0, NOW) == []


def test_only_deployments_a_promotion_demoted_are_retired() -> None:
    demoted = retire.demotions([promoted(["blue"], 48)], "ep")
    assert [r.deployment for r in retire.to_retire("ep", [idle("blue"), idle("manual")], demoted, DAY, 0, NOW)] == [
        "blue"
    ]


def test_the_retire_decision_id_depends_only_on_the_deployment_and_its_demotion() -> None:
    [r] = retire.to_retire("ep", [idle("blue")], retire.demotions([promoted(["blue"], 48)], "ep"), DAY, 1, NOW)
    first, again = retire.record_of("m", r, NOW, "submitted"), retire.record_of("m", r, NOW + DAY, "failed", "x")
    assert first.id == again.id and first.action == "retire" and "delete it by hand" in again.reason
