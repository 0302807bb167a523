"""An operator during a deferred smoke test, end to end through the real Azure ML SDK and the fake ARM's
scoring URIs: a smoke test waiting out an outage, a refusal of the service's identity (401) or throttling
(429) keeps its transition pending for up to ``smoke.max_wait``; an operator's rollback, promote and pause
take its place (handlers/rollout/supersede.py), recorded as superseding it and saying why it waited. When
the reconciler is sending the smoke test's requests at that moment, whichever of the operator's transition
and the smoke test's verdict is written first wins, and only that one is recorded (both ledgers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.errors import NotApplicable
from handlers.records import iso
from handlers.rollout.smoke_outage import OUTAGE
from handlers.signals import OPERATOR, OperatorRequest, Trigger
from tests.azure_world import ENDPOINT, MODEL
from tests.crashes import WorkerDied
from tests.fake_scoring import SCORE, answers, healthy, model_fails
from tests.ledgers import LedgerSpec
from tests.smoke_world import SAMPLES, DiesWritingPending, Smoke, pending_written, smoke_worlds


@pytest.fixture
def world(tmp_path: Path, ledger_spec: LedgerSpec, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from smoke_worlds(tmp_path, ledger_spec, monkeypatch)


def deferred(smoke: Smoke) -> str:
    """One reconciler pass that defers the smoke test; what its report says."""
    report = smoke.azure.new_worker().reconcile()
    assert report.rollouts == [] and len(report.deferred) == 1 and smoke.in_flight()
    return str(report.deferred[0]["error"])


def test_an_operator_rolls_back_a_smoke_test_waiting_out_an_outage(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    for deployment in (cand, "blue"):
        azure.arm.scoring.answer_with(ENDPOINT, deployment, model_fails(503))
    since = azure.now.now
    assert OUTAGE in deferred(smoke)
    sent = len(azure.arm.scoring.calls)

    rollback = azure.operator("rollback", "the outage may last; not this candidate today")

    assert rollback.action == "rollback" and rollback.outcome == "submitted"
    assert rollback.reason.startswith(f"rollout of {ENDPOINT}/{cand} rolled back before any traffic")
    assert f"it supersedes the smoke test deferred since {since.isoformat()[:19]}" in rollback.reason
    assert f"(1 try): {OUTAGE}" in rollback.reason
    assert rollback.details["superseded"]["kind"] == "smoke"
    assert rollback.details["superseded"]["deferred"]["times"] == 1
    assert not smoke.in_flight() and azure.arm.traffic_puts == []  # the slot is free, the traffic never changed
    assert azure.new_worker().reconcile().deferred == []  # no smoke test left to try again
    assert len(azure.arm.scoring.calls) == sent and smoke.records("rollout") == []


def test_an_operator_promotes_while_the_smoke_test_waits_for_the_scoring_role_to_apply(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    azure.arm.principal = azure.arm.principal.without(SCORE)
    assert "401" in deferred(smoke)
    [view] = [m for m in azure.new_worker().models() if m["model"] == MODEL]  # GET /api/models, the console's
    shown = view["in_flight"]["rollout"]["smoke_deferred"]
    assert "401" in shown["why"] and shown["times"] == 1 and shown["until"] == iso(azure.now.now + timedelta(hours=1))

    promote = azure.operator("promote", "validated by hand")

    assert promote.action == "promote" and promote.outcome == "submitted"
    assert azure.arm.traffic_puts == [{cand: 100}] and smoke.traffic() == {cand: 100}
    waited = promote.details["superseded"]["deferred"]
    assert "401" in waited["why"] and SCORE in waited["why"] and waited["times"] == 1
    assert "it supersedes the smoke test deferred since" in promote.reason and "(401)" in promote.reason
    assert not smoke.in_flight()


def test_an_operator_pauses_a_throttled_smoke_test_and_on_resume_it_is_sent_again(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    azure.arm.scoring.answer_with(ENDPOINT, cand, answers({"message": "Too many requests"}, status=429))
    assert "throttled" in deferred(smoke)
    assert "throttled" in deferred(smoke)

    pause = azure.operator("pause", "the endpoint is busy; later")

    assert pause.action == "pause" and "(2 tries): endpoint" in pause.reason and "(429)" in pause.reason
    sent = len(azure.arm.scoring.to(cand))
    azure.arm.scoring.answer_with(ENDPOINT, cand, healthy())
    assert smoke.state() == "paused" and len(azure.arm.scoring.to(cand)) == sent  # nothing sent while paused

    azure.operator("resume", "quiet now")

    assert smoke.state() == "smoke_passed"  # a smoke test of its own, written again and sent
    [passed] = smoke.records("rollout")
    assert "deferred" not in passed.details and len(azure.arm.scoring.to(cand)) == sent + 2
    assert smoke.state() == "stepped"


@pytest.mark.both_ledgers
def test_an_operator_s_rollback_while_the_smoke_test_s_requests_are_sent_wins_and_the_verdict_is_dropped(
    world: Any,
) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    asked: list[Any] = []

    def answered_after_the_operator(body: Any) -> Any:
        if not asked:  # the operator's request comes in while the reconciler waits for the candidate's answer
            asked.append(azure.operator("rollback", "not this one"))
        return healthy()(body)

    azure.arm.scoring.answer_with(ENDPOINT, cand, answered_after_the_operator)

    [entry] = azure.new_worker().reconcile().rollouts

    assert entry["state"] == "changed_meanwhile"
    [rollback] = asked
    assert smoke.records("rollback") == [rollback] and smoke.records("rollout") == []  # no smoke test recorded
    assert "it supersedes the smoke test not judged yet" in rollback.reason
    assert rollback.details["superseded"]["deferred"] is None
    assert not smoke.in_flight() and azure.arm.traffic_puts == []


class OperatorAtTheSmokeRecord:
    """A ledger on which an operator's request comes in right before the smoke test's record is written:
    the verdict is written ahead already."""

    def __init__(self, inner: Any, operator: Any) -> None:
        self.inner, self.operator, self.refused = inner, operator, list[str]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_decision(self, record: Any) -> Any:
        if record.id.startswith("sm-") and not self.refused:
            with pytest.raises(NotApplicable) as refused:
                self.operator("rollback", "too late")
            self.refused.append(str(refused.value))
        return self.inner.put_decision(record)


@pytest.mark.both_ledgers
def test_a_smoke_test_judged_before_the_operator_s_rollback_is_recorded_and_the_rollback_is_refused(
    world: Any,
) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    ledger = OperatorAtTheSmokeRecord(azure.ledger_spec.open(), azure.operator)

    [entry] = azure.new_worker(ledger=ledger).reconcile().rollouts

    assert entry["state"] == "smoke_passed" and len(smoke.records("rollout")) == 1
    [why] = ledger.refused
    assert "a smoke transition of the rollout" in why and "is being carried out" in why
    assert smoke.records("rollback") == [] and smoke.in_flight()
    rollback = azure.operator("rollback", "now")  # the rollout went on: a rollback now is one before any traffic
    assert "rolled back before any traffic" in rollback.reason and "supersedes" not in rollback.reason
    assert azure.arm.traffic_puts == [] and len(azure.arm.scoring.to(cand)) == 2


class LandsBetweenReadAndWrite:
    """A ledger on which another worker's write (``other()``) lands between this worker's read of the model's
    state and its conditional write of a rollout transition that ``writes(pending)`` picks: the write meets
    the ETag's 412 (the Table ledger; SQLite applies it again under its lock) and is decided again on the
    state as it is then."""

    def __init__(self, inner: Any, writes: Callable[[dict[str, Any]], bool], other: Callable[[], Any]) -> None:
        self.inner, self.writes, self.other, self.landed = inner, writes, other, list[Any]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_model(self, model: str, change: Any) -> Any:
        def racing(state: Any) -> Any:
            new, result = change(state)
            pending = pending_written(new)
            if pending and self.writes(pending) and not self.landed:
                self.landed.append(self.other())
            return new, result

        return self.inner.update_model(model, racing)


def judged(pending: dict[str, Any]) -> bool:
    """A smoke test's passed verdict, written ahead."""
    return pending["kind"] == "smoke" and "judged" in pending["details"]


