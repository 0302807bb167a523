"""The reconciler's edge cases, with the recording Actions fake (the SDK is not the point here), and
the plans it resumes from: ``from_dict`` gives back exactly what ``as_dict`` rendered. Its retirement
of rolled-back and failed candidates: tests/test_reconcile_retire.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from handlers import guards
from handlers.decisions import decide
from handlers.envelopes import parse_body, to_signal, workspace_key
from handlers.errors import TransientError
from handlers.gate_rules import GateRule
from handlers.plans import Deploy, DeployPlan, JobPlan, Retrain
from handlers.reconcile import release_record
from handlers.records import DecisionRecord, iso
from handlers.signals import ManualRequest, Trigger
from tests.builders import EXAMPLE_POLICY, MODEL, WORKSPACE, drift_event, ours, run_event
from tests.crashes import DiesBeforeActing, WorkerDied
from tests.ledgers import LedgerSpec
from tests.world import World as BaseWorld

LEASE = timedelta(seconds=60)


class World(BaseWorld):
    """The example policy on a ledger of each kind, with a lease of :data:`LEASE`."""

    def __init__(self, spec: LedgerSpec, **options: Any) -> None:
        super().__init__(spec, lease=LEASE, **options)

    def crash_before_acting(self, raw: dict[str, Any]) -> DiesBeforeActing:
        dying = DiesBeforeActing(self.actions)
        with pytest.raises(WorkerDied):
            self.deliver(raw, self.new_worker(dying))
        return dying


@pytest.fixture
def world(ledger_spec: LedgerSpec) -> World:
    return World(ledger_spec)


def decided(raw: dict[str, Any]) -> Any:
    [env] = parse_body(json.dumps([raw]))
    [d] = decide(to_signal(env, frozenset({workspace_key(WORKSPACE)})), EXAMPLE_POLICY)
    return d


# --------------------------------------------------------------------------- round trips


def through_a_ledger(rendered: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(rendered))
    return loaded


def test_a_job_plan_comes_back_from_its_rendering_exactly() -> None:
    d = decided(drift_event(event_id="e-1"))
    assert isinstance(d, Retrain)
    assert JobPlan.from_dict(through_a_ledger(d.job.as_dict())) == d.job
    assert d.job.as_dict()["model"] == MODEL


def test_a_deploy_plan_keeps_what_acting_needs_and_comes_back_exactly() -> None:
    raw = run_event(
        run_id="run-9",
        tags={**ours(MODEL), "r2_score": "0.61"},
        properties={"azureml.runsource": "azureml.PipelineRun"},
    )
    d = decided(raw)
    assert isinstance(d, Deploy) and d.plan.gate is not None and d.plan.run_tags["r2_score"] == "0.61"
    rendered = d.plan.as_dict()
    assert rendered["candidate"]["run_tags"]["r2_score"] == "0.61"
    assert rendered["candidate"]["run_properties"] == {"azureml.runsource": "azureml.PipelineRun"}
    assert rendered["model_output"] == "model" and rendered["gate"]["metric"] == "r2_score"
    assert DeployPlan.from_dict(through_a_ledger(rendered)) == d.plan


def test_a_deploy_plan_without_a_run_or_a_gate_comes_back_exactly() -> None:
    plan = DeployPlan(MODEL, "ep", "dep-1", None, "7", "manual", {"retrain_decision": "de-1"}, model_output="best")
    assert DeployPlan.from_dict(through_a_ledger(plan.as_dict())) == plan
    gated = DeployPlan(MODEL, "ep", "dep-2", "run-1", None, "run", {}, gate=GateRule(metric="auc", source="model"))
    assert DeployPlan.from_dict(through_a_ledger(gated.as_dict())) == gated


def test_a_rendering_that_is_not_a_plan_is_refused() -> None:
    with pytest.raises(KeyError):
        JobPlan.from_dict({"type": "pipeline", "name": "x"})
    with pytest.raises(ValueError, match="not a pipeline job"):
        JobPlan.from_dict({**decided(drift_event()).job.as_dict(), "type": "command"})


# --------------------------------------------------------------------------- the reconciler


def test_a_hold_without_a_decision_record_is_released_with_its_reason_and_its_cooldown_given_back(
    world: World,
) -> None:
    since = world.clock()
    verdict = world.ledger.update_model(
        MODEL, lambda s: guards.reserve(s, guards.RETRAIN, "re-lost", since, timedelta(hours=6), 3)
    )
    assert verdict.granted  # ... and the worker died before writing the reserved record
    world.clock.advance(minutes=5)

    report = world.reconcile()

    [rec] = report.released
    assert report.resumed == [] and [f["decision"] for f in report.found] == ["re-lost"]
    assert (rec.id, rec.model, rec.action, rec.outcome) == ("re-lost", MODEL, "retrain", "failed")
    assert "reconciler released the retrain hold reserved at " + iso(since) in rec.reason
    assert "no decision record" in rec.reason and "cooldown and budget it took are given back" in rec.reason
    assert world.ledger.get_decision("re-lost") == rec
    state = world.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at is None and state.budget_used == 0
    assert world.actions.submissions == []


@pytest.mark.both_ledgers
def test_a_reserved_record_without_a_plan_is_released_and_its_cooldown_stands(world: World) -> None:
    raw = drift_event(event_id="e-1")
    world.crash_before_acting(raw)
    [flight] = world.ledger.get_model(MODEL).flights.values()
    reserved = world.ledger.get_decision(flight.decision)
    assert reserved is not None
    reserved.details["rendered"] = {"type": "pipeline", "name": "written-by-an-older-version"}
    world.ledger.put_decision(reserved)
    world.clock.advance(minutes=5)

    [rec] = world.reconcile().released

    assert rec.id == flight.decision and rec.outcome == "failed"
    assert (
        "holds no plan this version can act on (KeyError" in rec.reason
        and "cooldown and budget it took stand" in rec.reason
    )
    state = world.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at == flight.since and state.budget_used == 1
    assert world.actions.submissions == []
    # The redelivered event finds the released decision, answers with it as recorded, and does not act
    # on it behind the reconciler's back.
    world.clock.advance(minutes=1)
    [again] = world.deliver(raw).decisions
    assert again == rec == world.ledger.get_decision(rec.id) and world.actions.submissions == []


@pytest.mark.both_ledgers
def test_a_deploy_whose_worker_died_is_resumed_with_the_plan_it_reserved(world: World) -> None:
    raw = run_event(run_id="run-9", tags={**ours(MODEL), "r2_score": "0.61"})
    [planned] = world.crash_before_acting(raw).plans
    assert isinstance(planned, DeployPlan) and planned.gate is not None
    world.clock.advance(minutes=2)

    report = world.new_worker().reconcile()

    [rec] = report.resumed
    assert world.actions.deployments == [planned]  # the gate, the run's tags and the output, as decided
    assert (rec.action, rec.outcome, rec.details["resumed_by"]) == ("deploy", "submitted", "reconciler")
    assert rec.job == {"name": f"{planned.endpoint}/{planned.deployment}", "url": None}
    flight = world.ledger.get_model(MODEL).flights["rollout"]
    assert (flight.decision, flight.status, flight.job) == (rec.id, "submitted", rec.job["name"])
    assert world.ledger.get_decision(rec.id) == rec


@pytest.mark.both_ledgers
def test_a_transient_failure_lets_the_reservation_go_to_the_next_pass_which_runs_it_once(world: World) -> None:
    """The pass that resumed it stops at a transient failure and says so in the slot (``let_go``): the next pass
    takes it over at once, not a lease later; while a resumer acts (taken over within the lease, not let go),
    no other pass does (tests/test_stalled_workers.py)."""
    world.crash_before_acting(drift_event(event_id="e-1"))
    world.clock.advance(minutes=2)
    world.actions.fail_with = TransientError("ARM answered 503")

    first = world.reconcile()

    assert [d["error"] for d in first.deferred] == ["ARM answered 503"] and first.resumed == []
    [flight] = world.ledger.get_model(MODEL).flights.values()
    assert flight.status == "reserved" and flight.data == {guards.LET_GO: True}
    world.actions.fail_with = None
    [rec] = world.new_worker().reconcile().resumed
    assert rec.outcome == "submitted"
    name = rec.job["name"]  # type: ignore[index]
    # a resumed retrain looks for its job first: the failed look, the good one (none found), then the one submission
    assert (world.actions.lookups, world.actions.submissions) == ([name] * 2, [name])


@pytest.mark.both_ledgers
def test_a_release_recorded_before_a_crash_is_honoured_by_the_next_pass(world: World) -> None:
    world.crash_before_acting(drift_event(event_id="e-1"))
    [flight] = world.ledger.get_model(MODEL).flights.values()
    world.clock.advance(minutes=2)
    # A pass that recorded the release and died before freeing the slot.
    world.ledger.put_decision(release_record(MODEL, guards.RETRAIN, flight, world.clock(), "unreadable", False))

    report = world.reconcile()

    assert [r.outcome for r in report.resumed] == ["failed"] and report.released == []
    state = world.ledger.get_model(MODEL)
    assert state.flights == {} and state.last_retrain_at == flight.since  # released, the cooldown stands
    assert world.actions.submissions == []


def test_the_manual_retrain_of_a_model_whose_hold_was_released_goes_through(world: World) -> None:
    world.ledger.update_model(
        MODEL, lambda s: guards.reserve(s, guards.RETRAIN, "re-lost", world.clock(), timedelta(hours=6), 3)
    )
    request = ManualRequest(Trigger("http", "req-1", "ManualRequest.retrain"), MODEL, "retrain", "ops")
    assert world.service.handle(request).decisions[0].details["guard"] == "in_flight"
    world.clock.advance(minutes=2)
    world.reconcile()
    request2 = ManualRequest(Trigger("http", "req-2", "ManualRequest.retrain"), MODEL, "retrain", "ops")
    rec = world.service.manual(request2)
    assert rec.outcome == "submitted" and world.actions.submissions == [rec.job["name"]]  # type: ignore[index]


def test_the_report_is_json_with_whole_records(world: World) -> None:
    world.crash_before_acting(drift_event(event_id="e-1"))
    world.clock.advance(minutes=2)
    report = world.reconcile().to_dict()
    [resumed] = report["resumed"]
    assert json.loads(json.dumps(report)) == report
    assert DecisionRecord.from_dict(resumed).outcome == "submitted"
    assert report["found"][0]["model"] == MODEL and report["found"][0]["kind"] == "retrain"
