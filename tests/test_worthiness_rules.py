"""The pure rules of signal classes and the worthiness check (handlers.signal_rules, handlers.worthiness),
as pure functions; end to end with the SDK world: tests/test_signal_classes.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from handlers import guards
from handlers.plans import JobPlan, Retrain
from handlers.records import ModelState
from handlers.retrain_plan import retrain
from handlers.signal_rules import class_of, class_problem, vetoes
from handlers.signals import DRIFT, Trigger
from handlers.worthiness import RetrainFacts, judge, recorded_facts
from tests.builders import EXAMPLE_POLICY, MODEL, NOW, with_environment


def plan(**checks: object) -> JobPlan:
    return JobPlan("job", MODEL, "train:1", "exp", None, {}, {}, "retrain", checks=dict(checks))


def test_a_signals_class_is_found_whatever_its_case_and_an_unnamed_signal_retrains() -> None:
    classes = {"Data-Quality": "veto", "accuracy": "retrain_now"}
    assert class_of(classes, "data-quality") == "veto" and class_of(classes, "ACCURACY") == "retrain_now"
    assert class_of(classes, "feature-drift") == "retrain" and class_of(classes, None) == "retrain"
    assert vetoes(classes) == ["Data-Quality"]


def test_classes_need_monitors_and_must_be_listed_when_signals_are() -> None:
    assert "needs drift.monitors" in str(class_problem({"a": "veto"}, [], []))
    assert "add it to drift.signals" in str(class_problem({"a": "veto"}, ["b"], ["m"]))
    assert class_problem({"A": "veto"}, ["a"], ["m"]) is None and class_problem({"a": "veto"}, [], ["m"]) is None


def test_a_veto_breached_in_the_monitor_run_skips_and_one_not_breached_goes_ahead() -> None:
    checks = plan(veto={"run": "step-1", "signals": ["data-quality"]})
    hit = judge(checks, RetrainFacts(breaches={"data-quality": "x", "feature-drift": "y"}, monitor_run="run-1"))
    assert hit.skip is not None and "'data-quality' of class veto breached in the same monitor run (run-1)" in hit.skip
    assert hit.details == {
        "veto": {
            "run": "run-1",
            "checked": ["data-quality"],
            "breached": ["data-quality"],
            "found": ["data-quality", "feature-drift"],
        },
        "incident": "veto",
    }
    clean = judge(checks, RetrainFacts(breaches={"feature-drift": "y"}, monitor_run="run-1"))
    assert clean.skip is None and clean.details["veto"]["breached"] == []
    unasked = judge(checks, RetrainFacts())  # not read at all (a dry run reads no workspace): nothing is claimed
    assert unasked == judge(plan(), RetrainFacts())
    gone = judge(checks, RetrainFacts(veto_unread="MLflow has no run step-1"))  # read, and not there: fails closed
    assert gone.skip is not None and "could not be read to check its veto signal(s) 'data-quality'" in gone.skip
    assert gone.details == {
        "veto": {"run": "step-1", "checked": ["data-quality"], "unread": "MLflow has no run step-1"}
    }


def test_worthiness_skips_only_when_no_data_asset_the_champion_read_has_moved_on() -> None:
    facts = RetrainFacts(champion=f"{MODEL}:4", trained_on={"a": "2", "b": "7"}, latest={"a": "2", "b": "7"})
    same = judge(plan(worthiness={}), facts)
    assert same.skip is not None and same.skip.startswith(
        f"not worth it: the champion {MODEL}:4 was trained on a:2, b:7"
    )
    moved = judge(
        plan(worthiness={}), RetrainFacts(champion="m:4", trained_on={"a": "2", "b": "7"}, latest={"a": "3", "b": "7"})
    )
    assert moved.skip is None and moved.details["worthiness"]["newer"] == {"a": "3"}
    unknown = judge(plan(worthiness={}), RetrainFacts(notes=("m:4 names no job that produced it",)))
    assert unknown.skip is None and unknown.details["worthiness"]["why"] == "m:4 names no job that produced it"
    assert judge(plan(), facts) == judge(plan(), RetrainFacts())  # not asked: not judged


def test_a_skipped_retrain_that_ran_nothing_gives_its_cooldown_and_budget_back() -> None:
    state, verdict = guards.reserve(ModelState(MODEL), guards.RETRAIN, "re-1", NOW, timedelta(hours=6), 3)
    assert verdict.granted and state is not None and state.budget_used == 1
    kept, _ = guards.confirm(state, guards.RETRAIN, "re-1", "skipped", None)
    back, _ = guards.confirm(state, guards.RETRAIN, "re-1", "skipped", None, skipped_gives_back=True)
    assert kept is not None and (kept.flights, kept.budget_used, kept.last_retrain_at) == ({}, 1, state.last_retrain_at)
    assert back is not None and (back.flights, back.budget_used, back.last_retrain_at) == ({}, 0, None)


def test_the_worthiness_check_names_the_endpoint_whose_served_version_is_the_champion() -> None:
    mp = EXAMPLE_POLICY.models[MODEL]
    assert mp.deploy is not None
    breach = Trigger(f"model:{MODEL}", "drift-1", DRIFT)
    served = retrain(MODEL, mp, breach, "drift", {}, {})
    assert isinstance(served, Retrain) and served.job.checks == {"worthiness": {"endpoint": mp.deploy.endpoint}}
    latest = retrain(MODEL, mp.model_copy(update={"deploy": None}), breach, "drift", {}, {})
    assert isinstance(latest, Retrain) and latest.job.checks == {"worthiness": {}}  # no endpoint: the latest version


def test_a_downstream_models_worthiness_check_names_the_registry_its_champion_is_read_from() -> None:
    mp = with_environment({"registry": "mlreg-shared", "role": "downstream"}).models[MODEL]
    assert mp.deploy is not None
    served = retrain(MODEL, mp, Trigger(f"model:{MODEL}", "drift-1", DRIFT), "drift", {}, {})
    assert isinstance(served, Retrain)
    assert served.job.checks == {"worthiness": {"endpoint": mp.deploy.endpoint, "registry": "mlreg-shared"}}
    upstream = with_environment({"registry": "mlreg-shared", "role": "upstream"}).models[MODEL]
    shared = retrain(MODEL, upstream, Trigger(f"model:{MODEL}", "drift-1", DRIFT), "drift", {}, {})
    assert isinstance(shared, Retrain) and shared.job.checks == {"worthiness": {"endpoint": mp.deploy.endpoint}}


BOTH = plan(veto={"run": "step-1", "signals": ["data-quality"]}, worthiness={})


@pytest.mark.parametrize(
    "facts",
    [
        RetrainFacts(breaches={"data-quality": "x"}, monitor_run="run-1"),  # vetoed
        RetrainFacts(veto_unread="MLflow has no run step-1"),  # not read: not retrained on
        RetrainFacts(breaches={}, champion="m:4", trained_on={"a": "2"}, latest={"a": "2"}),  # not worth it
        RetrainFacts(breaches={}, champion="m:4", trained_on={"a": "2"}, latest={"a": "3"}),  # newer data
        RetrainFacts(breaches={}, notes=("m:4 names no job that produced it",)),  # not judged: goes ahead
    ],
)
def test_checks_judged_again_on_what_their_record_kept_give_the_same_verdict(facts: RetrainFacts) -> None:
    first = judge(BOTH, facts)
    kept, missing = recorded_facts(BOTH, first.details)
    assert judge(BOTH, kept).skip == first.skip
    assert missing == [] or first.skip is not None  # a veto that decided: the worthiness was never read


def test_a_record_whose_checks_were_never_read_answers_none_of_them() -> None:
    kept, missing = recorded_facts(BOTH, {"guard": "cooldown"})  # refused by a guard before anything was read
    assert missing == ["veto", "worthiness"] and judge(BOTH, kept).skip is None


def test_another_veto_signal_is_judged_on_every_breach_its_record_found() -> None:
    recorded = judge(BOTH, RetrainFacts(breaches={"feature-drift": "y", "label-shift": "z"}, monitor_run="run-1"))
    draft = plan(veto={"run": "step-1", "signals": ["Label-Shift"]})
    kept, missing = recorded_facts(draft, recorded.details)
    assert missing == [] and judge(draft, kept).skip is not None and "'Label-Shift'" in str(judge(draft, kept).skip)
    before = {"veto": {"run": "run-1", "checked": ["data-quality"], "breached": []}}  # kept no "found"
    assert recorded_facts(draft, before)[1] == ["veto"] and recorded_facts(BOTH, before)[1] == ["worthiness"]


def test_a_champion_that_is_not_the_served_version_is_said_in_the_judged_record() -> None:
    why = "model m has no online endpoint (deploy.endpoint): the champion is taken to be its latest version, m:4"
    facts = RetrainFacts(champion="m:4", trained_on={"a": "2"}, latest={"a": "2"}, notes=(why,))
    judged = judge(plan(worthiness={}), facts)
    assert judged.skip is not None and judged.details["worthiness"]["notes"] == [why]


def test_a_breach_the_workspace_does_not_bear_out_skips_first_not_final_and_a_backtest_judges_it_so_again() -> None:
    told = plan(breach={"run": "step-1", "experiment": "m", "tags": {}}, veto={"run": "step-1", "signals": ["dq"]})
    why = "not retrained: the workspace has no run step-1, which its breach event names"
    skipped = judge(told, RetrainFacts(breach_misstated=why, veto_unread="MLflow has no run step-1"))
    assert skipped.skip is not None and skipped.skip.startswith(why) and skipped.guard == "not_as_told"
    assert skipped.details == {"breach": {"run": "step-1", "checked": True, "misstated": why}}  # nothing else judged
    again, missing = recorded_facts(told, skipped.details)
    assert judge(told, again).skip == skipped.skip and missing == ["veto"]

    unread = judge(plan(breach={"run": "step-1"}), RetrainFacts(breach_unread="dry run: not read back"))
    assert unread.skip is None and unread.guard is None
    assert unread.details["breach"] == {"run": "step-1", "checked": False, "unread": "dry run: not read back"}
