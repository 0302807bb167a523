"""The reconciler's edge cases, with the recording Actions fake (the SDK is not the point here), and
the plans it resumes from: ``from_dict`` gives back exactly what ``as_dict`` rendered."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from handlers import guards
from handlers.decisions import decide
from handlers.envelopes import parse_body, to_signal, workspace_key
from handlers.errors import PermanentError, TransientError
from handlers.gate_rules import GateRule
from handlers.plans import Deploy, DeployPlan, JobPlan, Retrain
from handlers.reconcile import release_record
from handlers.records import DecisionRecord, iso
from handlers.signals import ManualRequest, OperatorRequest, Trigger
from tests.builders import EXAMPLE_POLICY, MODEL, WORKSPACE, drift_event, ours, run_event
from tests.crashes import DiesBeforeActing, WorkerDied
from tests.fakes import RecordingActions
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
def test_a_transient_failure_leaves_the_reservation_for_a_later_pass_and_no_pass_runs_it_twice(world: World) -> None:
    world.crash_before_acting(drift_event(event_id="e-1"))
    world.clock.advance(minutes=2)
    world.actions.fail_with = TransientError("ARM answered 503")

    first = world.reconcile()

    assert [d["error"] for d in first.deferred] == ["ARM answered 503"] and first.resumed == []
    [flight] = world.ledger.get_model(MODEL).flights.values()
    assert flight.status == "reserved" and flight.data["resumed_at"] == iso(world.clock())
    world.actions.fail_with = None
    assert world.new_worker().reconcile().found == []  # taken over a moment ago: its lease runs again
    world.clock.advance(seconds=LEASE.total_seconds())
    [rec] = world.new_worker().reconcile().resumed
    assert rec.outcome == "submitted"
    assert world.actions.submissions == [rec.job["name"]] * 2  # type: ignore[index]  # the failed try, the good one


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


# --------------------------------------------------------------------------- retiring rolled-back and failed candidates

ENDPOINT = "diabetes-endpoint"  # the example policy's, with retire_after 24h and keep_previous 1


class CountingLedger:
    """The ledger, counting the reads of decisions a reconciler pass makes."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.reads: list[str] = []

    def decisions(self, *args: Any, **kw: Any) -> Any:
        self.reads.append("decisions")
        return self.ledger.decisions(*args, **kw)

    def model_history(self, model: str) -> Any:
        self.reads.append("model_history")
        return self.ledger.model_history(model)

    def get_decision(self, decision_id: str) -> Any:
        self.reads.append("get_decision")
        return self.ledger.get_decision(decision_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)


class Candidates(World):
    """The example policy's endpoint serving ``blue``, and candidates deployed from finished runs."""

    def __init__(self, spec: LedgerSpec) -> None:
        super().__init__(spec, actions=RecordingActions(traffic={ENDPOINT: {"blue": 100}}))

    def deploy(self, run_id: str, provisioning: str = "Succeeded") -> str:
        [rec] = self.deliver(run_event(run_id=run_id, tags={**ours(MODEL), "r2_score": "0.61"})).decisions
        assert rec.outcome == "submitted"
        name = str(rec.details["rendered"]["deployment"])
        self.actions.provisioning[f"{ENDPOINT}/{name}"] = provisioning
        return name

    def operator(self, action: str, request: str) -> DecisionRecord:
        trigger = Trigger("http", request, f"ManualRequest.{action}", caller=(("kind", "function key"),))
        return self.worker.operator.handle(OperatorRequest(trigger, MODEL, action, "looks wrong"))

    def states(self) -> list[str]:
        return [str(r["state"]) for r in self.reconcile().rollouts]


@pytest.fixture
def candidates(ledger_spec: LedgerSpec) -> Candidates:
    return Candidates(ledger_spec)


def test_a_rolled_back_candidate_is_deleted_after_retire_after_not_before_from_one_read_of_the_trail(
    candidates: Candidates,
) -> None:
    cand = candidates.deploy("run-1")
    assert candidates.states() == ["stepped"]
    for _ in range(4):  # no health data: it bakes on up to max_bake (30m), then on_no_traffic rolls it back
        candidates.clock.advance(minutes=10)
        state = candidates.states()
    assert state == ["rolled_back"] and candidates.actions.traffic[ENDPOINT] == {"blue": 100}
    [rollback] = [r for r in candidates.ledger.decisions(MODEL, 50) if r.action == "rollback"]
    key = f"{ENDPOINT}/{cand}"

    candidates.clock.advance(hours=23, minutes=59)
    ledger = CountingLedger(candidates.spec.open())
    report = candidates.new_worker(ledger=ledger).reconcile()
    assert report.retired == [] and candidates.actions.deleted == []  # not before retire_after
    assert ledger.reads == ["model_history"]  # the one read of the model's trail, no read per candidate

    candidates.clock.advance(minutes=1)
    ledger.reads.clear()
    [retired] = candidates.new_worker(ledger=ledger).reconcile().retired

    assert candidates.actions.deleted == [key] and ledger.reads == ["model_history"]
    assert (retired.action, retired.outcome, retired.job) == ("retire", "submitted", {"name": key, "url": None})
    assert retired.reason == (
        f"candidate deployment {key} deleted: it has no traffic and was rolled back at {rollback.at} by "
        f"{rollback.id}, 1d ago, longer than retire_after 1d"
    )
    assert retired.details["rollback_decision"] == rollback.id and candidates.ledger.get_decision(retired.id) == retired
    candidates.clock.advance(hours=1)
    assert candidates.reconcile().retired == [] and candidates.actions.deleted == [key]  # once


