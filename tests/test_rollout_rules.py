"""The rollout's pure rules: traffic splits, health verdicts, and the flight's write-ahead transitions."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import rollout
from handlers.errors import PolicyError
from handlers.policy import RolloutRule, parse_policy
from handlers.ports import HealthReading
from handlers.records import Flight, ModelState
from handlers.rollout import Transition

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def reading(requests: int, errors: int = 0, p95: float | None = 40.0) -> HealthReading:
    return HealthReading("ep", "cand", "a", "b", requests, errors, p95 if requests else None, "log-analytics", "q")


def rule(**health: Any) -> RolloutRule:
    return RolloutRule.model_validate({"steps": [10, 50, 100], "bake": "10m", "health": health})


# --------------------------------------------------------------------------- splits


def test_the_candidate_takes_its_step_and_the_champion_keeps_the_rest() -> None:
    assert rollout.split({"blue": 100}, "cand", 10) == {"cand": 10, "blue": 90}
    assert rollout.split({"blue": 100}, "cand", 100) == {"cand": 100}


def test_the_rest_is_shared_in_proportion_to_what_each_deployment_had() -> None:
    assert rollout.split({"blue": 60, "green": 40}, "cand", 50) == {"cand": 50, "blue": 30, "green": 20}
    assert rollout.split({"blue": 80, "green": 20, "idle": 0}, "cand", 10) == {"cand": 10, "blue": 72, "green": 18}


@pytest.mark.parametrize("original", [{"a": 1, "b": 1, "c": 1}, {"a": 33, "b": 33, "c": 34}, {"a": 7, "b": 93}])
@pytest.mark.parametrize("percent", [1, 10, 33, 50, 99])
def test_a_split_always_sums_to_100_and_gives_the_candidate_exactly_its_step(
    original: dict[str, int], percent: int
) -> None:
    out = rollout.split(original, "cand", percent)
    assert sum(out.values()) == 100 and out["cand"] == percent and all(v > 0 for v in out.values())


def test_zero_traffic_deployments_are_the_same_as_absent_ones() -> None:
    assert rollout.same_traffic({"blue": 100, "cand": 0}, {"blue": 100})
    assert not rollout.same_traffic({"blue": 90, "cand": 10}, {"blue": 100})


# --------------------------------------------------------------------------- verdicts


def test_few_errors_with_enough_traffic_is_healthy_and_advances() -> None:
    verdict = rollout.judge(rule(), reading(100, 5), timedelta(minutes=10))
    assert (verdict.status, verdict.next, verdict.error_rate) == ("healthy", "advance", 0.05)
    assert verdict.why == "5 5xx of 100 request(s) (5.0%), p95 40 ms: within the policy's limits"


def test_an_error_rate_above_the_limit_rolls_back_with_its_numbers() -> None:
    verdict = rollout.judge(rule(max_error_rate=0.01), reading(200, 3), timedelta(minutes=10))
    assert (verdict.status, verdict.next) == ("unhealthy", "rollback")
    assert verdict.why == "3 5xx of 200 request(s) (1.5%) is above max_error_rate 1.0%"
    assert verdict.as_dict()["requests"] == 200 and verdict.as_dict()["max_error_rate"] == 0.01


def test_a_slow_p95_rolls_back_when_the_policy_sets_a_latency_limit() -> None:
    slow = reading(100, 0, p95=900.0)
    assert rollout.judge(rule(), slow, timedelta(minutes=10)).next == "advance"
    verdict = rollout.judge(rule(max_latency_ms=500), slow, timedelta(minutes=10))
    assert (verdict.status, verdict.next) == ("unhealthy", "rollback")
    assert "p95 latency 900 ms is above max_latency_ms 500" in verdict.why


def test_too_little_traffic_bakes_on_until_the_longest_bake() -> None:
    for baked in (timedelta(minutes=10), timedelta(minutes=29)):
        verdict = rollout.judge(rule(), reading(5), baked)
        assert (verdict.status, verdict.next) == ("no_traffic", "wait")
    assert "baking on, up to 30m" in rollout.judge(rule(), reading(5), timedelta(minutes=10)).why


@pytest.mark.parametrize(("policy", "action"), [("rollback", "rollback"), ("hold", "hold"), ("promote", "advance")])
def test_after_the_longest_bake_on_no_traffic_decides(policy: str, action: str) -> None:
    verdict = rollout.judge(rule(on_no_traffic=policy, max_bake="20m"), reading(0), timedelta(minutes=20))
    assert (verdict.status, verdict.next) == ("no_traffic", action)
    assert f"on_no_traffic is {policy}" in verdict.why


def test_min_requests_zero_still_needs_one_request_to_judge_a_rate() -> None:
    assert rollout.judge(rule(min_requests=0), reading(0), timedelta(hours=1)).status == "no_traffic"


def test_the_health_rule_defaults_and_refuses_unknown_choices() -> None:
    default = RolloutRule()
    assert (default.health.max_error_rate, default.health.min_requests, default.health.on_no_traffic) == (
        0.05,
        20,
        "rollback",
    )
    assert default.longest_bake == timedelta(minutes=30)
    text = (
        "models:\n  m:\n    deploy:\n      endpoint: ep-one\n      rollout:\n        health: {on_no_traffic: maybe}\n"
    )
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    assert "models.m.deploy.rollout.health.on_no_traffic" in str(err.value)


# --------------------------------------------------------------------------- the flight


def submitted(data: dict[str, Any] | None = None) -> ModelState:
    flight = Flight("de-1", "2026-11-25T09:00:00.000Z", "submitted", "ep/cand", data={"rollout": data} if data else {})
    return ModelState("m", flights={"rollout": flight})


def test_a_transition_is_written_ahead_once_and_committed_once() -> None:
    state = submitted()
    pending = Transition.of("m", state.flights["rollout"], "step", 0, -1, {"blue": 90, "cand": 10}, "why")
    start = {"steps": [10, 50, 100], "original": {"blue": 100}, "step": -1}
    written, ok = rollout.begin(state, "de-1", pending, start)
    assert ok and written is not None
    assert rollout.begin(written, "de-1", pending, start) == (None, False)  # one pending at a time
    assert rollout.begin(written, "de-other", pending) == (None, False)

    committed, ok = rollout.commit(written, "de-1", pending.id, NOW)
    assert ok and committed is not None
    data = committed.flights["rollout"].data["rollout"]
    assert (data["step"], data["traffic"], data["step_started"], data["pending"]) == (
        0,
        {"blue": 90, "cand": 10},
        "2026-11-25T10:00:00.000Z",
        None,
    )
    assert rollout.commit(committed, "de-1", pending.id, NOW) == (None, False)


def test_a_promotion_or_rollback_commits_by_freeing_the_slot() -> None:
    state = submitted({"steps": [100], "original": {"blue": 100}, "step": 0, "step_started": "x", "pending": None})
    for kind in ("promote", "rollback"):
        pending = Transition.of("m", state.flights["rollout"], kind, 0, 0, None, "why")
        written, _ = rollout.begin(state, "de-1", pending)
        assert written is not None
        freed, ok = rollout.commit(written, "de-1", pending.id, NOW)
        assert ok and freed is not None and freed.flights == {}


def test_record_ids_depend_only_on_the_deploy_decision_kind_and_step() -> None:
    flight = submitted().flights["rollout"]
    one = Transition.of("m", flight, "step", 1, 0, {"c": 50}, "a")
    again = Transition.of("m", flight, "step", 1, 0, {"c": 50}, "b")
    other = Transition.of("m", flight, "step", 2, 1, {"c": 100}, "a")
    assert one.id == again.id != other.id and one.id.startswith("rs-")
    assert Transition.of("m", flight, "rollback", 1, 1, None, "a").id.startswith("rb-")


def test_a_transition_comes_back_from_the_flight_exactly() -> None:
    flight = submitted().flights["rollout"]
    moved = Transition.of("m", flight, "step", 1, 0, {"c": 50, "b": 50}, "why", health={"requests": 3})
    assert Transition.from_dict(json.loads(json.dumps(moved.to_dict()))) == moved


def test_a_transition_decided_on_a_step_that_has_moved_on_is_not_written() -> None:
    state = submitted({"steps": [10, 100], "original": {"b": 100}, "step": 1, "step_started": "x", "pending": None})
    stale = Transition.of("m", state.flights["rollout"], "rollback", 0, 0, {"b": 100}, "why")
    assert rollout.begin(state, "de-1", stale) == (None, False)
    current = replace(stale, from_step=1)
    written, ok = rollout.begin(state, "de-1", current)
    assert ok and written is not None and written.flights["rollout"].data["rollout"]["pending"] == current.to_dict()
