"""The reconciler's retirement of rolled-back and failed candidates (the executor deletes a candidate
deployment retire_after its rollout ended, never one with live or mirrored traffic), with the recording
Actions fake, and how often a pass reads a model's trail to find them. The rules themselves, as pure
functions: tests/test_retire.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from handlers.errors import PermanentError
from handlers.records import DecisionRecord, iso
from handlers.signals import OperatorRequest, Trigger
from tests.builders import MODEL, drift_event, ours, run_event
from tests.fakes import RecordingActions
from tests.ledgers import LedgerSpec
from tests.world import World

LEASE = timedelta(seconds=60)  # the reconciler tests' lease (tests/test_reconcile.py)


@pytest.fixture
def world(ledger_spec: LedgerSpec) -> World:
    return World(ledger_spec, lease=LEASE)


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
        super().__init__(spec, lease=LEASE, actions=RecordingActions(traffic={ENDPOINT: {"blue": 100}}))

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
