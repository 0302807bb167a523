"""A stalled worker that meets a transient failure lets go only of a reservation it still holds
(``guards.let_go``), with three workers interleaved on threads over the real service code.

Worker A reserved a retrain and stalled in its checks (``retrain_facts``); its lease ran out; the event's
redelivery (worker B) took the reservation over and is acting (it has read its facts: worth it). A wakes and
its read ends in a TransientError (a timeout after a stall). Had A let the reservation go, the reconciler would
take it over at once, while B acts, judge it anew (the champion now trained on the latest data: not worth it)
and free the slot, and B, within half its lease (no read of its reservation), would submit the job: a job
running, its record saying skipped, the slot free. A lets nothing go: the reconciler leaves B's reservation.
(Found by a review of 4c8eba0; fixed in 2fe2333.)
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from handlers import guards
from handlers.claims import LEASE
from handlers.errors import TransientError
from handlers.plans import JobPlan
from handlers.worthiness import RetrainFacts
from tests.builders import MODEL, drift_event
from tests.fakes import RecordingActions
from tests.ledgers import LedgerSpec
from tests.world import World

DATA = "diabetes-training"


class Gate:
    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()

    def stop_here(self) -> None:
        self.reached.set()
        assert self.go.wait(10), "never released"


class StallsInChecks(RecordingActions):
    """Shares the world's backend state; stalls in ``retrain_facts`` at ``gate``; ``then_fail``: the read ends in a
    TransientError once released (after reading, the facts are returned otherwise)."""

    def __init__(self, inner: RecordingActions, gate: Gate, then_fail: bool) -> None:
        self.__dict__.update(inner.__dict__)  # the same lists and dicts: one workspace
        self._inner, self._gate, self._fail = inner, gate, then_fail

    def retrain_facts(self, plan: JobPlan) -> RetrainFacts:
        facts = self._inner.retrain_facts(plan)
        self._gate.stop_here()
        if self._fail:
            raise TransientError("read timed out")
        return facts


def run(fn: Any, out: list[Any]) -> threading.Thread:
    def body() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


@pytest.mark.both_ledgers
def test_a_stale_worker_that_meets_a_transient_failure_does_not_let_go_of_the_reservation_another_worker_took_over(
    ledger_spec: LedgerSpec,
) -> None:
    world = World(ledger_spec, lease=LEASE)
    raw = drift_event(event_id="e-1")
    gate_a, gate_b = Gate(), Gate()
    a_out: list[Any] = []
    b_out: list[Any] = []

    # A reserves and stalls in its checks
    worker_a = world.new_worker(StallsInChecks(world.actions, gate_a, then_fail=True))
    ta = run(lambda: world.deliver(raw, worker_a), a_out)
    assert gate_a.reached.wait(10)

    # its lease runs out; the redelivery (B) takes the reservation over and reads its facts (worth it)
    world.clock.advance(seconds=LEASE.total_seconds() + 1)
    worker_b = world.new_worker(StallsInChecks(world.actions, gate_b, then_fail=False))
    tb = run(lambda: world.deliver(raw, worker_b), b_out)
    assert gate_b.reached.wait(10)
    [flight] = world.ledger.get_model(MODEL).flights.values()
    assert flight.status == "reserved" and "resumed_at" in flight.data  # B's takeover

    # A wakes: its read times out; its act lets go (of B's takeover)
    gate_a.go.set()
    ta.join(10)
    assert isinstance(a_out[0], TransientError)
    [flight] = world.ledger.get_model(MODEL).flights.values()

    # the champion is found trained on the latest data; a reconciler pass a second later
    world.actions.trained_on[DATA] = "2"
    world.actions.latest[DATA] = "2"
    world.clock.advance(seconds=1)
    report = world.new_worker().reconcile()

    # B goes on (two seconds after its takeover: no read of its reservation) and submits
    gate_b.go.set()
    tb.join(10)
    assert not isinstance(b_out[0], BaseException), b_out

    jobs = list(world.actions.jobs)
    stored = world.ledger.get_decision(b_out[0].decisions[0].id, MODEL)
    flights = world.ledger.get_model(MODEL).flights
    said = {
        "flight after A": flight.data,
        "reconciler resumed": [(r.outcome, r.reason[-60:]) for r in report.resumed],
        "B answered": [(r.outcome, r.at) for r in b_out[0].decisions],
        "jobs": jobs,
        "stored": (stored.outcome, stored.at) if stored else None,
        "flights": flights,
    }
    assert report.resumed == [], said  # the reconciler left B's reservation alone: one worker acts
    assert guards.LET_GO not in flight.data, said  # A let nothing go
    assert len(jobs) == 1 and stored is not None and stored.outcome == "submitted", said  # B's job, recorded
    assert flights["retrain"].job == jobs[0], said  # and holding the slot
