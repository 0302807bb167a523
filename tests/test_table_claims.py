"""What a guard's refusal costs on the Table ledger, and what it may skip: the first decision of an
Event Grid event that a worker claimed with its first insert is written without the read of its
model's partition (nothing can be stored under its id yet), so a refused drift event, most of a
storm, is four requests; an event claimed again (a redelivery, a claim taken over after its lease)
reads first, so its refusal is never written beside a record of the same id (in its shard, with the
record in its model's partition: the trail would show the decision twice)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from function_app.adapters.table_ledger import TableLedger
from handlers.envelopes import parse_body
from handlers.plans import decision_id
from handlers.records import DecisionRecord, iso
from handlers.signals import Trigger
from handlers.wiring import assemble, start
from tests.azurite import Azurite
from tests.builders import EXAMPLE_POLICY, ML, MODEL, WORKSPACE, drift_event
from tests.fakes import Clock, RecordingActions
from tests.ledgers import counted_ledger, point

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
TRIGGER = Trigger(WORKSPACE, "e1", ML + "DatasetDriftDetected")
ID = decision_id("retrain", "m1", TRIGGER)  # the retrain decision of that event for model m1


def record(did: str = ID, outcome: str = "skipped", **details: str) -> DecisionRecord:
    return DecisionRecord(
        id=did,
        model="m1",
        action="retrain",
        outcome=outcome,
        reason="within the cooldown" if outcome == "skipped" else "drift",
        trigger=TRIGGER.as_dict(),
        at=iso(NOW),
        details=dict(details),
    )


REFUSAL = record(guard="cooldown")
RESERVATION = record(outcome="reserved")


def in_shards(ledger: TableLedger, did: str) -> bool:
    """Whether a record of ``did`` is in one of the shards ``d0`` .. ``d7``."""
    rows = ledger.decision_rows.query_entities("PartitionKey ge 'd' and PartitionKey lt 'e'")
    return f"r:{did}" in [e["RowKey"] for e in rows]


def test_a_drift_event_the_guards_refuse_costs_four_requests_on_the_worker_that_claimed_it_first(
    azurite: Azurite,
) -> None:
    ledger, seen = counted_ledger(azurite)
    clock = Clock()
    worker = start(assemble(EXAMPLE_POLICY, ledger, RecordingActions(), RecordingActions(), clock, [WORKSPACE]))

    def deliver(event_id: str) -> DecisionRecord:
        [env] = parse_body(json.dumps([drift_event(event_id=event_id)]))
        [rec] = worker.service.handle_envelope(env).decisions
        return rec

    assert deliver("drift-1").outcome == "submitted"
    clock.advance(minutes=5)
    seen.clear()
    refused = deliver("drift-2")
    assert refused.details["guard"] in ("in_flight", "cooldown")
    events, decisions = ledger.names["events"], ledger.names["decisions"]
    # the claim, the model's state read fresh (a refusal is decided on no guess), the refusal in its
    # shard, the claim done: no read of the model's partition for a record of the refusal's id
    assert [s.split("(")[0] for s in seen] == [f"POST {events}", f"GET {decisions}", "POST $batch", f"PATCH {events}"]
    assert "RowKey='state'" in seen[1]
    assert ledger.get_decision(refused.id, MODEL) == refused


def test_the_first_decision_of_an_event_claimed_first_is_written_without_a_read_and_a_keyed_one_with_it(
    azurite: Azurite,
) -> None:
    ledger, seen = counted_ledger(azurite)
    assert ledger.claim_event(TRIGGER, NOW, LEASE).status == "new"
    seen.clear()
    keyed = replace(REFUSAL, id="de-keyed-by-its-run")  # a run's deploy decision: made by several events
    ledger.finish_event(TRIGGER, [ID, keyed.id], NOW, [REFUSAL, keyed])
    assert point(ledger, "m:m1", ID) not in seen  # derived from the event claimed first: nothing can be there
    assert point(ledger, "m:m1", keyed.id) in seen  # not derived from it: read, as any other write
    assert {(d.id, d.outcome) for d in ledger.decisions("m1")} == {(keyed.id, "skipped"), (ID, "skipped")}


def test_a_redelivery_after_a_reservation_reads_first_and_never_writes_a_refusal_beside_it(azurite: Azurite) -> None:
    first, seen = counted_ledger(azurite)
    assert first.claim_event(TRIGGER, NOW, LEASE).status == "new"
    first.abandon_event(TRIGGER)  # a transient failure before anything was written: the claim given back
    other, _ = counted_ledger(azurite, first.prefix)  # the redelivery, on another instance
    assert other.claim_event(TRIGGER, NOW + timedelta(seconds=1), LEASE).status == "retry"
    other.put_decision(RESERVATION)  # the slot and its record taken, then a transient failure again
    other.abandon_event(TRIGGER)
    assert first.claim_event(TRIGGER, NOW + timedelta(seconds=2), LEASE).status == "retry"  # back on the first
    seen.clear()
    assert first.finish_event(TRIGGER, [ID], NOW, [REFUSAL]) == [REFUSAL]
    # read first: the refusal is written where the reservation is (which it may replace), in its place
    assert point(first, "m:m1", ID) in seen and not in_shards(first, ID)
    assert [(d.id, d.outcome) for d in first.decisions("m1")] == [(ID, "skipped")]


def test_a_claim_taken_over_after_its_lease_makes_its_first_worker_read_before_its_refusal(azurite: Azurite) -> None:
    """The first worker stalled past half its lease (by its own clock): another instance may have taken
    the claim over and reserved the decision, so the first worker's refusal reads first; it finds the
    reservation, made after it was decided, which it does not replace (``may_replace``), and it is not
    written beside it either."""
    lease = timedelta(seconds=0.2)
    slow, seen = counted_ledger(azurite)
    assert slow.claim_event(TRIGGER, NOW, lease).status == "new"
    time.sleep(0.15)  # past half the lease on this worker's clock
    other, _ = counted_ledger(azurite, slow.prefix)
    assert other.claim_event(TRIGGER, NOW + timedelta(seconds=1), lease).status == "retry"
    reservation = replace(RESERVATION, at=iso(NOW + timedelta(seconds=1)))  # on the other instance's clock
    other.put_decision(reservation)
    seen.clear()
    assert slow.finish_event(TRIGGER, [ID], NOW, [REFUSAL]) == [reservation]  # the record that stands
    assert point(slow, "m:m1", ID) in seen and not in_shards(slow, ID)  # one place: never beside it
    assert slow.decisions("m1") == [reservation]


def test_a_worker_whose_wall_clock_passed_half_its_lease_reads_first_though_its_monotonic_clock_did_not(
    azurite: Azurite,
) -> None:
    """A paused virtual machine: its monotonic clock may not count the pause, while its wall clock is set
    right when it resumes; another instance may have taken the claim over meanwhile, so the refusal
    reads first, as after a stall its monotonic clock saw."""
    slow, seen = counted_ledger(azurite)
    wall = [1_000_000.0]
    slow.wall = lambda: wall[0]
    assert slow.claim_event(TRIGGER, NOW, LEASE).status == "new"
    wall[0] += LEASE.total_seconds() / 2  # the pause, on the wall clock alone
    other, _ = counted_ledger(azurite, slow.prefix)
    assert other.claim_event(TRIGGER, NOW + LEASE, LEASE).status == "retry"
    reservation = replace(RESERVATION, at=iso(NOW + LEASE))
    other.put_decision(reservation)
    seen.clear()
    assert slow.finish_event(TRIGGER, [ID], NOW, [REFUSAL]) == [reservation]
    assert point(slow, "m:m1", ID) in seen and not in_shards(slow, ID)
