"""A worker that stalls (a long garbage collection, a frozen host, a lost network) past the lease of
the event or the reservation it holds is not dead: it wakes up and writes what it decided before the
stall, while another worker (the event's redelivery, or the reconciler) has taken it over and decided
it again on what holds now.

What the stalled worker writes must not undo what the other one is carrying out: the worker that
takes a reservation over dates it anew, and nothing decided before a reservation is written over it
(a guard's refusal decided before it was made, an outcome decided before it was taken over), so the
job the reservation led to is recorded ``submitted`` with its model's slot, and nothing frees the
slot of a running job (a write that did not land settles nothing).

The real Azure ML SDK path (``AzureMLActions`` against the fake ARM), on each ledger: the stall is
test code around the ports the service is given (:mod:`tests.crashes`), never a patch of the service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from handlers import guards
from handlers.claims import LEASE  # the service's default
from handlers.errors import TransientError
from handlers.ports import Claim, Ledger
from handlers.records import DecisionRecord, Flight, ModelState, iso
from handlers.signals import Trigger
from handlers.workspace_ports import ActionResult, Actions
from tests.azure_world import DATASET, DRIFT_SAMPLE, MODEL, AzureWorld, in_workspace
from tests.crashes import DiesBeforeActing, WorkerDied, _PassesThrough

pytestmark = pytest.mark.both_ledgers  # a race between two workers' writes: what each ledger keeps


class StallsBeforeFinishing:
    """A ledger whose worker stalls just before it writes its event's records and finishes it:
    ``meanwhile`` runs in the stall, given the stalled write (which it may let land at any point)."""

    def __init__(self, inner: Ledger, meanwhile: Callable[[Callable[[], list[DecisionRecord]]], None]) -> None:
        self.inner = inner
        self.meanwhile = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def finish_event(
        self, trigger: Trigger, decision_ids: Sequence[str], now: datetime, records: Sequence[DecisionRecord] = ()
    ) -> list[DecisionRecord]:
        written: list[list[DecisionRecord]] = []

        def write() -> list[DecisionRecord]:
            written.append(self.inner.finish_event(trigger, decision_ids, now, records))
            return written[-1]

        self.meanwhile(write)
        return written[0] if written else write()


class StallsBeforeRecording:
    """A ledger whose worker stalls just before it records its action's outcome (``record_and_update``,
    after its reservation): ``meanwhile`` runs in the stall, given the stalled write."""

    def __init__(self, inner: Ledger, meanwhile: Callable[[Callable[[], DecisionRecord]], None]) -> None:
        self.inner = inner
        self.meanwhile = meanwhile
        self.stalled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def record_and_update(self, model: str, record: DecisionRecord, change: Any) -> DecisionRecord:
        if self.stalled:
            return self.inner.record_and_update(model, record, change)
        self.stalled = True
        written: list[DecisionRecord] = []

        def write() -> DecisionRecord:
            written.append(self.inner.record_and_update(model, record, change))
            return written[-1]

        self.meanwhile(write)
        return written[0] if written else write()


class WritesBeforeSubmitting(_PassesThrough):
    """Actions that let ``before`` happen (the stalled worker's write) just before the job is submitted:
    after the reservation, before its outcome."""

    def __init__(self, inner: Actions, before: Callable[[], object] = lambda: None) -> None:
        super().__init__(inner)
        self.before = before

    def submit_retrain(self, plan: Any) -> ActionResult:
        self.before()
        return self.inner.submit_retrain(plan)


def in_cooldown(world: AzureWorld) -> DecisionRecord:
    """A first drift event retrained; its job failed and the reconciler freed the slot: the model is in
    its cooldown (6 h, examples/policy.yaml) until the job's start is 6 h old."""
    [first] = world.deliver(in_workspace(DRIFT_SAMPLE)).decisions
    assert first.outcome == "submitted", first.reason
    world.arm.set_job_status(str(first.job["name"]), "Failed")  # type: ignore[index]
    world.now.advance(minutes=20)
    world.new_worker().reconcile()
    assert world.ledger_spec.open().get_model(MODEL).flights == {}
    return first


@pytest.mark.parametrize("landing", ["before-the-submission", "after-the-takeover"])
def test_a_refusal_decided_before_a_stall_is_not_written_over_the_retrain_reserved_since(
    azure: AzureWorld, landing: str
) -> None:
    in_cooldown(azure)
    raw = {**in_workspace(DRIFT_SAMPLE), "id": "drift-after-the-cooldown"}
    taken_over: list[DecisionRecord] = []

    def meanwhile(stalled_write: Callable[[], list[DecisionRecord]]) -> None:
        # the stalled worker decided a cooldown refusal; the cooldown and its claim's lease run out,
        # Event Grid redelivers, another worker reserves the retrain, and the stalled worker's refusal
        # lands between that reservation and the job's submission, or once the other worker is done
        azure.now.advance(hours=6)
        early = landing == "before-the-submission"
        actions = WritesBeforeSubmitting(azure.actions, stalled_write) if early else azure.actions
        other = azure.new_worker(actions=actions)
        taken_over.extend(azure.deliver(raw, other).decisions)
        if not early:
            stalled_write()

    # the stalled worker's own clock sees the stall: the world's time (its 6 hours are no test's wall time)
    own_clock = azure.ledger_spec.open(monotonic=lambda: azure.now().timestamp())
    stalled = azure.new_worker(ledger=StallsBeforeFinishing(own_clock, meanwhile))
    [answer] = azure.deliver(raw, stalled).decisions

    [rec] = taken_over
    assert rec.outcome == "submitted", rec.reason
    # the stalled worker answers with what stood when its write landed, not with its refusal
    assert (answer.id, answer.outcome) == (rec.id, "reserved" if landing == "before-the-submission" else "submitted")
    ledger = azure.ledger_spec.open()
    assert [r.to_dict() for r in ledger.decisions(event_id=raw["id"])] == [rec.to_dict()]  # one record, in one place
    assert list(azure.arm.jobs).count(str(rec.job["name"])) == 1 and len(azure.arm.job_puts) == 2  # type: ignore[index]
    flight = ledger.get_model(MODEL).flights["retrain"]
    assert (flight.decision, flight.status, flight.job) == (rec.id, "submitted", rec.job["name"])  # type: ignore[index]
    t = rec.trigger
    claim = ledger.claim_event(Trigger(t["source"], t["event_id"], t["event_type"]), azure.now(), LEASE)
    assert claim == Claim("done", (rec.id,))  # finished, with the decision as it stands


@pytest.mark.parametrize("by", ["reconciler", "redelivery"])
def test_an_outcome_decided_before_a_stall_is_not_written_over_the_reservation_taken_over_since(
    azure: AzureWorld, by: str
) -> None:
    """The stalled worker reserved, judged the retrain not worth it (no data newer than the champion's)
    and stalled before recording that; a newer data version is registered, its lease runs out, and the
    reconciler (or the event's redelivery) takes the reservation over, judges it worth it and submits
    the job; the stalled worker's skip lands just before that submission."""
    azure.champion_trained_on("2")
    raw = in_workspace(DRIFT_SAMPLE)
    taken_over: list[DecisionRecord] = []

    def meanwhile(stalled_write: Callable[[], DecisionRecord]) -> None:
        azure.arm.add_data(DATASET, "3")
        azure.now.advance(seconds=LEASE.total_seconds() + 1)
        other = azure.new_worker(actions=WritesBeforeSubmitting(azure.actions, stalled_write))
        if by == "reconciler":
            taken_over.extend(other.reconcile(azure.now()).resumed)
        else:
            taken_over.extend(azure.deliver(raw, other).decisions)

    stalled = azure.new_worker(ledger=StallsBeforeRecording(azure.ledger_spec.open(), meanwhile))
    azure.deliver(raw, stalled)

    [rec] = taken_over
    assert rec.outcome == "submitted", rec.reason
    [job] = [j for j in azure.arm.jobs if j == str(rec.job["name"])]  # type: ignore[index]
    assert len(azure.arm.job_puts) == 1  # the retrain the other worker carried out: its job runs
    ledger = azure.ledger_spec.open()
    stored = ledger.get_decision(rec.id)
    assert stored is not None and (stored.outcome, (stored.job or {}).get("name")) == ("submitted", job)
    flight = ledger.get_model(MODEL).flights["retrain"]
    assert (flight.decision, flight.status, flight.job) == (rec.id, "submitted", job)


def test_a_write_that_did_not_land_over_a_reservation_leaves_its_slot_to_the_worker_that_holds_it(
    azure: AzureWorld,
) -> None:
    """A stale outcome refused by the reservation that stands (:func:`handlers.records.may_replace`) is
    answered with that reservation, which settles nothing: the slot is the other worker's still."""
    ledger = azure.ledger_spec.open()
    t0 = azure.now()
    t1 = t0 + LEASE + timedelta(seconds=1)
    said = {"model": MODEL, "action": "retrain", "trigger": {"source": "s", "event_id": "e", "event_type": "t"}}
    held = Flight("d-stale", iso(t0))
    ledger.update_model(MODEL, lambda s: (ModelState(**{**s.__dict__, "flights": {guards.RETRAIN: held}}), None))
    reserved = DecisionRecord(id="d-stale", outcome="reserved", reason="taken over", at=iso(t1), **said)
    ledger.put_decision(reserved)
    stale = DecisionRecord(id="d-stale", outcome="skipped", reason="stale", at=iso(t0), details={"why": "x"}, **said)

    stored = azure.worker.service.executor.settled(MODEL, guards.RETRAIN, stale)

    assert stored == reserved
    assert ledger.get_model(MODEL).flights == {guards.RETRAIN: held}


class StallsAfterItsChecks(_PassesThrough):
    """Actions whose worker stalls right after it read what its retrain's checks judge (``retrain_facts``),
    before it submits: ``meanwhile`` runs in the stall."""

    def __init__(self, inner: Actions, meanwhile: Callable[[], object] = lambda: None) -> None:
        super().__init__(inner)
        self.meanwhile = meanwhile

    def retrain_facts(self, plan: Any) -> Any:
        facts = self.inner.retrain_facts(plan)
        self.meanwhile()
        return facts


@pytest.mark.parametrize("by", ["reconciler", "redelivery"])
def test_a_worker_that_stalled_past_half_its_lease_does_not_submit_what_was_taken_over_and_judged_otherwise(
    azure: AzureWorld, by: str
) -> None:
    """The stalled worker judged the retrain worth it, then stalled before submitting; meanwhile the champion
    is found trained on the latest data, its lease runs out, and the reconciler (or the redelivery) takes the
    reservation over and judges it not worth it. Waking past half its lease, the stalled worker reads its
    reservation before submitting, finds it taken over, and submits nothing: no job runs that no record holds."""
    raw = in_workspace(DRIFT_SAMPLE)
    taken_over: list[DecisionRecord] = []

    def meanwhile() -> None:
        azure.champion_trained_on("2")
        azure.now.advance(seconds=LEASE.total_seconds() + 1)
        other = azure.new_worker()
        if by == "reconciler":
            taken_over.extend(other.reconcile(azure.now()).resumed)
        else:
            taken_over.extend(azure.deliver(raw, other).decisions)

    stalled = azure.new_worker(actions=StallsAfterItsChecks(azure.actions, meanwhile))
    [answer] = azure.deliver(raw, stalled).decisions

    [rec] = taken_over
    assert rec.outcome == "skipped" and "not worth it" in rec.reason, rec.reason
    assert azure.arm.job_puts == []  # the stalled worker submitted nothing
    assert answer.to_dict() == rec.to_dict()  # it answers with the record that stands
    ledger = azure.ledger_spec.open()
    assert [r.to_dict() for r in ledger.decisions(event_id=raw["id"])] == [rec.to_dict()]
    assert "retrain" not in ledger.get_model(MODEL).flights


class CountsReads:
    """A ledger that counts the decision records read through it once ``counting`` is set."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.counting = False
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_decision(self, decision_id: str, model: str | None = None) -> DecisionRecord | None:
        self.reads += self.counting
        return self.inner.get_decision(decision_id, model)


@pytest.mark.parametrize(("stall", "reads"), [(29, 0), (31, 1)])
def test_a_worker_reads_its_reservation_before_submitting_only_past_half_its_lease(
    azure: AzureWorld, stall: int, reads: int
) -> None:
    """Within half the lease no other worker can have taken the reservation over: the worker submits without a
    read (a drift event's requests stay as counted in bench/round_trips.py); past it, one read, and, its
    reservation still its own, it submits."""
    ledger = CountsReads(azure.ledger_spec.open())

    def stalls() -> None:
        azure.now.advance(seconds=stall)
        ledger.counting = True

    slow = azure.new_worker(actions=StallsAfterItsChecks(azure.actions, stalls), ledger=ledger)
    [rec] = azure.deliver(in_workspace(DRIFT_SAMPLE), slow).decisions
    assert rec.outcome == "submitted" and len(azure.arm.job_puts) == 1
    assert ledger.reads == reads


def died_before_submitting(world: AzureWorld, raw: dict[str, Any]) -> None:
    """The event's first worker reserved, judged the retrain worth it and died before submitting; then the
    champion is found trained on the latest data (judged now, the retrain is not worth it)."""
    with pytest.raises(WorkerDied):
        world.deliver(raw, world.new_worker(actions=DiesBeforeActing(world.actions)))
    world.champion_trained_on("2")


def test_a_reconciler_pass_that_finds_the_reservation_resumed_by_the_redelivery_leaves_it(azure: AzureWorld) -> None:
    """The redelivery takes the dead worker's reservation over (it marks the flight, as the reconciler does)
    and judges it while a reconciler pass, started a second before it, reaches the model: the pass finds it
    taken over within the lease and leaves it, so one worker carries it out, and the record holds what it did."""
    raw = in_workspace(DRIFT_SAMPLE)
    died_before_submitting(azure, raw)
    azure.now.advance(seconds=LEASE.total_seconds() + 1)
    pass_start = azure.now()
    azure.now.advance(seconds=1)
    resumed: list[DecisionRecord] = []

    def meanwhile() -> None:  # the redelivery has read its facts (not worth it); new data; the pass arrives
        azure.arm.add_data(DATASET, "3")
        resumed.extend(azure.new_worker().reconcile(pass_start).resumed)

    [answer] = azure.deliver(raw, azure.new_worker(actions=StallsAfterItsChecks(azure.actions, meanwhile))).decisions

    assert resumed == [] and answer.outcome == "skipped", answer.reason
    assert azure.arm.job_puts == []
    stored = azure.ledger_spec.open().get_decision(answer.id)
    assert stored is not None and stored.to_dict() == answer.to_dict()


def test_a_redelivery_that_finds_the_reservation_taken_over_by_the_reconciler_is_asked_again_later(
    azure: AzureWorld,
) -> None:
    """The mirror: the reconciler takes the reservation over and judges it; the event's redelivery, its time a
    second earlier, finds it taken over within the lease: it acts on nothing and is answered transient (Event
    Grid asks again later, and is then answered with the record the reconciler wrote)."""
    raw = in_workspace(DRIFT_SAMPLE)
    died_before_submitting(azure, raw)
    azure.now.advance(seconds=LEASE.total_seconds() + 1)
    refused: list[str] = []

    def meanwhile() -> None:  # the reconciler has read its facts (not worth it); new data; the redelivery
        azure.arm.add_data(DATASET, "3")
        with pytest.raises(TransientError) as told:
            azure.deliver(raw, azure.new_worker())
        refused.append(str(told.value))

    reconciler = azure.new_worker(actions=StallsAfterItsChecks(azure.actions, meanwhile))
    [rec] = reconciler.reconcile(azure.now() + timedelta(seconds=1)).resumed

    assert rec.outcome == "skipped" and azure.arm.job_puts == [], rec.reason
    assert refused and "is being carried out by another worker" in refused[0]
    assert azure.ledger_spec.open().get_decision(rec.id) == rec
    [again] = azure.deliver(raw, azure.new_worker()).decisions  # Event Grid's next try
    assert again.to_dict() == rec.to_dict() and azure.arm.job_puts == []
