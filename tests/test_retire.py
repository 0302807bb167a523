"""The retirement rules (handlers/rollout/retire.py) as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handlers.records import DecisionRecord, Flight, ModelState, iso
from handlers.rollout import retire
from handlers.workspace_ports import DeploymentInfo

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


# --------------------------------------------------------------------------- rolled-back and failed candidates


def rolled_back(
    candidate: str,
    hours_ago: float,
    rid: str = "rb-1",
    *,
    outcome: str = "submitted",
    traffic: dict[str, int] | None = None,
    endpoint: str = "ep",
    **details: object,
) -> DecisionRecord:
    """A rollback decision as the stepper records it: ``job`` the candidate, ``traffic`` what it restored."""
    return DecisionRecord(
        id=rid,
        model="m",
        action="rollback",
        outcome=outcome,
        reason="rolled back",
        trigger={"source": "reconciler", "event_id": rid, "event_type": "Tick"},
        at=iso(NOW - timedelta(hours=hours_ago)),
        job={"name": f"{endpoint}/{candidate}", "url": None},
        details={"deploy_decision": "dp-1", "traffic": {"blue": 100} if traffic is None else traffic, **details},
    )


def stepped(candidate: str, hours_ago: float, rid: str = "rs-1") -> DecisionRecord:
    return DecisionRecord(
        id=rid,
        model="m",
        action="rollout",
        outcome="submitted",
        reason="stepped",
        trigger={"source": "reconciler", "event_id": rid, "event_type": "Tick"},
        at=iso(NOW - timedelta(hours=hours_ago)),
        job={"name": f"ep/{candidate}", "url": None},
        details={"traffic": {"blue": 90, candidate: 10}},
    )


def test_a_rollback_rejects_its_candidate_and_a_failed_provisioning_says_so() -> None:
    got = retire.rejections(
        [
            rolled_back("cand-a", 30, "rb-a"),
            rolled_back("cand-b", 20, "rb-b", traffic={}, provisioning="Failed"),
            rolled_back("cand-c", 20, "rb-c", traffic={}, provisioning="missing"),  # never created
            rolled_back("cand-d", 20, "rb-d", endpoint="other"),
            stepped("cand-a", 31),  # its own step, before the rollback
        ],
        "ep",
    )
    assert sorted(got) == ["cand-a", "cand-b"]
    assert (got["cand-a"].by, got["cand-a"].at, got["cand-a"].failed) == ("rb-a", NOW - timedelta(hours=30), None)
    assert got["cand-b"].failed == "Failed"


def test_an_operator_s_rollback_to_the_kept_traffic_rejects_the_promoted_candidate_never_the_restored_one() -> None:
    kept = {"endpoint": "ep", "traffic": {"blue": 100}, "replaced_by": "cand-a", "decision": "pr-1"}
    rec = rolled_back("blue", 30, "mr-1", traffic={"blue": 100}, kept=kept)  # its job names the restored one
    got = retire.rejections([rec], "ep")
    assert list(got) == ["cand-a"] and got["cand-a"].by == "mr-1"


def test_a_candidate_given_traffic_or_rolled_out_again_after_its_rollback_is_not_rejected() -> None:
    assert retire.rejections([stepped("cand-a", 1, "rs-2"), rolled_back("cand-a", 30)], "ep") == {}
    kept = {"endpoint": "ep", "traffic": {"cand-a": 100}, "replaced_by": "cand-b", "decision": "pr-2"}
    restored = rolled_back("cand-a", 2, "mr-1", traffic={"cand-a": 100}, kept=kept)
    assert list(retire.rejections([restored, rolled_back("cand-a", 30)], "ep")) == ["cand-b"]


def test_a_rejected_candidate_is_retired_after_retire_after_and_keep_previous_neither_keeps_nor_hurries_it() -> None:
    rejected = retire.rejections([rolled_back("cand-a", 23)], "ep")
    demoted = retire.demotions([promoted(["blue"], 1)], "ep")
    found = [idle("cand-a"), idle("blue"), DeploymentInfo("live", 100, 0, "Succeeded")]
    assert retire.to_retire("ep", found, demoted, DAY, 1, NOW, rejected) == []  # blue kept, cand-a not due
    assert retire.to_retire("ep", found, {}, DAY, 0, NOW, rejected) == []  # keep_previous 0 does not hurry it
    later = NOW + timedelta(hours=1)
    [r] = retire.to_retire("ep", found, demoted, DAY, 1, later, rejected)
    assert (
        r.deployment == "cand-a"
        and r.why == f"rolled back at {iso(NOW - timedelta(hours=23))} by rb-1, 1d ago, longer than retire_after 1d"
    )


def test_a_rejected_candidate_with_live_or_mirrored_traffic_or_being_deleted_is_never_chosen() -> None:
    rejected = retire.rejections(
        [rolled_back("a", 48, "rb-a"), rolled_back("b", 48, "rb-b"), rolled_back("c", 48, "rb-c")], "ep"
    )
    found = [DeploymentInfo("a", 10, 0, "Succeeded"), DeploymentInfo("b", 0, 20, "Succeeded"), idle("c", "Deleting")]
    assert retire.to_retire("ep", found, {}, DAY, 0, NOW, rejected) == []
    assert retire.to_retire("ep", [idle("manual"), idle("blue")], {}, DAY, 0, NOW, rejected) == []  # not ours


def test_waiting_reads_one_trail_the_latest_event_decides_and_in_flight_or_retired_ones_wait_no_more() -> None:
    records = [
        promoted(["cand-a"], 10, "pr-2"),  # rolled back, later promoted and demoted: a demoted deployment now
        rolled_back("cand-a", 48, "rb-a"),
        rolled_back("cand-b", 48, "rb-b"),
        rolled_back("cand-c", 48, "rb-c"),
        rolled_back("cand-d", 2, "rb-d"),  # not due
    ]
    demoted, rejected = retire.waiting("m", "ep", records, {"cand-c"}, DAY, NOW)
    assert (list(demoted), list(rejected)) == (["cand-a"], ["cand-b"])
    [r] = retire.to_retire("ep", [idle("cand-b")], {}, DAY, 1, NOW, rejected)
    done = retire.record_of("m", r, NOW, "submitted")
    assert retire.waiting("m", "ep", [done, *records], set(), DAY, NOW)[1].keys() == {"cand-c"}
    failed = retire.record_of("m", r, NOW, "failed", "refused")
    assert "cand-b" in retire.waiting("m", "ep", [failed, *records], set(), DAY, NOW)[1]  # retried


def test_the_retire_decision_of_a_rejected_candidate_says_which_why_and_when_under_an_id_of_its_rollback() -> None:
    failed = retire.rejections([rolled_back("cand-b", 30, "rb-b", traffic={}, provisioning="Failed")], "ep")
    [r] = retire.to_retire("ep", [idle("cand-b")], {}, DAY, 1, NOW, failed)
    first, again = retire.record_of("m", r, NOW, "submitted"), retire.record_of("m", r, NOW + DAY, "failed", "x")
    assert first.id == again.id == retire.retire_id("m", "ep", r.since) and first.action == "retire"
    at = iso(NOW - timedelta(hours=30))
    assert first.reason == (
        f"candidate deployment ep/cand-b deleted: it has no traffic and was rolled back at {at} by rb-b, a failed "
        "candidate (its deployment ended provisioning Failed), 30h ago, longer than retire_after 1d"
    )
    assert (first.details["rollback_decision"], first.details["rolled_back_at"], first.details["failed"]) == (
        "rb-b",
        at,
        "Failed",
    )
    assert "delete it by hand" in again.reason
    moved = retire.rejections([rolled_back("cand-b", 29, "rb-b", traffic={}, provisioning="Failed")], "ep")
    assert retire.retire_id("m", "ep", moved["cand-b"]) == first.id  # a rollback rewritten later: the same id


def test_the_deployment_a_rollout_is_in_flight_on_is_kept() -> None:
    flight = Flight("dp-2", iso(NOW), "submitted", "ep/cand-a", data={"rollout": {"deployment": "cand-a"}})
    keep = retire.in_flight(ModelState("m", flights={"rollout": flight}))
    assert keep == {"cand-a"} and retire.in_flight(ModelState("m")) == set()
    assert retire.waiting("m", "ep", [rolled_back("cand-a", 48)], keep, DAY, NOW) == ({}, {})
