"""A worker that stalls (a long garbage collection, a frozen host, a lost network) past the lease of
the event it claimed is not dead: it wakes up and writes what it decided before the stall, while
another worker has taken the event over and decided it again on what holds now.

What the stalled worker writes must not undo what the other one is carrying out: a guard's
refusal decided before a reservation made since is not written over it, so the job the reservation
led to is recorded ``submitted`` with its model's slot, and nothing frees the slot of a running job.

The real Azure ML SDK path (``AzureMLActions`` against the fake ARM), on each ledger: the stall is
test code around the ports the service is given (:mod:`tests.crashes`), never a patch of the service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pytest

from handlers.claims import LEASE  # the service's default
from handlers.ports import Claim, Ledger
from handlers.records import DecisionRecord
from handlers.signals import Trigger
from handlers.workspace_ports import ActionResult, Actions
from tests.azure_world import DRIFT_SAMPLE, MODEL, AzureWorld, in_workspace
from tests.crashes import _PassesThrough

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
