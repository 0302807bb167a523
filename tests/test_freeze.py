"""Freezes (issue 24): windows in the policy (one-off or weekly, in a named time zone, across daylight
saving changes) and the stop switch (``POST /api/freeze`` / ``/api/unfreeze``) refuse new retrains and
deployments with recorded reasons, hold a rollout's step, and still allow a rollback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import guards
from handlers.errors import PolicyError
from handlers.freeze import frozen, window_end
from handlers.freeze_rules import FreezeWindow
from handlers.policy_file import parse_policy
from handlers.records import ModelState
from tests.azure_world import MODEL, AzureWorld
from tests.rollouts import BAKE, LAG, Operated


def window(**kw: Any) -> FreezeWindow:
    return FreezeWindow.model_validate({"name": "w", **kw})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --------------------------------------------------------------------------- windows in time


def test_a_weekly_window_keeps_its_wall_clock_time_across_daylight_saving() -> None:
    """Friday 16:00-23:00 in New York: 20:30Z is 16:30 in summer (EDT) and 15:30 in winter (EST)."""
    friday = window(timezone="America/New_York", days=["fri"], **{"from": "16:00", "to": "23:00"})

    assert window_end(friday, at("2026-07-10T20:30:00+00:00")) == at("2026-07-11T03:00:00+00:00")
    assert window_end(friday, at("2026-11-13T20:30:00+00:00")) is None  # 15:30 EST: not yet
    assert window_end(friday, at("2026-11-13T21:30:00+00:00")) == at("2026-11-14T04:00:00+00:00")
    assert window_end(friday, at("2026-11-14T04:00:00+00:00")) is None  # the end is not in it


def test_a_window_across_midnight_and_the_night_the_clocks_change() -> None:
    """Saturday 22:00 to 06:00 in Berlin, on the night summer time ends (2026-10-25, 03:00 CEST ->
    02:00 CET): the night is an hour longer, and the window ends at 06:00 local all the same."""
    night = window(timezone="Europe/Berlin", days=["sat"], **{"from": "22:00", "to": "06:00"})

    assert window_end(night, at("2026-10-24T19:59:00+00:00")) is None  # 21:59 CEST
    end = at("2026-10-25T05:00:00+00:00")  # 06:00 CET
    assert window_end(night, at("2026-10-24T20:00:00+00:00")) == end  # 22:00 CEST
    assert window_end(night, at("2026-10-25T04:59:00+00:00")) == end  # Sunday 05:59 CET: begun on Saturday
    assert window_end(night, at("2026-10-25T05:00:00+00:00")) is None
    assert window_end(night, at("2026-10-25T21:00:00+00:00")) is None  # Sunday 22:00: not a Saturday


def test_a_one_off_window_in_its_time_zone() -> None:
    quarter = window(timezone="Asia/Tokyo", start="2026-12-30T18:00", end="2027-01-04T09:00", actions=["deploy"])
    assert window_end(quarter, at("2026-12-30T08:59:00+00:00")) is None
    assert window_end(quarter, at("2026-12-30T09:00:00+00:00")) == at("2027-01-04T00:00:00+00:00")


def test_what_a_window_freezes_is_what_it_names_and_the_switch_comes_first() -> None:
    deploys = window(timezone="UTC", days=["wed"], actions=["deploy", "promote"], **{"from": "00:00", "to": "23:59"})
    now = at("2026-11-18T12:00:00+00:00")  # a Wednesday

    assert frozen(None, [deploys], "retrain", now) is None
    found = frozen(None, [deploys], "deploy", now)
    assert found is not None and found.what == "freeze window 'w'" and found.until == "2026-11-18T23:59:00Z"
    switch = {"by": "ana", "why": "incident 4711", "at": "2026-11-18T11:00:00Z", "actions": ["retrain"]}
    by_switch = frozen(switch, [deploys], "retrain", now)
    assert by_switch is not None and "set by ana" in by_switch.reason and "incident 4711" in by_switch.reason


def test_the_guards_refuse_new_work_in_a_window_even_when_forced() -> None:
    weekend = window(timezone="UTC", days=["wed"], **{"from": "00:00", "to": "23:59"})
    now = at("2026-11-18T12:00:00+00:00")
    verdict = guards.check(ModelState(MODEL), guards.RETRAIN, "re-1", now, None, None, True, [weekend])
    assert (verdict.granted, verdict.code, verdict.until) == (False, "frozen", "2026-11-18T23:59:00Z")
    assert verdict.reason.startswith("frozen by freeze window 'w': wed 00:00-23:59 UTC")
    assert guards.check(
        ModelState(MODEL), guards.RETRAIN, "re-1", now + timedelta(days=1), None, None, windows=[weekend]
    ).granted


# --------------------------------------------------------------------------- the policy file

POLICY = """
models:
  churn:
    retrain:
      pipeline: churn-train:3
    freeze:
