"""The rollout's pure rules: traffic splits and the flight's write-ahead transitions (the health verdict
is tested in tests/test_analysis.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.errors import PolicyError
from handlers.operate_rules import Facts, Refused, plan
from handlers.policy_file import parse_policy
from handlers.records import Flight, ModelState
from handlers.rollout import changes, traffic
from handlers.rollout.progress import KINDS, PROMOTIONS, ROLLBACKS, ROLLS_OUT, RolloutProgress, Transition
from handlers.rollout_rules import RolloutRule
from handlers.signals import OperatorRequest, Trigger
from handlers.why import ROLLOUT_ACTIONS

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- splits


def test_the_candidate_takes_its_step_and_the_champion_keeps_the_rest() -> None:
    assert traffic.split({"blue": 100}, "cand", 10) == {"cand": 10, "blue": 90}
    assert traffic.split({"blue": 100}, "cand", 100) == {"cand": 100}


def test_the_rest_is_shared_in_proportion_to_what_each_deployment_had() -> None:
    assert traffic.split({"blue": 60, "green": 40}, "cand", 50) == {"cand": 50, "blue": 30, "green": 20}
    assert traffic.split({"blue": 80, "green": 20, "idle": 0}, "cand", 10) == {"cand": 10, "blue": 72, "green": 18}


@pytest.mark.parametrize("original", [{"a": 1, "b": 1, "c": 1}, {"a": 33, "b": 33, "c": 34}, {"a": 7, "b": 93}])
@pytest.mark.parametrize("percent", [1, 10, 33, 50, 99])
def test_a_split_always_sums_to_100_and_gives_the_candidate_exactly_its_step(
    original: dict[str, int], percent: int
) -> None:
    out = traffic.split(original, "cand", percent)
    assert sum(out.values()) == 100 and out["cand"] == percent and all(v > 0 for v in out.values())


def test_zero_traffic_deployments_are_the_same_as_absent_ones() -> None:
    assert traffic.live({"blue": 100, "cand": 0}) == traffic.live({"blue": 100})
    assert traffic.live({"blue": 90, "cand": 10}) != traffic.live({"blue": 100})


# --------------------------------------------------------------------------- the policy's health rule


def test_the_health_rule_defaults_and_refuses_unknown_choices() -> None:
    default = RolloutRule()
    assert (default.health.max_error_rate, default.health.min_requests, default.health.on_no_traffic) == (
        0.05,
        20,
        "rollback",
    )
    # 15-minute bakes: the first step's 10% of 600 requests a minute must show a 5x-worse candidate whose rate
    # varies from minute to minute (docs/benchmarks.md); ten minutes could not at the step's share of the error
    assert (default.bake, default.longest_bake) == (timedelta(minutes=15), timedelta(minutes=45))
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
    start = RolloutProgress(steps=(10, 50, 100), original={"blue": 100}, step=-1)
    written, ok = changes.begin(state, "de-1", pending, start)
    assert ok and written is not None
    assert changes.begin(written, "de-1", pending, start) == (None, False)  # one pending at a time
    assert changes.begin(written, "de-other", pending) == (None, False)

    committed, ok = changes.commit(written, "de-1", pending.id, NOW)
    assert ok and committed is not None
    data = committed.flights["rollout"].data["rollout"]
    assert (data["step"], data["traffic"], data["step_started"], data["pending"]) == (
        0,
        {"blue": 90, "cand": 10},
        "2026-11-25T10:00:00.000Z",
        None,
    )
    assert changes.commit(committed, "de-1", pending.id, NOW) == (None, False)


def test_a_promotion_or_rollback_commits_by_freeing_the_slot() -> None:
    state = submitted({"steps": [100], "original": {"blue": 100}, "step": 0, "step_started": "x", "pending": None})
    for kind in ("promote", "rollback"):
        pending = Transition.of("m", state.flights["rollout"], kind, 0, 0, None, "why")
        written, _ = changes.begin(state, "de-1", pending)
        assert written is not None
        freed, ok = changes.commit(written, "de-1", pending.id, NOW)
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
    assert changes.begin(state, "de-1", stale) == (None, False)
    current = replace(stale, from_step=1)
    written, ok = changes.begin(state, "de-1", current)
    assert ok and written is not None and written.flights["rollout"].data["rollout"]["pending"] == current.to_dict()


def stepped(step: int = 0, **extra: Any) -> ModelState:
    data = {
        "endpoint": "ep",
        "deployment": "cand",
        "steps": [10, 50, 100],
        "original": {"blue": 100},
        "step": step,
        "traffic": {"blue": 90, "cand": 10},
        "step_started": "2026-11-25T09:30:00.000Z",
        "pending": None,
        **extra,
    }
    return submitted(data)


def carried(state: ModelState, kind: str, target: dict[str, int] | None = None) -> ModelState:
    flight = state.flights["rollout"]
    step = int(flight.data["rollout"]["step"])
    pending = Transition.of("m", flight, kind, step, step, target, "why", trigger={"event_id": "req-1"})
    written, ok = changes.begin(state, "de-1", pending)
    assert ok and written is not None
    done, ok = changes.commit(written, "de-1", pending.id, NOW)
    assert ok and done is not None
    return done


def test_a_pause_is_kept_in_the_flight_and_a_resume_restarts_the_step_s_bake() -> None:
    paused = carried(stepped(), "pause")
    data = paused.flights["rollout"].data["rollout"]
    assert data["paused"]["at"] == "2026-11-25T10:00:00.000Z" and data["step"] == 0
    resumed = carried(paused, "resume")
    data = resumed.flights["rollout"].data["rollout"]
    assert (data["paused"], data["step"], data["step_started"]) == (None, 0, "2026-11-25T10:00:00.000Z")


def test_a_promotion_keeps_the_traffic_it_replaced_and_the_rollback_to_it_forgets_it() -> None:
    promoted = carried(stepped(), "promote-now", {"cand": 100})
    assert promoted.flights == {}
    assert promoted.kept is not None and promoted.kept["traffic"] == {"blue": 100}
    assert (promoted.kept["endpoint"], promoted.kept["replaced_by"]) == ("ep", "cand")
    again = ModelState.from_dict(json.loads(json.dumps(promoted.to_dict())))
    assert again.kept == promoted.kept  # the ledgers keep it with the model's state
    rolled = carried(stepped(restores_kept=True), "manual-rollback", {"blue": 100})
    assert rolled.flights == {} and rolled.kept is None


def test_an_operator_s_transition_has_an_id_of_its_own_request_and_records_its_trigger() -> None:
    flight = stepped().flights["rollout"]
    one = Transition.of("m", flight, "pause", 0, 0, None, "why", trigger={"event_id": "req-1", "source": "http"})
    two = Transition.of("m", flight, "pause", 0, 0, None, "why", trigger={"event_id": "req-2", "source": "http"})
    assert one.id != two.id and one.id.startswith("pa-")
    assert Transition.from_dict(json.loads(json.dumps(one.to_dict()))) == one
    record = changes.record_of("m", flight, one, NOW)
    assert (record.action, record.trigger["event_id"]) == ("pause", "req-1")


def test_an_operator_s_action_waits_for_a_deployment_still_being_started() -> None:
    reserved = ModelState("m", flights={"rollout": Flight("de-1", "2026-11-25T09:00:00.000Z", "reserved")})
    for action in ("rollback", "promote", "pause", "resume"):
        request = OperatorRequest(Trigger("http", f"r-{action}", f"ManualRequest.{action}"), "m", action, "x")
        got = plan(request, reserved, Facts(), NOW)
        assert isinstance(got, Refused) and "still being started" in got.why


# --------------------------------------------------------------------------- the stored shape

PENDING = {
    "id": "rs-0a1b",
    "kind": "step",
    "step": 0,
    "from": -1,
    "target": {"blue": 90, "cand": 10},
    "reason": "deployment ep/cand is provisioned; step 1 of 3: traffic {blue: 100%} -> {blue: 90%, cand: 10%}",
    "details": {"original": {"blue": 100}},
    "trigger": None,
}
# the progress as the previous version wrote it into the flight, at each point of a rollout
STORED = {
    "first step written ahead": {
        "endpoint": "ep",
        "deployment": "cand",
        "steps": [10, 50, 100],
        "original": {"blue": 100},
        "step": -1,
        "traffic": {"blue": 100},
        "pending": PENDING,
    },
    "at a step, paused": {
        "endpoint": "ep",
        "deployment": "cand",
        "steps": [10, 50, 100],
        "original": {"blue": 100},
        "step": 0,
        "traffic": {"blue": 90, "cand": 10},
        "step_started": "2026-11-25T09:30:00.000Z",
        "held": None,
        "pending": None,
        "paused": {"at": "2026-11-25T09:40:00.000Z", "by": {"name": "ada"}, "decision": "pa-77"},
    },
    "held at a step": {
        "endpoint": "ep",
        "deployment": "cand",
        "steps": [10, 100],
        "original": {"blue": 60, "green": 40},
        "step": 0,
        "traffic": {"blue": 54, "cand": 10, "green": 36},
        "step_started": "2026-11-25T09:30:00.000Z",
        "held": 0,
        "pending": None,
    },
    "an operator's pause before the first step": {
        "endpoint": "ep",
        "deployment": "cand",
        "steps": [],
        "step": -1,
        "pending": {**PENDING, "id": "pa-1", "kind": "pause", "target": None, "trigger": {"event_id": "req-1"}},
    },
    "a rollback to the kept traffic": {
        "endpoint": "ep",
        "deployment": "blue",
        "steps": [],
        "original": {"cand": 100},
        "step": -1,
        "restores_kept": True,
        "pending": {**PENDING, "id": "mr-1", "kind": "manual-rollback", "target": {"blue": 100}},
    },
}


@pytest.mark.parametrize("stored", STORED.values(), ids=list(STORED))
def test_progress_stored_by_the_previous_version_loads_and_is_written_back_in_the_same_shape(
    stored: dict[str, Any],
) -> None:
    loaded = RolloutProgress.from_dict(json.loads(json.dumps(stored)))
    written = json.loads(json.dumps(loaded.to_dict()))
    assert {k: written[k] for k in stored} == stored  # every key it had, with the same value
    assert all(written[k] is None for k in set(written) - set(stored))  # what a .get of it gave: None
    assert RolloutProgress.from_dict(written) == loaded
    flight = Flight("de-1", "2026-11-25T09:00:00.000Z", "submitted", "ep/cand", data={"rollout": stored})
    assert RolloutProgress.of(flight) == loaded and RolloutProgress.of(replace(flight, data={})) is None


def test_progress_is_written_under_the_keys_the_previous_version_reads() -> None:
    full = RolloutProgress(
        "ep",
        "cand",
        (10, 100),
        {"blue": 100},
        0,
        {"blue": 90, "cand": 10},
        "2026-11-25T09:30:00.000Z",
        0,
        {"at": "x", "by": None, "decision": "pa-1"},
        Transition.from_dict(PENDING),
        True,
    )
    assert full.to_dict() == {
        "endpoint": "ep",
        "deployment": "cand",
        "steps": [10, 100],
        "original": {"blue": 100},
        "step": 0,
        "traffic": {"blue": 90, "cand": 10},
        "step_started": "2026-11-25T09:30:00.000Z",
        "held": 0,
        "paused": {"at": "x", "by": None, "decision": "pa-1"},
        "pending": PENDING,
        "restores_kept": True,
    }


def test_a_flight_stored_by_the_previous_version_moves_on() -> None:
    state = submitted(STORED["held at a step"])
    flight = state.flights["rollout"]
    moved = Transition.of("m", flight, "step", 1, 0, {"cand": 100}, "why")
    written, ok = changes.begin(state, "de-1", moved)
    assert ok and written is not None
    done, ok = changes.commit(written, "de-1", moved.id, NOW)
    assert ok and done is not None
    data = done.flights["rollout"].data["rollout"]
    assert (data["step"], data["traffic"], data["held"], data["original"]) == (
        1,
        {"cand": 100},
        None,
        {"blue": 60, "green": 40},
    )


def test_each_kind_of_transition_is_one_row_of_one_table() -> None:
    assert set(KINDS) == {
        *("step", "hold", "promote", "rollback", "pause", "resume", "promote-now", "manual-rollback"),
        *("smoke", "smoke-failed", "mirror", "load", "compare", "reject", "compare-failed"),
    }
    ends = {k for k, row in KINDS.items() if row.then is None}  # the slot is freed
    rejects = {"rollback", "manual-rollback", "smoke-failed", "reject", "compare-failed"}
    assert ends == {"promote", "promote-now", *rejects}
    assert {k for k, row in KINDS.items() if row.promotes} == {"promote", "promote-now"}
    assert {k for k, row in KINDS.items() if row.rolls_back} == rejects
    assert {k: row.invokes for k, row in KINDS.items() if row.invokes} == {
        "smoke": "smoke",
        "load": "load",
        "compare": "batch",
    }
    assert len({row.prefix for row in KINDS.values()}) == len(KINDS)  # record ids of two kinds never meet
    assert {"deploy", "rollout", "promote", "pause", "resume"} == ROLLS_OUT
    assert ({"promote"}, {"rollback"}) == (PROMOTIONS, ROLLBACKS)  # what retirement reads
    assert {"rollout", "promote", "rollback", "retire", "pause", "resume"} == ROLLOUT_ACTIONS  # retrain why
    flight = submitted().flights["rollout"]
    for kind, row in KINDS.items():
        t = Transition.of("m", flight, kind, 0, 0, None, "why")
        record = changes.record_of("m", flight, t, NOW)
        assert (t.id[:3], record.action) == (f"{row.prefix}-", row.action)
        outcome = {"hold": "skipped", "reject": "skipped", "compare-failed": "failed"}.get(kind, "submitted")
        assert record.outcome == outcome
