"""Operators steer rollouts: ``POST /api/models/{model}/rollback|promote|pause|resume`` through the
app's own HTTP functions, and ``retrain rollback|promote|pause|resume MODEL``, end to end on SQLite
(a crash on both ledgers), with the real Azure ML SDK against the fake ARM and the real ``LogsQueryClient`` against the
fake Log Analytics API. Each action is a recorded decision with who asked, carried out through the
rollout's write-ahead protocol; each refuses with 409 and why when it does not apply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from function_app import cli, runtime
from handlers import guards
from handlers.errors import InvalidInput, NotApplicable, NotFound
from handlers.policy_file import parse_policy
from handlers.signals import OPERATOR, OperatorRequest, Trigger
from tests.azure_world import ENDPOINT, MODEL, AzureWorld
from tests.crashes import AnotherWorkerFinishesItFirst, ChangedTwiceOnce, DiesAfterSettingTraffic, WorkerDied
from tests.fakes import RecordingActions
from tests.ledgers import LedgerSpec
from tests.rollouts import Operated
from tests.world import World


@pytest.fixture
def operated(azure: AzureWorld) -> Iterator[Operated]:
    yield Operated(azure)
    runtime.set_retrainer(None)


def test_a_pause_outlives_several_reconciler_passes_and_resume_restarts_the_step_s_bake(operated: Operated) -> None:
    azure, cand = operated.azure, operated.name
    before = operated.traffic()

    status, paused = operated.call("pause", {"reason": "investigating latency"})

    assert status == 200 and (paused["action"], paused["outcome"]) == ("pause", "submitted")
    assert paused["trigger"]["caller"] == {"kind": "function key"} and paused["trigger"]["source"] == "http"
    assert "paused at step 1 of 3 (10%)" in paused["reason"] and "investigating latency" in paused["reason"]
    for m in range(10):  # a candidate that would fail fast, and four passes over two bakes: nothing moves
        azure.serve(operated.started() + timedelta(minutes=m, seconds=30), cand, errors=50)
    calls = len(azure.logs.calls)
    for _ in range(4):
        azure.now.advance(minutes=5)
        assert operated.state() == "paused"
    assert operated.traffic() == before == {"blue": 90, cand: 10} and len(azure.logs.calls) == calls
    status, again = operated.call("pause")
    assert status == 409 and "paused already" in again["error"] and "GET /api/models" in again["hint"]
    _, _, models = operated.client.call("GET", "/api/models")
    [view] = [m for m in models["models"] if m["model"] == MODEL]
    assert view["state"] == "rollout paused" and view["in_flight"]["rollout"]["paused"]["decision"] == paused["id"]
    assert (view["in_flight"]["rollout"]["step"], view["in_flight"]["rollout"]["traffic"]) == (0, before)

    status, resumed = operated.call("resume")

    assert status == 200 and resumed["action"] == "resume" and "its bake starts again" in resumed["reason"]
    assert operated.started() == azure.now() and operated.data()["paused"] is None
    assert operated.state() == "baking"  # the bake starts again: nothing to read before the lag
    status, refused = operated.call("resume")
    assert status == 409 and "not paused" in refused["error"]
    for m in range(2):  # the new bake's window holds only what is served from the resume on
        azure.serve(operated.started() + timedelta(minutes=m, seconds=30), cand, ok=5, errors=50)
    azure.now.advance(minutes=7)
    assert operated.state() == "rolled_back"  # judged again: the failures decide, before the bake ends
    assert [r.id for r in operated.records("pause")] == [paused["id"]]


def test_promote_skips_the_remaining_steps_and_keeps_the_previous_deployment(operated: Operated) -> None:
    azure, cand = operated.azure, operated.name

    status, promoted = operated.call("promote", {"reason": "hotfix"})

    assert status == 202 and (promoted["action"], promoted["outcome"]) == ("promote", "submitted")
    assert "skipping 50%, 100%" in promoted["reason"] and promoted["details"]["traffic"] == {cand: 100}
    assert operated.traffic() == {cand: 100} and azure.arm.traffic_puts[-1] == {cand: 100}
    state = azure.ledger.get_model(MODEL)
    assert guards.ROLLOUT not in state.flights and state.kept is not None and state.kept["traffic"] == {"blue": 100}
    status, refused = operated.call("promote")
    assert status == 409 and "no rollout of sklearn_regression_model is in flight" in refused["error"]
    assert azure.new_worker().reconcile().rollouts == []


def test_rollback_in_flight_restores_the_original_traffic(operated: Operated) -> None:
    status, rolled = operated.call("rollback", {"reason": "bad canary"})

    assert status == 202 and rolled["action"] == "rollback" and rolled["details"]["traffic"] == {"blue": 100}
    assert "rolled back at step 1 of 3 (10%)" in rolled["reason"] and "bad canary" in rolled["reason"]
    assert operated.traffic() == {"blue": 100}
    assert guards.ROLLOUT not in operated.azure.ledger.get_model(MODEL).flights
    status, refused = operated.call("rollback")
    assert status == 409 and "nothing to roll back to" in refused["error"]  # nothing was ever promoted


def test_rollback_without_a_rollout_goes_back_to_the_deployment_the_last_promotion_replaced(
    operated: Operated,
) -> None:
    azure, cand = operated.azure, operated.name
    operated.promote_to_the_end()
    assert operated.traffic() == {cand: 100}

    status, rolled = operated.call("rollback", {"reason": "regression found in the morning"})

    assert status == 202 and rolled["action"] == "rollback" and rolled["details"]["traffic"] == {"blue": 100}
    assert "back to the deployment(s) the promotion of" in rolled["reason"]
    assert rolled["details"]["kept"]["replaced_by"] == cand
    assert operated.traffic() == {"blue": 100} and azure.arm.traffic_puts[-1] == {"blue": 100}
    state = azure.ledger.get_model(MODEL)
    assert state.flights == {} and state.kept is None
    status, refused = operated.call("rollback")
    assert status == 409 and "nothing to roll back to" in refused["error"]


def test_a_rollback_that_meets_the_same_rollback_opened_meanwhile_is_refused_and_sets_nothing(
    operated: Operated,
) -> None:
    """Two operators roll back at the same moment: the second write finds the rollout flight the first
    opened and refuses, setting no traffic."""
    azure = operated.azure
    operated.promote_to_the_end()
    puts = len(azure.arm.traffic_puts)
    worker = azure.new_worker(ledger=ChangedTwiceOnce(azure.ledger_spec.open()))
    trigger = Trigger("http", "r-both", "ManualRequest.rollback", caller=(("kind", "function key"),))

    with pytest.raises(NotApplicable, match=f"the rollout of {MODEL} changed meanwhile; look at it again"):
        worker.operator.handle(OperatorRequest(trigger, MODEL, "rollback", "x"))

    assert guards.ROLLOUT in azure.ledger.get_model(MODEL).flights  # the other one's, opened once
    assert len(azure.arm.traffic_puts) == puts and operated.traffic() == {operated.name: 100}
    assert operated.records("rollback") == []


def test_a_refused_promotion_whose_rollback_meets_another_worker_s_change_is_a_409_not_a_crash(
    operated: Operated,
) -> None:
    """Azure refuses a promotion's traffic (the candidate failed since), and the rollback that should
    replace it cannot be written: another worker finished the rollout's transition meanwhile. The
    operator is told the rollout changed and to look again (409), not answered with a 500."""
    azure = operated.azure
    azure.arm.finish_operations()  # the first step's traffic update is over
    azure.arm.deployments[(ENDPOINT, operated.name)]["properties"]["provisioningState"] = "Failed"
    worker = azure.new_worker(ledger=AnotherWorkerFinishesItFirst(azure.ledger_spec.open(), MODEL))
    trigger = Trigger("http", "r-lost", "ManualRequest.promote", caller=(("kind", "function key"),))

    with pytest.raises(NotApplicable, match=f"the rollout of {MODEL} changed meanwhile; look at it again"):
        worker.operator.handle(OperatorRequest(trigger, MODEL, "promote", "x"))

    assert operated.traffic() == {"blue": 90, operated.name: 10}  # Azure refused; nothing else was sent


def test_rollback_refuses_when_the_kept_deployment_no_longer_exists(operated: Operated) -> None:
    operated.call("promote")
    del operated.azure.arm.deployments[(ENDPOINT, "blue")]  # retired meanwhile

    status, refused = operated.call("rollback")

    assert status == 409 and "no longer exist on endpoint diabetes-endpoint" in refused["error"]
    assert operated.traffic() == {operated.name: 100}


def test_the_same_idempotency_key_gives_the_same_decision_once(operated: Operated) -> None:
    first = operated.call("promote", key="k-1")
    puts = len(operated.azure.arm.traffic_puts)

    again = operated.call("promote", key="k-1")

    assert first == again and first[0] == 202 and len(operated.azure.arm.traffic_puts) == puts
    status, reused = operated.call("promote", {"reason": "another body"}, key="k-1")
    assert status == 422 and "first used" in reused["error"]


def test_unknown_models_and_fields_are_refused_before_anything_is_claimed(operated: Operated) -> None:
    status, _, out = operated.client.call("POST", "/api/models/nope/pause", {"reason": "x"})
    assert status == 404 and "'nope' is not in the policy" in out["error"]
    status, out = operated.call("pause", {"reason": "x", "force": True})
    assert status == 400 and "unknown field(s) 'force'" in out["error"]
    assert operated.records("pause") == []


@pytest.mark.both_ledgers
def test_an_operator_s_promotion_that_died_after_setting_traffic_is_finished_by_the_reconciler(
    operated: Operated,
) -> None:
    azure, cand = operated.azure, operated.name
    dying = azure.new_worker(actions=DiesAfterSettingTraffic(azure.actions))
    request = OperatorRequest(
        Trigger(
            "http",
            "req-dies",
            "ManualRequest.promote",
            caller=(("kind", "function key"),),
            request="promote-digest",
            channel=OPERATOR,
        ),
        MODEL,
        "promote",
        "x",
    )
    with pytest.raises(WorkerDied):
        dying.operator.handle(request)
    assert operated.traffic() == {cand: 100} and operated.data()["pending"]["kind"] == "promote-now"

    assert operated.state() == "promoted"

    [promote] = operated.records("promote")
    assert promote.trigger["event_id"] == "req-dies" and promote.trigger["caller"] == {"kind": "function key"}
    assert guards.ROLLOUT not in azure.ledger.get_model(MODEL).flights
    assert azure.worker.operator.handle(request).id == promote.id  # the request again: its record, not a 409


def test_the_command_line_pauses_and_resumes_on_the_configured_ledger(
    operated: Operated, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["pause", MODEL, "--reason", "night freeze", "--json"]) == 0
    paused = json.loads(capsys.readouterr().out)
    assert paused["action"] == "pause" and paused["trigger"]["source"] == "cli"
    assert paused["trigger"]["caller"]["kind"] == "command line" and paused["trigger"]["caller"]["user"]
    operated.azure.now.advance(minutes=20)
    assert operated.state() == "paused"

    assert cli.main(["pause", MODEL]) == 2
    assert "paused already" in capsys.readouterr().err
    assert cli.main(["resume", MODEL, "--reason", "morning"]) == 0
    assert capsys.readouterr().out.startswith("resume submitted: rollout of")
    assert cli.main(["promote", MODEL]) == 0
    assert operated.traffic() == {operated.name: 100}
    assert cli.main(["rollback", MODEL]) == 0
    assert operated.traffic() == {"blue": 100}
    assert cli.main(["rollback", MODEL]) == 2 and "nothing to roll back to" in capsys.readouterr().err


def test_a_model_without_deploy_is_a_400_and_no_rollout_a_409(ledger_spec: LedgerSpec) -> None:
    policy = parse_policy(
        "models:\n  plain:\n    retrain: {pipeline: 'train:1'}\n  served:\n    deploy: {endpoint: served-ep}\n"
    )
    world = World(ledger_spec, policy=policy, actions=RecordingActions())

    def ask(model: str, action: str) -> Any:
        trigger = Trigger("http", f"r-{model}-{action}", f"ManualRequest.{action}", caller=(("kind", "function key"),))
        return world.worker.operator.handle(OperatorRequest(trigger, model, action, "x"))

    with pytest.raises(InvalidInput, match="no 'deploy' section"):
        ask("plain", "pause")
    with pytest.raises(NotFound):
        ask("ghost", "pause")
    for action in ("promote", "pause", "resume"):
        with pytest.raises(Exception, match="no rollout of served is in flight") as refused:
            ask("served", action)
        assert type(refused.value).__name__ == "NotApplicable"
    assert world.ledger.decisions("served", 10) == []