def test_a_failed_candidate_is_deleted_after_retire_after_and_its_retire_decision_says_it_failed(
    candidates: Candidates,
) -> None:
    cand = candidates.deploy("run-1", provisioning="Failed")
    assert candidates.states() == ["rolled_back"]
    candidates.clock.advance(hours=23)
    assert candidates.reconcile().retired == []

    candidates.clock.advance(hours=1)
    [retired] = candidates.reconcile().retired

    assert candidates.actions.deleted == [f"{ENDPOINT}/{cand}"] and retired.details["failed"] == "Failed"
    assert "a failed candidate (its deployment ended provisioning Failed)" in retired.reason


def test_a_model_with_nothing_to_retire_has_its_trail_read_once_not_on_every_pass(world: World) -> None:
    [retrain] = world.deliver(drift_event(event_id="e-1")).decisions
    world.deliver(run_event(run_id=retrain.job["name"], tags=ours(decision=retrain.id), status="Failed"))  # type: ignore[index]
    ledger = CountingLedger(world.spec.open())
    worker = world.new_worker(ledger=ledger)
    worker.reconcile()
    assert ledger.reads == ["model_history"]  # its state predates retire_due: looked at once
    assert world.ledger.get_model(MODEL).retire_due == ""  # nothing waits until a rollout ends

    for hours in (0.1, 30, 24 * 40):
        world.clock.advance(hours=hours)
        ledger.reads.clear()
        assert worker.reconcile().retired == []
        assert ledger.reads == []  # was: the model's last 200 decisions on every pass


def test_a_rolled_back_candidate_s_trail_is_read_when_its_retirement_is_due_not_on_every_pass(
    candidates: Candidates,
) -> None:
    cand = candidates.deploy("run-1", provisioning="Failed")
    assert candidates.states() == ["rolled_back"]
    [rollback] = [r for r in candidates.ledger.decisions(MODEL, 50) if r.action == "rollback"]
    ledger = CountingLedger(candidates.spec.open())
    worker = candidates.new_worker(ledger=ledger)
    worker.reconcile()  # the first look after the rollout ended: the candidate is due in retire_after
    assert ledger.reads == ["model_history"] and candidates.ledger.get_model(MODEL).retire_due == iso(
        datetime.fromisoformat(rollback.at) + timedelta(hours=24)
    )
    for _ in range(3):
        candidates.clock.advance(hours=7)
        ledger.reads.clear()
        assert worker.reconcile().retired == [] and ledger.reads == []  # not due: not read

    candidates.clock.advance(hours=3)
    ledger.reads.clear()
    [retired] = worker.reconcile().retired
    assert ledger.reads == ["model_history"] and candidates.actions.deleted == [f"{ENDPOINT}/{cand}"]
    assert retired.outcome == "submitted" and candidates.ledger.get_model(MODEL).retire_due == ""
    candidates.clock.advance(hours=1)
    ledger.reads.clear()
    assert worker.reconcile().retired == [] and ledger.reads == []


def test_an_operator_s_rolled_back_candidate_with_live_or_mirrored_traffic_is_never_deleted(
    candidates: Candidates,
) -> None:
    cand = candidates.deploy("run-1")
    assert candidates.states() == ["stepped"]
    rollback = candidates.operator("rollback", "req-1")
    assert rollback.outcome == "submitted" and candidates.actions.traffic[ENDPOINT] == {"blue": 100}
    candidates.actions.traffic[ENDPOINT] = {"blue": 50, cand: 50}  # an operator sends traffic back to it by hand
    candidates.clock.advance(days=3)
    assert candidates.reconcile().retired == []
    candidates.actions.traffic[ENDPOINT] = {"blue": 100}
    candidates.actions.mirror[ENDPOINT] = {cand: 10}  # ... or mirrors traffic to it
    candidates.clock.advance(days=3)
    assert candidates.reconcile().retired == [] and candidates.actions.deleted == []

    candidates.actions.mirror[ENDPOINT] = {}
    [retired] = candidates.reconcile().retired
    assert retired.details["rollback_decision"] == rollback.id and candidates.actions.deleted == [f"{ENDPOINT}/{cand}"]


def test_a_refused_deletion_is_recorded_failed_and_tried_again_under_the_same_id(candidates: Candidates) -> None:
    cand = candidates.deploy("run-1", provisioning="Failed")
    candidates.states()
    candidates.clock.advance(days=2)
    real = candidates.actions.delete_deployment
    refusals = [PermanentError("the service answered 409: the endpoint is being updated")]

    def refuse_once(endpoint: str, deployment: str) -> bool:
        if refusals:
            raise refusals.pop()
        return real(endpoint, deployment)

    candidates.actions.delete_deployment = refuse_once  # type: ignore[method-assign]
    [failed] = candidates.reconcile().retired
    [retired] = candidates.reconcile().retired

    assert (failed.outcome, retired.outcome) == ("failed", "submitted") and failed.id == retired.id
    assert "delete it by hand once it has no traffic" in failed.reason
    assert candidates.actions.deleted == [f"{ENDPOINT}/{cand}"]