@pytest.mark.both_ledgers
def test_an_operator_s_write_landing_before_the_verdict_s_conditional_write_wins(world: Any) -> None:
    smoke = world()
    azure = smoke.azure
    ledger = LandsBetweenReadAndWrite(
        azure.ledger_spec.open(),
        judged,
        lambda: azure.operator("rollback", "not this one"),
    )

    [entry] = azure.new_worker(ledger=ledger).reconcile().rollouts

    assert entry["state"] == "changed_meanwhile"
    [rollback] = ledger.landed
    assert smoke.records("rollback") == [rollback] and smoke.records("rollout") == []
    assert not smoke.in_flight() and azure.arm.traffic_puts == []


@pytest.mark.both_ledgers
def test_a_verdict_landing_before_the_operator_s_conditional_write_wins_and_the_operator_is_told(
    world: Any,
) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    azure.arm.scoring.answer_with(ENDPOINT, cand, answers({"message": "Too many requests"}, status=429))
    assert "throttled" in deferred(smoke)
    azure.arm.scoring.answer_with(ENDPOINT, cand, healthy())
    ledger = LandsBetweenReadAndWrite(
        azure.ledger_spec.open(),
        lambda pending: pending["kind"] == "manual-rollback",
        lambda: azure.new_worker().reconcile().rollouts,  # a pass sends the smoke test again, and it passes
    )
    trigger = Trigger(
        "http", "req-late", "ManualRequest.rollback", caller=(("kind", "function key"),), channel=OPERATOR
    )

    with pytest.raises(NotApplicable) as refused:
        azure.new_worker(ledger=ledger).operator.handle(OperatorRequest(trigger, MODEL, "rollback", "late"))

    assert "changed meanwhile" in str(refused.value)
    assert [entry["state"] for entry in ledger.landed[0]] == ["smoke_passed"]
    assert smoke.records("rollback") == [] and len(smoke.records("rollout")) == 1 and smoke.in_flight()
    assert smoke.state() == "stepped"  # the rollout goes on