"""


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("{name: x, timezone: Mars/Olympus, days: [sat], from: '00:00', to: '06:00'}", "not an IANA time zone"),
        ("{name: x, days: [saturday, caturday], from: '00:00', to: '06:00'}", "'caturday' is not a day"),
        ("{name: x}", "write either 'start' and 'end'"),
        ("{name: x, start: '2026-12-24T00:00', end: '2026-12-23T00:00'}", "a later 'end'"),
        ("{name: x, start: '2026-12-24T00:00+01:00', end: '2026-12-25T00:00'}", "without an offset"),
        ("{name: x, days: [sat], from: '06:00'}", "needs 'days', 'from' and 'to'"),
        ("{name: x, days: [sat], from: '00:00', to: '06:00', actions: [retrain, delete]}", "actions"),
        ("{name: x, days: [sat], from: '25:00', to: '06:00'}", "write a time as HH:MM, e.g. '06:00'"),
        ("{name: x, start: tomorrow, end: '2026-12-25T00:00'}", "write a date-time such as '2026-12-24T00:00'"),
        ("{days: [sat], from: '00:00', to: '06:00'}", "name: it is required; add it"),
    ],
)
def test_each_freeze_mistake_names_the_key_and_the_fix(entry: str, says: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(POLICY + f"      - {entry}\n", "policy.yaml")
    assert any(says in p and "models.churn.freeze" in p for p in info.value.problems), info.value.problems


def test_a_model_is_frozen_by_the_defaults_windows_and_its_own() -> None:
    policy = parse_policy(
        POLICY.replace(
            "models:", "defaults:\n  freeze: [{name: all, start: '2026-12-24T00:00', end: '2026-12-27T00:00'}]\nmodels:"
        )
        + "      - {name: mine, days: [fri], from: '16:00', to: '23:00', timezone: America/New_York}\n"
    )
    assert [w.name for w in policy.freeze_windows("churn")] == ["all", "mine"]


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def operated(azure: AzureWorld) -> Any:
    from function_app import runtime

    yield Operated(azure)
    runtime.set_retrainer(None)


def _healthy_bake(operated: Operated) -> None:
    for m in range(10):
        when = operated.started() + timedelta(minutes=m, seconds=30)
        operated.azure.serve(when, operated.name, ok=30)
        operated.azure.serve(when, "blue", ok=30)
    operated.azure.now.now = operated.started() + BAKE + LAG


@pytest.mark.both_ledgers
def test_the_stop_switch_holds_a_rollout_refuses_new_work_lets_a_rollback_through(operated: Operated) -> None:
    status, _, out = operated.client.call("POST", "/api/freeze", {"reason": "incident 4711"})
    assert status == 200, out
    assert sorted(r["model"] for r in out["decisions"]) == ["churn-classifier", MODEL]  # every model of the policy
    [record] = [r for r in out["decisions"] if r["model"] == MODEL]
    assert (record["action"], record["outcome"]) == ("freeze", "submitted")
    assert "frozen by function key: incident 4711" in record["reason"]

    _healthy_bake(operated)  # the step is healthy and baked: it would go on to 50%
    assert operated.state() == "held"
    assert operated.traffic() == {"blue": 90, operated.name: 10}
    [hold] = operated.records("rollout")[:1]
    assert hold.outcome == "skipped" and "frozen by the stop switch: set by function key" in hold.reason
    assert operated.state() == "frozen"  # the next pass: held still, no second record
    assert [r.id for r in operated.records("rollout") if "frozen" in r.reason] == [hold.id]

    _, _, view = operated.client.call("GET", "/api/models")
    [model] = [m for m in view["models"] if m["model"] == MODEL]
    assert set(model["frozen"]) == {"retrain", "deploy", "promote"} and model["stop_switch"]["why"] == "incident 4711"

    status, _, retrain = operated.client.call("POST", f"/api/models/{MODEL}/retrain", {"reason": "now"})
    assert status == 200 and retrain["outcome"] == "skipped" and retrain["details"]["guard"] == "frozen"

    status, _, refused = operated.client.call("POST", f"/api/models/{MODEL}/promote", {"reason": "ship it"})
    assert (
        status == 409
        and "frozen by the stop switch" in refused["error"]
        and "lift the freeze first" in refused["error"]
    )

    status, _, rolled = operated.client.call("POST", f"/api/models/{MODEL}/rollback", {"reason": "bad canary"})
    assert status == 202 and rolled["action"] == "rollback"  # a rollback is never held
    assert operated.traffic() == {"blue": 100}

    newer = operated.azure.finished_run(r2="0.65", run_id="retrain-sklearn-regression-model-0123456789abcdee")
    [deploy] = operated.azure.deliver(newer).decisions  # the slot is free now: the switch alone refuses it
    assert (deploy.action, deploy.outcome, deploy.details["guard"]) == ("deploy", "skipped", "frozen")
    assert "frozen by the stop switch: set by function key" in deploy.reason and "incident 4711" in deploy.reason


def test_unfreezing_lets_the_held_rollout_go_on(operated: Operated) -> None:
    operated.client.call("POST", "/api/freeze", {"reason": "release train", "actions": ["promote"]})
    _healthy_bake(operated)
    assert operated.state() == "stepped"  # only the promotion is frozen: 10% -> 50% goes on

    while True:
        _healthy_bake(operated)
        state = operated.state()
        if state != "stepped":
            break
    assert state == "held" and operated.traffic()[operated.name] == 50  # the promotion waits

    status, _, out = operated.client.call("POST", "/api/unfreeze", {"reason": "released"})
    assert status == 200 and out["decisions"][0]["action"] == "unfreeze"
    assert operated.state() == "stepped" and operated.traffic() == {operated.name: 100}
    _healthy_bake(operated)
    assert operated.state() == "promoted"


def test_a_freeze_without_a_reason_or_with_an_unknown_model_loses_nothing_and_says_how(operated: Operated) -> None:
    status, _, out = operated.client.call("POST", "/api/freeze", {})
    assert status == 400 and "field 'reason' is required" in out["error"]
    status, _, out = operated.client.call("POST", "/api/freeze", {"reason": "x", "models": ["nope"]})
    assert status == 404 and "'nope' not in the policy" in out["error"]
    assert operated.azure.ledger.get_model(MODEL).frozen is None


def test_a_freeze_window_refuses_a_drift_retrain_with_the_window_in_the_record(tmp_path: Any) -> None:
    import yaml

    from handlers.policy import Policy
    from tests.azure_world import DRIFT_SAMPLE, in_workspace
    from tests.conftest import REPO
    from tests.ledgers import LedgerSpec

    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    raw["defaults"]["freeze"] = [
        {"name": "change freeze", "timezone": "Europe/Berlin", "days": ["wed"], "from": "09:00", "to": "18:00"}
    ]
    azure = AzureWorld(tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=Policy.model_validate(raw))
    try:
        [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE)).decisions  # Wednesday 2026-11-18, 12:06 in Berlin
        assert (rec.action, rec.outcome, rec.details["guard"]) == ("retrain", "skipped", "frozen")
        assert "frozen by freeze window 'change freeze': wed 09:00-18:00 Europe/Berlin" in rec.reason
        assert azure.arm.job_puts == []
    finally:
        azure.close()


def test_the_command_line_freezes_one_model_and_unfreezes_it(
    operated: Operated, capsys: pytest.CaptureFixture[str]
) -> None:
    from function_app import cli

    assert cli.main(["freeze", "--reason", "audit week", "--model", MODEL, "--action", "retrain"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{MODEL}: freeze submitted: retrain frozen by ") and said.rstrip().endswith("audit week")
    switch = operated.azure.ledger.get_model(MODEL).frozen
    assert switch is not None and switch["actions"] == ["retrain"] and switch["why"] == "audit week"
    assert operated.azure.ledger.get_model("churn-classifier").frozen is None  # only the model named

    assert cli.main(["freeze", "--reason", "again", "--model", MODEL, "--action", "retrain"]) == 0
    assert "freeze submitted" in capsys.readouterr().out  # another reason: the switch is set anew

    assert cli.main(["unfreeze", "--reason", "done", "--model", MODEL, "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["action"] == "unfreeze" and operated.azure.ledger.get_model(MODEL).frozen is None
    assert cli.main(["unfreeze", "--reason", "done", "--model", MODEL]) == 0
    assert "nothing to change (not frozen already)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # argparse: --reason is required
        cli.main(["freeze", "--model", MODEL])
    assert refused.value.code == 2 and "--reason" in capsys.readouterr().err


def test_a_freeze_window_holds_a_rollout_refuses_new_work_and_lets_a_rollback_through(tmp_path: Any) -> None:
    """A one-off window in New York's time, beginning while a rollout bakes its first step: the step is
    held (recorded once), a retrain and a new candidate's deploy are recorded skips naming the window,
    GET /api/models shows it, and a rollback goes through."""
    import yaml

    from function_app import runtime
    from handlers.policy import Policy
    from tests.conftest import REPO
    from tests.ledgers import LedgerSpec

    raw = yaml.safe_load((REPO / "examples" / "policy.yaml").read_text())
    raw["models"][MODEL]["freeze"] = [
        {
            "name": "month-end close",
            "timezone": "America/New_York",
            "start": "2026-11-25T05:10",
            "end": "2026-11-25T18:00",
        }
    ]
    azure = AzureWorld(tmp_path, LedgerSpec("sqlite", str(tmp_path / "l.db")), policy=Policy.model_validate(raw))
    try:
        operated = Operated(azure)  # a candidate at 10%, before the window (05:10 EST is 10:10Z)
        assert azure.now.now < at("2026-11-25T10:10:00+00:00") and operated.traffic()[operated.name] == 10
        window = (  # 18:00 in New York (EST) is 23:00Z
            "frozen by freeze window 'month-end close': 2026-11-25T05:10 to 2026-11-25T18:00 America/New_York, "
            "until 2026-11-25T23:00:00Z"
        )

        _healthy_bake(operated)  # healthy and baked, inside the window: it would go on to 50%

        assert operated.state() == "held" and operated.traffic()[operated.name] == 10
        [hold] = [r for r in operated.records("rollout") if "frozen" in r.reason]
        assert window in hold.reason, hold.reason
        azure.now.advance(minutes=20)
        assert operated.state() == "frozen" and operated.traffic()[operated.name] == 10  # held still, said once
        assert [r.id for r in operated.records("rollout") if "frozen" in r.reason] == [hold.id]
        _, _, view = operated.client.call("GET", "/api/models")
        [model] = [m for m in view["models"] if m["model"] == MODEL]
        assert set(model["frozen"]) == {"retrain", "deploy", "promote"}, model
        assert "month-end close" in json.dumps(model["frozen"]) and model["stop_switch"] is None

        status, _, retrain = operated.client.call("POST", f"/api/models/{MODEL}/retrain", {"reason": "now"})
        assert status == 200 and (retrain["outcome"], retrain["details"]["guard"]) == ("skipped", "frozen")
        assert window in retrain["reason"] and azure.arm.job_puts == []

        status, _, rolled = operated.client.call("POST", f"/api/models/{MODEL}/rollback", {"reason": "bad canary"})
        assert status == 202 and rolled["action"] == "rollback" and operated.traffic() == {"blue": 100}

        newer = azure.finished_run(r2="0.65", run_id="retrain-sklearn-regression-model-0123456789abcdee")
        [deploy] = azure.deliver(newer).decisions
        assert (deploy.action, deploy.outcome, deploy.details["guard"]) == ("deploy", "skipped", "frozen")
        assert window in deploy.reason and guards.ROLLOUT not in azure.ledger.get_model(MODEL).flights
    finally:
        runtime.set_retrainer(None)
        azure.close()