@pytest.mark.both_ledgers
def test_a_verdict_of_a_smoke_test_paused_and_resumed_on_the_same_clock_tick_is_dropped(world: Any) -> None:
    smoke = world()
    azure, cand = smoke.azure, smoke.name
    steered: list[Any] = []

    def paused_and_resumed_meanwhile(body: Any) -> Any:
        if not steered:  # while the reconciler waits for the candidate's answer, on the same tick of the clock:
            steered.extend([azure.operator("pause", "hold on"), azure.operator("resume", "go on")])
            with pytest.raises(WorkerDied):  # another pass writes the smoke test again, sends it, and dies
                azure.new_worker(ledger=DiesWritingPending(azure.ledger_spec.open(), judged)).reconcile()
        return healthy()(body)

    azure.arm.scoring.answer_with(ENDPOINT, cand, paused_and_resumed_meanwhile)

    [entry] = azure.new_worker().reconcile().rollouts

    assert entry["state"] == "changed_meanwhile"  # the first smoke test was superseded by the pause
    assert [r.action for r in steered] == ["pause", "resume"] and smoke.records("rollout") == []
    assert smoke.state() == "smoke_passed"  # the smoke test written again is judged on its own requests
    assert len(smoke.records("rollout")) == 1 and len(azure.arm.scoring.to(cand)) == 3 * len(SAMPLES)
